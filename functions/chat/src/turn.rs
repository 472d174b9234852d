//! What the first round trip's answer means: a pure function of the row, unit-tested without a
//! database. A leaf: it imports nothing from this crate (`store` decodes rows into its types).

use chrono::{DateTime, Utc};
use shared::agent::run::Tool;
use shared::agent::store::SourceRow;
use shared::model::{ChatMessage, Role};
use uuid::Uuid;

/// A turn of an agent with tools: its run (created by round trip 1) and the agent's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRun {
    pub id: Uuid,
    pub tools: Vec<Tool>,
    /// Its MCP sources, listed once the connection is given back.
    pub sources: Vec<SourceRow>,
}

/// A reply already stored (idempotent replay) or just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub id: Uuid,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// Round trip 1's answer, decoded by column name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnRow {
    /// The agent exists and the caller may use it (public, or theirs).
    pub agent_ok: bool,
    /// No conversation was named, or the named one is the caller's with this agent.
    pub conversation_ok: bool,
    /// The Idempotency-Key was seen before.
    pub replay: bool,
    /// That earlier request is being answered right now (its lease is live).
    pub answering: bool,
    /// The key's earlier request had this message, agent and conversation.
    pub same_request: bool,
    /// The rate limit and the in-flight cap admitted a model call.
    pub admitted: bool,
    /// The conversation the message belongs to (created or owned).
    pub conversation_id: Option<Uuid>,
    /// The user's message this request now answers (inserted, or a retry's lease taken).
    pub message_id: Option<Uuid>,
    /// This request's lease (on the message, and in the user's in-flight slots): it releases
    /// only what it holds.
    pub lease_until: DateTime<Utc>,
    pub instructions: Option<String>,
    /// The conversation so far, oldest first (a retried message is already in it).
    pub history: Vec<ChatMessage>,
    /// The stored reply of an earlier request with the same Idempotency-Key.
    pub prior_reply: Option<StoredReply>,
    /// The user (`USAGE_USER_DAILY_TOKENS`) or the agent (`daily_token_budget`) spent its
    /// tokens for the UTC day: nothing was admitted.
    pub over_budget: bool,
    /// Seconds until the next UTC day, when budgets reset.
    pub budget_resets_in_secs: i64,
    /// When to come back: the lease of the request being answered, or the rate-limit window.
    pub retry_after_secs: Option<i64>,
    /// The turn's run, when the agent has tools.
    pub run: Option<AgentRun>,
}

/// What the first round trip decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStart {
    /// Missing, or another owner's private agent: the same answer.
    AgentNotFound,
    /// Missing, or not the caller's: the same answer.
    ConversationNotFound,
    /// The Idempotency-Key was used for a different request.
    KeyReused,
    RateLimited {
        retry_after_secs: u64,
    },
    /// The user's or the agent's daily tokens are spent: come back at the next UTC day.
    BudgetExhausted {
        retry_after_secs: u64,
    },
    /// The Idempotency-Key was seen and answered: return the stored reply.
    Replay {
        conversation_id: Uuid,
        reply: StoredReply,
    },
    /// The same Idempotency-Key is being answered by another request right now. `release`: this
    /// request was admitted (lost a race for the key) and must give its in-flight slot back.
    InProgress {
        retry_after_secs: u64,
        release: bool,
    },
    /// Call the model with this, then store the reply.
    Ready {
        conversation_id: Uuid,
        /// The user's message being answered.
        message_id: Uuid,
        instructions: String,
        /// Oldest first, the caller's message last.
        history: Vec<ChatMessage>,
        /// The agent has tools: the turn is this run.
        run: Option<AgentRun>,
    },
}

/// Reads round trip 1's row; `message` is the caller's (trimmed) message.
pub fn decide(row: TurnRow, message: &str) -> TurnStart {
    let retry_after_secs = u64::try_from(row.retry_after_secs.unwrap_or(1).max(1)).unwrap_or(1);
    if !row.agent_ok {
        return TurnStart::AgentNotFound;
    }
    if !row.conversation_ok {
        return TurnStart::ConversationNotFound;
    }
    if row.replay && !row.same_request {
        return TurnStart::KeyReused;
    }
    if let (Some(reply), Some(conversation_id)) = (row.prior_reply, row.conversation_id) {
        return TurnStart::Replay { conversation_id, reply };
    }
    if !row.admitted {
        return if row.answering {
            TurnStart::InProgress {
                retry_after_secs,
                release: false,
            }
        } else {
            if row.over_budget {
                TurnStart::BudgetExhausted {
                    retry_after_secs: u64::try_from(row.budget_resets_in_secs.max(1)).unwrap_or(1),
                }
            } else {
                TurnStart::RateLimited { retry_after_secs }
            }
        };
    }
    let Some(conversation_id) = row.conversation_id else {
        return TurnStart::ConversationNotFound;
    };
    let Some(message_id) = row.message_id else {
        // Admitted, but a parallel request with the same key inserted or leased the message first.
        return TurnStart::InProgress {
            retry_after_secs,
            release: true,
        };
    };
    let mut history = row.history;
    if !row.replay {
        // The statement's snapshot does not see its own insert: the new message goes last.
        history.push(ChatMessage::text(Role::User, message));
    }
    TurnStart::Ready {
        conversation_id,
        message_id,
        instructions: row.instructions.unwrap_or_default(),
        history,
        run: row.run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn conversation() -> Uuid {
        Uuid::from_u128(7)
    }

    fn message() -> Uuid {
        Uuid::from_u128(8)
    }

    fn admitted() -> TurnRow {
        TurnRow {
            agent_ok: true,
            conversation_ok: true,
            same_request: true,
            admitted: true,
            conversation_id: Some(conversation()),
            message_id: Some(message()),
            instructions: Some("be brief".into()),
            ..TurnRow::default()
        }
    }

    fn said(role: Role, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    fn stored() -> StoredReply {
        StoredReply {
            id: Uuid::from_u128(9),
            content: "stored".into(),
            created_at: Utc.timestamp_opt(1_700_000_000, 0).single().unwrap_or_default(),
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
            message_id,
            instructions,
            history,
            run,
        } = decide(row, "and now?")
        else {
            panic!("expected Ready");
        };
        assert_eq!(run, None, "an agent without tools: no run");
        assert_eq!((conversation_id, message_id), (conversation(), message()));
        assert_eq!(instructions, "be brief");
        assert_eq!(history.last(), Some(&said(Role::User, "and now?")));
        assert_eq!(history.len(), 3);
    }

    #[test]
    fn an_agent_the_caller_may_not_use_wins_over_everything_else() {
        let row = TurnRow {
            agent_ok: false,
            conversation_ok: false,
            admitted: false,
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
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused() {
        let row = TurnRow {
            replay: true,
            same_request: false,
            prior_reply: Some(stored()),
            ..admitted()
        };
        assert_eq!(decide(row, "x"), TurnStart::KeyReused);
    }

    #[test]
    fn not_admitted_is_rate_limited_with_at_least_one_second() {
        for (retry, expected) in [(Some(42), 42), (Some(0), 1), (Some(-5), 1), (None, 1)] {
            let row = TurnRow {
                admitted: false,
                conversation_id: None,
                message_id: None,
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
    }

    #[test]
    fn a_replayed_key_returns_its_stored_reply_without_admission() {
        let row = TurnRow {
            replay: true,
            admitted: false,
            message_id: None,
            prior_reply: Some(stored()),
            ..admitted()
        };
        assert_eq!(
            decide(row, "x"),
            TurnStart::Replay {
                conversation_id: conversation(),
                reply: stored()
            }
        );
    }

    #[test]
    fn a_retry_after_a_failure_answers_the_stored_message_once() {
        let row = TurnRow {
            replay: true,
            history: vec![said(Role::User, "first try")],
            ..admitted()
        };
        let TurnStart::Ready { history, .. } = decide(row, "first try") else {
            panic!("expected Ready");
        };
        assert_eq!(history, vec![said(Role::User, "first try")]);
    }

    #[test]
    fn a_key_being_answered_is_in_progress_and_holds_nothing() {
        let row = TurnRow {
            replay: true,
            answering: true,
            admitted: false,
            message_id: None,
            retry_after_secs: Some(12),
            ..admitted()
        };
        assert_eq!(
            decide(row, "x"),
            TurnStart::InProgress {
                retry_after_secs: 12,
                release: false
            }
        );
    }

    #[test]
    fn losing_the_race_for_a_key_gives_the_admission_back() {
        let row = TurnRow {
            message_id: None,
            ..admitted()
        };
        assert_eq!(
            decide(row, "x"),
            TurnStart::InProgress {
                retry_after_secs: 1,
                release: true
            }
        );
    }
}
