//! Agent tasks as more than one function sees them: their states, when they are due and how
//! they recur (`series`, `recurrence`), and the guarded statements a person's decision makes.
//! The scheduler's own statements (claim, finish, rescue) live in the scheduler.

pub mod recurrence;
pub mod series;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{column, DbError, FromRow, Row, Sql, Type};
use crate::live::{self, Connections};
use series::{Approval, Next};

/// `agent_tasks.status`, stored as text (no Postgres enum: the pooler rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Running,
    /// Its agent's run waits for a person to approve or reject a tool call.
    AwaitingApproval,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::AwaitingApproval => "awaiting_approval",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// A stored status; `None` for anything else.
    pub fn parse(text: &str) -> Option<TaskStatus> {
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::AwaitingApproval,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// When a task is due and how it recurs: the columns the series rule reads.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub scheduled_for: DateTime<Utc>,
    pub approval: Approval,
    /// Failed occurrences of its series in a row before it.
    pub series_failures: i32,
}

impl Schedule {
    /// This task as an occurrence of its series (`None` when it does not recur).
    pub fn occurrence(&self) -> Option<series::Occurrence<'_>> {
        self.cron.as_deref().map(|cron| series::Occurrence {
            cron,
            time_zone: self.time_zone.as_deref(),
            scheduled_for: self.scheduled_for,
            approval: self.approval,
            failures: self.series_failures,
        })
    }
}

impl FromRow for Schedule {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            cron: column(row, "cron")?,
            time_zone: column(row, "time_zone")?,
            scheduled_for: column(row, "scheduled_for")?,
            approval: column(row, "approval_status")?,
            series_failures: column(row, "series_failures")?,
        })
    }
}

/// States are stored as text (the pooler rule: no Postgres enums) and read back by their enum's
/// `parse`, so `column::<TaskStatus>(row, "status")` works like any column: unknown text is a
/// decoding error naming the column, with the text as its cause.
macro_rules! state_from_text {
    ($($state:ty: $what:literal),* $(,)?) => {
        $(impl<'a> tokio_postgres::types::FromSql<'a> for $state {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                <$state>::parse(text).ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), text).into())
            }

            fn accepts(ty: &Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        })*
    };
}

state_from_text!(TaskStatus: "task status", Approval: "approval");

/// The one statement fragment that creates next occurrences, used by every statement that ends
/// occurrences (finish, rescue, reject, cancel). It reads a CTE `fin(id, next_at, next_approval,
/// next_failures, next_note)` of the occurrences just ended by this statement and copies each
/// into its series' next slot, at most once (the `(series_id, scheduled_for)` unique key).
pub const INSERT_NEXT: &str = "
                 INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for, cron,
                                          time_zone, series_id, max_attempts, series_failures, last_error)
                 SELECT t.agent_id, t.user_id, t.prompt, f.next_approval, f.next_at, t.cron, t.time_zone,
                        coalesce(t.series_id, t.id), t.max_attempts, f.next_failures, f.next_note
                   FROM fin f JOIN agent_tasks t ON t.id = f.id
                  WHERE f.next_at IS NOT NULL AND t.cron IS NOT NULL
                     ON CONFLICT (series_id, scheduled_for) WHERE series_id IS NOT NULL DO NOTHING
              RETURNING (last_error IS NOT NULL) AS suspended";

/// Next occurrences as parallel arrays (statement parameters).
pub struct NextColumns<'a> {
    pub at: Vec<Option<DateTime<Utc>>>,
    pub approval: Vec<Option<&'static str>>,
    pub failures: Vec<Option<i32>>,
    pub note: Vec<Option<&'a str>>,
}

impl<'a> NextColumns<'a> {
    pub fn of(nexts: &[Option<&'a Next>]) -> Self {
        Self {
            at: nexts.iter().map(|n| n.map(|n| n.at)).collect(),
            approval: nexts.iter().map(|n| n.map(|n| n.approval.as_str())).collect(),
            failures: nexts.iter().map(|n| n.map(|n| n.failures)).collect(),
            note: nexts.iter().map(|n| n.and_then(|n| n.note.as_deref())).collect(),
        }
    }
}

/// A task as a person's decision about it needs it.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub id: Uuid,
    pub status: TaskStatus,
    pub schedule: Schedule,
}

impl FromRow for TaskState {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            status: column(row, "status")?,
            schedule: Schedule::from_row(row)?,
        })
    }
}

/// The task `id` of `user` (any user's when `None`, for operators).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn task_state<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    id: Uuid,
    user: Option<Uuid>,
) -> Result<Option<TaskState>, DbError> {
    let row = sql
        .query_opt(
            "SELECT id, status, approval_status, cron, time_zone, scheduled_for, series_failures
               FROM agent_tasks WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)",
            &[(&id, Type::UUID), (&user, Type::UUID)],
        )
        .await?;
    row.as_ref().map(TaskState::from_row).transpose()
}

/// A person's decision that ends a pending occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Only while its approval is pending.
    Reject,
    /// While it has not started.
    Cancel,
}

/// Ends occurrence `id` by `decision`, for `scope`, in one guarded statement: the occurrence
/// must still be pending (and, to reject, awaiting approval); for the series, its other pending
/// occurrences are cancelled too and no next one is created; for the occurrence, `next` is
/// created (see [`series`]). False when the guard no longer holds (it started, or was
/// decided meanwhile): nothing is written.
pub async fn decide<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    id: Uuid,
    user: Option<Uuid>,
    decision: Decision,
    scope: series::Scope,
    next: Option<&Next>,
) -> Result<bool, DbError> {
    decide_with_connections(sql, id, user, decision, scope, next)
        .await
        .map(|(ended, _)| ended)
}

/// [`decide`], and the task owner's live connections (read by the same statement), for the
/// `task.updated` event pushed after it commits.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn decide_with_connections<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    id: Uuid,
    user: Option<Uuid>,
    decision: Decision,
    scope: series::Scope,
    next: Option<&Next>,
) -> Result<(bool, Connections), DbError> {
    let reject = decision == Decision::Reject;
    let whole_series = scope == series::Scope::Series;
    let next = NextColumns::of(&[next.filter(|_| !whole_series)]);
    let row = sql
        .query_one(
            &("WITH target AS (
                 UPDATE agent_tasks t
                    SET status = CASE WHEN $3 THEN t.status ELSE 'cancelled' END,
                        approval_status = CASE WHEN $3 THEN 'rejected' ELSE t.approval_status END,
                        updated_at = now()
                  WHERE t.id = $1 AND ($2::uuid IS NULL OR t.user_id = $2) AND t.status = 'pending'
                    AND t.approval_status <> 'rejected' AND (NOT $3 OR t.approval_status = 'pending')
              RETURNING t.id, t.user_id, coalesce(t.series_id, t.id) AS series
             ), rest AS (
                 UPDATE agent_tasks s SET status = 'cancelled', updated_at = now()
                   FROM target
                  WHERE $4 AND coalesce(s.series_id, s.id) = target.series AND s.id <> target.id
                    AND s.status = 'pending'
              RETURNING s.id
             ), fin AS (
                 SELECT id, ($5::timestamptz[])[1] AS next_at, ($6::text[])[1] AS next_approval,
                        ($7::int4[])[1] AS next_failures, ($8::text[])[1] AS next_note
                   FROM target WHERE NOT $4
             ), nxt AS ("
                .to_string()
                + INSERT_NEXT
                + "), "
                + &live::connections_cte("(SELECT user_id FROM target)")
                + "
             SELECT (SELECT count(*) FROM target) AS ended, "
                + live::CONNECTIONS_COLUMNS),
            &[
                (&id, Type::UUID),
                (&user, Type::UUID),
                (&reject, Type::BOOL),
                (&whole_series, Type::BOOL),
                (&next.at, Type::TIMESTAMPTZ_ARRAY),
                (&next.approval, Type::TEXT_ARRAY),
                (&next.failures, Type::INT4_ARRAY),
                (&next.note, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok((column::<i64>(&row, "ended")? == 1, Connections::from_row(&row)?))
}
