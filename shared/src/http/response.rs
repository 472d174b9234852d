//! Response builders every HTTP function uses.

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Response};

/// Seconds a client should wait before retrying a saturated or unreachable database.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A JSON response with the request id header.
pub fn json_response(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = header::HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

/// The same response with `Retry-After: secs`.
pub fn with_retry_after(mut response: Response<Body>, secs: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}
