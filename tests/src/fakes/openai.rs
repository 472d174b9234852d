//! An OpenAI-compatible provider: `POST /v1/chat/completions`, answered whole
//! ([`FakeServer::openai`], in every [`Mode`]) or streamed as Server-Sent Events
//! ([`openai_streaming`], as a [`StreamScript`] says), with OpenAI's `usage`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::server::Reply;
use super::streaming::{data, serve_streaming};
use super::{streamed_usage, FakeServer, LastWritten, Mode, Seen, StreamScript, PLAIN_USAGE};

impl FakeServer {
    /// OpenAI-compatible `POST /v1/chat/completions`.
    pub async fn openai() -> FakeServer {
        Self::start(route).await
    }
}

/// The text of the last message of a chat-completions request.
fn last_message(body: &Value) -> &str {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
}

fn route(mode: Mode, path: &str, body: &Value) -> Reply {
    if path != "/v1/chat/completions" {
        return (404, vec![], "{}".into(), Duration::ZERO);
    }
    let last = last_message(body);
    // OpenAI answers with the model it resolved an alias to: `…-latest` names a dated one.
    let model = match body["model"].as_str() {
        Some(alias) if alias.ends_with("-latest") => json!(alias.replace("-latest", "-2025-01-01")),
        _ => body["model"].clone(),
    };
    let (input, output) = PLAIN_USAGE;
    let reply = |content: String| {
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1_795_780_800,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
        })
    };
    let text = |reply: Value| reply.to_string();
    match mode {
        Mode::Ok => (200, vec![], text(reply(format!("openai says: {last}"))), Duration::ZERO),
        Mode::NoUsage => {
            let mut reply = reply(format!("openai says: {last}"));
            if let Some(fields) = reply.as_object_mut() {
                fields.remove("usage");
            }
            (200, vec![], text(reply), Duration::ZERO)
        }
        Mode::HttpError => (
            500,
            vec![],
            json!({"error": {"message": "The server had an error", "type": "server_error"}}).to_string(),
            Duration::ZERO,
        ),
        Mode::Slow => (200, vec![], text(reply("late".into())), Duration::from_secs(5)),
        Mode::Oversized => (200, vec![], text(reply("x".repeat(200_000))), Duration::ZERO),
        Mode::Throttled => (
            429,
            vec![("retry-after", "2".to_string()), ("x-ratelimit-reset-requests", "6m0s".to_string())],
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}})
                .to_string(),
            Duration::ZERO,
        ),
    }
}

/// An OpenAI-compatible `POST /v1/chat/completions` that streams (`text/event-stream`) as
/// `script` says, whatever it is asked, and reports usage as OpenAI does. Its URL (the base, with
/// `/v1`) and when it wrote the last word.
pub async fn openai_streaming(script: StreamScript) -> (String, LastWritten) {
    let provider = openai_streaming_provider(script, true).await;
    (provider.url, provider.last_written)
}

/// A streaming OpenAI-compatible stand-in: where it is, when it wrote its last word, what it
/// was sent.
pub struct StreamingProvider {
    /// The base URL, with `/v1`.
    pub url: String,
    pub last_written: LastWritten,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// [`openai_streaming`], recording each request. With `usage` it reports [`streamed_usage`] as
/// OpenAI does: in a plain reply always; in a stream only when the request asked
/// `stream_options.include_usage` (then every chunk has `"usage": null` and a last chunk, with no
/// choices, the usage). Without `usage` it is a provider that reports none.
pub async fn openai_streaming_provider(script: StreamScript, usage: bool) -> StreamingProvider {
    let last: LastWritten = Arc::default();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (written, recorded) = (last.clone(), seen.clone());
    let addr = serve_streaming("text/event-stream", move |req, tx| {
        let (script, written, recorded) = (script.clone(), written.clone(), recorded.clone());
        async move {
            let request = Seen::capture(req).await;
            let body = request.body.clone();
            recorded.lock().unwrap().push(request);
            let (input, output) = streamed_usage(&script);
            let counts = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
            if body["stream"] != true {
                // The provider writing the whole reply before answering.
                tokio::time::sleep(script.gap * u32::try_from(script.words.len()).unwrap_or(0)).await;
                let mut reply = json!({
                    "id": "chatcmpl-whole", "object": "chat.completion", "created": 1_795_780_800,
                    "model": "gpt-test",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": script.words.concat()}, "finish_reason": "stop"}]
                });
                if usage {
                    reply["usage"] = counts;
                }
                let _ = tx.send(data(reply.to_string())).await;
                return;
            }
            let include_usage = usage && body["stream_options"]["include_usage"] == true;
            // Only the message being answered decides: the end of the last one (an unanswered
            // message before it is joined to it).
            let last = last_message(&body);
            let breaks = script.break_when.is_none_or(|w| last.ends_with(w));
            for (i, word) in script.words.iter().enumerate() {
                // The provider's pace: one word every `gap`.
                tokio::time::sleep(script.gap).await;
                if breaks && script.break_after == Some(i) {
                    // What was written has had a gap to reach the client: cut now.
                    let _ = tx.send(Err(std::io::Error::other("connection reset"))).await;
                    return;
                }
                let mut event = json!({
                    "id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1_795_780_800,
                    "model": "gpt-test",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]
                });
                if include_usage {
                    event["usage"] = Value::Null;
                }
                if tx.send(data(format!("data: {event}\n\n"))).await.is_err() {
                    return;
                }
                *written.lock().unwrap() = Some(Instant::now());
            }
            if include_usage {
                let event = json!({
                    "id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1_795_780_800,
                    "model": "gpt-test", "choices": [], "usage": counts
                });
                if tx.send(data(format!("data: {event}\n\n"))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(data("data: [DONE]\n\n")).await;
        }
    })
    .await;
    StreamingProvider {
        url: format!("http://{addr}/v1"),
        last_written: last,
        seen,
    }
}
