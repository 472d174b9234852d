//! What the first round trip's answer means: a pure function of the row, unit-tested without a
//! database.

use shared::model::{ChatMessage, Role};
use uuid::Uuid;

use crate::store::StoredReply;

/// Round trip 1's answer, decoded by column name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnRow {
    /// The agent exists.
    pub agent_ok: bool,
    /// No conversation was named, or the named one is the caller's with this agent.
    pub conversation_ok: bool,
    /// Under the rate limit (`None` when it was not evaluated).
    pub rate_ok: Option<bool>,
    /// The Idempotency-Key was seen before.
    pub replay: bool,
    /// The conversation the message belongs to (created or owned).
    pub conversation_id: Option<Uuid>,
    /// This request stored the user's message.
    pub inserted: bool,
    pub instructions: Option<String>,
    /// The conversation before this message, oldest first.
    pub history: Vec<ChatMessage>,
    /// The stored reply of an earlier request with the same Idempotency-Key.
    pub prior_reply: Option<StoredReply>,
    /// Seconds until the oldest message of the window leaves it.
    pub retry_after_secs: Option<i64>,
}

/// What the first round trip decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStart {
    AgentNotFound,
    /// Missing, or not the caller's: the same answer.
    ConversationNotFound,
    RateLimited {
        retry_after_secs: u64,
    },
    /// The Idempotency-Key was seen and answered: return the stored reply.
    Replay {
        conversation_id: Uuid,
        reply: StoredReply,
    },
    /// The same Idempotency-Key is being answered by another request right now.
    InProgress,
    /// Call the model with this, then store the reply.
    Ready {
        conversation_id: Uuid,
        instructions: String,
        /// Oldest first, the caller's message last.
        history: Vec<ChatMessage>,
    },
}

/// Reads round trip 1's row; `message` is the caller's (trimmed) message.
pub fn decide(row: TurnRow, message: &str) -> TurnStart {
    if !row.agent_ok {
        return TurnStart::AgentNotFound;
    }
    if !row.conversation_ok {
        return TurnStart::ConversationNotFound;
    }
    if !row.replay && row.rate_ok != Some(true) {
        let secs = row.retry_after_secs.unwrap_or(1).max(1);
        return TurnStart::RateLimited {
            retry_after_secs: u64::try_from(secs).unwrap_or(1),
        };
    }
    let Some(conversation_id) = row.conversation_id else {
        return TurnStart::ConversationNotFound;
    };
    let instructions = row.instructions.unwrap_or_default();
    let mut history = row.history;
    if row.replay {
        return match row.prior_reply {
            Some(reply) => TurnStart::Replay { conversation_id, reply },
            // The message was stored but its reply was not (the model failed, or the function
            // stopped): answer it now; the history already ends with it.
            None => TurnStart::Ready {
                conversation_id,
                instructions,
                history,
            },
        };
    }
    if !row.inserted {
        return TurnStart::InProgress;
    }
    // The statement's snapshot does not see its own insert: the new message goes last.
    history.push(ChatMessage {
        role: Role::User,
        content: message.to_string(),
    });
    TurnStart::Ready {
        conversation_id,
        instructions,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn conversation() -> Uuid {
        Uuid::from_u128(7)
    }

    fn admitted() -> TurnRow {
        TurnRow {
            agent_ok: true,
            conversation_ok: true,
            rate_ok: Some(true),
            conversation_id: Some(conversation()),
            inserted: true,
            instructions: Some("be brief".into()),
            ..TurnRow::default()
        }
    }

    fn said(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn an_admitted_message_goes_last_in_the_history() {
        let row = TurnRow {
            history: vec![said(Role::User, "hi"), said(Role::Assistant, "hello")],
            ..admitted()
        };
        let TurnStart::Ready {
            conversation_id,
            instructions,
            history,
        } = decide(row, "and now?")
        else {
            panic!("expected Ready");
        };
        assert_eq!(conversation_id, conversation());
        assert_eq!(instructions, "be brief");
        assert_eq!(history.last(), Some(&said(Role::User, "and now?")));
        assert_eq!(history.len(), 3);
    }

    #[test]
    fn a_missing_agent_wins_over_everything_else() {
        let row = TurnRow {
            agent_ok: false,
            conversation_ok: false,
            rate_ok: Some(false),
            ..admitted()
        };
        assert_eq!(decide(row, "x"), TurnStart::AgentNotFound);
    }

    #[test]
    fn another_users_conversation_is_not_found() {
        let row = TurnRow {
            conversation_ok: false,
            ..admitted()
        };
        assert_eq!(decide(row, "x"), TurnStart::ConversationNotFound);
        let row = TurnRow {
            conversation_id: None,
            ..admitted()
        };
        assert_eq!(decide(row, "x"), TurnStart::ConversationNotFound);
    }

    #[test]
    fn over_the_limit_is_rate_limited_with_at_least_one_second() {
        for (retry, expected) in [(Some(42), 42), (Some(0), 1), (Some(-5), 1), (None, 1)] {
            let row = TurnRow {
                rate_ok: Some(false),
                retry_after_secs: retry,
                ..admitted()
            };
            assert_eq!(
                decide(row, "x"),
                TurnStart::RateLimited {
                    retry_after_secs: expected
                }
            );
        }
        let unevaluated = TurnRow {
            rate_ok: None,
            ..admitted()
        };
        assert!(matches!(decide(unevaluated, "x"), TurnStart::RateLimited { .. }));
    }

    #[test]
    fn a_replayed_key_returns_its_stored_reply() {
        let reply = StoredReply {
            id: Uuid::from_u128(9),
            content: "stored".into(),
            created_at: Utc.timestamp_opt(1_700_000_000, 0).single().unwrap_or_default(),
        };
        let row = TurnRow {
            replay: true,
            rate_ok: Some(false),
            inserted: false,
            prior_reply: Some(reply.clone()),
            ..admitted()
        };
        assert_eq!(
            decide(row, "x"),
            TurnStart::Replay {
                conversation_id: conversation(),
                reply
            }
        );
    }

    #[test]
    fn a_replayed_key_without_a_reply_is_answered_from_the_stored_history() {
        let row = TurnRow {
            replay: true,
            inserted: false,
            history: vec![said(Role::User, "first try")],
            ..admitted()
        };
        let TurnStart::Ready { history, .. } = decide(row, "first try") else {
            panic!("expected Ready");
        };
        assert_eq!(history, vec![said(Role::User, "first try")]);
    }

    #[test]
    fn a_key_being_answered_is_in_progress() {
        let row = TurnRow {
            inserted: false,
            ..admitted()
        };
        assert_eq!(decide(row, "x"), TurnStart::InProgress);
    }
}
