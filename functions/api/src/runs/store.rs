//! The statements of the run routes: a run of the caller's with its steps and the calls that
//! wait for a decision (one statement), and a decision on one call (one guarded statement, after
//! the run's row is locked in the same transaction).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::live::{self, Connections};

use super::request::Verdict;
use crate::row::row;

row! {
    /// A run as its routes show it (`steps` and `awaiting` as the statement aggregates them).
    #[derive(Debug, Clone)]
    pub struct RunRow {
        pub id: Uuid,
        pub agent_id: Uuid,
        pub task_id: Option<Uuid>,
        pub conversation_id: Option<Uuid>,
        pub status: String,
        pub last_error: Option<String>,
        pub paused_until: Option<DateTime<Utc>>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        pub steps: Value,
        pub awaiting: Value,
    }
}

/// A run with its steps decoded.
#[derive(Debug, Clone)]
pub struct Run {
    pub row: RunRow,
    pub steps: Vec<StepRow>,
    pub awaiting: Vec<AwaitingCall>,
}

/// One stored step message.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRow {
    pub step: i32,
    pub role: String,
    pub content: String,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A call of the run's last step that waits for a person.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingCall {
    pub tool_call_id: String,
    pub name: String,
    pub arguments: Value,
    /// `awaiting_approval`, or `outcome_unknown` (in flight when the run stopped: approving
    /// retries it, rejecting skips it).
    pub reason: String,
}

impl FromRow for Run {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let row = RunRow::from_row(row)?;
        let steps = serde_json::from_value(row.steps.clone()).map_err(|e| DbError::decode_column("steps", e))?;
        let awaiting =
            serde_json::from_value(row.awaiting.clone()).map_err(|e| DbError::decode_column("awaiting", e))?;
        Ok(Self { row, steps, awaiting })
    }
}

/// The calls of run `r`'s last step that the run paused on (for approval, or with an unknown
/// outcome: `agent_run_calls`) and that have no result yet (decided or not): `c` each call
/// (jsonb), `n` its place in the step, `state` why it waits.
const OPEN_CALLS: &str = "
    SELECT c, n, w.state FROM messages a, jsonb_array_elements(coalesce(a.tool_calls, '[]')) WITH ORDINALITY AS e(c, n),
                              agent_run_calls w
     WHERE a.run_id = r.id AND a.role = 'assistant'
       AND a.step = (SELECT max(l.step) FROM messages l WHERE l.run_id = r.id AND l.role = 'assistant')
       AND w.run_id = r.id AND w.tool_call_id = c->>'id' AND w.state IN ('awaiting_approval', 'outcome_unknown')
       AND NOT EXISTS (SELECT 1 FROM messages x
                        WHERE x.run_id = r.id AND x.role = 'tool' AND x.tool_call_id = c->>'id')";

/// The columns of a run as [`Run`] reads them, from `agent_runs r`.
fn run_columns() -> String {
    format!(
        "r.id, r.agent_id, r.task_id, r.conversation_id, r.status, r.last_error, r.paused_until,
         r.created_at, r.updated_at,
         coalesce((SELECT jsonb_agg(jsonb_build_object(
                       'step', m.step, 'role', m.role, 'content', m.content, 'toolCalls', m.tool_calls,
                       'toolCallId', m.tool_call_id, 'createdAt', m.created_at)
                       ORDER BY m.step, m.role = 'tool', m.created_at, m.id)
                     FROM messages m WHERE m.run_id = r.id), '[]') AS steps,
         coalesce((SELECT jsonb_agg(jsonb_build_object(
                       'toolCallId', o.c->>'id', 'name', o.c->>'name', 'arguments', o.c->'arguments',
                       'reason', o.state)
                       ORDER BY o.n)
                     FROM ({OPEN_CALLS}) o
                    WHERE NOT EXISTS (SELECT 1 FROM agent_run_decisions d
                                       WHERE d.run_id = r.id AND d.tool_call_id = o.c->>'id')), '[]') AS awaiting"
    )
}

/// Run `id` of `user`, with its steps in order and the calls waiting for a decision.
#[tracing::instrument(skip_all)]
pub async fn one<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid, id: Uuid) -> Result<Option<Run>, DbError> {
    let row = sql
        .query_opt(
            &format!(
                "SELECT {} FROM agent_runs r WHERE r.id = $1 AND r.user_id = $2",
                run_columns()
            ),
            &[(&id, Type::UUID), (&user, Type::UUID)],
        )
        .await?;
    row.as_ref().map(Run::from_row).transpose()
}

/// Locks run `id` of `user` until the transaction ends, so that decisions on its calls are
/// taken one after the other (each then sees the others'); whether it exists.
#[tracing::instrument(skip_all)]
pub async fn lock<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid, id: Uuid) -> Result<bool, DbError> {
    let row = sql
        .query_opt(
            "SELECT id FROM agent_runs WHERE id = $1 AND user_id = $2 FOR UPDATE",
            &[(&id, Type::UUID), (&user, Type::UUID)],
        )
        .await?;
    Ok(row.is_some())
}

/// What a decision statement found and did.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The run's status before the decision (`None`: no run of the caller's).
    pub run_status: Option<String>,
    /// The call is one of the run's last step that needs approval and has no result.
    pub open: bool,
    /// The decision taken on the call before (`approved`, `rejected`).
    pub prior: Option<String>,
    /// This decision was stored.
    pub decided: bool,
    /// The task the decision resumed, and when it changed.
    pub task: Option<(Uuid, DateTime<Utc>)>,
    /// The live connections of the task's owner (empty when no task changed).
    pub connections: Connections,
}

/// Stores `verdict` on call `call` of run `id` of `user` when the run waits for approval, the
/// call is one that waits, and none was taken on it; when it was the last undecided call, the
/// run goes back to `running` and its task to `pending`, due now. One statement.
#[tracing::instrument(skip_all)]
pub async fn decide<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    id: Uuid,
    call: &str,
    verdict: Verdict,
) -> Result<Decided, DbError> {
    let decision = verdict.as_stored();
    let resume_task = Uuid::new_v4();
    let row = sql
        .query_one(
            &(format!(
                "WITH run AS (
                     SELECT r.id, r.agent_id, r.status, r.task_id, r.conversation_id FROM agent_runs r
                      WHERE r.id = $1 AND r.user_id = $2
                 ), open AS (
                     SELECT o.c->>'id' AS id FROM run r, LATERAL ({OPEN_CALLS}) o
                 ), prior AS (
                     SELECT d.decision FROM agent_run_decisions d JOIN run ON d.run_id = run.id
                      WHERE d.tool_call_id = $3
                 ), decided AS (
                     INSERT INTO agent_run_decisions (run_id, tool_call_id, decision)
                     SELECT run.id, $3, $4 FROM run
                      WHERE run.status = 'awaiting_approval'
                        AND EXISTS (SELECT 1 FROM open WHERE open.id = $3)
                        AND NOT EXISTS (SELECT 1 FROM prior)
                  RETURNING run_id
                 ), resumed AS (
                     -- A chat turn's run resumes in the scheduler: it gets a task of its own ($5).
                     UPDATE agent_runs r SET status = 'running', paused_until = NULL, updated_at = now(),
                                           task_id = coalesce(r.task_id, $5)
                       FROM decided
                      WHERE r.id = decided.run_id AND r.status = 'awaiting_approval'
                        AND NOT EXISTS (SELECT 1 FROM open o
                                         WHERE o.id <> $3
                                           AND NOT EXISTS (SELECT 1 FROM agent_run_decisions d
                                                            WHERE d.run_id = r.id AND d.tool_call_id = o.id))
                  RETURNING r.task_id
                 ), new_task AS (
                     INSERT INTO agent_tasks (id, agent_id, user_id, prompt, approval_status, scheduled_for)
                     SELECT $5, run.agent_id, $2,
                            'Resume the agent''s run ' || run.id || ' in conversation ' || run.conversation_id
                                || ' once its tool calls were decided',
                            'approved', now()
                       FROM resumed JOIN run ON resumed.task_id = $5
                  RETURNING id
                 ), task AS (
                     UPDATE agent_tasks t SET status = 'pending', scheduled_for = now(), updated_at = now()
                       FROM resumed
                      WHERE t.id = resumed.task_id AND t.status = 'awaiting_approval'
                  RETURNING t.id, t.user_id, t.updated_at
                 ), {}
                 SELECT (SELECT status FROM run) AS run_status,
                        EXISTS (SELECT 1 FROM open WHERE open.id = $3) AS open,
                        (SELECT decision FROM prior) AS prior,
                        EXISTS (SELECT 1 FROM decided) AS decided,
                        (SELECT id FROM task) AS task_id,
                        (SELECT updated_at FROM task) AS task_updated_at, ",
                live::connections_cte("(SELECT user_id FROM task)")
            ) + live::CONNECTIONS_COLUMNS),
            &[
                (&id, Type::UUID),
                (&user, Type::UUID),
                (&call, Type::TEXT),
                (&decision, Type::TEXT),
                (&resume_task, Type::UUID),
            ],
        )
        .await?;
    let task_id: Option<Uuid> = column(&row, "task_id")?;
    let task_updated_at: Option<DateTime<Utc>> = column(&row, "task_updated_at")?;
    Ok(Decided {
        run_status: column(&row, "run_status")?,
        open: column(&row, "open")?,
        prior: column(&row, "prior")?,
        decided: column(&row, "decided")?,
        task: task_id.zip(task_updated_at),
        connections: Connections::from_row(&row)?,
    })
}
