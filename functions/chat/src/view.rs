//! What the chat functions answer, as it goes on the wire: the reply (the buffered route's body,
//! and the stream's `done`) and each Server-Sent Event's data. camelCase, times RFC 3339 through
//! [`Timestamp`]. A leaf: it imports nothing from this crate.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::http::{ApiError, Timestamp};
use shared::model::ToolCall;
use uuid::Uuid;

/// `{"status": "awaiting_approval", "runId", "toolCalls": [{"id", "name", "arguments"}]}`: an
/// agent's run paused for a person's approval of these calls (the buffered route's `202`, the
/// stream's `awaiting_approval`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedView<'a> {
    status: &'static str,
    run_id: Uuid,
    tool_calls: &'a [ToolCall],
}

impl<'a> PausedView<'a> {
    pub fn new(run_id: Uuid, tool_calls: &'a [ToolCall]) -> Self {
        Self {
            status: "awaiting_approval",
            run_id,
            tool_calls,
        }
    }
}

/// `{"conversationId", "message": {"id", "role", "content", "createdAt"}}`: a stored reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyView<'a> {
    conversation_id: Uuid,
    message: MessageView<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageView<'a> {
    id: Uuid,
    role: &'static str,
    content: &'a str,
    created_at: Timestamp,
}

impl<'a> ReplyView<'a> {
    /// The assistant's message `id`, stored in `conversation_id`.
    pub fn new(conversation_id: Uuid, id: Uuid, content: &'a str, created_at: DateTime<Utc>) -> Self {
        Self {
            conversation_id,
            message: MessageView {
                id,
                role: "assistant",
                content,
                created_at: created_at.into(),
            },
        }
    }
}

/// One Server-Sent Event of `chat-stream`: its data is the variant's fields, its name
/// [`Event::name`].
#[derive(Debug, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Event<'a> {
    /// First: the reply's conversation and id.
    Meta { conversation_id: Uuid, id: Uuid },
    /// A chunk of the reply, as the model writes it.
    Delta { text: &'a str },
    /// The model called a tool (an agent's run).
    ToolCall(&'a ToolCall),
    /// A tool call's result, as the model sees it (`{"error": ...}` when refused or failed).
    ToolResult { tool_call_id: &'a str, result: Value },
    /// The run paused for a person's approval: the last event.
    AwaitingApproval(PausedView<'a>),
    /// The stored reply, as the buffered route answers it.
    Done(ReplyView<'a>),
    /// The turn failed after streaming began (the user's message stays; a retry answers it).
    Error { code: &'static str, message: String },
}

impl<'a> Event<'a> {
    pub fn meta(conversation_id: Uuid, id: Uuid) -> Self {
        Self::Meta { conversation_id, id }
    }

    pub fn delta(text: &'a str) -> Self {
        Self::Delta { text }
    }

    /// The error's code and public message, as its JSON response would carry them.
    pub fn error(e: &ApiError) -> Self {
        let (_, code, _) = e.parts();
        Self::Error {
            code,
            message: e.public_message(),
        }
    }

    /// The event's name (its `event:` line).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Meta { .. } => "meta",
            Self::Delta { .. } => "delta",
            Self::Done(_) => "done",
            Self::Error { .. } => "error",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::AwaitingApproval(_) => "awaiting_approval",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn data(event: &Event<'_>) -> Value {
        serde_json::to_value(event).unwrap()
    }

    #[test]
    fn a_reply_has_the_shape_clients_read() {
        let at = Utc.timestamp_millis_opt(1_700_000_000_123).single().unwrap();
        let view = ReplyView::new(Uuid::from_u128(1), Uuid::from_u128(2), "hi", at);
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json!({
                "conversationId": Uuid::from_u128(1),
                "message": {
                    "id": Uuid::from_u128(2),
                    "role": "assistant",
                    "content": "hi",
                    "createdAt": "2023-11-14T22:13:20.123Z",
                }
            })
        );
    }

    #[test]
    fn each_event_has_its_name_and_data() {
        let at = Utc.timestamp_millis_opt(0).single().unwrap();
        let reply = ReplyView::new(Uuid::from_u128(1), Uuid::from_u128(2), "hi", at);
        let reply_json = serde_json::to_value(&reply).unwrap();
        let call = ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: json!({"city": "Oslo"}),
        };
        let cases = [
            (
                Event::meta(Uuid::from_u128(1), Uuid::from_u128(2)),
                "meta",
                json!({"conversationId": Uuid::from_u128(1), "id": Uuid::from_u128(2)}),
            ),
            (Event::delta("chunk"), "delta", json!({"text": "chunk"})),
            (
                Event::ToolCall(&call),
                "tool_call",
                json!({"id": "call_1", "name": "weather", "arguments": {"city": "Oslo"}}),
            ),
            (
                Event::ToolResult {
                    tool_call_id: "call_1",
                    result: json!({"temp": 3}),
                },
                "tool_result",
                json!({"toolCallId": "call_1", "result": {"temp": 3}}),
            ),
            (
                Event::AwaitingApproval(PausedView::new(Uuid::from_u128(3), std::slice::from_ref(&call))),
                "awaiting_approval",
                json!({"status": "awaiting_approval", "runId": Uuid::from_u128(3),
                       "toolCalls": [{"id": "call_1", "name": "weather", "arguments": {"city": "Oslo"}}]}),
            ),
            (Event::Done(reply), "done", reply_json),
            (
                Event::error(&ApiError::ModelTimeout),
                "error",
                json!({"code": "model_timeout", "message": "the model did not answer in time"}),
            ),
        ];
        for (event, name, expected) in cases {
            assert_eq!(event.name(), name);
            assert_eq!(data(&event), expected, "{name}");
        }
    }
}
