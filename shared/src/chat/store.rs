//! The chat path's SQL: two round trips per message, one before the model call and one after,
//! with no connection held in between.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{DbError, Sql, Type};
use crate::model::{ChatMessage, Role};

/// Limits applied in the first round trip.
#[derive(Debug, Clone, Copy)]
pub struct TurnLimits {
    /// Messages a user may send per window.
    pub rate_limit: i64,
    pub rate_window_secs: f64,
    /// Earlier messages given to the model.
    pub history: i64,
}

/// A reply already stored (idempotent replay) or just stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReply {
    pub id: Uuid,
    pub content: String,
    pub created_at: DateTime<Utc>,
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

#[derive(Deserialize)]
struct HistoryRow {
    role: String,
    content: String,
}

/// Round trip 1: checks the agent, the conversation's owner, the rate limit and the
/// Idempotency-Key; creates the conversation when none is given; stores the user's message; reads
/// the last messages. One statement.
#[tracing::instrument(skip_all)]
pub async fn begin_turn<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user_id: Uuid,
    agent_id: Uuid,
    conversation_id: Option<Uuid>,
    message: &str,
    idempotency_key: Option<&str>,
    limits: TurnLimits,
) -> Result<TurnStart, DbError> {
    let new_conversation = Uuid::new_v4();
    let row = sql
        .query_one(
            "WITH agent AS (
                 SELECT instructions FROM agents WHERE id = $2
             ), prior AS (
                 SELECT id, conversation_id FROM messages
                  WHERE $5::text IS NOT NULL AND user_id = $1 AND role = 'user' AND idempotency_key = $5
             ), prior_reply AS (
                 SELECT id, content, created_at FROM messages
                  WHERE $5::text IS NOT NULL AND user_id = $1 AND role = 'assistant' AND idempotency_key = $5
             ), owned AS (
                 SELECT id FROM conversations
                  WHERE id = coalesce((SELECT conversation_id FROM prior), $3)
                    AND user_id = $1 AND agent_id = $2
             ), recent AS (
                 SELECT count(*) AS n, min(created_at) AS oldest FROM messages
                  WHERE user_id = $1 AND role = 'user' AND created_at > now() - make_interval(secs => $7)
             ), decision AS (
                 SELECT EXISTS (SELECT 1 FROM agent) AS agent_ok,
                        (($3::uuid IS NULL AND NOT EXISTS (SELECT 1 FROM prior))
                          OR EXISTS (SELECT 1 FROM owned)) AS conversation_ok,
                        EXISTS (SELECT 1 FROM prior) AS replay,
                        (SELECT n FROM recent) < $6 AS rate_ok
             ), new_conversation AS (
                 INSERT INTO conversations (id, user_id, agent_id)
                 SELECT $9, $1, $2 FROM decision
                  WHERE agent_ok AND conversation_ok AND rate_ok AND NOT replay AND $3::uuid IS NULL
                 RETURNING id
             ), conversation AS (
                 SELECT id FROM new_conversation UNION ALL SELECT id FROM owned
             ), inserted AS (
                 INSERT INTO messages (conversation_id, user_id, role, content, idempotency_key)
                 SELECT c.id, $1, 'user', $4, $5 FROM conversation c, decision d
                  WHERE d.agent_ok AND d.conversation_ok AND d.rate_ok AND NOT d.replay
                     ON CONFLICT (user_id, role, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id
             ), history AS (
                 SELECT role, content, created_at, id FROM messages
                  WHERE conversation_id = (SELECT id FROM owned)
                  ORDER BY created_at DESC, id DESC
                  LIMIT $8
             )
             SELECT d.agent_ok, d.conversation_ok, d.rate_ok, d.replay,
                    (SELECT id FROM conversation LIMIT 1),
                    EXISTS (SELECT 1 FROM inserted),
                    (SELECT instructions FROM agent),
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'content', content)
                                               ORDER BY created_at, id), '[]'::jsonb) FROM history),
                    (SELECT jsonb_build_object('id', id, 'content', content, 'createdAt', created_at)
                       FROM prior_reply LIMIT 1),
                    greatest(1, ceil(extract(epoch FROM
                        (SELECT oldest FROM recent) + make_interval(secs => $7) - now())))::int8
               FROM decision d",
            &[
                (&user_id, Type::UUID),
                (&agent_id, Type::UUID),
                (&conversation_id, Type::UUID),
                (&message, Type::TEXT),
                (&idempotency_key, Type::TEXT),
                (&limits.rate_limit, Type::INT8),
                (&limits.rate_window_secs, Type::FLOAT8),
                (&limits.history, Type::INT8),
                (&new_conversation, Type::UUID),
            ],
        )
        .await?;
    let (agent_ok, conversation_ok, rate_ok, replay): (bool, bool, Option<bool>, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if !agent_ok {
        return Ok(TurnStart::AgentNotFound);
    }
    if !conversation_ok {
        return Ok(TurnStart::ConversationNotFound);
    }
    let conversation_id: Option<Uuid> = row.get(4);
    let inserted: bool = row.get(5);
    let instructions: Option<String> = row.get(6);
    let history: Vec<HistoryRow> = serde_json::from_value(row.get::<_, serde_json::Value>(7))
        .map_err(|e| DbError::Other(format!("unexpected history shape: {e}")))?;
    let prior_reply: Option<serde_json::Value> = row.get(8);
    let mut history: Vec<ChatMessage> = history
        .into_iter()
        .map(|h| ChatMessage {
            role: if h.role == "assistant" {
                Role::Assistant
            } else {
                Role::User
            },
            content: h.content,
        })
        .collect();
    if !replay && rate_ok != Some(true) {
        let retry: i64 = row.get::<_, Option<i64>>(9).unwrap_or(1);
        return Ok(TurnStart::RateLimited {
            retry_after_secs: retry.max(1) as u64,
        });
    }
    let Some(conversation_id) = conversation_id else {
        return Ok(TurnStart::ConversationNotFound);
    };
    if replay {
        return Ok(match prior_reply {
            Some(v) => TurnStart::Replay {
                conversation_id,
                reply: serde_json::from_value(v).map_err(|e| DbError::Other(format!("unexpected reply shape: {e}")))?,
            },
            // The message was stored but its reply was not (the model failed, or the function
            // stopped): answer it now; the history already ends with it.
            None => TurnStart::Ready {
                conversation_id,
                instructions: instructions.unwrap_or_default(),
                history,
            },
        });
    }
    if !inserted {
        return Ok(TurnStart::InProgress);
    }
    // The statement's snapshot does not see its own insert: the new message goes last.
    history.push(ChatMessage {
        role: Role::User,
        content: message.to_string(),
    });
    Ok(TurnStart::Ready {
        conversation_id,
        instructions: instructions.unwrap_or_default(),
        history,
    })
}

/// Round trip 2: stores the model's reply (once per Idempotency-Key) and touches the
/// conversation. `None` when a concurrent request with the same key stored its reply first.
#[tracing::instrument(skip_all)]
pub async fn store_reply<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user_id: Uuid,
    conversation_id: Uuid,
    content: &str,
    idempotency_key: Option<&str>,
) -> Result<Option<StoredReply>, DbError> {
    let row = sql
        .query_opt(
            "WITH reply AS (
                 INSERT INTO messages (conversation_id, user_id, role, content, idempotency_key)
                 VALUES ($1, $2, 'assistant', $3, $4)
                     ON CONFLICT (user_id, role, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id, content, created_at
             ), touched AS (
                 UPDATE conversations SET updated_at = now() WHERE id = $1 AND EXISTS (SELECT 1 FROM reply)
                 RETURNING 1
             )
             SELECT id, content, created_at FROM reply",
            &[
                (&conversation_id, Type::UUID),
                (&user_id, Type::UUID),
                (&content, Type::TEXT),
                (&idempotency_key, Type::TEXT),
            ],
        )
        .await?;
    Ok(row.map(|r| StoredReply {
        id: r.get(0),
        content: r.get(1),
        created_at: r.get(2),
    }))
}
