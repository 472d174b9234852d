//! Amazon Bedrock through the Converse API (aws-config and the Bedrock runtime SDK, rustls with
//! ring as the TLS stack).

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message, SystemContentBlock,
};
use aws_sdk_bedrockruntime::Client;

use super::{AgentModel, ModelError, ModelLimits, ModelRequest, Role};

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

#[async_trait]
impl AgentModel for BedrockModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        let mut messages = Vec::with_capacity(request.messages.len());
        for m in &request.messages {
            let role = match m.role {
                Role::User => ConversationRole::User,
                Role::Assistant => ConversationRole::Assistant,
            };
            let message = Message::builder()
                .role(role)
                .content(text(&m.content))
                .build()
                .map_err(|e| ModelError::Failed(format!("cannot build the request: {e}")))?;
            messages.push(message);
        }
        let mut call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_messages(Some(messages))
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(self.limits.max_tokens as i32)
                    .build(),
            );
        if !request.instructions.is_empty() {
            call = call.system(SystemContentBlock::Text(request.instructions.clone()));
        }
        let output = tokio::time::timeout(self.limits.timeout, call.send())
            .await
            .map_err(|_| ModelError::Timeout(self.limits.timeout.as_millis() as u64))?
            .map_err(|e| match e {
                SdkError::TimeoutError(_) => ModelError::Timeout(self.limits.timeout.as_millis() as u64),
                SdkError::DispatchFailure(_) => ModelError::Failed("Bedrock is unreachable".into()),
                SdkError::ServiceError(s)
                    if matches!(
                        aws_sdk_bedrockruntime::error::ProvideErrorMetadata::code(s.err()),
                        Some(
                            "ThrottlingException"
                                | "ServiceUnavailableException"
                                | "ModelNotReadyException"
                                | "ServiceQuotaExceededException"
                        )
                    ) =>
                {
                    ModelError::Throttled { retry_after: None }
                }
                SdkError::ServiceError(s) => {
                    let err = s.err();
                    ModelError::Failed(format!(
                        "{}: {}",
                        aws_sdk_bedrockruntime::error::ProvideErrorMetadata::code(err).unwrap_or("error"),
                        aws_sdk_bedrockruntime::error::ProvideErrorMetadata::message(err)
                            .unwrap_or("")
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ))
                }
                other => ModelError::Failed(format!("Bedrock call failed: {other}")),
            })?;
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
}
