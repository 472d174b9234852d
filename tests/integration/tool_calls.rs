//! Calling an agent's tool (issue 22): the real client against a tool server on loopback; the
//! outbound rules refuse what they must before anything is sent, and every refusal or failure
//! is a result the model can read.

use std::time::Duration;

use integration_tests::fakes::{ToolMode, ToolServer};
use serde_json::json;
use shared::agent::tool_call::{self, ToolEndpoint, ToolError, ToolPolicy, ToolRequest};
use uuid::Uuid;

const SECRET: &[u8] = b"tool-signing-secret";

fn policy(allow_loopback: bool) -> ToolPolicy {
    ToolPolicy {
        allow_loopback,
        allowed_hosts: Vec::new(),
        max_response_bytes: 64 * 1024,
    }
}

struct Call {
    agent: Uuid,
    user: Uuid,
    run: Uuid,
    arguments: serde_json::Value,
}

impl Call {
    fn new() -> Self {
        Self {
            agent: Uuid::new_v4(),
            user: Uuid::new_v4(),
            run: Uuid::new_v4(),
            arguments: json!({"invoice": "in_123", "amount": 42}),
        }
    }

    fn request(&self) -> ToolRequest<'_> {
        ToolRequest {
            tool_call_id: "call_1",
            name: "refund",
            arguments: &self.arguments,
            agent_id: self.agent,
            user_id: Some(self.user),
            run_id: self.run,
        }
    }

    async fn send(&self, policy: &ToolPolicy, url: &str, timeout: Duration) -> Result<serde_json::Value, ToolError> {
        let client = tool_call::client(policy).expect("the tool client");
        let endpoint = ToolEndpoint { url, timeout };
        let key = tool_call::idempotency_key(self.run, 1, "call_1");
        tool_call::call(&client, policy, SECRET, &endpoint, &self.request(), &key).await
    }
}

#[tokio::test]
async fn a_tool_call_is_signed_keyed_and_carries_the_run_and_its_answer_comes_back() {
    let tool = ToolServer::start(ToolMode::Echo).await;
    let call = Call::new();
    let answer = call
        .send(&policy(true), &tool.url, Duration::from_secs(5))
        .await
        .expect("the tool answered");
    assert_eq!(answer, json!({"ok": true, "echo": call.arguments}));

    let hits = tool.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    // The signature is over the exact bytes sent, as a tool verifies it.
    assert_eq!(
        hit.header("x-agent-signature"),
        Some(tool_call::signature(SECRET, &hit.body).as_str())
    );
    assert_ne!(
        hit.header("x-agent-signature"),
        Some(tool_call::signature(b"another secret", &hit.body).as_str())
    );
    assert_eq!(
        hit.header("idempotency-key"),
        Some(format!("{}:1:call_1", call.run).as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(
        body,
        json!({"toolCallId": "call_1", "name": "refund", "arguments": call.arguments,
               "agentId": call.agent, "userId": call.user, "runId": call.run})
    );
}

#[tokio::test]
async fn the_same_call_sent_again_carries_the_same_idempotency_key() {
    let tool = ToolServer::start(ToolMode::Echo).await;
    let call = Call::new();
    for _ in 0..2 {
        call.send(&policy(true), &tool.url, Duration::from_secs(5))
            .await
            .unwrap();
    }
    let keys: Vec<String> = tool
        .hits()
        .iter()
        .map(|h| h.header("idempotency-key").unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
}

#[tokio::test]
async fn loopback_is_refused_without_the_development_flag_and_nothing_is_sent() {
    let tool = ToolServer::start(ToolMode::Echo).await;
    let error = Call::new()
        .send(&policy(false), &tool.url, Duration::from_secs(5))
        .await
        .expect_err("refused");
    assert!(matches!(error, ToolError::Refused(_)), "{error:?}");
    assert!(tool.hits().is_empty());
    let result = error.as_result();
    assert!(result["error"].as_str().unwrap().starts_with("refused:"), "{result}");
}

#[tokio::test]
async fn the_metadata_address_and_a_host_off_the_allow_list_are_refused() {
    let call = Call::new();
    for url in ["https://169.254.169.254/latest/meta-data/", "http://169.254.169.254/"] {
        let error = call.send(&policy(true), url, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, ToolError::Refused(_)), "{url}: {error:?}");
    }
    let tool = ToolServer::start(ToolMode::Echo).await;
    let listed = ToolPolicy {
        allowed_hosts: vec!["tools.example.com".into()],
        ..policy(true)
    };
    let error = call.send(&listed, &tool.url, Duration::from_secs(5)).await.unwrap_err();
    assert!(error.to_string().contains("allowed list"), "{error}");
    assert!(tool.hits().is_empty());
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let elsewhere = ToolServer::start(ToolMode::Echo).await;
    let tool = ToolServer::start(ToolMode::Redirect(elsewhere.url.replace("127.0.0.1", "localhost"))).await;
    let error = Call::new()
        .send(&policy(true), &tool.url, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, ToolError::Redirect { status: 302 }), "{error:?}");
    assert_eq!(tool.hits().len(), 1);
    assert!(elsewhere.hits().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn a_ten_mebibyte_answer_is_cut_at_the_cap() {
    let tool = ToolServer::start(ToolMode::Huge(10 * 1024 * 1024)).await;
    let error = Call::new()
        .send(&policy(true), &tool.url, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ToolError::TooLarge(cap) if cap == 64 * 1024),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_tool_that_hangs_is_cut_at_its_timeout() {
    let tool = ToolServer::start(ToolMode::Hang).await;
    let error = Call::new()
        .send(&policy(true), &tool.url, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, ToolError::TimedOut(300)), "{error:?}");
    assert_eq!(
        error.as_result(),
        json!({"error": "the tool did not answer within 300 ms"})
    );
}
