//! Request checks every JSON route shares: the content type and the body size, both before any
//! parsing.

use lambda_http::http::header;
use lambda_http::Request;

use super::ApiError;

/// The content type must be JSON (`application/json`, parameters allowed): 415 otherwise.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let essence = content_type.and_then(|ct| ct.split(';').next()).unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ))
    }
}

/// The body of a JSON request, at most `max_bytes` long (413 above), after the content-type check.
pub fn json_body(request: &Request, max_bytes: usize) -> Result<&[u8], ApiError> {
    check_content_type(
        request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let body: &[u8] = request.body().as_ref();
    if body.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than {max_bytes} bytes"
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_other_than_json_are_refused() {
        assert!(check_content_type(Some("application/json")).is_ok());
        assert!(check_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some(""),
        ] {
            assert_eq!(check_content_type(ct).unwrap_err().parts().0.as_u16(), 415);
        }
    }
}
