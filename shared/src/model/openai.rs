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

/// When a throttled caller may come back: `Retry-After` (seconds or an HTTP date), else the
/// earliest of OpenAI's `x-ratelimit-reset-requests` / `-tokens` (`1s`, `6m0s`, `250ms`).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default());
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| text(h).and_then(go_duration))
        .min()
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `1h2m3.5s`, `250ms`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += value
            * match unit {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return None,
            };
        rest = next;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(3600.0)))
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
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ModelError::Failed("the reply has no choices[0].message.content".into()))?;
        if text.len() > self.limits.max_reply_bytes {
            return Err(ModelError::TooLarge(self.limits.max_reply_bytes));
        }
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_comes_from_the_header_or_openais_rate_limit_headers() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("x-ratelimit-reset-requests", "6m0s"),
                ("x-ratelimit-reset-tokens", "1.5s")
            ])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset-tokens", "250ms")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(go_duration("1m2.5s"), Some(Duration::from_millis(62_500)));
        assert_eq!(go_duration("2h"), Some(Duration::from_secs(3600)), "capped at an hour");
        assert_eq!(go_duration("3x"), None);
    }
}
