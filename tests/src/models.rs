//! Models for the tests: [`ChatModel`], scripted, recording what it is asked; and the real
//! provider clients ([`openai_model`], [`bedrock_model`]) pointed at the stand-ins of
//! [`crate::fakes`], with [`limits`] of the tests' choosing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::model::bedrock::BedrockModel;
use shared::model::openai::OpenAiModel;
use shared::model::{AgentModel, ModelError, ModelLimits, ModelRequest};

use crate::fakes::FakeServer;

/// A model that records what it is asked and answers `reply to: <last message>` after `delay`
/// (or fails as an upstream 500 would).
pub struct ChatModel {
    requests: Mutex<Vec<ModelRequest>>,
    delay: Duration,
    fail: bool,
}

impl ChatModel {
    /// A model that thinks for `delay`, then answers.
    pub fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::new(Vec::new()),
            delay,
            fail: false,
        })
    }

    /// A model whose every call fails.
    pub fn failing() -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::new(Vec::new()),
            delay: Duration::ZERO,
            fail: true,
        })
    }

    /// How many calls it has had.
    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// What it was asked, in order.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl AgentModel for ChatModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        self.requests.lock().unwrap().push(request.clone());
        // The model's thinking time: what the tests hold the request open with.
        tokio::time::sleep(self.delay).await;
        if self.fail {
            return Err(ModelError::Failed("upstream 500".into()));
        }
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        Ok(format!("reply to: {last}"))
    }
}

/// Bounds of a model client: `timeout` for a reply and between streamed chunks, 64 KiB of reply,
/// 256 tokens.
pub fn limits(timeout: Duration) -> ModelLimits {
    ModelLimits {
        timeout,
        max_reply_bytes: 64 * 1024,
        max_tokens: 256,
        stream_gap: timeout,
    }
}

/// The real OpenAI-compatible client, pointed at a stand-in, without an API key.
pub fn openai_model(server: &FakeServer, timeout: Duration) -> OpenAiModel {
    openai_model_at(&format!("{}/v1", server.url()), timeout)
}

/// The real OpenAI-compatible client, pointed at the base URL `url` (with `/v1`).
pub fn openai_model_at(url: &str, timeout: Duration) -> OpenAiModel {
    OpenAiModel::new(url, None, "gpt-test", limits(timeout)).expect("an HTTP client with its timeouts")
}

/// The real Bedrock client, pointed at a stand-in, without the SDK's retries.
pub fn bedrock_model(server: &FakeServer, timeout: Duration) -> BedrockModel {
    bedrock_model_at(&server.url(), timeout)
}

/// The real Bedrock client, pointed at `url`, without the SDK's retries.
pub fn bedrock_model_at(url: &str, timeout: Duration) -> BedrockModel {
    use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(url)
        .http_client(shared::model::bedrock::http_client())
        .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
        .build();
    BedrockModel::from_client(
        aws_sdk_bedrockruntime::Client::from_conf(config),
        "anthropic.claude-test",
        limits(timeout),
    )
}
