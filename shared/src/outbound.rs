//! Outbound HTTP shared by the clients that call other services (the JWKS fetch, the
//! OpenAI-compatible model): bodies are read with a cap, so a hostile or broken peer cannot make
//! the function buffer without bound; clients are built with their timeouts or not at all.

use std::time::Duration;

/// The HTTP client could not be built (no TLS backend, for one): an init error, never papered
/// over with a default client that has no timeouts.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client for {what} could not be built")]
pub struct ClientError {
    what: &'static str,
    #[source]
    source: reqwest::Error,
}

/// A client whose every request is bounded by `timeout`, and its connect by `connect`.
pub fn client(what: &'static str, timeout: Duration, connect: Duration) -> Result<reqwest::Client, ClientError> {
    build(what, |builder| builder.timeout(timeout).connect_timeout(connect))
}

/// A client as `configure` sets it up (which must bound its time), or why it could not be built.
pub fn build(
    what: &'static str,
    configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    configure(reqwest::Client::builder())
        .build()
        .map_err(|source| ClientError { what, source })
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed")]
    Transport(#[from] reqwest::Error),
}

/// The whole body of `response`, failing as soon as it passes `cap` bytes.
pub async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
