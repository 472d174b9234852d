//! A model that calls tools (issue 22), as OpenAI's chat completions (`tool_calls`, whole or
//! streamed as `delta.tool_calls` pieces) and Bedrock's Converse and ConverseStream (`toolUse`
//! blocks, `contentBlockStart` + `toolUse` deltas) write them, following a [`ToolScript`]. It
//! checks each request's history the way the providers do (every call answered right after
//! it, by id, once; no result without its call) and refuses an invalid one as they would
//! (OpenAI's 400 `invalid_request_error`, Bedrock's `ValidationException`).
//!
//! Under a quota ([`ToolModel::start_with_quota`]) it admits at most that many calls at once and
//! throttles the others as the providers do (OpenAI's 429 with `Retry-After`, Bedrock's
//! `ThrottlingException`), counting them in `load`, and keeps each call's times in `calls`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};

use super::{Load, Seen, PLAIN_USAGE};
use crate::runtime::serve_http;

/// One step of the model's script: call these tools (name, arguments), or answer.
#[derive(Debug, Clone)]
pub enum Step {
    Call(Vec<(&'static str, Value)>),
    Answer(&'static str),
}

/// The model's steps in a run, one per call of the model since the last user message; past
/// the end it repeats the last step (a script ending in a `Call` calls tools forever). Each
/// call of the model takes `latency`.
#[derive(Debug, Clone)]
pub struct ToolScript {
    pub steps: Vec<Step>,
    pub latency: Duration,
}

impl ToolScript {
    /// Three steps, no latency: two `weather` calls at once (Oslo, Bergen), then one `compare`
    /// call, then the answer `Oslo is warmer.`.
    pub fn three_steps() -> Self {
        Self {
            steps: vec![
                Step::Call(vec![
                    ("weather", json!({"city": "Oslo"})),
                    ("weather", json!({"city": "Bergen"})),
                ]),
                Step::Call(vec![("compare", json!({"a": 3, "b": 1}))]),
                Step::Answer("Oslo is warmer."),
            ],
            latency: Duration::ZERO,
        }
    }
}

/// The stand-in on 127.0.0.1: its base URLs and what it was sent.
pub struct ToolModel {
    /// OpenAI-compatible base URL (with `/v1`).
    pub openai_url: String,
    /// Bedrock runtime endpoint.
    pub bedrock_url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Calls in flight, admitted and throttled (under a quota).
    pub load: Arc<Load>,
    /// Every call's times (under a quota), in the order answered.
    pub calls: Arc<Mutex<Vec<ModelCall>>>,
    /// Whether requests are kept in `seen` (off for long load runs).
    pub record: Arc<AtomicBool>,
}

/// One call as the stand-in saw it: the run's prompt (the last user message's text), when it
/// arrived and was answered, and whether the quota admitted it.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub prompt: String,
    pub received: SystemTime,
    pub answered: SystemTime,
    pub admitted: bool,
}

/// Counts an admitted call in flight until dropped (also when the caller hangs up).
struct Admitted(Arc<Load>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The text of the last user message with text (OpenAI's string content, Bedrock's text blocks).
fn prompt_of(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "user")
        .find_map(|m| {
            m["content"].as_str().map(str::to_string).or_else(|| {
                m["content"]
                    .as_array()
                    .and_then(|blocks| blocks.iter().find_map(|b| b["text"].as_str().map(str::to_string)))
            })
        })
        .unwrap_or_default()
}

impl ToolModel {
    pub async fn start(script: ToolScript) -> Self {
        Self::serve(script, None).await
    }

    /// A stand-in admitting at most `concurrent` calls at once, each answered after the script's
    /// latency; beyond it, the provider's throttling answer at once.
    pub async fn start_with_quota(script: ToolScript, concurrent: usize) -> Self {
        Self::serve(script, Some(concurrent)).await
    }

    /// Stops keeping requests in `seen` (a long load run would keep every one); `calls` go on.
    pub fn stop_recording(&self) {
        self.record.store(false, Ordering::SeqCst);
    }

    async fn serve(script: ToolScript, quota: Option<usize>) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let load = Arc::new(Load::default());
        let calls: Arc<Mutex<Vec<ModelCall>>> = Arc::default();
        let record = Arc::new(AtomicBool::new(true));
        let (recorded, loaded, timed, keep) = (seen.clone(), load.clone(), calls.clone(), record.clone());
        let addr = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
            let (script, recorded) = (script.clone(), recorded.clone());
            let (load, timed, keep) = (loaded.clone(), timed.clone(), keep.clone());
            async move {
                let received = SystemTime::now();
                let request = Seen::capture(req).await;
                let (path, body) = (request.path.clone(), request.body.clone());
                if keep.load(Ordering::SeqCst) {
                    recorded.lock().unwrap().push(request);
                }
                let admitted = quota.map(|concurrent| {
                    let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    let guard = Admitted(load.clone());
                    if now > concurrent {
                        drop(guard);
                        load.throttled.fetch_add(1, Ordering::SeqCst);
                        None
                    } else {
                        load.peak.fetch_max(now, Ordering::SeqCst);
                        load.admitted.fetch_add(1, Ordering::SeqCst);
                        Some(guard)
                    }
                });
                if let Some(admitted) = admitted {
                    let call = |admitted: bool| ModelCall {
                        prompt: prompt_of(&body),
                        received,
                        answered: SystemTime::now(),
                        admitted,
                    };
                    let Some(guard) = admitted else {
                        timed.lock().unwrap().push(call(false));
                        return throttled(&path);
                    };
                    tokio::time::sleep(script.latency).await;
                    drop(guard);
                    timed.lock().unwrap().push(call(true));
                } else {
                    tokio::time::sleep(script.latency).await;
                }
                let (status, content_type, bytes) = if path == "/v1/chat/completions" {
                    openai(&script, &body)
                } else if path.starts_with("/model/") && path.ends_with("/converse") {
                    bedrock(&script, &body)
                } else if path.starts_with("/model/") && path.ends_with("/converse-stream") {
                    bedrock_stream(&script, &body)
                } else {
                    (404, "application/json", Bytes::from_static(b"{}"))
                };
                let mut response = hyper::Response::builder()
                    .status(status)
                    .header("content-type", content_type);
                if status == 400 && content_type == "application/json" && path.starts_with("/model/") {
                    response = response.header(
                        "x-amzn-errortype",
                        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                    );
                }
                response.body(Full::new(bytes)).expect("a valid response")
            }
        })
        .await;
        Self {
            openai_url: format!("http://{addr}/v1"),
            bedrock_url: format!("http://{addr}"),
            seen,
            load,
            calls,
            record,
        }
    }

    /// The request bodies, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().map(|s| s.body.clone()).collect()
    }
}

/// The provider's throttling answer: OpenAI's 429 with `Retry-After`, Bedrock's
/// `ThrottlingException`.
fn throttled(path: &str) -> hyper::Response<Full<Bytes>> {
    let response = hyper::Response::builder()
        .status(429)
        .header("content-type", "application/json");
    let (response, body) = if path.starts_with("/model/") {
        (
            response.header(
                "x-amzn-errortype",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
            json!({"message": "Too many requests, please wait before trying again."}),
        )
    } else {
        (
            response.header("retry-after", "2"),
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}),
        )
    };
    response
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// The step a request is at: the assistant messages since the last user message with text.
fn step<'a>(script: &'a ToolScript, messages: &[Value], user_text: impl Fn(&Value) -> bool) -> (usize, &'a Step) {
    let start = messages.iter().rposition(user_text).map_or(0, |i| i + 1);
    let index = messages[start..].iter().filter(|m| m["role"] == "assistant").count();
    let step = script
        .steps
        .get(index)
        .or(script.steps.last())
        .expect("a script with at least one step");
    (index, step)
}

/// The calls of `step` number `index`: ids `call_<index>_<i>`; an argument whose value is the
/// string `"{prompt}"` becomes the run's prompt (the last user message's text of `body`), so a
/// tool can tell runs apart.
fn calls(index: usize, calls: &[(&'static str, Value)], body: &Value) -> Vec<(String, &'static str, Value)> {
    let prompt = Value::String(prompt_of(body));
    calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            let mut arguments = arguments.clone();
            if let Value::Object(fields) = &mut arguments {
                for value in fields.values_mut().filter(|v| v.as_str() == Some("{prompt}")) {
                    *value = prompt.clone();
                }
            }
            (format!("call_{index}_{i}"), *name, arguments)
        })
        .collect()
}

/// What OpenAI refuses in a history of tool turns.
fn openai_problem(messages: &[Value]) -> Option<String> {
    let mut open: Vec<String> = Vec::new();
    for m in messages {
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or_default().to_string();
            let Some(i) = open.iter().position(|o| *o == id) else {
                return Some("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into());
            };
            open.remove(i);
            continue;
        }
        if !open.is_empty() {
            return Some(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                open.join(", ")
            ));
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            open = calls
                .iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect();
        }
    }
    (!open.is_empty()).then(|| format!("tool_call_ids without response messages: {}", open.join(", ")))
}

fn openai(script: &ToolScript, body: &Value) -> (u16, &'static str, Bytes) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if let Some(problem) = openai_problem(&messages) {
        let error = json!({"error": {"message": problem, "type": "invalid_request_error", "code": null}});
        return (400, "application/json", Bytes::from(error.to_string()));
    }
    let (index, step) = step(script, &messages, |m| m["role"] == "user");
    let (input, output) = PLAIN_USAGE;
    let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    let streamed = body["stream"] == true;
    let mut message = json!({"role": "assistant", "content": null});
    let finish = match step {
        Step::Answer(text) => {
            message["content"] = json!(text);
            "stop"
        }
        Step::Call(list) => {
            message["tool_calls"] = calls(index, list, body)
                .into_iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}})
                })
                .collect();
            "tool_calls"
        }
    };
    if !streamed {
        let reply = json!({"id": "chatcmpl-tools", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        return (200, "application/json", Bytes::from(reply.to_string()));
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-tools", "object": "chat.completion.chunk", "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut wire = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    match step {
        Step::Answer(text) => {
            for word in text.split_inclusive(' ') {
                wire.push_str(&chunk(json!({"content": word}), Value::Null));
            }
        }
        Step::Call(list) => {
            // As OpenAI streams them: the id and name first, the arguments in pieces.
            for (i, (id, name, arguments)) in calls(index, list, body).into_iter().enumerate() {
                let text = arguments.to_string();
                let (a, b) = text.split_at(text.len() / 2);
                wire.push_str(&chunk(
                    json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in [a, b] {
                    wire.push_str(&chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
        }
    }
    wire.push_str(&chunk(json!({}), json!(finish)));
    if body["stream_options"]["include_usage"] == true {
        wire.push_str(&format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        ));
    }
    wire.push_str("data: [DONE]\n\n");
    (200, "text/event-stream", Bytes::from(wire))
}

/// What Bedrock refuses: roles that do not alternate, a first message not the user's, a
/// `toolUse` not answered by a `toolResult` in the next (user) message, a `toolResult` that
/// answers no `toolUse` of the message before.
fn bedrock_problem(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array().filter(|m| !m.is_empty())?;
    if messages[0]["role"] != "user" {
        return Some("A conversation must start with a user message.".into());
    }
    if messages.windows(2).any(|w| w[0]["role"] == w[1]["role"]) {
        return Some("A conversation must alternate between user and assistant roles.".into());
    }
    let ids = |m: &Value, kind: &str| -> Vec<String> {
        m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b[kind]["toolUseId"].as_str().map(str::to_string))
            .collect()
    };
    for (i, m) in messages.iter().enumerate() {
        let results = ids(m, "toolResult");
        let asked = i
            .checked_sub(1)
            .map(|p| ids(&messages[p], "toolUse"))
            .unwrap_or_default();
        let mut answered = results.clone();
        answered.sort();
        let mut expected = asked.clone();
        expected.sort();
        if m["role"] == "user" && answered != expected {
            return Some(format!(
                "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn, or they do not match: {results:?} for {asked:?}"
            ));
        }
        if m["role"] == "assistant" && i + 1 == messages.len() && !ids(m, "toolUse").is_empty() {
            return Some("The last assistant message has toolUse blocks without toolResult.".into());
        }
    }
    None
}

fn bedrock_step<'a>(script: &'a ToolScript, body: &Value) -> (usize, &'a Step) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    step(script, &messages, |m| {
        m["role"] == "user"
            && m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b.get("text").is_some()))
    })
}

fn validation(problem: &str) -> (u16, &'static str, Bytes) {
    (
        400,
        "application/json",
        Bytes::from(json!({"message": problem}).to_string()),
    )
}

fn bedrock(script: &ToolScript, body: &Value) -> (u16, &'static str, Bytes) {
    if let Some(problem) = bedrock_problem(body) {
        return validation(&problem);
    }
    let (index, step) = bedrock_step(script, body);
    let (content, stop) = match step {
        Step::Answer(text) => (json!([{"text": text}]), "end_turn"),
        Step::Call(list) => (
            calls(index, list, body)
                .into_iter()
                .map(|(id, name, input)| json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
                .collect(),
            "tool_use",
        ),
    };
    let (input, output) = PLAIN_USAGE;
    let reply = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output},
        "metrics": {"latencyMs": 12}
    });
    (200, "application/json", Bytes::from(reply.to_string()))
}

/// One event-stream frame of the event `name`.
fn frame(name: &str, payload: &Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".to_string().into()),
        ))
        .add_header(Header::new(":event-type", HeaderValue::String(name.to_string().into())))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_string().into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).expect("an event-stream frame");
    out
}

fn bedrock_stream(script: &ToolScript, body: &Value) -> (u16, &'static str, Bytes) {
    if let Some(problem) = bedrock_problem(body) {
        return validation(&problem);
    }
    let (index, step) = bedrock_step(script, body);
    let mut wire = frame("messageStart", &json!({"role": "assistant"}));
    let stop = match step {
        Step::Answer(text) => {
            for word in text.split_inclusive(' ') {
                wire.extend(frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": word}}),
                ));
            }
            wire.extend(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
            "end_turn"
        }
        Step::Call(list) => {
            for (i, (id, name, input)) in calls(index, list, body).into_iter().enumerate() {
                let text = input.to_string();
                let (a, b) = text.split_at(text.len() / 2);
                wire.extend(frame(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                ));
                for piece in [a, b] {
                    wire.extend(frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}}),
                    ));
                }
                wire.extend(frame("contentBlockStop", &json!({"contentBlockIndex": i})));
            }
            "tool_use"
        }
    };
    let (input, output) = PLAIN_USAGE;
    wire.extend(frame("messageStop", &json!({"stopReason": stop})));
    wire.extend(frame(
        "metadata",
        &json!({"usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output}, "metrics": {"latencyMs": 12}}),
    ));
    (200, "application/vnd.amazon.eventstream", Bytes::from(wire))
}
