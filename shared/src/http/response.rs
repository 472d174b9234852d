//! Response builders every HTTP function uses.

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Response};

/// Seconds a client should wait before retrying a saturated or unreachable database.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The header that carries the invocation's request id on every answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Sets [`REQUEST_ID_HEADER`] (an id that is not a valid header value is left out).
pub fn set_request_id(headers: &mut header::HeaderMap, request_id: &str) {
    if let Ok(id) = header::HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
}

/// A JSON response of a view (`#[derive(Serialize)]`), with the request id header: written
/// straight to its text, in the view's field order.
pub fn view_response<V: serde::Serialize>(status: StatusCode, view: &V, request_id: &str) -> Response<Body> {
    match serde_json::to_string(view) {
        Ok(body) => text_response(status, body, request_id),
        // Views hold strings, numbers and maps with string keys: this does not happen.
        Err(e) => super::ApiError::Internal(e.into()).into_response(request_id),
    }
}

/// A JSON text as the response, with the request id header.
fn text_response(status: StatusCode, body: String, request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    set_request_id(headers, request_id);
    response
}

/// The same response with `Retry-After: secs`.
pub fn with_retry_after(mut response: Response<Body>, secs: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}
