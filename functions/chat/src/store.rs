//! The chat path's SQL: two round trips per message, one before the model call and one after,
//! with no connection held in between.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::model::{ChatMessage, Role};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::turn::TurnRow;

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

#[derive(Deserialize)]
struct HistoryRow {
    role: String,
    content: String,
}

/// What round trip 1 is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct TurnRequest<'a> {
    pub user_id: Uuid,
    pub agent_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub message: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// Round trip 1: checks the agent, the conversation's owner, the rate limit and the
/// Idempotency-Key; creates the conversation when none is given; stores the user's message; reads
/// the last messages. One statement; [`crate::turn::decide`] reads its answer.
#[tracing::instrument(skip_all)]
pub async fn begin_turn<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    turn: TurnRequest<'_>,
    limits: TurnLimits,
) -> Result<TurnRow, DbError> {
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
                    (SELECT id FROM conversation LIMIT 1) AS conversation_id,
                    EXISTS (SELECT 1 FROM inserted) AS inserted,
                    (SELECT instructions FROM agent) AS instructions,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'content', content)
                                               ORDER BY created_at, id), '[]'::jsonb) FROM history) AS history,
                    (SELECT jsonb_build_object('id', id, 'content', content, 'createdAt', created_at)
                       FROM prior_reply LIMIT 1) AS prior_reply,
                    greatest(1, ceil(extract(epoch FROM
                        (SELECT oldest FROM recent) + make_interval(secs => $7) - now())))::int8
                      AS retry_after_secs
               FROM decision d",
            &[
                (&turn.user_id, Type::UUID),
                (&turn.agent_id, Type::UUID),
                (&turn.conversation_id, Type::UUID),
                (&turn.message, Type::TEXT),
                (&turn.idempotency_key, Type::TEXT),
                (&limits.rate_limit, Type::INT8),
                (&limits.rate_window_secs, Type::FLOAT8),
                (&limits.history, Type::INT8),
                (&new_conversation, Type::UUID),
            ],
        )
        .await?;
    TurnRow::from_row(&row)
}

impl FromRow for TurnRow {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let history: Vec<HistoryRow> = json_column(row, "history")?;
        let history = history
            .into_iter()
            .map(|h| {
                Role::parse(&h.role)
                    .map(|role| ChatMessage {
                        role,
                        content: h.content,
                    })
                    .ok_or_else(|| DbError::Decode(format!("column history: unknown role {:?}", h.role)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prior_reply: Option<serde_json::Value> = column(row, "prior_reply")?;
        Ok(TurnRow {
            agent_ok: column(row, "agent_ok")?,
            conversation_ok: column(row, "conversation_ok")?,
            rate_ok: column(row, "rate_ok")?,
            replay: column(row, "replay")?,
            conversation_id: column(row, "conversation_id")?,
            inserted: column(row, "inserted")?,
            instructions: column(row, "instructions")?,
            history,
            prior_reply: prior_reply
                .map(|v| serde_json::from_value(v).map_err(|e| DbError::Decode(format!("column prior_reply: {e}"))))
                .transpose()?,
            retry_after_secs: column(row, "retry_after_secs")?,
        })
    }
}

/// A JSON column decoded into `T`.
fn json_column<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> Result<T, DbError> {
    serde_json::from_value(column::<serde_json::Value>(row, name)?)
        .map_err(|e| DbError::Decode(format!("column {name}: {e}")))
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
    row.as_ref().map(StoredReply::from_row).transpose()
}

impl FromRow for StoredReply {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            content: column(row, "content")?,
            created_at: column(row, "created_at")?,
        })
    }
}
