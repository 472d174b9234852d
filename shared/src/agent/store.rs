//! The durable side of a run: an agent's tools, a task's run (begun, or resumed with its stored
//! steps and decisions), each step stored as it completes, the run's end. One statement each,
//! every one on a connection taken for it and given back at once: none is held while the
//! model or a tool works.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::mcp::{Approval, Source};
use super::run::{CallState, Decision, Steps, Tool};
use super::sealed::{SealError, SealKey};
use crate::db::{column, Db, DbError, Param, Sql, Type};
use crate::model::{ChatMessage, Reply, Role, ToolCall, ToolSpec, Usage};

/// The owner under which an operator's task (no user) stores its messages.
pub const OPERATOR: Uuid = Uuid::nil();

/// The tools of `agent`, by name.
#[tracing::instrument(skip_all)]
pub async fn tools_of<C: GenericClient + Sync>(sql: &Sql<'_, C>, agent: Uuid) -> Result<Vec<Tool>, DbError> {
    let rows = sql
        .query(
            "SELECT name, description, parameters, url, requires_approval, timeout_ms
               FROM agent_tools WHERE agent_id = $1 ORDER BY name COLLATE \"C\"",
            &[(&agent, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let timeout_ms: i32 = column(row, "timeout_ms")?;
            Ok(Tool {
                spec: ToolSpec {
                    name: column(row, "name")?,
                    description: column(row, "description")?,
                    parameters: column(row, "parameters")?,
                },
                url: column(row, "url")?,
                requires_approval: column(row, "requires_approval")?,
                timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)),
                mcp: None,
            })
        })
        .collect()
}

/// An MCP source as stored, its auth header sealed (the `jsonb_build_object` of
/// [`SOURCE_JSON`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRow {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    /// Hex of the sealed header.
    pub auth_header: Option<String>,
    pub allowed_tools: Option<Vec<String>>,
    pub approval: String,
    pub timeout_ms: u64,
}

/// One `agent_tool_sources` row `s` as [`SourceRow`] reads it.
pub const SOURCE_JSON: &str = "jsonb_build_object('id', s.id, 'name', s.name, 'url', s.url,
    'authHeader', encode(s.auth_header, 'hex'), 'allowedTools', s.allowed_tools,
    'approval', s.approval, 'timeoutMs', s.timeout_ms)";

/// Why a stored source cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the source has an auth header and AGENT_MCP_ENCRYPTION_KEY is unset")]
    NoKey,
    #[error("the source's auth header could not be opened")]
    Sealed(#[source] SealError),
    #[error("the source's approval {0:?} is unknown")]
    Approval(String),
}

impl SourceRow {
    /// The source with its auth header opened by `key` (sealed for `agent`).
    pub fn open(&self, agent: Uuid, key: Option<&SealKey>) -> Result<Source, SourceError> {
        let auth_header = match &self.auth_header {
            None => None,
            Some(sealed) => {
                let key = key.ok_or(SourceError::NoKey)?;
                let bytes = hex::decode(sealed).map_err(|_| SourceError::Sealed(SealError::Open))?;
                Some(key.open(agent, &bytes).map_err(SourceError::Sealed)?)
            }
        };
        Ok(Source {
            id: self.id,
            name: self.name.clone(),
            url: self.url.clone(),
            auth_header,
            allowed_tools: self.allowed_tools.clone(),
            approval: Approval::parse(&self.approval).ok_or_else(|| SourceError::Approval(self.approval.clone()))?,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// The MCP sources of `agent`, by name.
#[tracing::instrument(skip_all)]
pub async fn sources_of<C: GenericClient + Sync>(sql: &Sql<'_, C>, agent: Uuid) -> Result<Vec<SourceRow>, DbError> {
    let row = sql
        .query_one(
            &format!(
                "SELECT coalesce(jsonb_agg({SOURCE_JSON} ORDER BY s.name COLLATE \"C\"), '[]') AS sources
                   FROM agent_tool_sources s WHERE s.agent_id = $1"
            ),
            &[(&agent, Type::UUID)],
        )
        .await?;
    serde_json::from_value(column::<Value>(&row, "sources")?).map_err(|e| DbError::decode_column("sources", e))
}

/// A run as stored: its id, its conversation (a chat turn's run resumed by a task) with the
/// messages before the run, its steps as messages, how many model calls they hold and what
/// those cost (`None`: not known for each), the decisions on its calls.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub id: Uuid,
    pub conversation: Option<Uuid>,
    /// The conversation's last messages before the run (none for a task's own run).
    pub before: Vec<ChatMessage>,
    pub messages: Vec<ChatMessage>,
    pub steps: u32,
    pub usage: Option<Usage>,
    pub decisions: HashMap<String, Decision>,
    pub calls: HashMap<String, CallState>,
}

/// A stored step message (`messages` of a run, as `jsonb_build_object` writes it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepRow {
    role: String,
    content: String,
    tool_calls: Option<Vec<ToolCall>>,
    tool_call_id: Option<String>,
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
}

/// Messages of a chat turn's conversation given to its run when a task resumes it.
const HISTORY: i64 = 40;

/// Begins the run of task `task` (agent `agent`, owner `user`), or finds it as an earlier
/// attempt left it (or as a chat turn paused it): one statement.
#[tracing::instrument(skip_all)]
pub async fn begin_task_run<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    task: Uuid,
    agent: Uuid,
    user: Option<Uuid>,
) -> Result<StoredRun, DbError> {
    let row = sql
        .query_one(
            "WITH run AS (
                 INSERT INTO agent_runs (agent_id, user_id, task_id) VALUES ($2, $3, $1)
                     ON CONFLICT (task_id) WHERE task_id IS NOT NULL
                     DO UPDATE SET status = 'running', paused_until = NULL, updated_at = now()
                 RETURNING id, conversation_id
             )
             SELECT run.id, run.conversation_id,
                    coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'role', h.role, 'content', h.content, 'toolCalls', h.tool_calls,
                                  'toolCallId', h.tool_call_id) ORDER BY h.created_at, h.id)
                                FROM (SELECT * FROM messages m
                                       WHERE m.conversation_id = run.conversation_id
                                         AND m.run_id IS DISTINCT FROM run.id
                                         -- what came before the run's first step (the turn's
                                         -- own message included)
                                         AND m.created_at < coalesce((SELECT min(s.created_at) FROM messages s
                                                                       WHERE s.run_id = run.id), now())
                                       ORDER BY m.created_at DESC, m.id DESC LIMIT $4) h), '[]') AS before,
                    coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'role', m.role, 'content', m.content, 'toolCalls', m.tool_calls,
                                  'toolCallId', m.tool_call_id, 'inputTokens', m.input_tokens,
                                  'outputTokens', m.output_tokens)
                                  ORDER BY m.step, m.role = 'tool', m.created_at, m.id)
                                FROM messages m WHERE m.run_id = run.id), '[]') AS steps,
                    coalesce((SELECT jsonb_object_agg(d.tool_call_id, d.decision)
                                FROM agent_run_decisions d WHERE d.run_id = run.id), '{}') AS decisions,
                    coalesce((SELECT jsonb_object_agg(c.tool_call_id, c.state)
                                FROM agent_run_calls c WHERE c.run_id = run.id), '{}') AS calls
               FROM run",
            &[
                (&task, Type::UUID),
                (&agent, Type::UUID),
                (&user, Type::UUID),
                (&HISTORY, Type::INT8),
            ],
        )
        .await?;
    stored_run(&row)
}

fn stored_run(row: &tokio_postgres::Row) -> Result<StoredRun, DbError> {
    let steps: Vec<StepRow> =
        serde_json::from_value(column::<Value>(row, "steps")?).map_err(|e| DbError::decode_column("steps", e))?;
    let decisions: HashMap<String, String> = serde_json::from_value(column::<Value>(row, "decisions")?)
        .map_err(|e| DbError::decode_column("decisions", e))?;
    let calls: HashMap<String, String> =
        serde_json::from_value(column::<Value>(row, "calls")?).map_err(|e| DbError::decode_column("calls", e))?;
    let before: Vec<StepRow> =
        serde_json::from_value(column::<Value>(row, "before")?).map_err(|e| DbError::decode_column("before", e))?;
    let mut run = StoredRun {
        id: column(row, "id")?,
        conversation: column(row, "conversation_id")?,
        before: before.into_iter().map(message).collect::<Result<_, _>>()?,
        messages: Vec::with_capacity(steps.len()),
        steps: 0,
        usage: Some(Usage::default()),
        decisions: decisions
            .into_iter()
            .filter_map(|(id, d)| match d.as_str() {
                "approved" => Some((id, Decision::Approved)),
                "rejected" => Some((id, Decision::Rejected)),
                _ => None,
            })
            .collect(),
        calls: calls
            .into_iter()
            .filter_map(|(id, state)| CallState::parse(&state).map(|s| (id, s)))
            .collect(),
    };
    for step in steps {
        let (input_tokens, output_tokens) = (step.input_tokens, step.output_tokens);
        let message = message(step)?;
        if message.role == Role::Assistant {
            run.steps += 1;
            run.usage = match (run.usage, input_tokens, output_tokens) {
                (Some(sum), Some(input), Some(output)) => Some(Usage {
                    input_tokens: sum.input_tokens.saturating_add(input),
                    output_tokens: sum.output_tokens.saturating_add(output),
                }),
                _ => None,
            };
        }
        run.messages.push(message);
    }
    if run.steps == 0 {
        run.usage = None;
    }
    Ok(run)
}

/// A stored message as the model is given it.
fn message(row: StepRow) -> Result<ChatMessage, DbError> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| DbError::decode(format!("a stored message has the role {:?}", row.role)))?;
    Ok(match role {
        Role::Tool => ChatMessage::tool_result(row.tool_call_id.unwrap_or_default(), row.content),
        _ => ChatMessage {
            role,
            content: row.content,
            tool_calls: row.tool_calls.unwrap_or_default(),
            tool_call_id: None,
        },
    })
}

/// Stores the assistant message of step `step` of `run` (once: a second attempt storing the
/// same step changes nothing).
#[tracing::instrument(skip_all)]
pub async fn store_assistant<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    place: &Place,
    step: u32,
    reply: &Reply,
) -> Result<(), DbError> {
    let step = i32::try_from(step).unwrap_or(i32::MAX);
    let calls = (!reply.tool_calls.is_empty())
        .then(|| serde_json::to_value(&reply.tool_calls))
        .transpose()
        .map_err(|e| DbError::decode_column("tool_calls", e))?;
    let (input, output) = match reply.usage {
        Some(u) => (
            Some(i32::try_from(u.input_tokens).unwrap_or(i32::MAX)),
            Some(i32::try_from(u.output_tokens).unwrap_or(i32::MAX)),
        ),
        None => (None, None),
    };
    let params: [Param<'_>; 9] = [
        (&place.run, Type::UUID),
        (&place.user, Type::UUID),
        (&step, Type::INT4),
        (&reply.text, Type::TEXT),
        (&calls, Type::JSONB),
        (&input, Type::INT4),
        (&output, Type::INT4),
        (&reply.model, Type::TEXT),
        (&place.conversation, Type::UUID),
    ];
    sql.execute(
        "INSERT INTO messages (run_id, user_id, step, role, content, tool_calls, input_tokens, output_tokens, model,
                               conversation_id)
         VALUES ($1, $2, $3, 'assistant', $4, $5, $6, $7, $8, $9)
         ON CONFLICT (run_id, step) WHERE role = 'assistant' DO NOTHING",
        &params,
    )
    .await?;
    Ok(())
}

/// Stores the result of call `call` (step `step`) of `run` (once).
#[tracing::instrument(skip_all)]
pub async fn store_result<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    place: &Place,
    step: u32,
    call: &str,
    content: &str,
) -> Result<(), DbError> {
    let step = i32::try_from(step).unwrap_or(i32::MAX);
    sql.execute(
        "INSERT INTO messages (run_id, user_id, step, role, content, tool_call_id, conversation_id)
         VALUES ($1, $2, $3, 'tool', $4, $5, $6)
         ON CONFLICT (run_id, tool_call_id) WHERE role = 'tool' DO NOTHING",
        &[
            (&place.run, Type::UUID),
            (&place.user, Type::UUID),
            (&step, Type::INT4),
            (&content, Type::TEXT),
            (&call, Type::TEXT),
            (&place.conversation, Type::UUID),
        ],
    )
    .await?;
    Ok(())
}

/// Where a run is left: `status` (`running`, `awaiting_approval` until `paused_until`,
/// `completed`, `failed`, `step_limit`, `expired`) and why, when it did not complete.
#[tracing::instrument(skip_all)]
pub async fn end_run<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    run: Uuid,
    status: &str,
    error: Option<&str>,
    paused_until: Option<Duration>,
) -> Result<(), DbError> {
    let pause = paused_until.map(|d| d.as_secs_f64());
    sql.execute(
        "UPDATE agent_runs
            SET status = $2, last_error = $3, updated_at = now(),
                paused_until = now() + make_interval(secs => $4)
          WHERE id = $1",
        &[
            (&run, Type::UUID),
            (&status, Type::TEXT),
            (&error, Type::TEXT),
            (&pause, Type::FLOAT8),
        ],
    )
    .await?;
    Ok(())
}

/// Call `call` of `run` is being sent and cannot safely be sent again (see [`CallState::Started`]).
#[tracing::instrument(skip_all)]
pub async fn mark_started<C: GenericClient + Sync>(sql: &Sql<'_, C>, run: Uuid, call: &str) -> Result<(), DbError> {
    sql.execute(
        "INSERT INTO agent_run_calls (run_id, tool_call_id, state) VALUES ($1, $2, 'started')
         ON CONFLICT (run_id, tool_call_id) DO UPDATE SET state = 'started', updated_at = now()",
        &[(&run, Type::UUID), (&call, Type::TEXT)],
    )
    .await?;
    Ok(())
}

/// Pauses `run` until `paused_until` from now: `waiting` wait for approval, `unknown` for a person
/// to retry or skip them (an earlier decision on one of those is forgotten: it was taken
/// before the outcome became unknown). One statement.
#[tracing::instrument(skip_all)]
pub async fn pause<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    run: Uuid,
    paused_until: Duration,
    waiting: &[String],
    unknown: &[String],
) -> Result<(), DbError> {
    let pause = paused_until.as_secs_f64();
    sql.execute(
        "WITH paused AS (
             UPDATE agent_runs SET status = 'awaiting_approval', last_error = NULL, updated_at = now(),
                                   paused_until = now() + make_interval(secs => $2)
              WHERE id = $1 RETURNING id
         ), states AS (
             INSERT INTO agent_run_calls (run_id, tool_call_id, state)
             SELECT $1, w, 'awaiting_approval' FROM unnest($3::text[]) w
             UNION ALL
             SELECT $1, u, 'outcome_unknown' FROM unnest($4::text[]) u
             ON CONFLICT (run_id, tool_call_id) DO UPDATE SET state = excluded.state, updated_at = now()
         ), forgotten AS (
             DELETE FROM agent_run_decisions WHERE run_id = $1 AND tool_call_id = ANY($4::text[])
         )
         SELECT 1",
        &[
            (&run, Type::UUID),
            (&pause, Type::FLOAT8),
            (&waiting, Type::TEXT_ARRAY),
            (&unknown, Type::TEXT_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Where a run's messages go: the run, its owner (`OPERATOR` for an operator's task) and its
/// conversation (a chat turn's; a task's run has none).
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub run: Uuid,
    pub user: Uuid,
    pub conversation: Option<Uuid>,
}

/// The steps of one run, stored through the pool as they complete.
pub struct DbSteps<'a> {
    pub db: &'a Db,
    pub place: Place,
    /// The answer (a reply without calls) is stored by the caller (a chat turn's round trip 2,
    /// with its Idempotency-Key): only the steps that call tools are stored here.
    pub answer_stored_apart: bool,
}

impl Steps for DbSteps<'_> {
    type Error = DbError;

    async fn assistant(&self, step: u32, reply: &Reply) -> Result<(), DbError> {
        if self.answer_stored_apart && reply.tool_calls.is_empty() {
            return Ok(());
        }
        let conn = self.db.conn().await?;
        store_assistant(&conn.sql(), &self.place, step, reply).await
    }

    async fn result(&self, step: u32, call: &ToolCall, content: &str) -> Result<(), DbError> {
        let conn = self.db.conn().await?;
        store_result(&conn.sql(), &self.place, step, &call.id, content).await
    }

    async fn started(&self, call: &ToolCall) -> Result<(), DbError> {
        let conn = self.db.conn().await?;
        mark_started(&conn.sql(), self.place.run, &call.id).await
    }
}
