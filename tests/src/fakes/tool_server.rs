//! A tool server (issue 22): records every call (headers and the exact body bytes, to check
//! the signature over them) and answers as its [`ToolMode`] says; each answered call's run id
//! and times are kept in `timings` (for benchmarks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;

use crate::runtime::{body_bytes, serve_http};

/// How the tool server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolMode {
    /// `200 {"ok":true,"echo":<arguments>}`.
    Echo,
    /// Echoes after this delay (a tool that works that long).
    Delay(Duration),
    /// `302` to this location.
    Redirect(String),
    /// `200` with this many bytes of JSON string.
    Huge(usize),
    /// Never answers.
    Hang,
    /// Never answers its first call; echoes the others (a call cut by a crash, then made again).
    HangFirst,
}

/// One call as the tool server received it.
#[derive(Debug, Clone)]
pub struct ToolHit {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ToolHit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// When the tool server received and answered one call, and the call's `runId`.
#[derive(Debug, Clone)]
pub struct ToolTiming {
    pub run_id: String,
    pub received: SystemTime,
    pub answered: SystemTime,
}

/// A tool server on 127.0.0.1.
pub struct ToolServer {
    pub url: String,
    pub hits: Arc<Mutex<Vec<ToolHit>>>,
    /// Every call answered (not `Hang`'s), in the order answered.
    pub timings: Arc<Mutex<Vec<ToolTiming>>>,
    /// Whether calls are kept in `hits` (off for long load runs).
    pub record: Arc<AtomicBool>,
}

impl ToolServer {
    pub async fn start(mode: ToolMode) -> Self {
        let hits: Arc<Mutex<Vec<ToolHit>>> = Arc::default();
        let timings: Arc<Mutex<Vec<ToolTiming>>> = Arc::default();
        let record = Arc::new(AtomicBool::new(true));
        let (recorded, timed, keep) = (hits.clone(), timings.clone(), record.clone());
        let addr = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
            let hits = recorded.clone();
            let (timings, keep) = (timed.clone(), keep.clone());
            let mode = mode.clone();
            async move {
                let received = SystemTime::now();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = body_bytes(req.into_body()).await.to_vec();
                let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
                let arguments = parsed
                    .as_ref()
                    .and_then(|v| v.get("arguments").cloned())
                    .unwrap_or_default();
                let run_id = parsed
                    .as_ref()
                    .and_then(|v| v["runId"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let first = {
                    let mut hits = hits.lock().unwrap();
                    if keep.load(Ordering::SeqCst) {
                        hits.push(ToolHit { headers, body });
                        hits.len() == 1
                    } else {
                        false
                    }
                };
                let builder = hyper::Response::builder().header("content-type", "application/json");
                let mode = match mode {
                    ToolMode::HangFirst if first => ToolMode::Hang,
                    ToolMode::HangFirst => ToolMode::Echo,
                    other => other,
                };
                let response = match mode {
                    ToolMode::Echo | ToolMode::HangFirst => builder.status(200).body(Full::new(Bytes::from(
                        serde_json::json!({"ok": true, "echo": arguments}).to_string(),
                    ))),
                    ToolMode::Delay(delay) => {
                        tokio::time::sleep(delay).await;
                        builder.status(200).body(Full::new(Bytes::from(
                            serde_json::json!({"ok": true, "echo": arguments}).to_string(),
                        )))
                    }
                    ToolMode::Redirect(to) => builder.status(302).header("location", to).body(Full::new(Bytes::new())),
                    ToolMode::Huge(n) => {
                        let mut text = Vec::with_capacity(n + 2);
                        text.push(b'"');
                        text.resize(n + 1, b'a');
                        text.push(b'"');
                        builder.status(200).body(Full::new(Bytes::from(text)))
                    }
                    ToolMode::Hang => {
                        // Until the test ends.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        builder.status(200).body(Full::new(Bytes::new()))
                    }
                };
                timings.lock().unwrap().push(ToolTiming {
                    run_id,
                    received,
                    answered: SystemTime::now(),
                });
                response.expect("a valid response")
            }
        })
        .await;
        Self {
            url: format!("http://{addr}/tool"),
            hits,
            timings,
            record,
        }
    }

    /// Stops keeping calls in `hits` (a long load run would keep every one); `timings` go on.
    pub fn stop_recording(&self) {
        self.record.store(false, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<ToolHit> {
        self.hits.lock().unwrap().clone()
    }
}
