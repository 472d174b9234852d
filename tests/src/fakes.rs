//! Local stand-ins for the services the tests cannot reach, speaking their real wire formats:
//! Supabase Auth's JWKS endpoint, an OpenAI-compatible chat-completions API, and Bedrock's
//! Converse API. Each runs on 127.0.0.1 and records what it was sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::serve_http;

/// Status, extra headers, body, delay before answering.
type Reply = (u16, Vec<(&'static str, String)>, String, Duration);

/// How a fake model server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    HttpError,
    Slow,
    Oversized,
    /// The provider's rate limit: OpenAI's 429 with `Retry-After: 2`, Bedrock's
    /// `ThrottlingException`.
    Throttled,
    /// As `Ok`, but the reply carries no `usage` (an OpenAI-compatible server that reports none).
    NoUsage,
}

/// The usage the model stand-ins report for a plain reply: distinct counts, so that a client
/// reading one for the other is caught.
pub const PLAIN_USAGE: (i64, i64) = (12, 7);

/// A captured request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
    /// The status answered (under a quota: 429 for a call refused, 200 for one admitted).
    pub status: u16,
}

/// A provider's capacity: at most `concurrent` calls at once (beyond it the provider's own
/// throttling answer: OpenAI's 429 with `Retry-After`, Bedrock's `ThrottlingException`), each
/// admitted call answered after `latency` ± `jitter` (a fraction of it, uniformly).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub concurrent: usize,
    pub latency: Duration,
    pub jitter: f64,
}

/// What a model stand-in under a quota has seen.
#[derive(Debug, Default)]
pub struct Load {
    /// Admitted calls in flight now.
    pub in_flight: AtomicUsize,
    /// Most admitted calls in flight at once.
    pub peak: AtomicUsize,
    /// Calls admitted, and calls refused for the quota.
    pub admitted: AtomicUsize,
    pub throttled: AtomicUsize,
}

/// Counts an admitted call in flight until dropped (also when the caller hangs up).
struct Admitted(Arc<Load>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub mode: Arc<Mutex<Mode>>,
    pub quota: Arc<Mutex<Option<Quota>>>,
    pub load: Arc<Load>,
    /// Whether requests are recorded in `seen` (off for long load runs).
    pub record: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Puts the stand-in under `quota` (a model provider's capacity and latency).
    pub fn set_quota(&self, quota: Quota) {
        *self.quota.lock().unwrap() = Some(quota);
    }

    /// Stops recording requests (a long load run would keep every one).
    pub fn stop_recording(&self) {
        self.record.store(false, Ordering::SeqCst);
    }

    async fn start(route: fn(Mode, &str, &Value) -> Reply) -> FakeServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let quota = Arc::new(Mutex::new(None::<Quota>));
        let load = Arc::new(Load::default());
        let record = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (h, s, m, q, l, r) = (
            hits.clone(),
            seen.clone(),
            mode.clone(),
            quota.clone(),
            load.clone(),
            record.clone(),
        );
        let addr = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
            let (h, s, m, q, l, r) = (h.clone(), s.clone(), m.clone(), q.clone(), l.clone(), r.clone());
            async move {
                let at = Instant::now();
                h.fetch_add(1, Ordering::SeqCst);
                let path = req.uri().path().to_string();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mode = *m.lock().unwrap();
                let quota = *q.lock().unwrap();
                let mut admitted = None;
                let (status, extra, text, mut delay) = match quota {
                    Some(quota) if matches!(mode, Mode::Ok | Mode::NoUsage) => {
                        let now = l.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        admitted = Some(Admitted(l.clone()));
                        if now > quota.concurrent {
                            drop(admitted.take());
                            l.throttled.fetch_add(1, Ordering::SeqCst);
                            route(Mode::Throttled, &path, &body)
                        } else {
                            l.peak.fetch_max(now, Ordering::SeqCst);
                            l.admitted.fetch_add(1, Ordering::SeqCst);
                            route(mode, &path, &body)
                        }
                    }
                    _ => route(mode, &path, &body),
                };
                if let (Some(quota), Some(_)) = (quota, &admitted) {
                    let spread = quota.jitter * (2.0 * fastrand::f64() - 1.0);
                    delay += quota.latency.mul_f64((1.0 + spread).max(0.0));
                }
                if r.load(Ordering::SeqCst) {
                    s.lock().unwrap().push(Seen {
                        path,
                        headers,
                        body,
                        at,
                        status,
                    });
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                drop(admitted);
                let mut b = hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (k, v) in extra {
                    b = b.header(k, v);
                }
                b.body(Full::new(Bytes::from(text))).unwrap()
            }
        })
        .await;
        FakeServer {
            addr,
            hits,
            seen,
            mode,
            quota,
            load,
            record,
        }
    }

    /// Supabase Auth: `GET /auth/v1/.well-known/jwks.json` serves `tests/fixtures/jwks.json`
    /// (`Mode::HttpError`: an outage, 503).
    pub async fn supabase_auth() -> FakeServer {
        Self::start(|mode, path, _| {
            if mode == Mode::HttpError {
                return (503, vec![], "upstream unavailable".into(), Duration::ZERO);
            }
            if path == "/auth/v1/.well-known/jwks.json" {
                (
                    200,
                    vec![],
                    include_str!("../fixtures/jwks.json").to_string(),
                    Duration::ZERO,
                )
            } else {
                (404, vec![], "{}".into(), Duration::ZERO)
            }
        })
        .await
    }

    /// Lambda's `Invoke` API, `POST /2015-03-31/functions/{name}/invocations`: an asynchronous
    /// invoke (`X-Amz-Invocation-Type: Event`) is accepted with 202 and recorded, not run.
    pub async fn lambda() -> FakeServer {
        Self::start(|mode, path, _| {
            if !(path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations")) {
                return (404, vec![], "{}".into(), Duration::ZERO);
            }
            if mode == Mode::HttpError {
                return (
                    429,
                    vec![("x-amzn-errortype", "TooManyRequestsException".to_string())],
                    json!({"message": "Rate Exceeded.", "Type": "User", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}).to_string(),
                    Duration::ZERO,
                );
            }
            (202, vec![], String::new(), Duration::ZERO)
        })
        .await
    }

    /// OpenAI-compatible `POST /v1/chat/completions`.
    pub async fn openai() -> FakeServer {
        Self::start(|mode, path, body| {
            if path != "/v1/chat/completions" {
                return (404, vec![], "{}".into(), Duration::ZERO);
            }
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
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
        })
        .await
    }

    /// Bedrock runtime `POST /model/{modelId}/converse`.
    pub async fn bedrock() -> FakeServer {
        Self::start(|mode, path, body| {
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
                return (
                    400,
                    vec![(
                        "x-amzn-errortype",
                        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
                    )],
                    json!({ "message": problem }).to_string(),
                    Duration::ZERO,
                );
            }
            match mode {
                Mode::Ok => (200, vec![], reply(format!("bedrock says: {last}")), Duration::ZERO),
                Mode::NoUsage => (
                    200,
                    vec![],
                    answer(format!("bedrock says: {last}"), false),
                    Duration::ZERO,
                ),
                Mode::HttpError => (
                    400,
                    vec![(
                        "x-amzn-errortype",
                        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
                    )],
                    json!({"message": "The provided model identifier is invalid."}).to_string(),
                    Duration::ZERO,
                ),
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
        })
        .await
    }
}

/// Claims of a Supabase access token.
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

pub fn claims(issuer: &str, sub: &str) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    json!({
        "iss": issuer, "sub": sub, "aud": "authenticated", "role": "authenticated",
        "exp": now + 3600, "iat": now, "email": "user@example.com", "session_id": "s"
    })
}

pub fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn es256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ec_pem(include_bytes!("../fixtures/ec-private.pem")).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../fixtures/rsa-private.pem")).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// `events/chat.json` with a real bearer token in place of its placeholder.
pub fn chat_event(token: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("../../events/chat.json")).expect("events/chat.json");
    event["headers"]["authorization"] = format!("Bearer {token}").into();
    event
}

/// An unsigned token (`alg: none`), as an attacker would send it.
pub fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        e.encode(claims.to_string())
    )
}

/// What the streaming OpenAI-compatible stand-in writes: `words` as `chat.completion.chunk`
/// events, `gap` apart, then `data: [DONE]`; or the connection cut after `break_after` words
/// (for every request, or only those whose last message ends with `break_when`). A request without
/// `stream: true` gets the words as one ordinary completion after `gap` × words.
#[derive(Debug, Clone)]
pub struct StreamScript {
    pub words: Vec<String>,
    pub gap: Duration,
    pub break_after: Option<usize>,
    pub break_when: Option<&'static str>,
}

/// When the streaming stand-in wrote its last word (the reply's end, as the provider saw it).
pub type LastWritten = Arc<Mutex<Option<Instant>>>;

/// Sends the frames of a streamed answer.
pub type Frames = tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

/// An HTTP/1 server on loopback answering every request 200 with `content_type` and a body
/// streamed by `write` (a frame at a time; an `Err` frame cuts the connection). Its address.
async fn serve_streaming<F, Fut>(content_type: &'static str, write: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>, Frames) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let write = write.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, rx) = tokio::sync::mpsc::channel(16);
                    tokio::spawn(write(req, tx));
                    let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    }));
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(200)
                                .header("content-type", content_type)
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn data(bytes: impl Into<Bytes>) -> Result<hyper::body::Frame<Bytes>, std::io::Error> {
    Ok(hyper::body::Frame::data(bytes.into()))
}

/// An OpenAI-compatible `POST /v1/chat/completions` that streams (`text/event-stream`) as
/// `script` says, whatever it is asked, and reports usage as OpenAI does. Its URL (the base, with
/// `/v1`) and when it wrote the last word.
pub async fn openai_streaming(script: StreamScript) -> (String, LastWritten) {
    let provider = openai_streaming_provider(script, true).await;
    (provider.url, provider.last_written)
}

/// The usage the streaming stand-ins report for `script`'s reply: input tokens as
/// [`PLAIN_USAGE`], output one per word.
pub fn streamed_usage(script: &StreamScript) -> (i64, i64) {
    (PLAIN_USAGE.0, i64::try_from(script.words.len()).unwrap_or(i64::MAX))
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
            let at = Instant::now();
            let path = req.uri().path().to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            recorded.lock().unwrap().push(Seen {
                path,
                headers,
                body: body.clone(),
                at,
                status: 200,
            });
            let (input, output) = streamed_usage(&script);
            let counts = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
            if body["stream"] != true {
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
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            let breaks = script.break_when.is_none_or(|w| last.ends_with(w));
            for (i, word) in script.words.iter().enumerate() {
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

/// Bedrock's `POST /model/{modelId}/converse-stream`, streaming as `script` says in the AWS
/// event-stream encoding (`application/vnd.amazon.eventstream`): `messageStart`, one
/// `contentBlockDelta` per word `gap` apart, `contentBlockStop`, `messageStop`, `metadata` (its
/// usage [`streamed_usage`]); or a `modelStreamErrorException` after `break_after` words. Its URL.
pub async fn bedrock_streaming(script: StreamScript) -> String {
    bedrock_streaming_with(script, true).await
}

/// [`bedrock_streaming`], ending after `messageStop` without the `metadata` event unless
/// `metadata`.
pub async fn bedrock_streaming_with(script: StreamScript, metadata: bool) -> String {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

    fn frame(kind: &str, name: &str, payload: &Value) -> Bytes {
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

    let addr = serve_streaming("application/vnd.amazon.eventstream", move |_req, tx| {
        let script = script.clone();
        async move {
            if tx.send(data(frame("event", "messageStart", &json!({"role": "assistant"})))).await.is_err() {
                return;
            }
            for (i, word) in script.words.iter().enumerate() {
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
