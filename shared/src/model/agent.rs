//! The [`AgentModel`] trait and what it answers: whole or streamed replies, their usage and
//! the model's errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{ModelRequest, ToolCall};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The provider is throttling (HTTP 429 or 503, Bedrock's throttling and not-ready errors):
    /// not a failure of the request, come back after `retry_after` (when the provider said).
    #[error("the model provider is throttling")]
    Throttled { retry_after: Option<Duration> },
    #[error("model timed out after {0} ms")]
    Timeout(u64),
    #[error("model error: {0}")]
    Failed(String),
    #[error("model reply larger than {0} bytes")]
    TooLarge(usize),
}

impl ModelError {
    /// What may be stored where users read it (a task's `lastError`) or shown: a class and a
    /// fixed sentence. A provider's own error text can carry account ids, role ARNs or masked
    /// keys: it goes to the log, never here.
    pub fn public_summary(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "model_throttled: the model provider is throttling",
            Self::Timeout(_) => "model_timeout: the model did not answer in time",
            Self::Failed(_) => "model_error: the model provider answered with an error (details in the function's log)",
            Self::TooLarge(_) => "model_reply_too_large: the model's reply was larger than allowed",
        }
    }
}

/// A reply as the model writes it: text chunks in order; an error after the first chunk is an
/// item of the stream (an error before it is the `Err` of [`AgentModel::stream`]).
pub type TextStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<String, ModelError>> + Send>>;

/// Tokens a call cost, as the provider reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// A whole reply, the tools it calls (none: it is the answer), what it cost (`None`: the
/// provider reported nothing, which is stored as unknown, never as 0) and the model that wrote
/// it (`None`: not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

impl Reply {
    /// A reply of text only.
    pub fn text(text: String, usage: Option<Usage>, model: Option<String>) -> Self {
        Self {
            text,
            tool_calls: Vec::new(),
            usage,
            model,
        }
    }
}

/// Where a streamed reply's usage lands when the provider reports it (OpenAI's last chunk with
/// `stream_options.include_usage`, Bedrock's `metadata` event): read it once the text stream ended.
pub type UsageSlot = Arc<std::sync::Mutex<Option<Usage>>>;

/// Where a streamed reply's tool calls land, whole, once the provider ended its message: read
/// it once the text stream ended without an error.
pub type ToolCallSlot = Arc<std::sync::Mutex<Vec<ToolCall>>>;

/// A reply streamed, with its usage to come and the model writing it.
pub struct StreamedReply {
    pub text: TextStream,
    pub usage: UsageSlot,
    pub tool_calls: ToolCallSlot,
    pub model: Option<String>,
}

impl StreamedReply {
    /// A streamed reply of text only.
    pub fn text(text: TextStream, usage: UsageSlot, model: Option<String>) -> Self {
        Self {
            text,
            usage,
            tool_calls: ToolCallSlot::default(),
            model,
        }
    }

    /// The usage the stream reported (read after the text stream ended).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.lock().ok().and_then(|u| *u)
    }

    /// The tool calls the stream asked for (read after the text stream ended).
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.tool_calls.lock().map(|calls| calls.clone()).unwrap_or_default()
    }
}

#[async_trait]
pub trait AgentModel: Send + Sync {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError>;

    /// The reply, streamed. A model that cannot stream answers with the whole reply as one chunk.
    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        let text = self.generate(request).await?;
        Ok(Box::pin(futures_util::stream::iter([Ok(text)])))
    }

    /// The reply with its usage. A model that reports none answers `usage: None` (unknown).
    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        Ok(Reply::text(self.generate(request).await?, None, None))
    }

    /// The reply streamed, with its usage once the stream ends.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        Ok(StreamedReply::text(
            self.stream(request).await?,
            UsageSlot::default(),
            None,
        ))
    }
}

pub type SharedModel = Arc<dyn AgentModel>;
