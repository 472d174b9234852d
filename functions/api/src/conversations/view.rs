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

/// A message in `{"messages": [...], "next": ...}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView<'a> {
    pub id: Uuid,
    pub role: &'a str,
    pub content: &'a str,
    pub created_at: Timestamp,
}

impl<'a> MessageView<'a> {
    /// A window fetched newest first, shown oldest to newest, `next` pointing further back.
    pub fn page(page: &'a Page<Message>) -> PageView<Self> {
        let mut view = page.view("messages", |m| MessageView {
            id: m.id,
            role: &m.role,
            content: &m.content,
            created_at: m.created_at.into(),
        });
        view.items.reverse();
        view
    }
}
