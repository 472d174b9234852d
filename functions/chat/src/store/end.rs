//! How a turn ends: round trip 2 stores the model's reply (once per Idempotency-Key), or, after a
//! failure, the turn's lease and in-flight slot are given back.

use chrono::{DateTime, Utc};
use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::live::{self, Connections};
use shared::model::Usage;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::turn::StoredReply;

/// Who a turn is for and where its reply goes.
#[derive(Debug, Clone, Copy)]
pub struct TurnKeys<'a> {
    pub user_id: Uuid,
    pub agent_id: Uuid,
    pub conversation_id: Uuid,
    pub idempotency_key: Option<&'a str>,
}

/// A reply to store: its text, what it cost (`None`: unknown), the model that wrote it, and
/// for an agent's run the run and the step it ends.
#[derive(Debug, Clone, Copy)]
pub struct ReplyToStore<'a> {
    pub content: &'a str,
    pub usage: Option<Usage>,
    pub model: Option<&'a str>,
    pub run: Option<(Uuid, u32)>,
}

/// Round trip 2: stores the model's reply (once per Idempotency-Key) with its usage, adds that
/// usage to the user's day (`usage_daily`) and touches the conversation, in one statement.
/// `None` when a concurrent request with the same key stored its reply first.
#[tracing::instrument(skip_all)]
pub async fn store_reply<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    turn: &TurnKeys<'_>,
    reply: ReplyToStore<'_>,
    lease: DateTime<Utc>,
    id: Option<Uuid>,
) -> Result<Option<(StoredReply, Connections)>, DbError> {
    let (run, step) = match reply.run {
        Some((run, step)) => (Some(run), Some(i32::try_from(step).unwrap_or(i32::MAX))),
        None => (None, None),
    };
    let input = reply.usage.map(|u| u.input_tokens);
    let output = reply.usage.map(|u| u.output_tokens);
    // The owner's live connections come back with the reply (pushed after this commits).
    let statement = format!(
        "WITH reply AS (
                 INSERT INTO messages (id, conversation_id, user_id, role, content, idempotency_key,
                                       input_tokens, output_tokens, model, run_id, step)
                 VALUES (coalesce($6, gen_random_uuid()), $1, $2, 'assistant', $3, $4, $8, $9, $10, $11, $12)
                     ON CONFLICT (user_id, role, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id, content, created_at
             ), used AS (
                 INSERT INTO usage_daily AS u (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
                 SELECT (now() AT TIME ZONE 'UTC')::date, $2, $7, coalesce($10, 'unknown'),
                        coalesce($8, 0), coalesce($9, 0), 1
                   FROM reply
                     ON CONFLICT (day, user_id, agent_id, model) DO UPDATE
                    SET input_tokens = u.input_tokens + EXCLUDED.input_tokens,
                        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
                        calls = u.calls + 1
                 RETURNING 1
             ), touched AS (
                 UPDATE conversations SET updated_at = now() WHERE id = $1 AND EXISTS (SELECT 1 FROM reply)
                 RETURNING 1
             ), ran AS (
                 -- An agent's run ends with its answer.
                 UPDATE agent_runs SET status = 'completed', updated_at = now()
                  WHERE id = $11 AND EXISTS (SELECT 1 FROM reply)
                 RETURNING 1
             ), released AS (
                 UPDATE chat_usage SET in_flight = array_remove(in_flight, $5) WHERE user_id = $2
                 RETURNING 1
             ), {live}
             SELECT id, content, created_at, {live_columns} FROM reply",
        live = live::connections_cte("$2"),
        live_columns = live::CONNECTIONS_COLUMNS,
    );
    let row = sql
        .query_opt(
            &statement,
            &[
                (&turn.conversation_id, Type::UUID),
                (&turn.user_id, Type::UUID),
                (&reply.content, Type::TEXT),
                (&turn.idempotency_key, Type::TEXT),
                (&lease, Type::TIMESTAMPTZ),
                (&id, Type::UUID),
                (&turn.agent_id, Type::UUID),
                (&input, Type::INT8),
                (&output, Type::INT8),
                (&reply.model, Type::TEXT),
                (&run, Type::UUID),
                (&step, Type::INT4),
            ],
        )
        .await?;
    row.as_ref()
        .map(|row| Ok((StoredReply::from_row(row)?, Connections::from_row(row)?)))
        .transpose()
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

/// After a failed or timed-out model call (or a failed second round trip): the message's lease
/// and the user's in-flight slot are given back at once, so a retry with the same
/// Idempotency-Key may answer it (counted against the rate limit like any model call).
#[tracing::instrument(skip_all)]
pub async fn release_turn<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user_id: Uuid,
    message_id: Option<Uuid>,
    lease: DateTime<Utc>,
) -> Result<(), DbError> {
    // Both guarded by this request's own lease: a later request's lease is never touched.
    sql.execute(
        "WITH lease AS (
             UPDATE messages SET answering_until = NULL
              WHERE id = $2 AND user_id = $1 AND answering_until = $3
             RETURNING 1
         )
         UPDATE chat_usage SET in_flight = array_remove(in_flight, $3) WHERE user_id = $1",
        &[
            (&user_id, Type::UUID),
            (&message_id, Type::UUID),
            (&lease, Type::TIMESTAMPTZ),
        ],
    )
    .await
    .map(|_| ())
}
