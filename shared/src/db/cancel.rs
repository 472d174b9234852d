//! Server-side cancellation of a statement that ran past its bound.
//!
//! `CancelToken::cancel_query` hangs up right after writing the cancel packet. pgbouncer 1.18
//! crashes (`FATAL … disconnect_client(): bad client state`) when a cancel client hangs up before
//! the cancel was forwarded. libpq instead waits for the server to close the cancel connection;
//! so do we: the socket is lent to `cancel_query_raw` without its shutdown, then read to EOF.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::CancelToken;

use super::tls::Tls;

/// Where cancel requests go (the host and port the connection was opened to).
#[derive(Debug, Clone)]
pub(crate) struct CancelTarget {
    pub host: String,
    pub port: u16,
}

/// Why a cancel request did not reach the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CancelError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect to send the cancel request")]
    Connect(#[source] std::io::Error),
    #[error("could not set up TLS for the cancel request")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the cancel request failed")]
    Send(#[source] tokio_postgres::Error),
}

/// Sends a cancel request and waits (within `bound`) until the server has taken it.
pub(crate) async fn cancel(
    token: &CancelToken,
    target: &CancelTarget,
    tls: &Tls,
    bound: Duration,
) -> Result<(), CancelError> {
    tokio::time::timeout(bound, cancel_inner(token, target, tls))
        .await
        .map_err(|_| CancelError::Timeout(bound))?
}

async fn cancel_inner(token: &CancelToken, target: &CancelTarget, tls: &Tls) -> Result<(), CancelError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(CancelError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (back, returned) = oneshot::channel();
    let lent = Lent {
        stream: Some(stream),
        back: Some(back),
    };
    let mut tls = tls.clone();
    let connector = <Tls as MakeTlsConnect<Lent>>::make_tls_connect(&mut tls, &target.host)
        .map_err(|e| CancelError::Tls(e.into()))?;
    token
        .cancel_query_raw(lent, connector)
        .await
        .map_err(CancelError::Send)?;
    // The lent stream came back when cancel_query_raw dropped it: wait for the server's EOF.
    if let Ok(mut stream) = returned.await {
        let mut sink = [0u8; 64];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// A TCP stream whose shutdown does nothing and which goes back to its owner when dropped.
struct Lent {
    stream: Option<TcpStream>,
    back: Option<oneshot::Sender<TcpStream>>,
}

impl Lent {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stream already returned"))
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(stream), Some(back)) = (self.stream.take(), self.back.take()) {
            let _ = back.send(stream);
        }
    }
}

impl AsyncRead for Lent {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lent {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Keep the connection open: the server closes it once the cancel is processed.
        Poll::Ready(Ok(()))
    }
}
