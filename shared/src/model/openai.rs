//! Any OpenAI-compatible chat-completions endpoint (`POST {base}/chat/completions`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{AgentModel, ModelError, ModelLimits, ModelRequest, Reply, StreamedReply, TextStream, Usage, UsageSlot};
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

/// A reply's or a stream's `usage` (`prompt_tokens`, `completion_tokens`): both counts present
/// as non-negative integers, else `None` (unknown; a missing or malformed count is never a 0).
pub fn usage_of(usage: &Value) -> Option<Usage> {
    let count = |name: &str| usage[name].as_u64().and_then(|n| i64::try_from(n).ok());
    Some(Usage {
        input_tokens: count("prompt_tokens")?,
        output_tokens: count("completion_tokens")?,
    })
}

/// A successful `chat.completion` body as a reply: its text (bounded), its usage and the model
/// the provider says wrote it (else `configured`, the one asked for).
fn reply_of(body: &Value, configured: &str, max_reply_bytes: usize) -> Result<Reply, ModelError> {
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| ModelError::Failed("the reply has no choices[0].message.content".into()))?;
    if text.len() > max_reply_bytes {
        return Err(ModelError::TooLarge(max_reply_bytes));
    }
    let model = body["model"]
        .as_str()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(configured);
    Ok(Reply {
        text: text.to_string(),
        usage: usage_of(&body["usage"]),
        model: Some(model.to_string()),
    })
}

/// The text of an OpenAI-compatible streamed reply (`stream: true`): Server-Sent Events whose
/// `data:` is a `chat.completion.chunk` (text in `choices[0].delta.content`) until `data: [DONE]`.
/// Fed bytes as they arrive; bounded in reply bytes and in bytes waiting for an event's end.
/// With `stream_options.include_usage` the last chunk before `[DONE]` has no choices and the
/// reply's `usage`: kept in [`SseText::usage`].
#[derive(Debug)]
pub struct SseText {
    buffer: Vec<u8>,
    reply_bytes: usize,
    max_reply_bytes: usize,
    /// `[DONE]` seen, or an error given: nothing more comes.
    pub finished: bool,
    /// The last well-formed `usage` a chunk carried (`None`: none yet, or the provider sends none).
    pub usage: Option<Usage>,
}

impl SseText {
    pub fn new(max_reply_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            reply_bytes: 0,
            max_reply_bytes,
            finished: false,
            usage: None,
        }
    }

    /// The chunks (or the error) the bytes complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<String, ModelError>> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.buffer.extend_from_slice(bytes);
        while let Some((end, sep)) = event_end(&self.buffer) {
            let event: Vec<u8> = self.buffer.drain(..end + sep).collect();
            let event = String::from_utf8_lossy(&event[..end]).into_owned();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    self.finished = true;
                    return out;
                }
                let chunk: Value = match serde_json::from_str(data) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        // A chunk we cannot read would lose its text silently: the stream fails.
                        tracing::warn!(error = %crate::telemetry::Chain(&e), "a stream chunk is not JSON");
                        self.finished = true;
                        out.push(Err(ModelError::Failed(
                            "the stream sent a chunk that is not JSON".into(),
                        )));
                        return out;
                    }
                };
                if let Some(message) = chunk["error"]["message"].as_str() {
                    self.finished = true;
                    out.push(Err(ModelError::Failed(format!(
                        "the stream failed: {}",
                        short(message)
                    ))));
                    return out;
                }
                if let Some(usage) = usage_of(&chunk["usage"]) {
                    self.usage = Some(usage);
                }
                if let Some(text) = chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                {
                    self.reply_bytes += text.len();
                    if self.reply_bytes > self.max_reply_bytes {
                        self.finished = true;
                        out.push(Err(ModelError::TooLarge(self.max_reply_bytes)));
                        return out;
                    }
                    out.push(Ok(text.to_string()));
                }
            }
        }
        // An event longer than any reply could be is not an event.
        if self.buffer.len() > self.max_reply_bytes * 2 + 16 * 1024 {
            self.finished = true;
            out.push(Err(ModelError::TooLarge(self.max_reply_bytes)));
        }
        out
    }
}

/// Where the first complete event ends: its length and the blank line's.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
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
        let filled = usage.clone();
        let state = (
            response.bytes_stream().boxed(),
            SseText::new(limits.max_reply_bytes),
            std::collections::VecDeque::<Result<String, ModelError>>::new(),
        );
        let text: TextStream = Box::pin(futures_util::stream::unfold(
            state,
            move |(mut bytes, mut sse, mut ready)| {
                let filled = filled.clone();
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
                            }
                        }
                    }
                }
            },
        ));
        Ok(StreamedReply {
            text,
            usage,
            model: Some(self.model.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn chunk(text: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})
        )
    }

    #[test]
    fn streamed_chunks_are_read_across_arbitrary_byte_boundaries() {
        let wire = format!(
            ": keep-alive\n\n{}{}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\r\n\r\n{}data: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo, "),
            chunk("wörld")
        );
        for step in [1, 3, 7, 64, wire.len()] {
            let mut sse = SseText::new(1024);
            let mut text = String::new();
            for piece in wire.as_bytes().chunks(step) {
                for item in sse.push(piece) {
                    text.push_str(&item.unwrap());
                }
            }
            assert_eq!(text, "Hello, wörld", "step {step}");
            assert!(sse.finished);
        }
    }

    #[test]
    fn a_stream_error_or_an_oversized_reply_ends_the_stream_with_an_error() {
        let mut sse = SseText::new(1024);
        let items = sse.push(b"data: {\"error\": {\"message\": \"overloaded\"}}\n\n");
        assert!(matches!(&items[..], [Err(ModelError::Failed(m))] if m.contains("overloaded")));
        let mut small = SseText::new(4);
        let items = small.push(chunk("far too long").as_bytes());
        assert_eq!(items, vec![Err(ModelError::TooLarge(4))]);
        let mut endless = SseText::new(4);
        let items = endless.push(&vec![b'x'; 20_000]);
        assert_eq!(items, vec![Err(ModelError::TooLarge(4))]);
    }

    #[test]
    fn the_usage_chunk_at_the_streams_end_is_read_and_chunks_without_usage_are_not_usage() {
        let text_chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}], "usage": null})
            )
        };
        let last = json!({"object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}});
        let wire = format!(
            "{}{}data: {last}\n\ndata: [DONE]\n\n",
            text_chunk("Hi"),
            text_chunk(" there")
        );
        for step in [1, 5, wire.len()] {
            let mut sse = SseText::new(1024);
            let mut text = String::new();
            for piece in wire.as_bytes().chunks(step) {
                for item in sse.push(piece) {
                    text.push_str(&item.unwrap());
                }
            }
            assert_eq!(text, "Hi there", "step {step}");
            assert_eq!(
                sse.usage,
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 7
                }),
                "step {step}"
            );
        }
        let mut without = SseText::new(1024);
        without.push(format!("{}data: [DONE]\n\n", text_chunk("Hi")).as_bytes());
        assert!(without.finished);
        assert_eq!(without.usage, None, "no usage chunk: unknown, not 0");
    }

    #[test]
    fn usage_that_is_missing_or_malformed_is_unknown_never_zero() {
        assert_eq!(
            usage_of(&json!({"prompt_tokens": 3, "completion_tokens": 0})),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 0
            })
        );
        for bad in [
            Value::Null,
            json!({}),
            json!({"total_tokens": 10}),
            json!({"prompt_tokens": 3}),
            json!({"prompt_tokens": "3", "completion_tokens": 4}),
            json!({"prompt_tokens": -1, "completion_tokens": 4}),
            json!({"prompt_tokens": 1.5, "completion_tokens": 4}),
            json!({"prompt_tokens": u64::MAX, "completion_tokens": 4}),
        ] {
            assert_eq!(usage_of(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_replys_model_is_the_one_the_provider_names_else_the_one_asked_for() {
        let body = |model: Value| {
            json!({"model": model, "choices": [{"message": {"content": "hi"}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
        };
        let named = reply_of(&body(json!("gpt-x-2025-01-01")), "gpt-x", 1024).unwrap();
        assert_eq!(named.model.as_deref(), Some("gpt-x-2025-01-01"));
        assert_eq!(
            named.usage,
            Some(Usage {
                input_tokens: 2,
                output_tokens: 1
            })
        );
        for unnamed in [Value::Null, json!(""), json!(7)] {
            let reply = reply_of(&body(unnamed), "gpt-x", 1024).unwrap();
            assert_eq!(reply.model.as_deref(), Some("gpt-x"));
        }
        assert_eq!(reply_of(&body(json!("m")), "m", 1), Err(ModelError::TooLarge(1)));
    }

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
