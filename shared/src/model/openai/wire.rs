//! The chat-completions wire format: the request body (messages, tool calls and results, the
//! tools offered), a whole reply read back (text, tool calls, usage, model), and when a
//! throttled caller may come back.

use std::time::Duration;

use serde_json::{json, Value};

use super::super::{ModelError, ModelRequest, Reply, Role, ToolCall, Usage};

/// The body of `POST /chat/completions` asking `model` for at most `max_tokens`: the
/// instructions as the system message, the conversation (an assistant's tool calls as
/// `tool_calls`, each result as a `tool` message) and the tools, as `function`s.
pub fn body(model: &str, max_tokens: u32, request: &ModelRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.instructions})];
    messages.extend(request.messages.iter().map(|m| match m.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.as_deref().unwrap_or_default(),
            "content": m.content,
        }),
        Role::Assistant if !m.tool_calls.is_empty() => json!({
            "role": "assistant",
            // OpenAI takes `null` for an assistant message that only calls tools.
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_text()},
            })).collect::<Vec<_>>(),
        }),
        role => json!({"role": role.as_str(), "content": m.content}),
    }));
    let mut body = json!({"model": model, "messages": messages, "max_tokens": max_tokens});
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
    }
    body
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

pub(super) fn short(text: &str) -> String {
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

/// A message's `tool_calls` (`[{"id", "type": "function", "function": {"name", "arguments"}}]`;
/// absent or `null`: none). A call without an id or a name is the provider's error.
fn tool_calls_of(calls: &Value) -> Result<Vec<ToolCall>, ModelError> {
    let Some(calls) = calls.as_array() else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .map(|c| {
            let id = c["id"].as_str().filter(|id| !id.is_empty());
            let name = c["function"]["name"].as_str().filter(|n| !n.is_empty());
            match (id, name) {
                (Some(id), Some(name)) => Ok(ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: ToolCall::arguments_of(c["function"]["arguments"].as_str().unwrap_or_default()),
                }),
                _ => Err(ModelError::Failed("a tool call has no id or no function name".into())),
            }
        })
        .collect()
}

/// A successful `chat.completion` body as a reply: its text and tool calls (bounded together),
/// its usage and the model the provider says wrote it (else `configured`, the one asked for).
/// A message with tool calls may have no text (`content: null`).
pub fn reply_of(body: &Value, configured: &str, max_reply_bytes: usize) -> Result<Reply, ModelError> {
    let message = &body["choices"][0]["message"];
    let tool_calls = tool_calls_of(&message["tool_calls"])?;
    let text = match message["content"].as_str() {
        Some(text) => text,
        None if !tool_calls.is_empty() => "",
        None => return Err(ModelError::Failed("the reply has no choices[0].message.content".into())),
    };
    let size = text.len()
        + tool_calls
            .iter()
            .map(|c| c.name.len() + c.arguments_text().len())
            .sum::<usize>();
    if size > max_reply_bytes {
        return Err(ModelError::TooLarge(max_reply_bytes));
    }
    let model = body["model"]
        .as_str()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(configured);
    Ok(Reply {
        text: text.to_string(),
        tool_calls,
        usage: usage_of(&body["usage"]),
        model: Some(model.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::{ChatMessage, ToolSpec};
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

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

    #[test]
    fn a_reply_that_calls_tools_gives_them_in_order_and_may_have_no_text() {
        let body = json!({"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "not json"}}
        ]}}]});
        let reply = reply_of(&body, "m", 1024).unwrap();
        assert_eq!(reply.text, "");
        assert_eq!(
            reply.tool_calls,
            vec![
                ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Oslo"})
                },
                ToolCall {
                    id: "call_2".into(),
                    name: "time".into(),
                    arguments: json!("not json")
                },
            ]
        );
        let nameless = json!({"choices": [{"message": {"content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}}]});
        assert!(matches!(reply_of(&nameless, "m", 1024), Err(ModelError::Failed(_))));
        assert_eq!(reply_of(&body, "m", 20), Err(ModelError::TooLarge(20)));
    }

    #[test]
    fn the_body_carries_tool_calls_their_results_and_the_tools_as_openai_expects() {
        let request = ModelRequest {
            instructions: "be brief".into(),
            messages: vec![
                ChatMessage::text(Role::User, "weather?"),
                ChatMessage::calls(
                    "",
                    vec![ToolCall {
                        id: "call_1".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Oslo"}),
                    }],
                ),
                ChatMessage::tool_result("call_1", r#"{"temp":3}"#),
            ],
            tools: vec![ToolSpec {
                name: "weather".into(),
                description: "The weather in a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
        };
        assert_eq!(
            body("gpt-x", 100, &request),
            json!({"model": "gpt-x", "max_tokens": 100, "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":3}"}
            ], "tools": [{"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
        );
        let plain = ModelRequest::task("", "hi");
        assert!(body("m", 1, &plain).get("tools").is_none(), "no tools: no `tools` key");
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
