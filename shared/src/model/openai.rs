//! Any OpenAI-compatible chat-completions endpoint (`POST {base}/chat/completions`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{AgentModel, ModelError, ModelLimits, ModelRequest};
use crate::outbound::{read_capped, ReadError};

pub struct OpenAiModel {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
    limits: ModelLimits,
}

impl OpenAiModel {
    pub fn new(base_url: &str, api_key: Option<String>, model: &str, limits: ModelLimits) -> Self {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout.min(Duration::from_secs(5)))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.filter(|k| !k.is_empty()),
            model: model.to_string(),
            limits,
        }
    }

    fn body(&self, request: &ModelRequest) -> Value {
        let mut messages = vec![json!({"role": "system", "content": request.instructions})];
        messages.extend(request.messages.iter().map(|m| {
            json!({
                "role": m.role.as_str(),
                "content": m.content,
            })
        }));
        json!({"model": self.model, "messages": messages, "max_tokens": self.limits.max_tokens})
    }

    fn transport_error(&self, e: &reqwest::Error) -> ModelError {
        if e.is_timeout() {
            ModelError::Timeout(self.limits.timeout.as_millis() as u64)
        } else if e.is_connect() {
            ModelError::Failed("the model endpoint is unreachable".into())
        } else {
            ModelError::Failed("the model endpoint connection failed".into())
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

#[async_trait]
impl AgentModel for OpenAiModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        let mut call = self.http.post(&self.url).json(&self.body(request));
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let mut response = call.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        // The reply text is capped; the JSON around it may add some framing.
        let cap = self.limits.max_reply_bytes * 2 + 16 * 1024;
        let raw = match read_capped(&mut response, cap).await {
            Ok(raw) => raw,
            Err(ReadError::TooLarge(_)) => return Err(ModelError::TooLarge(self.limits.max_reply_bytes)),
            Err(ReadError::Transport(e)) => return Err(self.transport_error(&e)),
        };
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["error"]["message"].as_str().map(short).unwrap_or_default();
            return Err(ModelError::Failed(format!("HTTP {}: {detail}", status.as_u16())));
        }
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ModelError::Failed("the reply has no choices[0].message.content".into()))?;
        if text.len() > self.limits.max_reply_bytes {
            return Err(ModelError::TooLarge(self.limits.max_reply_bytes));
        }
        Ok(text.to_string())
    }
}
