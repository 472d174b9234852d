//! What the request-and-answer stand-ins share: a loopback server ([`FakeServer`]) that records
//! what it is sent, answers as the stand-in's route says for the current [`Mode`], and can be put
//! under a provider's [`Quota`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde_json::Value;

use crate::runtime::{body_bytes, serve_http};

/// Status, extra headers, body, delay before answering.
pub(super) type Reply = (u16, Vec<(&'static str, String)>, String, Duration);

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

impl Seen {
    /// Reads `req` whole (a body that is not JSON is `null`), answered 200 unless set otherwise.
    pub(super) async fn capture(req: hyper::Request<Incoming>) -> Seen {
        let at = Instant::now();
        let path = req.uri().path().to_string();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = body_bytes(req.into_body()).await;
        Seen {
            path,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at,
            status: 200,
        }
    }
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

/// One stand-in on 127.0.0.1; its constructors are in the stand-ins' files
/// ([`FakeServer::openai`], [`FakeServer::bedrock`], [`FakeServer::supabase_auth`],
/// [`FakeServer::lambda`]).
pub struct FakeServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub mode: Arc<Mutex<Mode>>,
    pub quota: Arc<Mutex<Option<Quota>>>,
    pub load: Arc<Load>,
    /// Whether requests are recorded in `seen` (off for long load runs).
    pub record: Arc<AtomicBool>,
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

    /// A stand-in answering each request as `route` says for the mode, path and JSON body.
    pub(super) async fn start(route: fn(Mode, &str, &Value) -> Reply) -> FakeServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let quota = Arc::new(Mutex::new(None::<Quota>));
        let load = Arc::new(Load::default());
        let record = Arc::new(AtomicBool::new(true));
        let (h, s, m, q, l, r) = (
            hits.clone(),
            seen.clone(),
            mode.clone(),
            quota.clone(),
            load.clone(),
            record.clone(),
        );
        let addr = serve_http(move |req: hyper::Request<Incoming>| {
            let (h, s, m, q, l, r) = (h.clone(), s.clone(), m.clone(), q.clone(), l.clone(), r.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let mut request = Seen::capture(req).await;
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
                            route(Mode::Throttled, &request.path, &request.body)
                        } else {
                            l.peak.fetch_max(now, Ordering::SeqCst);
                            l.admitted.fetch_add(1, Ordering::SeqCst);
                            route(mode, &request.path, &request.body)
                        }
                    }
                    _ => route(mode, &request.path, &request.body),
                };
                if let (Some(quota), Some(_)) = (quota, &admitted) {
                    let spread = quota.jitter * (2.0 * fastrand::f64() - 1.0);
                    delay += quota.latency.mul_f64((1.0 + spread).max(0.0));
                }
                if r.load(Ordering::SeqCst) {
                    request.status = status;
                    s.lock().unwrap().push(request);
                }
                if !delay.is_zero() {
                    // The provider's latency: the answer is written this long after the request.
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
}
