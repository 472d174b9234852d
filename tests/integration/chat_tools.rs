//! Chat and chat-stream with an agent that has tools (issue 22): the turn runs the agent's loop,
//! its tool-calling steps stored in the conversation as they complete and replayed as valid
//! history to both providers on the next turn; a call that needs approval answers `202`; the
//! step limit is an error that says so; the stream adds `tool_call` and `tool_result` events
//! between `meta` and `done`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use chat::Settings as ChatSettings;
use integration_tests::cargo_lambda::Watch;
use integration_tests::fakes::{self, Step, ToolMode, ToolModel, ToolScript, ToolServer};
use integration_tests::harness::{harness_with, Harness, SECRET, USER};
use integration_tests::models::{bedrock_model_at, openai_model_at};
use shared::model::AgentModel;

const SIGNING: &str = "chat-tool-signing-secret";

fn tool_settings() -> ChatSettings {
    let mut settings = ChatSettings::default();
    settings.runs.policy.allow_loopback = true;
    settings.runs.secret = Some(Arc::from(SIGNING.as_bytes()));
    settings
}

async fn add_tool(h: &Harness, name: &str, url: &str, requires_approval: bool) {
    h.db.direct()
        .await
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, requires_approval)
             VALUES ($1, $2, 'a tool of the tests', '{\"type\": \"object\"}', $3, $4)",
            &[&h.agent, &name, &url, &requires_approval],
        )
        .await
        .unwrap();
}

/// The conversation's messages: (role, number of calls or the result's call id, content).
async fn stored(h: &Harness, conversation: &str) -> Vec<(String, String, String)> {
    h.db.direct()
        .await
        .query(
            "SELECT role, coalesce(jsonb_array_length(tool_calls)::text, tool_call_id, ''), content FROM messages
              WHERE conversation_id = $1::text::uuid ORDER BY created_at, id",
            &[&conversation],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn run_status(h: &Harness) -> Vec<String> {
    h.db.direct()
        .await
        .query("SELECT status FROM agent_runs ORDER BY created_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_turn_runs_the_agents_tools_to_an_answer_and_the_next_turn_replays_them_as_valid_history_to_both_providers() {
    for provider in ["openai", "bedrock"] {
        let model_server = ToolModel::start(ToolScript::three_steps()).await;
        let model: Arc<dyn AgentModel> = match provider {
            "openai" => Arc::new(openai_model_at(&model_server.openai_url, Duration::from_secs(5))),
            _ => Arc::new(bedrock_model_at(&model_server.bedrock_url, Duration::from_secs(5))),
        };
        let h = harness_with(model, tool_settings(), None, false).await;
        let tool = ToolServer::start(ToolMode::Echo).await;
        add_tool(&h, "weather", &tool.url, false).await;
        add_tool(&h, "compare", &tool.url, false).await;

        let (status, body) = h.send("is Oslo warmer than Bergen?", None).await;
        assert_eq!(status, 200, "{provider}: {body}");
        assert_eq!(body["message"]["content"], "Oslo is warmer.", "{provider}");
        let conversation = body["conversationId"].as_str().unwrap().to_string();
        let kinds: Vec<(String, String)> = stored(&h, &conversation)
            .await
            .into_iter()
            .map(|(role, calls, _)| (role, calls))
            .collect();
        let k = |role: &str, calls: &str| (role.to_string(), calls.to_string());
        assert_eq!(
            kinds,
            vec![
                k("user", ""),
                k("assistant", "2"),
                k("tool", "call_0_0"),
                k("tool", "call_0_1"),
                k("assistant", "1"),
                k("tool", "call_1_0"),
                k("assistant", ""),
            ],
            "{provider}: every step stored, the answer last"
        );
        assert_eq!(tool.hits().len(), 3, "{provider}");
        assert_eq!(run_status(&h).await, ["completed"], "{provider}");

        // The next turn sends the stored tool turns back: the stand-in refuses an invalid history.
        let (status, body) = h.send("and tomorrow?", Some(&conversation)).await;
        assert_eq!(status, 200, "{provider}: the stored steps are a valid history: {body}");
        let last = model_server.requests().pop().unwrap();
        let history = last["messages"].as_array().unwrap().len();
        assert!(
            history >= 8,
            "{provider}: the earlier tool turns were sent again ({history} messages)"
        );
    }
}

#[tokio::test]
async fn a_call_that_needs_approval_answers_202_with_the_run_and_its_calls_and_calls_nothing() {
    let model_server = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("refund", json!({"order": "A-1", "amount": 30}))]),
            Step::Answer("refunded"),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let model = Arc::new(openai_model_at(&model_server.openai_url, Duration::from_secs(5)));
    let h = harness_with(model, tool_settings(), None, false).await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    add_tool(&h, "refund", &tool.url, true).await;

    let (status, body) = h.send("refund order A-1", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "awaiting_approval");
    let run: Uuid = body["runId"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        body["toolCalls"],
        json!([{"id": "call_0_0", "name": "refund", "arguments": {"order": "A-1", "amount": 30}}])
    );
    assert!(tool.hits().is_empty(), "nothing is called before a person approves");
    let row =
        h.db.direct()
            .await
            .query_one(
                "SELECT status, paused_until > now() AS pending FROM agent_runs WHERE id = $1",
                &[&run],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>("status"), "awaiting_approval");
    assert!(row.get::<_, bool>("pending"), "the pause expires later");
    // The turn gave its in-flight slot back: the user's next message is admitted.
    let (status, _) = h.send("meanwhile, hello", None).await;
    assert_eq!(status, 202, "a new turn (the stand-in calls the tool again)");
}

#[tokio::test]
async fn a_model_that_calls_tools_forever_ends_the_turn_with_a_step_limit_error() {
    let model_server = ToolModel::start(ToolScript {
        steps: vec![Step::Call(vec![("again", json!({}))])],
        latency: Duration::ZERO,
    })
    .await;
    let model = Arc::new(openai_model_at(&model_server.openai_url, Duration::from_secs(5)));
    let mut settings = tool_settings();
    settings.runs.max_steps = 2;
    let h = harness_with(model, settings, None, false).await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    add_tool(&h, "again", &tool.url, false).await;
    let (status, body) = h.send("loop", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "step_limit");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("AGENT_MAX_STEPS"),
        "{body}"
    );
    assert_eq!(run_status(&h).await, ["step_limit"]);
    assert_eq!(model_server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_tool_calls_and_results_between_meta_and_done() {
    let h_db = integration_tests::helpers::TestDb::new().await;
    let agent = Uuid::new_v4();
    let client = h_db.direct().await;
    client
        .execute(
            "INSERT INTO agents (id, name, instructions, visibility) VALUES ($1, 'helper', 'Use tools.', 'public')",
            &[&agent],
        )
        .await
        .unwrap();
    let tool = ToolServer::start(ToolMode::Echo).await;
    for name in ["weather", "compare"] {
        client
            .execute(
                "INSERT INTO agent_tools (agent_id, name, description, parameters, url)
                 VALUES ($1, $2, 'a tool', '{\"type\": \"object\"}', $3)",
                &[&agent, &name, &tool.url],
            )
            .await
            .unwrap();
    }
    let model_server = ToolModel::start(ToolScript::three_steps()).await;
    let supabase = "https://tools.supabase.co";
    let watch = Watch::start(
        &h_db,
        &[
            ("MODEL_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", model_server.openai_url.as_str()),
            ("OPENAI_MODEL", "gpt-test"),
            ("SUPABASE_URL", supabase),
            ("SUPABASE_JWT_SECRET", SECRET),
            ("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
            ("AGENT_TOOL_SIGNING_SECRET", SIGNING),
        ],
    )
    .await;
    let token = fakes::hs256(SECRET, &fakes::claims(&format!("{supabase}/auth/v1"), USER));
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/lambda-url/chat-stream/api/agents/chat/stream",
            watch.port
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(json!({"agentId": agent, "message": "is Oslo warmer?"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut bytes = response.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            (name, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "delta")
        .collect();
    assert_eq!(
        names,
        [
            "meta",
            "tool_call",
            "tool_call",
            "tool_result",
            "tool_result",
            "tool_call",
            "tool_result",
            "done"
        ],
        "{text}"
    );
    let call = &events.iter().find(|(n, _)| n == "tool_call").unwrap().1;
    assert_eq!(call["name"], "weather");
    assert_eq!(call["arguments"], json!({"city": "Oslo"}));
    let result = &events.iter().find(|(n, _)| n == "tool_result").unwrap().1;
    assert!(result["toolCallId"].as_str().unwrap().starts_with("call_0_"));
    assert!(result["result"]["ok"] == true, "the echo tool's answer: {result}");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(deltas, "Oslo is warmer.");
    let done = &events.last().unwrap().1;
    assert_eq!(done["message"]["content"], "Oslo is warmer.");
    assert_eq!(done["message"]["id"], events[0].1["id"], "done's id is meta's");
}

#[tokio::test]
async fn an_agent_with_only_an_mcp_source_runs_its_read_only_tool_and_pauses_on_the_destructive_one() {
    use integration_tests::mcp_servers::{PyMcp, PyMcpOptions};
    let model_server = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![
                ("shop__lookup_order", json!({"order_id": "A-1"})),
                ("shop__refund_order", json!({"order_id": "A-1"})),
            ]),
            Step::Answer("refunded"),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let model = Arc::new(openai_model_at(&model_server.openai_url, Duration::from_secs(5)));
    let mut settings = tool_settings();
    settings.runs.secret = None;
    let h = harness_with(model, settings, None, false).await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    h.db.direct()
        .await
        .execute(
            "INSERT INTO agent_tool_sources (agent_id, name, url) VALUES ($1, 'shop', $2)",
            &[&h.agent, &server.url],
        )
        .await
        .unwrap();

    let (status, body) = h.send("refund order A-1 if paid", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["toolCalls"],
        json!([{"id": "call_0_1", "name": "shop__refund_order", "arguments": {"order_id": "A-1"}}])
    );
    assert_eq!(
        server.tool_runs("lookup_order").len(),
        1,
        "read-only: made at once, no signing secret needed"
    );
    assert!(
        server.tool_runs("refund_order").is_empty(),
        "destructive: waits for a person"
    );
    let conversation: String =
        h.db.direct()
            .await
            .query_one("SELECT conversation_id::text FROM agent_runs", &[])
            .await
            .unwrap()
            .get(0);
    let messages = stored(&h, &conversation).await;
    let result = &messages.iter().find(|m| m.0 == "tool").unwrap().2;
    assert!(
        result.contains("paid"),
        "the read-only call's result is stored: {messages:?}"
    );
    let state: String =
        h.db.direct()
            .await
            .query_one("SELECT state FROM agent_run_calls WHERE tool_call_id = 'call_0_1'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(state, "awaiting_approval");
}
