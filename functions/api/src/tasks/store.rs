//! The task statements: each one round trip, each state change one guarded statement (never
//! lost to a racing scheduler run), rows decoded by column name into [`Task`].

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::live::{self, Connections};
use shared::tasks::series::Approval;
use shared::tasks::TaskStatus;

use super::request::{Filter, NewTask};
use crate::cursor::{keyset, Cursor, Page, PageRequest};
use crate::row::row;
use crate::settings::Settings;

/// Characters of `result` and `lastError` a list item carries (the task route has them whole).
pub const PREVIEW_CHARS: i32 = 280;

row! {
    /// A task of the caller's, as stored: who, what was asked, where it stands, what came of
    /// it, when.
    #[derive(Debug, Clone)]
    pub struct Task {
        pub id: Uuid,
        pub agent_id: Uuid,
        /// The first occurrence of its series (`None` on the first one and on one-off tasks).
        pub series_id: Option<Uuid>,
        pub prompt: String,
        pub max_attempts: i32,
        pub cron: Option<String>,
        pub time_zone: Option<String>,
        pub scheduled_for: DateTime<Utc>,
        pub status: TaskStatus,
        pub approval_status: Approval,
        pub attempts: i32,
        pub result: Option<String>,
        pub last_error: Option<String>,
        /// A list item whose `result` or `lastError` was cut to a preview.
        pub truncated: bool,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl Task {
    /// The task and the owner's live connections, read by the same statement.
    fn with_connections(row: &Row) -> Result<(Task, Connections), DbError> {
        Ok((Task::from_row(row)?, Connections::from_row(row)?))
    }
}

/// The task columns; `result` and `last_error` cut to `$preview` characters when it is not null.
fn columns(preview: &str) -> String {
    format!(
        "t.id, t.agent_id, t.prompt, t.status, t.approval_status, t.scheduled_for, t.cron, t.time_zone,
         t.series_id, t.attempts, t.max_attempts, t.created_at, t.updated_at,
         CASE WHEN {preview}::int4 IS NULL THEN t.result ELSE left(t.result, {preview}) END AS result,
         CASE WHEN {preview}::int4 IS NULL THEN t.last_error ELSE left(t.last_error, {preview}) END AS last_error,
         coalesce({preview}::int4 IS NOT NULL
                  AND (length(t.result) > {preview} OR length(t.last_error) > {preview}), false) AS truncated"
    )
}

/// What creating a task came to.
pub enum Created {
    /// The task: inserted now (`fresh`), or the one its Idempotency-Key created before; the
    /// owner's live connections (read by the same statement).
    Task {
        task: Box<Task>,
        fresh: bool,
        connections: Connections,
    },
    /// The Idempotency-Key was first used for a different request.
    KeyReused,
    /// No agent the caller may use has that id.
    AgentNotFound,
}

/// A user's task-creation limits.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_active: i64,
    pub rate_limit: i64,
    pub rate_window_secs: f64,
}

impl Quota {
    pub fn of(settings: &Settings) -> Self {
        Self {
            max_active: settings.max_active_tasks,
            rate_limit: settings.task_rate_limit,
            rate_window_secs: settings.task_rate_window.as_secs_f64(),
        }
    }
}

/// Whether one more task may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Under both limits, or a replay of this Idempotency-Key (free).
    Admitted,
    /// `TASKS_RATE_LIMIT` tasks created in the window: a slot frees in this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// `TASKS_MAX_ACTIVE_PER_USER` tasks pending or running.
    TooManyActive { active: i64 },
}

/// Serialises the creations of one user until the transaction ends (a transaction-scoped
/// advisory lock: safe through the pooler), so the limits below count every committed task.
#[tracing::instrument(skip_all)]
pub async fn lock_user<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid) -> Result<(), DbError> {
    sql.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('agent_tasks.create:' || $1::text, 0))",
        &[(&user, Type::UUID)],
    )
    .await?;
    Ok(())
}

/// Counts what the limits need, under [`lock_user`] (a later statement of the same transaction
/// sees every task committed before the lock was granted): one statement.
#[tracing::instrument(skip_all)]
pub async fn admission<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    key: Option<&str>,
    quota: Quota,
) -> Result<Admission, DbError> {
    let row = sql
        .query_one(
            "WITH recent AS (
                 SELECT created_at FROM agent_tasks
                  WHERE user_id = $1 AND series_id IS NULL AND created_at > now() - make_interval(secs => $3)
             )
             SELECT EXISTS (SELECT 1 FROM agent_tasks
                             WHERE $2::text IS NOT NULL AND user_id = $1 AND idempotency_key = $2) AS replay,
                    (SELECT count(*) FROM agent_tasks
                      WHERE user_id = $1 AND status IN ('pending', 'running')) AS active,
                    (SELECT count(*) FROM recent) AS recent,
                    -- The window frees a slot when the rate_limit-th newest creation leaves it.
                    greatest(1, ceil(extract(epoch FROM coalesce(
                        (SELECT created_at FROM recent ORDER BY created_at DESC OFFSET $4 - 1 LIMIT 1)
                          + make_interval(secs => $3) - now(),
                        interval '1 second'))))::int8 AS retry_after_secs",
            &[
                (&user, Type::UUID),
                (&key, Type::TEXT),
                (&quota.rate_window_secs, Type::FLOAT8),
                (&quota.rate_limit, Type::INT8),
            ],
        )
        .await?;
    if column::<bool>(&row, "replay")? {
        return Ok(Admission::Admitted);
    }
    let active: i64 = column(&row, "active")?;
    if active >= quota.max_active {
        return Ok(Admission::TooManyActive { active });
    }
    if column::<i64>(&row, "recent")? >= quota.rate_limit {
        let secs: i64 = column(&row, "retry_after_secs")?;
        // The statement floors it at 1 second.
        let retry_after_secs = u64::try_from(secs).map_err(|e| DbError::decode_column("retry_after_secs", e))?;
        return Ok(Admission::RateLimited { retry_after_secs });
    }
    Ok(Admission::Admitted)
}

/// A task to insert: the request, when it is first due, its Idempotency-Key and what the key is
/// bound to ([`NewTask::fingerprint`]).
pub struct Insert<'a> {
    pub task: &'a NewTask,
    pub due: DateTime<Utc>,
    pub key: Option<&'a str>,
    pub fingerprint: &'a str,
}

/// Inserts the task, or finds the one this Idempotency-Key created: one statement.
#[tracing::instrument(skip_all)]
pub async fn insert<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    insert: &Insert<'_>,
) -> Result<Created, DbError> {
    let Insert {
        task,
        due,
        key,
        fingerprint,
    } = insert;
    let approval = if task.approved {
        Approval::Approved
    } else {
        Approval::Pending
    }
    .as_str();
    let statement = format!(
        "WITH agent AS (
             SELECT id FROM agents WHERE id = $2 AND (visibility = 'public' OR owner_id = $1)
         ), ins AS (
             INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for, cron, time_zone,
                                      max_attempts, idempotency_key, request_hash)
             SELECT agent.id, $1, $3, $4, $5, $6, $7, $8, $9, md5($10) FROM agent
             ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING *
         ), {live}
         SELECT {new}, true AS created, true AS same_request, {live_columns} FROM ins t
         UNION ALL
         SELECT {old}, false AS created, t.request_hash IS NOT DISTINCT FROM md5($10) AS same_request, {live_columns}
           FROM agent_tasks t
          WHERE $9::text IS NOT NULL AND t.user_id = $1 AND t.idempotency_key = $9
            AND NOT EXISTS (SELECT 1 FROM ins)",
        new = columns("NULL"),
        old = columns("NULL"),
        live = live::connections_cte("$1"),
        live_columns = live::CONNECTIONS_COLUMNS,
    );
    let params = [
        (&user as &(dyn ToSql + Sync), Type::UUID),
        (&task.agent_id, Type::UUID),
        (&task.prompt, Type::TEXT),
        (&approval, Type::TEXT),
        (due, Type::TIMESTAMPTZ),
        (&task.cron, Type::TEXT),
        (&task.time_zone, Type::TEXT),
        (&task.max_attempts, Type::INT4),
        (key, Type::TEXT),
        (fingerprint, Type::TEXT),
    ];
    // Two requests with one new key at once: the loser's statement cannot see the winner's row
    // in its snapshot (it waited on it, then did nothing); a second statement does.
    for _ in 0..2 {
        if let Some(row) = sql.query_opt(&statement, &params).await? {
            if !column::<bool>(&row, "same_request")? {
                return Ok(Created::KeyReused);
            }
            let (task, connections) = Task::with_connections(&row)?;
            return Ok(Created::Task {
                task: Box::new(task),
                fresh: column(&row, "created")?,
                connections,
            });
        }
        if key.is_none() {
            break;
        }
    }
    Ok(Created::AgentNotFound)
}

/// A page of a user's tasks: `$1` user, `$2` status or null, `$3` approval or null, `$4`/`$5`
/// the cursor or nulls, `$6` the limit, `$7` the preview length.
pub fn page_sql() -> String {
    format!(
        "SELECT {} FROM agent_tasks t
                  WHERE t.user_id = $1
                    AND ($2::text IS NULL OR t.status = $2)
                    AND ($3::text IS NULL OR t.approval_status = $3)
                    AND ($4::timestamptz IS NULL OR (t.created_at, t.id) < ($4, $5))
                  ORDER BY t.created_at DESC, t.id DESC
                  LIMIT $6",
        columns("$7")
    )
}

/// The caller's tasks that pass `filter`, newest first: the page `asked`.
#[tracing::instrument(skip_all)]
pub async fn page<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    filter: &Filter,
    asked: PageRequest,
) -> Result<Page<Task>, DbError> {
    let (status, approval) = (
        filter.status.map(TaskStatus::as_str),
        filter.approval.map(Approval::as_str),
    );
    let leading = [
        (&user as &(dyn ToSql + Sync), Type::UUID),
        (&status, Type::TEXT),
        (&approval, Type::TEXT),
    ];
    let rows = keyset(sql, &page_sql(), &leading, asked, &[(&PREVIEW_CHARS, Type::INT4)]).await?;
    Ok(Page::of(Task::from_rows(&rows)?, asked.limit, |t| {
        Cursor::new(t.created_at, t.id)
    }))
}

/// One task of a user, whole: `$1` the task, `$2` the user.
pub fn one_sql() -> String {
    format!(
        "SELECT {} FROM agent_tasks t WHERE t.id = $1 AND t.user_id = $2",
        columns("NULL")
    )
}

/// Task `id` of `user`, whole: one statement.
#[tracing::instrument(skip_all)]
pub async fn one<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid, id: Uuid) -> Result<Option<Task>, DbError> {
    let row = sql
        .query_opt(&one_sql(), &[(&id, Type::UUID), (&user, Type::UUID)])
        .await?;
    row.as_ref().map(Task::from_row).transpose()
}

/// Approves task `id` of `user` while it is pending and awaiting approval: one guarded
/// statement; `None` when the guard no longer held (nothing written). With the task, the
/// owner's live connections (read by the same statement).
#[tracing::instrument(skip_all)]
pub async fn approve<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    id: Uuid,
) -> Result<Option<(Task, Connections)>, DbError> {
    let row = sql
        .query_opt(
            &format!(
                "WITH t AS (
                     UPDATE agent_tasks t SET approval_status = 'approved', updated_at = now()
                      WHERE t.id = $1 AND t.user_id = $2 AND t.status = 'pending' AND t.approval_status = 'pending'
                  RETURNING *
                 ), {}
                 SELECT {}, {} FROM t",
                live::connections_cte("$2"),
                columns("NULL"),
                live::CONNECTIONS_COLUMNS
            ),
            &[(&id, Type::UUID), (&user, Type::UUID)],
        )
        .await?;
    row.as_ref().map(Task::with_connections).transpose()
}
