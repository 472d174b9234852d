//! A local Lambda Runtime API that drives the real function binaries, and a small HTTP server
//! for the stand-ins of outside services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub type HyperResponse = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

/// An HTTP/1 server on a free loopback port answering every request with `handler`.
pub async fn serve_http<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = HyperResponse> + Send + 'static,
{
    serve(handler).await
}

/// [`serve_http`] with any kind of response body (a streamed one, say).
pub async fn serve<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A request's whole body (empty when the client went away before sending it all).
pub async fn body_bytes(body: hyper::body::Incoming) -> hyper::body::Bytes {
    use http_body_util::BodyExt;
    body.collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}

/// The workspace's `target/debug/<name>` binary (`scripts/test` builds them first).
pub fn function_binary(name: &str) -> PathBuf {
    built_binary("debug", name)
}

/// `target/<profile>/<name>`.
pub fn built_binary(profile: &str, name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: build the functions first (cargo build [--release] --workspace --bins)",
        path.display()
    );
    path
}

/// A local Lambda Runtime API (the real wire format: /runtime/invocation/next, /response,
/// /error, and the Extensions API register/next) serving one function process.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
}

#[derive(Default)]
struct RuntimeState {
    queue: Mutex<std::collections::VecDeque<(String, String, u64)>>,
    queued: tokio::sync::Notify,
    results: Mutex<HashMap<String, tokio::sync::oneshot::Sender<InvokeResult>>>,
    extensions: Mutex<Vec<String>>,
}

/// What the function answered to one invocation.
#[derive(Debug)]
pub enum InvokeResult {
    Response(serde_json::Value),
    Error(serde_json::Value),
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let state = Arc::new(RuntimeState::default());
        let server_state = state.clone();
        let addr = serve_http(move |req| runtime_route(server_state.clone(), req)).await;
        RuntimeApi { addr, state }
    }

    /// Queues an event with the given deadline (ms since the epoch) and waits for the answer.
    pub async fn invoke(&self, event: &serde_json::Value, deadline_ms: u64) -> InvokeResult {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.state.results.lock().expect("lock").insert(id.clone(), tx);
        self.state
            .queue
            .lock()
            .expect("lock")
            .push_back((id, event.to_string(), deadline_ms));
        self.state.queued.notify_one();
        rx.await.expect("the function answered")
    }

    pub fn registered_extensions(&self) -> Vec<String> {
        self.state.extensions.lock().expect("lock").clone()
    }

    /// The function binary `name` driven through this API, with `env` on top of
    /// [`RuntimeApi::function_env`], its output discarded; killed when dropped.
    pub fn spawn_function(&self, name: &str, env: &[(&str, &str)]) -> tokio::process::Child {
        tokio::process::Command::new(function_binary(name))
            .envs(self.function_env(name))
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {name} binary: {e}"))
    }

    /// Environment for a function process talking to this API.
    pub fn function_env(&self, name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn reply(status: u16, headers: &[(&str, String)], body: String) -> HyperResponse {
    let mut builder = hyper::Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    builder
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .expect("response builds")
}

async fn runtime_route(state: Arc<RuntimeState>, req: hyper::Request<hyper::body::Incoming>) -> HyperResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = body_bytes(req.into_body()).await;
    match (method.as_str(), path.as_str()) {
        ("POST", "/2020-01-01/extension/register") => {
            state
                .extensions
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&body).into());
            reply(
                200,
                &[("Lambda-Extension-Identifier", uuid::Uuid::new_v4().to_string())],
                r#"{"functionName":"test","functionVersion":"$LATEST","handler":"bootstrap"}"#.into(),
            )
        }
        // Extensions that subscribe to no events wait here until shutdown.
        ("GET", "/2020-01-01/extension/event/next") => std::future::pending().await,
        ("GET", "/2018-06-01/runtime/invocation/next") => loop {
            let next = state.queue.lock().expect("lock").pop_front();
            if let Some((id, payload, deadline)) = next {
                return reply(
                    200,
                    &[
                        ("Lambda-Runtime-Aws-Request-Id", id),
                        ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                        (
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:000000000000:function:test".into(),
                        ),
                        (
                            "Lambda-Runtime-Trace-Id",
                            "Root=1-00000000-000000000000000000000000".into(),
                        ),
                        ("Content-Type", "application/json".into()),
                    ],
                    payload,
                );
            }
            state.queued.notified().await;
        },
        ("POST", p) if p.starts_with("/2018-06-01/runtime/invocation/") => {
            let mut parts = p.trim_start_matches("/2018-06-01/runtime/invocation/").split('/');
            let id = parts.next().unwrap_or_default().to_string();
            let kind = parts.next().unwrap_or_default();
            let value: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
            let result = if kind == "response" {
                InvokeResult::Response(value)
            } else {
                InvokeResult::Error(value)
            };
            if let Some(tx) = state.results.lock().expect("lock").remove(&id) {
                let _ = tx.send(result);
            }
            reply(202, &[], r#"{"status":"OK"}"#.into())
        }
        ("POST", "/2018-06-01/runtime/init/error") => reply(202, &[], r#"{"status":"OK"}"#.into()),
        _ => reply(404, &[], String::new()),
    }
}
