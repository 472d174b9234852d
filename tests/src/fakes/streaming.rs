//! What the streaming model stand-ins share: the script of a streamed reply, the usage they
//! report for it, and a loopback server writing a response body a frame at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Frame, Incoming};

use super::PLAIN_USAGE;
use crate::runtime::serve;

/// What a streaming stand-in writes: `words`, `gap` apart, then its end; or the stream broken
/// after `break_after` words (for every request, or only those whose last message ends with
/// `break_when`). The OpenAI-compatible one answers a request without `stream: true` with the
/// words as one ordinary completion after `gap` × words.
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
pub type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// The usage the streaming stand-ins report for `script`'s reply: input tokens as
/// [`PLAIN_USAGE`], output one per word.
pub fn streamed_usage(script: &StreamScript) -> (i64, i64) {
    (PLAIN_USAGE.0, i64::try_from(script.words.len()).unwrap_or(i64::MAX))
}

/// An HTTP/1 server on loopback answering every request 200 with `content_type` and a body
/// streamed by `write` (a frame at a time; an `Err` frame cuts the connection). Its address.
pub(super) async fn serve_streaming<F, Fut>(content_type: &'static str, write: F) -> SocketAddr
where
    F: Fn(hyper::Request<Incoming>, Frames) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve(move |req: hyper::Request<Incoming>| {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(write(req, tx));
        let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        async move {
            hyper::Response::builder()
                .status(200)
                .header("content-type", content_type)
                .body(body)
                .unwrap()
        }
    })
    .await
}

/// One frame of body.
pub(super) fn data(bytes: impl Into<Bytes>) -> Result<Frame<Bytes>, std::io::Error> {
    Ok(Frame::data(bytes.into()))
}
