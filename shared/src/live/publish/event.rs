//! The live events (the JSON the browser receives: ids and status, never content) and a
//! [`Delivery`]: one event and the connections that get it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::live::Connections;

/// One live event (serialised as the JSON the browser receives). `at` is the changing
/// statement's time at the database's precision (microseconds, RFC 3339), so that it equals the
/// row's `updated_at`; HTTP answers use `shared::http::Timestamp`'s milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LiveEvent {
    /// A message stored in one of the user's conversations.
    #[serde(rename = "message.created", rename_all = "camelCase")]
    MessageCreated {
        conversation_id: Uuid,
        message_id: Uuid,
        role: String,
        at: DateTime<Utc>,
    },
    /// One of the user's tasks changed (created, decided, run, retried, ended).
    #[serde(rename = "task.updated", rename_all = "camelCase")]
    TaskUpdated {
        task_id: Uuid,
        status: String,
        at: DateTime<Utc>,
    },
}

impl LiveEvent {
    pub fn message(conversation_id: Uuid, message_id: Uuid, role: &str, at: DateTime<Utc>) -> Self {
        Self::MessageCreated {
            conversation_id,
            message_id,
            role: role.to_string(),
            at,
        }
    }

    /// `at`: when the change was made (the changing statement's `now()`).
    pub fn task(task_id: Uuid, status: &str, at: DateTime<Utc>) -> Self {
        Self::TaskUpdated {
            task_id,
            status: status.to_string(),
            at,
        }
    }
}

/// One event and who gets it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: LiveEvent,
    pub to: Connections,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_ids_and_status_in_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let id = Uuid::nil();
        let task = serde_json::to_value(LiveEvent::TaskUpdated {
            task_id: id,
            status: "completed".into(),
            at,
        })
        .unwrap_or_default();
        assert_eq!(
            task,
            serde_json::json!({"type": "task.updated", "taskId": id, "status": "completed", "at": "2025-01-02T03:04:05Z"})
        );
        let message = serde_json::to_value(LiveEvent::message(id, id, "assistant", at)).unwrap_or_default();
        assert_eq!(
            message,
            serde_json::json!({"type": "message.created", "conversationId": id, "messageId": id, "role": "assistant", "at": "2025-01-02T03:04:05Z"})
        );
    }
}
