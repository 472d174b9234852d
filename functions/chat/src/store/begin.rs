//! Round trip 1, before the model call: one statement admits the message (or says why not) and
//! reads what the model is given. Its row decodes into [`TurnRow`], which
//! [`crate::turn::decide`] reads.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::agent::run::Tool;
use shared::agent::store::SOURCE_JSON;
use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::model::{ChatMessage, Role, ToolCall, ToolSpec};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::turn::{AgentRun, StoredReply, TurnRow};

/// Limits applied in the first round trip.
#[derive(Debug, Clone, Copy)]
pub struct TurnLimits {
    /// Model calls a user may start per window (a retry after a failure counts too).
    pub rate_limit: i64,
    pub rate_window_secs: f64,
    /// Model calls one user may have in flight at once.
    pub max_in_flight: i64,
    /// How long a message being answered is leased to its request (longer than the model's
    /// bound, so a second request with the same Idempotency-Key never calls the model meanwhile).
    pub answer_lease_secs: f64,
    /// Earlier messages given to the model.
    pub history: i64,
    /// Tokens a user may spend per UTC day (`USAGE_USER_DAILY_TOKENS`; 0: unlimited).
    pub user_daily_tokens: i64,
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
    let new_run = Uuid::new_v4();
    let row = sql
        .query_one(
            &format!(
                "WITH agent AS (
                 SELECT instructions FROM agents
                  WHERE id = $2 AND (visibility = 'public' OR owner_id = $1)
             ), prior AS (
                 SELECT m.id, m.conversation_id, m.content, m.answering_until, m.created_at, c.agent_id
                   FROM messages m JOIN conversations c ON c.id = m.conversation_id
                  WHERE $5::text IS NOT NULL AND m.user_id = $1 AND m.role = 'user' AND m.idempotency_key = $5
             ), prior_reply AS (
                 SELECT id, content, created_at FROM messages
                  WHERE $5::text IS NOT NULL AND user_id = $1 AND role = 'assistant' AND idempotency_key = $5
             ), owned AS (
                 SELECT id FROM conversations
                  WHERE id = coalesce((SELECT conversation_id FROM prior), $3)
                    AND user_id = $1 AND agent_id = $2
             ), decision AS (
                 SELECT EXISTS (SELECT 1 FROM agent) AS agent_ok,
                        (($3::uuid IS NULL AND NOT EXISTS (SELECT 1 FROM prior))
                          OR EXISTS (SELECT 1 FROM owned)) AS conversation_ok,
                        EXISTS (SELECT 1 FROM prior) AS replay,
                        EXISTS (SELECT 1 FROM prior_reply) AS answered,
                        EXISTS (SELECT 1 FROM prior WHERE answering_until > now()) AS answering,
                        NOT EXISTS (SELECT 1 FROM prior
                                     WHERE content <> $4 OR agent_id <> $2
                                        OR ($3::uuid IS NOT NULL AND conversation_id <> $3)) AS same_request
             ), budget AS (
                 -- The UTC day's tokens so far, the user's and the agent's (across its users).
                 -- Replies in flight are not counted yet: the overshoot is bounded by the
                 -- in-flight cap times the reply limit.
                 SELECT ($12::int8 = 0
                         OR coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                       WHERE day = (now() AT TIME ZONE 'UTC')::date AND user_id = $1), 0) < $12)
                        AND coalesce((SELECT a.daily_token_budget IS NULL
                                             OR coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                                           WHERE day = (now() AT TIME ZONE 'UTC')::date AND agent_id = a.id), 0)
                                                < a.daily_token_budget
                                        FROM agents a WHERE a.id = $2), true) AS ok
             ), admitted AS (
                 -- One atomic upsert decides: parallel requests wait on the user's row and each
                 -- sees the count the previous one left, so exactly the limit is admitted.
                 INSERT INTO chat_usage AS u (user_id, window_start, window_count, in_flight)
                 SELECT $1, now(), 1, ARRAY[now() + make_interval(secs => $10)] FROM decision d, budget b
                  WHERE d.agent_ok AND d.conversation_ok AND d.same_request AND NOT d.answered AND NOT d.answering
                    AND b.ok
                     ON CONFLICT (user_id) DO UPDATE SET
                        window_start = CASE WHEN u.window_start <= now() - make_interval(secs => $7)
                                            THEN now() ELSE u.window_start END,
                        window_count = CASE WHEN u.window_start <= now() - make_interval(secs => $7)
                                            THEN 1 ELSE u.window_count + 1 END,
                        in_flight = ARRAY(SELECT l FROM unnest(u.in_flight) l WHERE l > now())
                                    || (now() + make_interval(secs => $10))
                  WHERE (u.window_start <= now() - make_interval(secs => $7) OR u.window_count < $6)
                    AND (SELECT count(*) FROM unnest(u.in_flight) l WHERE l > now()) < $11
                 RETURNING 1
             ), new_conversation AS (
                 INSERT INTO conversations (id, user_id, agent_id)
                 SELECT $9, $1, $2 FROM decision d
                  WHERE NOT d.replay AND $3::uuid IS NULL AND EXISTS (SELECT 1 FROM admitted)
                 RETURNING id
             ), conversation AS (
                 SELECT id FROM new_conversation UNION ALL SELECT id FROM owned
             ), inserted AS (
                 INSERT INTO messages (conversation_id, user_id, role, content, idempotency_key, answering_until)
                 SELECT c.id, $1, 'user', $4, $5, now() + make_interval(secs => $10)
                   FROM conversation c, decision d
                  WHERE NOT d.replay AND EXISTS (SELECT 1 FROM admitted)
                     ON CONFLICT (user_id, role, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id
             ), claimed AS (
                 -- A retry of an unanswered message takes its lease, unless another request
                 -- holds it (the row lock makes the second one see the first one's lease).
                 UPDATE messages m SET answering_until = now() + make_interval(secs => $10)
                   FROM prior p
                  WHERE m.id = p.id AND EXISTS (SELECT 1 FROM admitted)
                    AND (m.answering_until IS NULL OR m.answering_until <= now())
                 RETURNING m.id
             ), tools AS (
                 SELECT name, description, parameters, url, requires_approval, timeout_ms FROM agent_tools
                  WHERE agent_id = $2 AND EXISTS (SELECT 1 FROM agent)
             ), sources AS (
                 SELECT * FROM agent_tool_sources s WHERE s.agent_id = $2 AND EXISTS (SELECT 1 FROM agent)
             ), run AS (
                 -- An agent with tools: the turn is a run, its steps stored as they complete.
                 INSERT INTO agent_runs (id, agent_id, user_id, conversation_id)
                 SELECT $13, $2, $1, c.id FROM conversation c
                  WHERE (EXISTS (SELECT 1 FROM tools) OR EXISTS (SELECT 1 FROM sources))
                    AND (EXISTS (SELECT 1 FROM inserted) OR EXISTS (SELECT 1 FROM claimed))
                 RETURNING id
             ), history AS (
                 -- A retry answers its own message: the history ends with it.
                 SELECT role, content, tool_calls, tool_call_id, created_at, id FROM messages
                  WHERE conversation_id = (SELECT id FROM owned)
                    AND (NOT EXISTS (SELECT 1 FROM prior) OR created_at <= (SELECT created_at FROM prior))
                  ORDER BY created_at DESC, id DESC
                  LIMIT $8
             )
             SELECT d.agent_ok, d.conversation_ok, d.replay, d.answering, d.same_request,
                    EXISTS (SELECT 1 FROM admitted) AS admitted,
                    NOT (SELECT ok FROM budget) AS over_budget,
                    ceil(extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day'
                                            - (now() AT TIME ZONE 'UTC')))::int8 AS budget_resets_in_secs,
                    (SELECT id FROM conversation LIMIT 1) AS conversation_id,
                    coalesce((SELECT id FROM inserted), (SELECT id FROM claimed)) AS message_id,
                    now() + make_interval(secs => $10) AS lease_until,
                    (SELECT instructions FROM agent) AS instructions,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'content', content,
                                                                  'toolCalls', tool_calls, 'toolCallId', tool_call_id)
                                               ORDER BY created_at, id), '[]'::jsonb) FROM history) AS history,
                    (SELECT id FROM run) AS run_id,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'name', name, 'description', description, 'parameters', parameters, 'url', url,
                                'requiresApproval', requires_approval, 'timeoutMs', timeout_ms)
                              ORDER BY name COLLATE \"C\"), '[]'::jsonb) FROM tools) AS tools,
                    (SELECT coalesce(jsonb_agg({SOURCE_JSON} ORDER BY s.name COLLATE \"C\"), '[]'::jsonb)
                       FROM sources s) AS sources,
                    (SELECT jsonb_build_object('id', id, 'content', content, 'createdAt', created_at)
                       FROM prior_reply LIMIT 1) AS prior_reply,
                    greatest(1, ceil(extract(epoch FROM coalesce(
                        (SELECT answering_until - now() FROM prior WHERE answering_until > now()),
                        (SELECT CASE WHEN u.window_count >= $6
                                       AND u.window_start > now() - make_interval(secs => $7)
                                     THEN u.window_start + make_interval(secs => $7) - now()
                                     ELSE least((SELECT min(l) FROM unnest(u.in_flight) l WHERE l > now()) - now(),
                                                interval '5 seconds') END
                           FROM chat_usage u WHERE u.user_id = $1),
                        interval '1 second'))))::int8 AS retry_after_secs
               FROM decision d"
            ),
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
                (&limits.answer_lease_secs, Type::FLOAT8),
                (&limits.max_in_flight, Type::INT8),
                (&limits.user_daily_tokens, Type::INT8),
                (&new_run, Type::UUID),
            ],
        )
        .await?;
    TurnRow::from_row(&row)
}

/// One message of the `history` column.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRow {
    role: String,
    content: String,
    tool_calls: Option<Vec<ToolCall>>,
    tool_call_id: Option<String>,
}

/// One tool of the `tools` column.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolRow {
    name: String,
    description: String,
    parameters: serde_json::Value,
    url: String,
    requires_approval: bool,
    timeout_ms: u64,
}

/// The `prior_reply` column (`jsonb_build_object` above).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriorReply {
    id: Uuid,
    content: String,
    created_at: DateTime<Utc>,
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
                        tool_calls: h.tool_calls.unwrap_or_default(),
                        tool_call_id: h.tool_call_id,
                    })
                    .ok_or_else(|| DbError::decode(format!("column history: unknown role {:?}", h.role)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prior_reply: Option<PriorReply> = json_column(row, "prior_reply")?;
        let tools: Vec<ToolRow> = json_column(row, "tools")?;
        let sources = json_column(row, "sources")?;
        let run = column::<Option<Uuid>>(row, "run_id")?.map(|id| AgentRun {
            id,
            tools: tools
                .into_iter()
                .map(|t| Tool {
                    spec: ToolSpec {
                        name: t.name,
                        description: t.description,
                        parameters: t.parameters,
                    },
                    url: t.url,
                    requires_approval: t.requires_approval,
                    timeout: std::time::Duration::from_millis(t.timeout_ms),
                    mcp: None,
                })
                .collect(),
            sources,
        });
        Ok(TurnRow {
            agent_ok: column(row, "agent_ok")?,
            conversation_ok: column(row, "conversation_ok")?,
            replay: column(row, "replay")?,
            answering: column(row, "answering")?,
            same_request: column(row, "same_request")?,
            admitted: column(row, "admitted")?,
            conversation_id: column(row, "conversation_id")?,
            message_id: column(row, "message_id")?,
            lease_until: column(row, "lease_until")?,
            instructions: column(row, "instructions")?,
            history,
            prior_reply: prior_reply.map(|p| StoredReply {
                id: p.id,
                content: p.content,
                created_at: p.created_at,
            }),
            retry_after_secs: column(row, "retry_after_secs")?,
            over_budget: column(row, "over_budget")?,
            budget_resets_in_secs: column(row, "budget_resets_in_secs")?,
            run,
        })
    }
}

/// A JSON column decoded into `T` (SQL `NULL` reads as JSON `null`: only an `Option` takes it).
fn json_column<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> Result<T, DbError> {
    let value: Option<serde_json::Value> = column(row, name)?;
    serde_json::from_value(value.unwrap_or(serde_json::Value::Null)).map_err(|e| DbError::decode_column(name, e))
}
