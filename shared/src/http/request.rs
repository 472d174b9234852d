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

/// An `Idempotency-Key` header: 1..=255 visible ASCII characters.
pub fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    idempotency_key_of(
        request
            .headers()
            .get("idempotency-key")
            .map(lambda_http::http::HeaderValue::as_bytes),
    )
}

/// The same check on the raw header value.
pub fn idempotency_key_of(value: Option<&[u8]>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(raw) if !raw.is_empty() && raw.len() <= 255 && raw.iter().all(u8::is_ascii_graphic) => {
            Ok(Some(String::from_utf8_lossy(raw).into_owned()))
        }
        Some(_) => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
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

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(idempotency_key_of(None).unwrap(), None);
        assert_eq!(
            idempotency_key_of(Some(b"abc-123")).unwrap().as_deref(),
            Some("abc-123")
        );
        assert!(idempotency_key_of(Some(b"")).is_err());
        assert!(idempotency_key_of(Some(b"has space")).is_err());
        assert!(idempotency_key_of(Some(&[b'a'; 256])).is_err());
    }
}
