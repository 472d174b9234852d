//! `POST /api/agents/chat` bodies (both routes), parsed into a [`ChatInput`] whose values are
//! already valid: a body that is not JSON is a 400, one that does not fit is a 422 naming the
//! field, a message over the limit a 413. Nothing here can panic on any input.

use serde::Deserialize;
use shared::http::{parse_json, ApiError, Id, Text};
use uuid::Uuid;

/// The body as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChatBody {
    agent_id: Id,
    message: Text,
    #[serde(default)]
    conversation_id: Option<Id>,
}

/// A chat request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInput {
    pub agent_id: Uuid,
    pub conversation_id: Option<Uuid>,
    /// Trimmed, 1..=max characters, no NUL.
    pub message: String,
}

/// Parses a body already capped in size. `max_chars` bounds the trimmed message.
pub fn parse(body: &[u8], max_chars: usize) -> Result<ChatInput, ApiError> {
    let body: ChatBody = parse_json(body)?;
    Ok(ChatInput {
        agent_id: body.agent_id.0,
        conversation_id: body.conversation_id.map(|id| id.0),
        message: body.message.at_most("message", max_chars)?,
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
