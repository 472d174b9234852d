//! Bedrock's runtime: the Converse API, `POST /model/{modelId}/converse` ([`FakeServer::bedrock`],
//! in every [`Mode`], refusing what Bedrock refuses with a `ValidationException`), and
//! ConverseStream, `POST /model/{modelId}/converse-stream`, in the AWS event-stream encoding
//! ([`bedrock_streaming`]).

use std::time::Duration;

use hyper::body::Bytes;
use serde_json::{json, Value};

use super::server::Reply;
use super::streaming::{data, serve_streaming};
use super::{streamed_usage, FakeServer, Mode, StreamScript, PLAIN_USAGE};

impl FakeServer {
    /// Bedrock runtime `POST /model/{modelId}/converse`.
    pub async fn bedrock() -> FakeServer {
        Self::start(route).await
    }
}

/// Bedrock's answer to a request it refuses: 400 with a `ValidationException` saying `message`.
fn validation_exception(message: &str) -> Reply {
    (
        400,
        vec![(
            "x-amzn-errortype",
            "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
        )],
        json!({ "message": message }).to_string(),
        Duration::ZERO,
    )
}

fn route(mode: Mode, path: &str, body: &Value) -> Reply {
    if !(path.starts_with("/model/") && path.ends_with("/converse")) {
        return (404, vec![], "{}".into(), Duration::ZERO);
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"][0]["text"].as_str())
        .unwrap_or("")
        .to_string();
    let (input, output) = PLAIN_USAGE;
    let answer = |text: String, usage: bool| {
        let mut reply = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output},
            "metrics": {"latencyMs": 12}
        });
        if let (false, Some(fields)) = (usage, reply.as_object_mut()) {
            fields.remove("usage");
        }
        reply.to_string()
    };
    let reply = |text: String| answer(text, true);
    if let Some(problem) = converse_problem(body) {
        return validation_exception(problem);
    }
    match mode {
        Mode::Ok => (200, vec![], reply(format!("bedrock says: {last}")), Duration::ZERO),
        Mode::NoUsage => (
            200,
            vec![],
            answer(format!("bedrock says: {last}"), false),
            Duration::ZERO,
        ),
        Mode::HttpError => validation_exception("The provided model identifier is invalid."),
        Mode::Slow => (200, vec![], reply("late".into()), Duration::from_secs(5)),
        Mode::Oversized => (200, vec![], reply("x".repeat(200_000)), Duration::ZERO),
        Mode::Throttled => (
            429,
            vec![(
                "x-amzn-errortype",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
            )],
            json!({"message": "Too many requests, please wait before trying again."}).to_string(),
            Duration::ZERO,
        ),
    }
}

/// What Bedrock's Converse API refuses with a `ValidationException`: no messages, a first
/// message that is not the user's, roles that do not alternate, an empty text block.
fn converse_problem(body: &Value) -> Option<&'static str> {
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Some("A conversation must have at least one message.");
    };
    if messages[0]["role"] != "user" {
        return Some("A conversation must start with a user message. Try again with a conversation that starts with a user message.");
    }
    if messages.windows(2).any(|w| w[0]["role"] == w[1]["role"]) {
        return Some("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.");
    }
    let empty = messages.iter().any(|m| {
        m["content"].as_array().is_none_or(|blocks| {
            blocks.is_empty() || blocks.iter().any(|b| b["text"].as_str().is_some_and(str::is_empty))
        })
    });
    empty.then_some("The text field in the ContentBlock object is blank. Add text to the text field, and try again.")
}

/// Bedrock's `POST /model/{modelId}/converse-stream`, streaming as `script` says in the AWS
/// event-stream encoding (`application/vnd.amazon.eventstream`): `messageStart`, one
/// `contentBlockDelta` per word `gap` apart, `contentBlockStop`, `messageStop`, `metadata` (its
/// usage [`streamed_usage`]); or a `modelStreamErrorException` after `break_after` words. Its URL.
pub async fn bedrock_streaming(script: StreamScript) -> String {
    bedrock_streaming_with(script, true).await
}

/// One event-stream frame: an `event` or an `exception` named `name` carrying `payload`.
fn frame(kind: &str, name: &str, payload: &Value) -> Bytes {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let type_header = if kind == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(kind.to_string().into()),
        ))
        .add_header(Header::new(type_header, HeaderValue::String(name.to_string().into())))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_string().into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).expect("an event-stream frame");
    Bytes::from(out)
}

/// [`bedrock_streaming`], ending after `messageStop` without the `metadata` event unless
/// `metadata`.
pub async fn bedrock_streaming_with(script: StreamScript, metadata: bool) -> String {
    let addr = serve_streaming("application/vnd.amazon.eventstream", move |_req, tx| {
        let script = script.clone();
        async move {
            if tx.send(data(frame("event", "messageStart", &json!({"role": "assistant"})))).await.is_err() {
                return;
            }
            for (i, word) in script.words.iter().enumerate() {
                // The provider's pace: one word every `gap`.
                tokio::time::sleep(script.gap).await;
                if script.break_after == Some(i) {
                    let error = json!({"message": "The model stopped unexpectedly.", "originalStatusCode": 500});
                    let _ = tx.send(data(frame("exception", "modelStreamErrorException", &error))).await;
                    return;
                }
                let delta = json!({"contentBlockIndex": 0, "delta": {"text": word}});
                if tx.send(data(frame("event", "contentBlockDelta", &delta))).await.is_err() {
                    return;
                }
            }
            let (input, output) = streamed_usage(&script);
            let end = [
                ("contentBlockStop", json!({"contentBlockIndex": 0})),
                ("messageStop", json!({"stopReason": "end_turn"})),
                (
                    "metadata",
                    json!({"usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output}, "metrics": {"latencyMs": 12}}),
                ),
            ];
            for (name, payload) in end.into_iter().filter(|(name, _)| metadata || *name != "metadata") {
                let _ = tx.send(data(frame("event", name, &payload))).await;
            }
        }
    })
    .await;
    format!("http://{addr}")
}
