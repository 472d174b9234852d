//! A tool server (issue 22): records every call (headers and the exact body bytes, to check
//! the signature over them) and answers as its [`ToolMode`] says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::runtime::{body_bytes, serve_http};

/// How the tool server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolMode {
    /// `200 {"ok":true,"echo":<arguments>}`.
    Echo,
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

/// A tool server on 127.0.0.1.
pub struct ToolServer {
    pub url: String,
    pub hits: Arc<Mutex<Vec<ToolHit>>>,
}

impl ToolServer {
    pub async fn start(mode: ToolMode) -> Self {
        let hits: Arc<Mutex<Vec<ToolHit>>> = Arc::default();
        let recorded = hits.clone();
        let addr = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
            let hits = recorded.clone();
            let mode = mode.clone();
            async move {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = body_bytes(req.into_body()).await.to_vec();
                let arguments = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("arguments").cloned())
                    .unwrap_or_default();
                let first = {
                    let mut hits = hits.lock().unwrap();
                    hits.push(ToolHit { headers, body });
                    hits.len() == 1
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
                response.expect("a valid response")
            }
        })
        .await;
        Self {
            url: format!("http://{addr}/tool"),
            hits,
        }
    }

    pub fn hits(&self) -> Vec<ToolHit> {
        self.hits.lock().unwrap().clone()
    }
}
