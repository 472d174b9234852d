//! Amazon Bedrock through the Converse and ConverseStream APIs (aws-config and the Bedrock runtime
//! SDK, rustls with ring as the TLS stack).

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput, ConverseStreamOutput, InferenceConfiguration,
    Message, SystemContentBlock, TokenUsage,
};
use aws_sdk_bedrockruntime::Client;

use super::{
    AgentModel, ModelError, ModelLimits, ModelRequest, Reply, Role, StreamedReply, TextStream, Usage, UsageSlot,
};

pub struct BedrockModel {
    client: Client,
    model_id: String,
    limits: ModelLimits,
}

/// The SDK's HTTP client: hyper + rustls with ring (the one TLS stack of the project).
pub fn http_client() -> aws_sdk_bedrockruntime::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl BedrockModel {
    /// From the environment's AWS configuration (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env(model_id: &str, limits: ModelLimits) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(limits.timeout)
                    .build(),
            )
            // Throttling is handed back to the caller (the scheduler reschedules, chat answers
            // 503): the SDK does not retry on its own.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await;
        Self::from_client(Client::new(&config), model_id, limits)
    }

    pub fn from_client(client: Client, model_id: &str, limits: ModelLimits) -> Self {
        Self {
            client,
            model_id: model_id.to_string(),
            limits,
        }
    }
}

/// Bedrock's `usage` (`inputTokens`, `outputTokens`) as a reply's. Not a count: a negative one,
/// or all of them 0 — the SDK fills a `usage` Bedrock did not send with zeros (it is a required
/// member), and no real call reads no input and writes nothing, so that is unknown, never 0.
fn usage_of(usage: &TokenUsage) -> Option<Usage> {
    let (input, output) = (usage.input_tokens(), usage.output_tokens());
    let fabricated = input == 0 && output == 0 && usage.total_tokens() == 0;
    (input >= 0 && output >= 0 && !fabricated).then(|| Usage {
        input_tokens: i64::from(input),
        output_tokens: i64::from(output),
    })
}

fn text(content: &str) -> ContentBlock {
    ContentBlock::Text(content.to_string())
}

/// Bedrock's errors that mean "come back later" rather than "this request failed".
const THROTTLING: [&str; 4] = [
    "ThrottlingException",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "ServiceQuotaExceededException",
];

/// An SDK error as a model error: throttling apart, the rest with Bedrock's code and message.
fn sdk_error<E, R>(e: SdkError<E, R>, timeout_ms: u64) -> ModelError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if !matches!(e, SdkError::ServiceError(_)) {
        // The class goes on as the model error; the SDK's cause stays here, in the log.
        tracing::warn!(error = %crate::telemetry::Chain(&e), "the Bedrock call failed");
    }
    match e {
        SdkError::TimeoutError(_) => ModelError::Timeout(timeout_ms),
        SdkError::DispatchFailure(_) => ModelError::Failed("Bedrock is unreachable".into()),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("error");
            if THROTTLING.iter().any(|t| t.eq_ignore_ascii_case(code)) {
                return ModelError::Throttled { retry_after: None };
            }
            ModelError::Failed(format!(
                "{code}: {}",
                err.message().unwrap_or("").chars().take(200).collect::<String>()
            ))
        }
        other => ModelError::Failed(format!("Bedrock call failed: {other}")),
    }
}

impl BedrockModel {
    fn messages(request: &ModelRequest) -> Result<Vec<Message>, ModelError> {
        request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                };
                Message::builder()
                    .role(role)
                    .content(text(&m.content))
                    .build()
                    .map_err(|e| ModelError::Failed(format!("cannot build the request: {e}")))
            })
            .collect()
    }

    /// The agent's instructions as the system prompt (none when empty).
    fn system(request: &ModelRequest) -> Option<Vec<SystemContentBlock>> {
        (!request.instructions.is_empty()).then(|| vec![SystemContentBlock::Text(request.instructions.clone())])
    }

    fn inference(&self) -> InferenceConfiguration {
        InferenceConfiguration::builder()
            .max_tokens(self.limits.max_tokens as i32)
            .build()
    }

    fn timeout_ms(&self) -> u64 {
        self.limits.timeout.as_millis() as u64
    }
}

#[async_trait]
impl AgentModel for BedrockModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        Ok(self.complete(request).await?.text)
    }

    /// Converse: the reply with its `usage` (`None` when Bedrock sent none); the model is the
    /// configured model id.
    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        let call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(request)?))
            .set_system(Self::system(request))
            .inference_config(self.inference());
        let output = tokio::time::timeout(self.limits.timeout, call.send())
            .await
            .map_err(|_| ModelError::Timeout(self.timeout_ms()))?
            .map_err(|e| sdk_error(e, self.timeout_ms()))?;
        let usage = output.usage().and_then(usage_of);
        let Some(ConverseOutput::Message(message)) = output.output else {
            return Err(ModelError::Failed("Bedrock returned no message".into()));
        };
        let mut reply = String::new();
        for block in message.content {
            if let ContentBlock::Text(t) = block {
                if reply.len() + t.len() > self.limits.max_reply_bytes {
                    return Err(ModelError::TooLarge(self.limits.max_reply_bytes));
                }
                reply.push_str(&t);
            }
        }
        Ok(Reply {
            text: reply,
            usage,
            model: Some(self.model_id.clone()),
        })
    }

    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        Ok(self.stream_reply(request).await?.text)
    }

    /// ConverseStream: errors answered before the stream are the `Err` (throttling included);
    /// then each text delta as it comes, each within `MODEL_STREAM_GAP_MS` of the previous, the
    /// whole within `MODEL_TIMEOUT_MS` and `MODEL_MAX_REPLY_BYTES`, until `messageStop` and the
    /// `metadata` event after it, whose `usage` lands in the slot. Once `messageStop` came the
    /// reply is whole: a stream that then ends, breaks or stalls without `metadata` ends the
    /// text without an error and leaves the usage unknown.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        let call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(request)?))
            .set_system(Self::system(request))
            .inference_config(self.inference());
        let timeout_ms = self.timeout_ms();
        let output = tokio::time::timeout(self.limits.timeout, call.send())
            .await
            .map_err(|_| ModelError::Timeout(timeout_ms))?
            .map_err(|e| sdk_error(e, timeout_ms))?;
        let limits = self.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let usage = UsageSlot::default();
        let filled = usage.clone();
        let state = Converse {
            events: output.stream,
            bytes: 0,
            finished: false,
            stopped: false,
            metadata: false,
        };
        let text: TextStream = Box::pin(futures_util::stream::unfold(state, move |mut s| {
            let filled = filled.clone();
            async move {
                if s.finished {
                    return None;
                }
                loop {
                    if s.stopped && s.metadata {
                        return None;
                    }
                    let wait = limits
                        .stream_gap
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    let event = match tokio::time::timeout(wait, s.events.recv()).await {
                        // The reply is whole: only its usage is missing.
                        Err(_) | Ok(Err(_) | Ok(None)) if s.stopped => return None,
                        Err(_) => return Some(s.fail(ModelError::Timeout(timeout_ms))),
                        Ok(Err(e)) => {
                            // After the first chunk even throttling is the stream's failure.
                            let error = match sdk_error(e, timeout_ms) {
                                ModelError::Throttled { .. } => {
                                    ModelError::Failed("Bedrock throttled mid-stream".into())
                                }
                                other => other,
                            };
                            return Some(s.fail(error));
                        }
                        Ok(Ok(None)) => {
                            return Some(s.fail(ModelError::Failed("the stream ended before messageStop".into())));
                        }
                        Ok(Ok(Some(event))) => event,
                    };
                    match event {
                        ConverseStreamOutput::ContentBlockDelta(d) if !s.stopped => {
                            if let Some(ContentBlockDelta::Text(text)) = d.delta {
                                s.bytes += text.len();
                                if s.bytes > limits.max_reply_bytes {
                                    return Some(s.fail(ModelError::TooLarge(limits.max_reply_bytes)));
                                }
                                if !text.is_empty() {
                                    return Some((Ok(text), s));
                                }
                            }
                        }
                        ConverseStreamOutput::MessageStop(_) => s.stopped = true,
                        ConverseStreamOutput::Metadata(m) => {
                            s.metadata = true;
                            if let (Some(seen), Ok(mut slot)) = (m.usage().and_then(usage_of), filled.lock()) {
                                *slot = Some(seen);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }));
        Ok(StreamedReply {
            text,
            usage,
            model: Some(self.model_id.clone()),
        })
    }
}

/// Where a ConverseStream reply is.
struct Converse {
    events: aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
        ConverseStreamOutput,
        aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
    >,
    /// Reply bytes so far.
    bytes: usize,
    /// An error was given: nothing more comes.
    finished: bool,
    /// `messageStop` came: the text is whole.
    stopped: bool,
    /// `metadata` came.
    metadata: bool,
}

impl Converse {
    /// The stream's last item: `error`.
    fn fail(mut self, error: ModelError) -> (Result<String, ModelError>, Self) {
        self.finished = true;
        (Err(error), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: i32, output: i32, total: i32) -> TokenUsage {
        TokenUsage::builder()
            .input_tokens(input)
            .output_tokens(output)
            .total_tokens(total)
            .build()
            .unwrap()
    }

    #[test]
    fn bedrock_usage_that_is_absent_or_not_a_count_is_unknown() {
        assert_eq!(
            usage_of(&tokens(12, 7, 19)),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 7
            })
        );
        assert_eq!(
            usage_of(&tokens(12, 0, 12)),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 0
            })
        );
        assert_eq!(
            usage_of(&tokens(0, 0, 0)),
            None,
            "what the SDK makes of an absent usage"
        );
        assert_eq!(usage_of(&tokens(-1, 7, 6)), None);
    }
}
