//! Any OpenAI-compatible chat-completions endpoint (`POST {base}/chat/completions`), whole
//! or streamed, with tool calls: [`wire`] is the request and reply format, [`sse`] the
//! streamed reply's reader.

mod sse;
mod wire;

pub use self::sse::SseText;
pub use self::wire::{retry_after, usage_of};

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use self::wire::{body, reply_of, short};
use super::{
    AgentModel, ModelError, ModelLimits, ModelRequest, Reply, StreamedReply, TextStream, ToolCallSlot, UsageSlot,
};
use crate::outbound::{read_capped, ReadError};

pub struct OpenAiModel {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
    limits: ModelLimits,
}

impl OpenAiModel {
    /// A client of `{base_url}/chat/completions`, every call bounded by `limits.timeout`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        model: &str,
        limits: ModelLimits,
    ) -> Result<Self, crate::outbound::ClientError> {
        let http = crate::outbound::client(
            "the OpenAI-compatible model",
            limits.timeout,
            limits.timeout.min(Duration::from_secs(5)),
        )?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.filter(|k| !k.is_empty()),
            model: model.to_string(),
            limits,
        })
    }

    fn body(&self, request: &ModelRequest) -> Value {
        body(&self.model, self.limits.max_tokens, request)
    }

    fn transport_error(&self, e: &reqwest::Error) -> ModelError {
        // The class goes on as the model error; the cause stays here, in the log.
        tracing::warn!(error = %crate::telemetry::Chain(e), "the model call failed in transport");
        if e.is_timeout() {
            ModelError::Timeout(self.limits.timeout.as_millis() as u64)
        } else if e.is_connect() {
            ModelError::Failed("the model endpoint is unreachable".into())
        } else {
            ModelError::Failed("the model endpoint connection failed".into())
        }
    }
}

impl OpenAiModel {
    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        let mut call = self.http.post(&self.url).json(body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        call.send().await.map_err(|e| self.transport_error(&e))
    }
}

#[async_trait]
impl AgentModel for OpenAiModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        Ok(self.complete(request).await?.text)
    }

    /// The reply with the provider's `usage` (`None` when it sent none or a malformed one) and
    /// the model its body names (else the configured one).
    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        let mut response = self.send(&self.body(request)).await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        // The reply text is capped; the JSON around it may add some framing.
        let cap = self.limits.max_reply_bytes * 2 + 16 * 1024;
        let raw = match read_capped(&mut response, cap).await {
            Ok(raw) => raw,
            Err(ReadError::TooLarge(_)) => return Err(ModelError::TooLarge(self.limits.max_reply_bytes)),
            Err(ReadError::Transport(e)) => return Err(self.transport_error(&e)),
        };
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if status.as_u16() == 429 || status.as_u16() == 503 {
            return Err(ModelError::Throttled { retry_after });
        }
        if !status.is_success() {
            let detail = body["error"]["message"].as_str().map(short).unwrap_or_default();
            return Err(ModelError::Failed(format!("HTTP {}: {detail}", status.as_u16())));
        }
        reply_of(&body, &self.model, self.limits.max_reply_bytes)
    }

    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        Ok(self.stream_reply(request).await?.text)
    }

    /// `stream: true`: throttling and errors answered before the first byte are the `Err`; the
    /// text then comes chunk by chunk, each within `MODEL_STREAM_GAP_MS` of the previous, the
    /// whole within `MODEL_TIMEOUT_MS` and `MODEL_MAX_REPLY_BYTES`. The request asks
    /// `stream_options.include_usage`; the usage of the last chunk lands in the slot (it stays
    /// `None` for a provider that sends none). The model is the configured one.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        use futures_util::StreamExt;
        let mut body = self.body(request);
        body["stream"] = Value::Bool(true);
        body["stream_options"] = json!({"include_usage": true});
        let mut response = self.send(&body).await?;
        let status = response.status();
        if status.as_u16() == 429 || status.as_u16() == 503 {
            return Err(ModelError::Throttled {
                retry_after: retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            let raw = read_capped(&mut response, 16 * 1024).await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let detail = body["error"]["message"].as_str().map(short).unwrap_or_default();
            return Err(ModelError::Failed(format!("HTTP {}: {detail}", status.as_u16())));
        }
        let limits = self.limits;
        let timeout_ms = limits.timeout.as_millis() as u64;
        let usage = UsageSlot::default();
        let tool_calls = ToolCallSlot::default();
        let (filled, called) = (usage.clone(), tool_calls.clone());
        let state = (
            response.bytes_stream().boxed(),
            SseText::new(limits.max_reply_bytes),
            std::collections::VecDeque::<Result<String, ModelError>>::new(),
        );
        let text: TextStream = Box::pin(futures_util::stream::unfold(
            state,
            move |(mut bytes, mut sse, mut ready)| {
                let (filled, called) = (filled.clone(), called.clone());
                async move {
                    loop {
                        if let Some(item) = ready.pop_front() {
                            return Some((item, (bytes, sse, ready)));
                        }
                        if sse.finished {
                            return None;
                        }
                        match tokio::time::timeout(limits.stream_gap, bytes.next()).await {
                            Err(_) => {
                                sse.finished = true;
                                ready.push_back(Err(ModelError::Timeout(limits.stream_gap.as_millis() as u64)));
                            }
                            Ok(None) => {
                                sse.finished = true;
                                ready.push_back(Err(ModelError::Failed("the stream ended before [DONE]".into())));
                            }
                            Ok(Some(Err(e))) => {
                                sse.finished = true;
                                ready.push_back(Err(if e.is_timeout() {
                                    ModelError::Timeout(timeout_ms)
                                } else {
                                    ModelError::Failed("the model stream broke off".into())
                                }));
                            }
                            Ok(Some(Ok(chunk))) => {
                                ready.extend(sse.push(&chunk));
                                if let (Some(seen), Ok(mut slot)) = (sse.usage, filled.lock()) {
                                    *slot = Some(seen);
                                }
                                if let (true, Ok(mut slot)) = (sse.done, called.lock()) {
                                    *slot = sse.tool_calls();
                                }
                            }
                        }
                    }
                }
            },
        ));
        Ok(StreamedReply {
            text,
            usage,
            tool_calls,
            model: Some(self.model.clone()),
        })
    }
}
