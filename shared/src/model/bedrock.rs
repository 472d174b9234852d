//! Amazon Bedrock through the Converse and ConverseStream APIs (aws-config and the Bedrock runtime
//! SDK, rustls with ring as the TLS stack).

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput, ConverseStreamOutput, InferenceConfiguration,
    Message, SystemContentBlock,
};
use aws_sdk_bedrockruntime::Client;

use super::{AgentModel, ModelError, ModelLimits, ModelRequest, Role, TextStream};

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
    R: std::fmt::Debug,
{
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
        Ok(reply)
    }

    /// ConverseStream: errors answered before the stream are the `Err` (throttling included);
    /// then each text delta as it comes, each within `MODEL_STREAM_GAP_MS` of the previous, the
    /// whole within `MODEL_TIMEOUT_MS` and `MODEL_MAX_REPLY_BYTES`, until `messageStop`.
    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
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
        // (events, reply bytes so far, finished)
        let state = (output.stream, 0usize, false);
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            move |(mut events, mut bytes, finished)| async move {
                if finished {
                    return None;
                }
                loop {
                    let wait = limits
                        .stream_gap
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    let event = match tokio::time::timeout(wait, events.recv()).await {
                        Err(_) => return Some((Err(ModelError::Timeout(timeout_ms)), (events, bytes, true))),
                        Ok(Err(e)) => {
                            // After the first chunk even throttling is the stream's failure.
                            let error = match sdk_error(e, timeout_ms) {
                                ModelError::Throttled { .. } => {
                                    ModelError::Failed("Bedrock throttled mid-stream".into())
                                }
                                other => other,
                            };
                            return Some((Err(error), (events, bytes, true)));
                        }
                        Ok(Ok(None)) => {
                            let error = ModelError::Failed("the stream ended before messageStop".into());
                            return Some((Err(error), (events, bytes, true)));
                        }
                        Ok(Ok(Some(event))) => event,
                    };
                    match event {
                        ConverseStreamOutput::ContentBlockDelta(d) => {
                            if let Some(ContentBlockDelta::Text(text)) = d.delta {
                                bytes += text.len();
                                if bytes > limits.max_reply_bytes {
                                    let error = ModelError::TooLarge(limits.max_reply_bytes);
                                    return Some((Err(error), (events, bytes, true)));
                                }
                                if !text.is_empty() {
                                    return Some((Ok(text), (events, bytes, false)));
                                }
                            }
                        }
                        ConverseStreamOutput::MessageStop(_) => return None,
                        _ => {}
                    }
                }
            },
        )))
    }
}
