//! Tool calls through the real provider clients (issue 22): OpenAI's `tools`/`tool_calls`,
//! whole and streamed, and Bedrock's Converse and ConverseStream `toolConfig`/`toolUse`/
//! `toolResult`, against a stand-in that writes tool calls as each provider does and checks
//! every history as they do.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use integration_tests::fakes::{Step, ToolModel, ToolScript};
use integration_tests::models::{bedrock_model_at, openai_model_at};
use shared::model::{normalized, AgentModel, ChatMessage, ModelError, ModelRequest, Reply, Role, ToolCall, ToolSpec};

fn script() -> ToolScript {
    ToolScript {
        steps: vec![
            Step::Call(vec![
                ("weather", json!({"city": "Oslo"})),
                ("weather", json!({"city": "Bergen"})),
            ]),
            Step::Call(vec![("compare", json!({"a": 3, "b": -1.5}))]),
            Step::Answer("Oslo is warmer than Bergen today."),
        ],
        latency: Duration::ZERO,
    }
}

fn tools() -> Vec<ToolSpec> {
    let object = |property: &str| json!({"type": "object", "properties": {property: {"type": "string"}}, "required": [property]});
    vec![
        ToolSpec {
            name: "weather".into(),
            description: "The weather in a city".into(),
            parameters: object("city"),
        },
        ToolSpec {
            name: "compare".into(),
            description: "Compares two temperatures".into(),
            parameters: json!({"type": "object"}),
        },
    ]
}

fn ask() -> ModelRequest {
    ModelRequest::task("Use the tools.", "Is Oslo warmer than Bergen?").with_tools(tools())
}

/// Runs `request` to its answer the way an agent run does: each step's calls answered with
/// `{"echo": <arguments>}`, the history normalised before each call. The replies in order.
async fn run<F, Fut>(mut request: ModelRequest, mut call: F) -> Vec<Reply>
where
    F: FnMut(ModelRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Reply, ModelError>>,
{
    let mut replies = Vec::new();
    for _ in 0..5 {
        request.messages = normalized(request.messages);
        let reply = call(request.clone())
            .await
            .expect("a valid history: the provider accepts it");
        replies.push(reply.clone());
        if reply.tool_calls.is_empty() {
            return replies;
        }
        request
            .messages
            .push(ChatMessage::calls(reply.text.clone(), reply.tool_calls.clone()));
        for c in &reply.tool_calls {
            request.messages.push(ChatMessage::tool_result(
                &c.id,
                json!({"echo": c.arguments}).to_string(),
            ));
        }
    }
    panic!("no answer in 5 steps: {replies:?}");
}

fn assert_the_scripted_run(replies: &[Reply]) {
    let calls: Vec<Vec<(String, String, Value)>> = replies
        .iter()
        .map(|r| {
            r.tool_calls
                .iter()
                .map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            vec![
                ("call_0_0".into(), "weather".into(), json!({"city": "Oslo"})),
                ("call_0_1".into(), "weather".into(), json!({"city": "Bergen"})),
            ],
            vec![("call_1_0".into(), "compare".into(), json!({"a": 3, "b": -1.5}))],
            vec![],
        ]
    );
    assert_eq!(replies[2].text, "Oslo is warmer than Bergen today.");
    assert!(replies.iter().all(|r| r.usage.is_some()), "usage on every step");
}

/// A whole reply of a stream: its text, then its usage and tool calls.
async fn streamed(model: &dyn AgentModel, request: ModelRequest) -> Result<Reply, ModelError> {
    let mut reply = model.stream_reply(&request).await?;
    let mut text = String::new();
    while let Some(chunk) = reply.text.next().await {
        text.push_str(&chunk?);
    }
    Ok(Reply {
        text,
        tool_calls: reply.tool_calls(),
        usage: reply.usage(),
        model: reply.model,
    })
}

#[tokio::test]
async fn openai_runs_parallel_tool_calls_to_an_answer_and_the_history_of_calls_and_results_is_valid() {
    let server = ToolModel::start(script()).await;
    let model = openai_model_at(&server.openai_url, Duration::from_secs(5));
    let replies = run(ask(), |r| {
        let model = &model;
        async move { model.complete(&r).await }
    })
    .await;
    assert_the_scripted_run(&replies);
    let requests = server.requests();
    assert_eq!(requests[0]["tools"][0]["function"]["name"], "weather");
    assert_eq!(requests[0]["tools"][0]["type"], "function");
    let last = requests[2]["messages"].as_array().unwrap();
    let roles: Vec<&str> = last.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "assistant", "tool"]
    );
    assert_eq!(last[4]["tool_call_id"], "call_0_1");
    assert_eq!(last[4]["content"], json!({"echo": {"city": "Bergen"}}).to_string());
}

#[tokio::test]
async fn openai_streamed_tool_call_deltas_are_assembled_into_the_same_calls() {
    let server = ToolModel::start(script()).await;
    let model = openai_model_at(&server.openai_url, Duration::from_secs(5));
    let replies = run(ask(), |r| {
        let model = &model;
        async move { streamed(model, r).await }
    })
    .await;
    assert_the_scripted_run(&replies);
    assert!(server.requests().iter().all(|r| r["stream"] == true));
}

#[tokio::test]
async fn bedrock_converse_runs_tool_use_to_an_answer_with_results_as_the_users_tool_result_blocks() {
    let server = ToolModel::start(script()).await;
    let model = bedrock_model_at(&server.bedrock_url, Duration::from_secs(5));
    let replies = run(ask(), |r| {
        let model = &model;
        async move { model.complete(&r).await }
    })
    .await;
    assert_the_scripted_run(&replies);
    let requests = server.requests();
    assert_eq!(
        requests[0]["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"],
        json!(["city"])
    );
    let last = requests[2]["messages"].as_array().unwrap();
    let roles: Vec<&str> = last.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(last[2]["content"][1]["toolResult"]["toolUseId"], "call_0_1");
}

#[tokio::test]
async fn bedrock_converse_stream_tool_use_deltas_are_assembled_into_the_same_calls() {
    let server = ToolModel::start(script()).await;
    let model = bedrock_model_at(&server.bedrock_url, Duration::from_secs(5));
    let replies = run(ask(), |r| {
        let model = &model;
        async move { streamed(model, r).await }
    })
    .await;
    assert_the_scripted_run(&replies);
}

#[tokio::test]
async fn a_history_with_an_unanswered_call_is_refused_by_both_providers_and_normalising_it_makes_it_valid() {
    let server = ToolModel::start(script()).await;
    let call = ToolCall {
        id: "call_x".into(),
        name: "weather".into(),
        arguments: json!({"city": "Oslo"}),
    };
    let broken = ModelRequest {
        instructions: String::new(),
        messages: vec![
            ChatMessage::text(Role::User, "weather?"),
            ChatMessage::calls("", vec![call]),
            ChatMessage::text(Role::User, "hello?"),
        ],
        tools: tools(),
    };
    let openai = openai_model_at(&server.openai_url, Duration::from_secs(5));
    let bedrock = bedrock_model_at(&server.bedrock_url, Duration::from_secs(5));
    for model in [&openai as &dyn AgentModel, &bedrock] {
        assert!(
            matches!(model.complete(&broken).await, Err(ModelError::Failed(_))),
            "the stand-in checks histories as the provider does"
        );
        let mut fixed = broken.clone();
        fixed.messages = normalized(fixed.messages);
        model.complete(&fixed).await.expect("a normalised history is valid");
    }
}
