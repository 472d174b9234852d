//! The JSON of the conversation routes: pages ([`crate::cursor::PageView`]) of these.

use serde::Serialize;
use shared::http::Timestamp;
use uuid::Uuid;

use super::store::{Conversation, Message};
use crate::cursor::{Page, PageView};

/// A conversation in `{"conversations": [...], "next": ...}`, newest activity first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView<'a> {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: &'a str,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<'a> ConversationView<'a> {
    pub fn of(c: &'a Conversation) -> Self {
        Self {
            id: c.id,
            agent_id: c.agent_id,
            agent_name: &c.agent_name,
            created_at: c.created_at.into(),
            updated_at: c.updated_at.into(),
        }
    }

    pub fn page(page: &'a Page<Conversation>) -> PageView<Self> {
        page.view("conversations", Self::of)
    }
}

/// A message in `{"messages": [...], "next": ...}`: `user`, `assistant` (with `toolCalls`
/// when that step called tools) or `tool` (a call's result, its `toolCallId` naming the call);
/// the messages of a turn that ran tools carry their run's `runId`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView<'a> {
    pub id: Uuid,
    pub role: &'a str,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    pub created_at: Timestamp,
}

impl<'a> MessageView<'a> {
    /// A window fetched newest first, shown oldest to newest, `next` pointing further back.
    pub fn page(page: &'a Page<Message>) -> PageView<Self> {
        let mut view = page.view("messages", |m| MessageView {
            id: m.id,
            role: &m.role,
            content: &m.content,
            tool_calls: m.tool_calls.as_ref(),
            tool_call_id: m.tool_call_id.as_deref(),
            run_id: m.run_id,
            created_at: m.created_at.into(),
        });
        view.items.reverse();
        view
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::cursor::Cursor;

    fn message(role: &str, tool_calls: Option<serde_json::Value>, tool_call_id: Option<&str>) -> Message {
        Message {
            id: Uuid::nil(),
            role: role.into(),
            content: "text".into(),
            tool_calls,
            tool_call_id: tool_call_id.map(str::to_string),
            run_id: tool_call_id.map(|_| Uuid::from_u128(7)),
            created_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
        }
    }

    #[test]
    fn a_message_shows_its_tool_calls_or_its_call_id_only_when_it_has_them() {
        let calls = json!([{"id": "call_1", "name": "refund", "arguments": {"order": "A-1"}}]);
        // Newest first, as fetched.
        let rows = vec![
            message("tool", None, Some("call_1")),
            message("assistant", Some(calls.clone()), None),
            message("user", None, None),
        ];
        let page = Page::of(rows, 10, |m| Cursor::new(m.created_at, m.id));
        let shown = serde_json::to_value(MessageView::page(&page)).unwrap();
        let messages = shown["messages"].as_array().unwrap();
        let keys = |i: usize| {
            let mut k: Vec<&str> = messages[i].as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            k
        };
        assert_eq!(
            keys(0),
            ["content", "createdAt", "id", "role"],
            "a user message: {shown}"
        );
        assert_eq!(messages[1]["toolCalls"], calls);
        assert_eq!(keys(1), ["content", "createdAt", "id", "role", "toolCalls"]);
        assert_eq!(messages[2]["toolCallId"], "call_1");
        assert_eq!(messages[2]["runId"], Uuid::from_u128(7).to_string());
        assert_eq!(keys(2), ["content", "createdAt", "id", "role", "runId", "toolCallId"]);
    }
}
