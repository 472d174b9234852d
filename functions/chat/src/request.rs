//! Parsing and validating `POST /api/agents/chat` bodies. Every failure is a client error that
//! names what is wrong; nothing here can panic on any input.

use serde_json::{Map, Value};
use uuid::Uuid;

use shared::http::{json_object, ApiError};

/// A validated chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInput {
    pub agent_id: Uuid,
    pub conversation_id: Option<Uuid>,
    /// Trimmed, 1..=max characters, no NUL.
    pub message: String,
}

const FIELDS: [&str; 3] = ["agentId", "message", "conversationId"];

fn uuid_field(map: &Map<String, Value>, name: &str, required: bool) -> Result<Option<Uuid>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::Unprocessable(format!("{name} is required"))),
        Some(Value::String(s)) => Uuid::parse_str(s.trim())
            .map(Some)
            .map_err(|_| ApiError::Unprocessable(format!("{name} must be a UUID"))),
        Some(_) => Err(ApiError::Unprocessable(format!("{name} must be a string (a UUID)"))),
    }
}

/// Parses a body already capped in size. `max_chars` bounds the trimmed message.
pub fn parse(body: &[u8], max_chars: usize) -> Result<ChatInput, ApiError> {
    let map = json_object(body, &FIELDS)?;
    let agent_id =
        uuid_field(&map, "agentId", true)?.ok_or_else(|| ApiError::Unprocessable("agentId is required".into()))?;
    let conversation_id = uuid_field(&map, "conversationId", false)?;
    let message = match map.get("message") {
        None | Some(Value::Null) => return Err(ApiError::Unprocessable("message is required".into())),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(ApiError::Unprocessable("message must be a string".into())),
    };
    if message.is_empty() {
        return Err(ApiError::Unprocessable("message must not be empty".into()));
    }
    if message.contains('\0') {
        return Err(ApiError::Unprocessable(
            "message must not contain NUL characters".into(),
        ));
    }
    let chars = message.chars().count();
    if chars > max_chars {
        return Err(ApiError::PayloadTooLarge(format!(
            "message is {chars} characters; the limit is {max_chars}"
        )));
    }
    Ok(ChatInput {
        agent_id,
        conversation_id,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AGENT: &str = "00000000-0000-4000-8000-000000000001";

    fn status(r: Result<ChatInput, ApiError>) -> u16 {
        r.err().map_or(200, |e| e.parts().0.as_u16())
    }

    #[test]
    fn a_valid_body_is_read_and_trimmed() {
        let body = json!({"agentId": AGENT, "message": "  hello  "}).to_string();
        let input = parse(body.as_bytes(), 4000).unwrap();
        assert_eq!(input.message, "hello");
        assert_eq!(input.conversation_id, None);
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_status() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"{".to_vec(), 400),
            (b"not json".to_vec(), 400),
            (b"".to_vec(), 400),
            (vec![0xff, 0xfe, 0x00], 400),
            (b"[]".to_vec(), 422),
            (b"\"text\"".to_vec(), 422),
            (json!({"agentId": 5, "message": "x"}).to_string().into_bytes(), 422),
            (json!({"agentId": "nope", "message": "x"}).to_string().into_bytes(), 422),
            (json!({"agentId": AGENT, "message": 7}).to_string().into_bytes(), 422),
            (
                json!({"agentId": AGENT, "message": ["a"]}).to_string().into_bytes(),
                422,
            ),
            (json!({"agentId": AGENT}).to_string().into_bytes(), 422),
            (json!({"message": "x"}).to_string().into_bytes(), 422),
            (
                json!({"agentId": AGENT, "message": "   "}).to_string().into_bytes(),
                422,
            ),
            (
                json!({"agentId": AGENT, "message": "a\u{0}b"}).to_string().into_bytes(),
                422,
            ),
            (
                json!({"agentId": AGENT, "message": "x", "conversationId": 12})
                    .to_string()
                    .into_bytes(),
                422,
            ),
            (
                json!({"agentId": AGENT, "message": "x".repeat(4001)})
                    .to_string()
                    .into_bytes(),
                413,
            ),
            ("[".repeat(10_000).into_bytes(), 400),
        ];
        for (body, expected) in cases {
            assert_eq!(
                status(parse(&body, 4000)),
                expected,
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }

    #[test]
    fn an_unknown_field_is_named() {
        let body = json!({"agentId": AGENT, "message": "x", "context": {}}).to_string();
        let err = parse(body.as_bytes(), 4000).unwrap_err();
        assert!(err.to_string().contains("`context`"), "{err}");
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        let body = json!({"agentId": AGENT, "message": "é".repeat(4000)}).to_string();
        assert!(parse(body.as_bytes(), 4000).is_ok());
    }
}
