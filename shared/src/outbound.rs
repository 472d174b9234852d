//! Outbound HTTP shared by the clients that call other services (the JWKS fetch, the
//! OpenAI-compatible model): bodies are read with a cap, so a hostile or broken peer cannot make
//! the function buffer without bound.

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed: {0}")]
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
