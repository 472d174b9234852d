//! The agent model behind one trait: the reply to a chat message and the work of a task.
//! The deterministic local model is the default so the product runs offline; remote clients
//! (Bedrock, OpenAI-compatible) plug in behind the same trait.

pub mod bedrock;
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ConfigError, Env};

/// Bounds every remote model client applies.
#[derive(Debug, Clone, Copy)]
pub struct ModelLimits {
    /// `MODEL_TIMEOUT_MS` (20000).
    pub timeout: Duration,
    /// `MODEL_MAX_REPLY_BYTES` (32768): longer replies are an error, not a truncation.
    pub max_reply_bytes: usize,
    /// `MODEL_MAX_TOKENS` (1024).
    pub max_tokens: u32,
}

impl Default for ModelLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            max_reply_bytes: 32 * 1024,
            max_tokens: 1024,
        }
    }
}

/// Who said a message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What the model is asked: the agent's instructions (system prompt) and the conversation so far
/// (for a task: one user message, the task prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    pub instructions: String,
    pub messages: Vec<ChatMessage>,
}

impl ModelRequest {
    pub fn task(instructions: &str, prompt: &str) -> Self {
        Self {
            instructions: instructions.to_string(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.to_string(),
            }],
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("model timed out after {0} ms")]
    Timeout(u64),
    #[error("model error: {0}")]
    Failed(String),
    #[error("model reply larger than {0} bytes")]
    TooLarge(usize),
}

#[async_trait]
pub trait AgentModel: Send + Sync {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError>;
}

pub type SharedModel = Arc<dyn AgentModel>;

/// Deterministic and offline: the same request always gets the same reply, after a fixed
/// latency (`LOCAL_MODEL_LATENCY_MS`, default 0) that stands in for a real model's.
#[derive(Debug, Default, Clone)]
pub struct LocalModel {
    pub latency: std::time::Duration,
}

#[async_trait]
impl AgentModel for LocalModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let excerpt: String = last.chars().take(200).collect();
        Ok(format!(
            "[local model] {} message(s) considered. You said: {excerpt}",
            request.messages.len()
        ))
    }
}

fn required<F: Fn(&str) -> Option<String>>(env: &Env<F>, name: &'static str) -> Result<String, ConfigError> {
    env.text(name).ok_or(ConfigError::Missing(name))
}

/// The model chosen by `MODEL_PROVIDER`: `local` (the default), `openai` (`OPENAI_BASE_URL`,
/// `OPENAI_API_KEY`, `OPENAI_MODEL`) or `bedrock` (`BEDROCK_MODEL_ID`, AWS settings from the
/// environment).
pub async fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<SharedModel, ConfigError> {
    let limits = ModelLimits {
        timeout: Duration::from_millis(env.number("MODEL_TIMEOUT_MS", 1, 600_000)?.unwrap_or(20_000)),
        max_reply_bytes: env
            .number("MODEL_MAX_REPLY_BYTES", 1, 10 * 1024 * 1024)?
            .unwrap_or(32 * 1024) as usize,
        max_tokens: env.number("MODEL_MAX_TOKENS", 1, 1_000_000)?.unwrap_or(1024) as u32,
    };
    match env.text("MODEL_PROVIDER").as_deref() {
        None | Some("local") => {
            let latency = env.number("LOCAL_MODEL_LATENCY_MS", 0, 600_000)?.unwrap_or(0);
            Ok(Arc::new(LocalModel {
                latency: Duration::from_millis(latency),
            }))
        }
        Some("openai") => {
            let base = env
                .text("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into());
            url::Url::parse(&base).map_err(|e| ConfigError::Invalid {
                name: "OPENAI_BASE_URL".into(),
                reason: format!("not a valid URL ({e})"),
            })?;
            let model = required(env, "OPENAI_MODEL")?;
            Ok(Arc::new(openai::OpenAiModel::new(
                &base,
                env.text("OPENAI_API_KEY"),
                &model,
                limits,
            )))
        }
        Some("bedrock") => {
            let model_id = required(env, "BEDROCK_MODEL_ID")?;
            Ok(Arc::new(bedrock::BedrockModel::from_env(&model_id, limits).await))
        }
        Some(other) => Err(ConfigError::Invalid {
            name: "MODEL_PROVIDER".into(),
            reason: format!("unknown provider {other:?} (local, openai, bedrock)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_model_is_deterministic() {
        let req = ModelRequest::task("be brief", "summarise");
        let a = LocalModel::default().generate(&req).await.unwrap();
        let b = LocalModel::default().generate(&req).await.unwrap();
        assert_eq!(a, b);
        assert!(a.contains("summarise"));
    }
}
