//! A local stand-in for the API Gateway WebSocket API (a dev and test tool; never deployed).
//!
//! One loopback port speaks both of API Gateway's sides, like `{api}.execute-api…/{stage}`:
//! - WebSocket clients: a connection attempt becomes a `$connect` event (headers, query string,
//!   `requestContext.routeKey/eventType/connectionId/domainName/stage`) invoked on the `live`
//!   function through the real runtime loop; its status decides the handshake and its
//!   `Sec-WebSocket-Protocol` header is the selected subprotocol. Each text message becomes a
//!   `$default` event whose answer body goes back (the route response); a close, either side's,
//!   becomes `$disconnect`. Idle connections close after `idle` (API Gateway: 10 min), every
//!   connection after `lifetime` (2 h).
//! - the Management API the publishers call at `LIVE_ENDPOINT`: `POST /@connections/{id}` (the
//!   body is sent as a text frame), `DELETE /@connections/{id}` (closes it), `GET
//!   /@connections/{id}`; `410 Gone` for an unknown id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;

use crate::runtime::{body_bytes, RuntimeApi};

/// How events reach the `live` function.
#[derive(Clone)]
pub enum Invoker {
    /// `cargo lambda watch`'s raw-event endpoint:
    /// `http://127.0.0.1:9000/2015-03-31/functions/live/invocations`.
    Http(String),
    /// A local Runtime API driving the function binary (tests).
    Runtime(Arc<RuntimeApi>),
}

impl Invoker {
    async fn invoke(&self, http: &reqwest::Client, event: &Value) -> Result<Value, String> {
        match self {
            Invoker::Http(url) => {
                let response = http
                    .post(url)
                    .json(event)
                    .send()
                    .await
                    .map_err(|e| format!("invoke: {e}"))?;
                response
                    .json::<Value>()
                    .await
                    .map_err(|e| format!("invoke answer: {e}"))
            }
            Invoker::Runtime(api) => {
                let deadline = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64 + 30_000)
                    .unwrap_or_default();
                match api.invoke(event, deadline).await {
                    crate::runtime::InvokeResult::Response(v) => Ok(v),
                    crate::runtime::InvokeResult::Error(v) => Err(format!("the function failed: {v}")),
                }
            }
        }
    }
}

/// What a connection is told to do.
enum Command {
    Send(String),
    Close,
}

struct Connection {
    tx: mpsc::UnboundedSender<Command>,
    connected_at: chrono::DateTime<chrono::Utc>,
}

/// Counters a test or benchmark reads.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub posts: AtomicU64,
    pub gone: AtomicU64,
    pub deletes: AtomicU64,
}

struct State {
    invoker: Invoker,
    http: reqwest::Client,
    connections: Mutex<HashMap<String, Connection>>,
    next_id: AtomicU64,
    idle: Duration,
    lifetime: Duration,
    stats: GatewayStats,
}

/// A running gateway.
pub struct LiveGateway {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn respond(status: u16, body: impl Into<Bytes>) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

impl LiveGateway {
    /// Serves on `addr` (port 0: a free one) with API Gateway's limits (10 min idle, 2 h).
    pub async fn start(addr: SocketAddr, invoker: Invoker) -> std::io::Result<LiveGateway> {
        Self::with_limits(addr, invoker, Duration::from_secs(600), Duration::from_secs(7200)).await
    }

    pub async fn with_limits(
        addr: SocketAddr,
        invoker: Invoker,
        idle: Duration,
        lifetime: Duration,
    ) -> std::io::Result<LiveGateway> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            invoker,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            idle,
            lifetime,
            stats: GatewayStats::default(),
        });
        let server_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                // Events are small frames: each goes out at once (no Nagle wait for the
                // previous frame's ACK), as a gateway of small messages sends them.
                let _ = stream.set_nodelay(true);
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(state, req, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(LiveGateway { addr, state, task })
    }

    /// `ws://…` for clients.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The `LIVE_ENDPOINT` of the publishers.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.connections.lock().map_or(0, |c| c.len())
    }

    pub fn stats(&self) -> &GatewayStats {
        &self.state.stats
    }
}

async fn route(state: Arc<State>, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
    let path = req.uri().path().to_string();
    if let Some(id) = path.strip_prefix("/@connections/") {
        let id = percent_decode(id);
        return manage(&state, req, &id).await;
    }
    let upgrade = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return connect(state, req, peer).await;
    }
    respond(404, r#"{"message":"Not Found"}"#)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Management API.
async fn manage(state: &State, req: hyper::Request<Incoming>, id: &str) -> Response {
    let method = req.method().clone();
    let body = body_bytes(req.into_body()).await;
    let found = {
        let connections = state.connections.lock();
        connections
            .ok()
            .and_then(|c| c.get(id).map(|c| (c.tx.clone(), c.connected_at)))
    };
    let Some((tx, connected_at)) = found else {
        state.stats.gone.fetch_add(1, Ordering::Relaxed);
        return respond(410, r#"{"message":"Gone"}"#);
    };
    match method.as_str() {
        "POST" => {
            if body.len() > 128 * 1024 {
                return respond(413, r#"{"message":"Message too long"}"#);
            }
            state.stats.posts.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&body).into_owned();
            if tx.send(Command::Send(text)).is_err() {
                return respond(410, r#"{"message":"Gone"}"#);
            }
            respond(200, "")
        }
        "DELETE" => {
            state.stats.deletes.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Command::Close);
            respond(204, "")
        }
        "GET" => respond(
            200,
            json!({"connectedAt": connected_at.to_rfc3339(), "identity": {"sourceIp": "127.0.0.1"}, "lastActiveAt": chrono::Utc::now().to_rfc3339()})
                .to_string(),
        ),
        _ => respond(405, r#"{"message":"Method Not Allowed"}"#),
    }
}

fn event(route_key: &str, event_type: &str, id: &str, extra: Value) -> Value {
    let mut e = json!({
        "requestContext": {
            "routeKey": route_key,
            "eventType": event_type,
            "connectionId": id,
            "domainName": "127.0.0.1",
            "stage": "local",
            "apiId": "local",
            "requestId": uuid::Uuid::new_v4().to_string(),
            "requestTimeEpoch": chrono::Utc::now().timestamp_millis(),
            "connectedAt": chrono::Utc::now().timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if let (Value::Object(e), Value::Object(extra)) = (&mut e, extra) {
        e.extend(extra);
    }
    e
}

async fn connect(state: Arc<State>, mut req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    // API Gateway's ids look like `L0SM9cOFvHcCIhw=`.
    let id = format!("{:x}{}=", n, &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    headers.insert("X-Forwarded-For".into(), Value::String(peer.ip().to_string()));
    let query: Option<serde_json::Map<String, Value>> = req.uri().query().map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    });
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return respond(400, r#"{"message":"not a WebSocket handshake"}"#);
    };
    let connect_event = event(
        "$connect",
        "CONNECT",
        &id,
        json!({"headers": headers, "queryStringParameters": query}),
    );
    let answer = match state.invoker.invoke(&state.http, &connect_event).await {
        Ok(answer) => answer,
        Err(e) => return respond(502, json!({"message": e}).to_string()),
    };
    let status = answer["statusCode"].as_u64().unwrap_or(502) as u16;
    if !(200..300).contains(&status) {
        let body = answer["body"].as_str().unwrap_or_default().to_string();
        return respond(status, body);
    }
    let protocol = answer["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol")))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string);

    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut c) = state.connections.lock() {
        c.insert(
            id.clone(),
            Connection {
                tx,
                connected_at: chrono::Utc::now(),
            },
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let session_state = state.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                session(&session_state, &session_id, ws, rx).await;
            }
            Err(e) => tracing_free_log(&format!("upgrade failed: {e}")),
        }
        if let Ok(mut c) = session_state.connections.lock() {
            c.remove(&session_id);
        }
        let disconnect = event("$disconnect", "DISCONNECT", &session_id, json!({}));
        let _ = session_state.invoker.invoke(&session_state.http, &disconnect).await;
    });

    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = hyper::Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept);
    if let Some(p) = protocol {
        response = response.header("sec-websocket-protocol", p);
    }
    response.body(Full::new(Bytes::new())).unwrap_or_default()
}

fn tracing_free_log(message: &str) {
    eprintln!("live-gateway: {message}");
}

async fn session<S>(
    state: &State,
    id: &str,
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let ends = tokio::time::Instant::now() + state.lifetime;
    loop {
        let idle = tokio::time::sleep(state.idle);
        tokio::select! {
            _ = idle => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001.into(), reason: "Going away".into() }))).await;
                return;
            }
            _ = tokio::time::sleep_until(ends) => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001.into(), reason: "Going away".into() }))).await;
                return;
            }
            command = rx.recv() => match command {
                Some(Command::Send(text)) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Command::Close) | None => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000.into(), reason: "".into() }))).await;
                    return;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > 128 * 1024 {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1009.into(), reason: "Message too big".into() }))).await;
                        return;
                    }
                    let message = event("$default", "MESSAGE", id, json!({"body": text}));
                    match state.invoker.invoke(&state.http, &message).await {
                        Ok(answer) => {
                            if let Some(body) = answer["body"].as_str() {
                                if sink.send(Message::Text(body.to_string())).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            let error = json!({"message": "Internal server error", "detail": e}).to_string();
                            let _ = sink.send(Message::Text(error)).await;
                        }
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = sink.send(Message::Pong(p)).await;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
