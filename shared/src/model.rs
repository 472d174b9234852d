//! The agent model behind one trait: the reply to a chat message and the work of a task.
//! The deterministic local model is the default so the product runs offline; remote clients
//! (Bedrock, OpenAI-compatible) plug in behind the same trait.

use std::sync::Arc;

use async_trait::async_trait;

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

/// The model chosen by `MODEL_PROVIDER` (`local`, the default when unset).
pub fn from_env<F: Fn(&str) -> Option<String>>(
    env: &crate::config::Env<F>,
) -> Result<SharedModel, crate::config::ConfigError> {
    match (env.0)("MODEL_PROVIDER").as_deref().map(str::trim) {
        None | Some("") | Some("local") => {
            let latency = match (env.0)("LOCAL_MODEL_LATENCY_MS").as_deref().map(str::trim) {
                None | Some("") => 0,
                Some(v) => v.parse::<u64>().ok().filter(|ms| *ms <= 600_000).ok_or_else(|| {
                    crate::config::ConfigError::Invalid {
                        name: "LOCAL_MODEL_LATENCY_MS".into(),
                        reason: "expected a whole number of milliseconds up to 600000".into(),
                    }
                })?,
            };
            Ok(Arc::new(LocalModel {
                latency: std::time::Duration::from_millis(latency),
            }))
        }
        Some(other) => Err(crate::config::ConfigError::Invalid {
            name: "MODEL_PROVIDER".into(),
            reason: format!("unknown provider {other:?} (available: local)"),
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
