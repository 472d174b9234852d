//! `/api/tasks`: the caller's tasks, created with validation, listed, read, and approved,
//! rejected or cancelled by guarded statements (never lost to a racing scheduler run).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::http::{json_object, ApiError};
use shared::live::{self, Connections};
use shared::tasks::recurrence::{field_count, next_occurrence, shortest_gap, RecurrenceError};

use crate::agents::time;
use crate::cursor::Cursor;
use crate::settings::Settings;

/// Characters of `result` and `lastError` a list item carries (the task route has them whole).
pub const PREVIEW_CHARS: i32 = 280;
/// Longest cron expression and time-zone name (the table's own bounds).
const MAX_CRON_CHARS: usize = 200;
const MAX_TIME_ZONE_CHARS: usize = 64;
/// A `scheduledFor` further in the past than this is a mistake, not "now".
const PAST_TOLERANCE_HOURS: i64 = 24;

const FIELDS: [&str; 7] = [
    "agentId",
    "prompt",
    "scheduledFor",
    "cron",
    "timeZone",
    "maxAttempts",
    "approved",
];

/// A validated `POST /api/tasks` body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewTask {
    pub agent_id: Uuid,
    pub prompt: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub max_attempts: i32,
    pub approved: bool,
}

impl NewTask {
    /// When the first occurrence is due: `scheduledFor`; else the cron's next slot; else now.
    pub fn first_due(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
        match (&self.scheduled_for, &self.cron) {
            (Some(at), _) => Ok(*at),
            (None, Some(cron)) => {
                next_occurrence(cron, self.time_zone.as_deref(), now, now).map_err(|e| recurrence_error(&e))
            }
            (None, None) => Ok(now),
        }
    }

    /// What the Idempotency-Key is bound to: the validated request, as it was asked.
    fn fingerprint(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn recurrence_error(e: &RecurrenceError) -> ApiError {
    ApiError::Unprocessable(match e {
        RecurrenceError::Cron(_) => {
            "cron is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week)".into()
        }
        RecurrenceError::TimeZone(_) => "timeZone is not a known IANA time zone (e.g. Europe/Paris)".into(),
        RecurrenceError::NoNext(_) => "cron has no future occurrence".into(),
    })
}

/// A schedule may not fire more often than `TASKS_MIN_INTERVAL_SECS`: no seconds field, and no
/// two runs closer than that.
fn check_interval(
    cron: &str,
    time_zone: Option<&str>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if field_count(cron) > 5 {
        return Err(ApiError::Unprocessable(
            "cron must have 5 fields (minute hour day-of-month month day-of-week); a seconds field is not accepted"
                .into(),
        ));
    }
    let gap = shortest_gap(cron, time_zone, now).map_err(|e| recurrence_error(&e))?;
    let min = Duration::from_std(settings.min_interval).unwrap_or(Duration::MAX);
    match gap {
        Some(gap) if gap < min => Err(ApiError::Unprocessable(format!(
            "cron runs every {} s at times; the shortest interval allowed is {} s",
            gap.num_seconds(),
            min.num_seconds()
        ))),
        _ => Ok(()),
    }
}

fn string_field<'a>(map: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(ApiError::Unprocessable(format!("{name} must be a string"))),
    }
}

/// Parses and validates a body already capped in size.
pub fn parse(body: &[u8], settings: &Settings, now: DateTime<Utc>) -> Result<NewTask, ApiError> {
    let map = json_object(body, &FIELDS)?;
    let agent_id = string_field(&map, "agentId")?
        .ok_or_else(|| ApiError::Unprocessable("agentId is required".into()))
        .and_then(|s| Uuid::parse_str(s).map_err(|_| ApiError::Unprocessable("agentId must be a UUID".into())))?;
    let prompt = string_field(&map, "prompt")?.ok_or_else(|| ApiError::Unprocessable("prompt is required".into()))?;
    if prompt.is_empty() {
        return Err(ApiError::Unprocessable("prompt must not be empty".into()));
    }
    if prompt.contains('\0') {
        return Err(ApiError::Unprocessable("prompt must not contain NUL characters".into()));
    }
    let chars = prompt.chars().count();
    if chars > settings.max_prompt_chars {
        return Err(ApiError::PayloadTooLarge(format!(
            "prompt is {chars} characters; the limit is {}",
            settings.max_prompt_chars
        )));
    }
    let scheduled_for = string_field(&map, "scheduledFor")?
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::Unprocessable("scheduledFor must be an RFC 3339 time with an offset".into()))
        })
        .transpose()?;
    if let Some(at) = scheduled_for {
        if at > now + Duration::days(settings.horizon_days) {
            return Err(ApiError::Unprocessable(format!(
                "scheduledFor must be within {} days from now",
                settings.horizon_days
            )));
        }
        if at < now - Duration::hours(PAST_TOLERANCE_HOURS) {
            return Err(ApiError::Unprocessable(
                "scheduledFor is more than a day in the past".into(),
            ));
        }
    }
    let cron = string_field(&map, "cron")?.map(str::to_string);
    let time_zone = string_field(&map, "timeZone")?.map(str::to_string);
    if cron
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > MAX_CRON_CHARS)
    {
        return Err(ApiError::Unprocessable(format!(
            "cron must be 1 to {MAX_CRON_CHARS} characters"
        )));
    }
    if let Some(tz) = &time_zone {
        if cron.is_none() {
            return Err(ApiError::Unprocessable(
                "timeZone applies to a cron schedule; give cron too".into(),
            ));
        }
        if tz.is_empty() || tz.chars().count() > MAX_TIME_ZONE_CHARS {
            return Err(ApiError::Unprocessable(
                "timeZone is not a known IANA time zone (e.g. Europe/Paris)".into(),
            ));
        }
    }
    if let Some(cron) = &cron {
        check_interval(cron, time_zone.as_deref(), settings, now)?;
    }
    let max_attempts = match map.get("maxAttempts") {
        None | Some(Value::Null) => 3,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=i64::from(settings.max_attempts)).contains(n))
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "maxAttempts must be a whole number from 1 to {}",
                    settings.max_attempts
                ))
            })?,
        Some(_) => return Err(ApiError::Unprocessable("maxAttempts must be a number".into())),
    };
    let approved = match map.get("approved") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::Unprocessable("approved must be true or false".into())),
    };
    Ok(NewTask {
        agent_id,
        prompt: prompt.to_string(),
        scheduled_for,
        cron,
        time_zone,
        max_attempts,
        approved,
    })
}

/// A task as the routes show it.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub prompt: String,
    pub status: String,
    pub approval_status: String,
    pub scheduled_for: DateTime<Utc>,
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub series_id: Option<Uuid>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub result: Option<String>,
    /// A list item whose `result` or `lastError` was cut to a preview.
    pub truncated: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FromRow for Task {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            agent_id: column(row, "agent_id")?,
            prompt: column(row, "prompt")?,
            status: column(row, "status")?,
            approval_status: column(row, "approval_status")?,
            scheduled_for: column(row, "scheduled_for")?,
            cron: column(row, "cron")?,
            time_zone: column(row, "time_zone")?,
            series_id: column(row, "series_id")?,
            attempts: column(row, "attempts")?,
            max_attempts: column(row, "max_attempts")?,
            last_error: column(row, "last_error")?,
            result: column(row, "result")?,
            truncated: column(row, "truncated")?,
            created_at: column(row, "created_at")?,
            updated_at: column(row, "updated_at")?,
        })
    }
}

impl Task {
    pub fn json(&self, now: DateTime<Utc>) -> Value {
        // A series' next occurrence after this one (whether or not it exists yet).
        let next = self.cron.as_deref().and_then(|cron| {
            next_occurrence(cron, self.time_zone.as_deref(), self.scheduled_for, now)
                .ok()
                .map(time)
        });
        let mut v = json!({
            "id": self.id,
            "agentId": self.agent_id,
            "prompt": self.prompt,
            "status": self.status,
            "approvalStatus": self.approval_status,
            "scheduledFor": time(self.scheduled_for),
            "cron": self.cron,
            "timeZone": self.time_zone,
            "seriesId": self.series_id.or(self.cron.as_ref().map(|_| self.id)),
            "nextOccurrenceAt": next,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "lastError": self.last_error,
            "result": self.result,
            "createdAt": time(self.created_at),
            "updatedAt": time(self.updated_at),
        });
        if self.truncated {
            v["truncated"] = json!(true);
        }
        v
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.created_at,
            id: self.id,
        }
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
    /// Inserted now (`true`), or found by its Idempotency-Key (`false`); the owner's live
    /// connections (read by the same statement).
    Task(Box<Task>, bool, Connections),
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
        return Ok(Admission::RateLimited {
            retry_after_secs: u64::try_from(secs).unwrap_or(1),
        });
    }
    Ok(Admission::Admitted)
}

/// Inserts the task, or finds the one this Idempotency-Key created: one statement.
#[tracing::instrument(skip_all)]
pub async fn create<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    task: &NewTask,
    due: DateTime<Utc>,
    key: Option<&str>,
) -> Result<Created, DbError> {
    let approval = if task.approved { "approved" } else { "pending" };
    let fingerprint = task.fingerprint();
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
        (&user as &(dyn tokio_postgres::types::ToSql + Sync), Type::UUID),
        (&task.agent_id, Type::UUID),
        (&task.prompt, Type::TEXT),
        (&approval, Type::TEXT),
        (&due, Type::TIMESTAMPTZ),
        (&task.cron, Type::TEXT),
        (&task.time_zone, Type::TEXT),
        (&task.max_attempts, Type::INT4),
        (&key, Type::TEXT),
        (&fingerprint, Type::TEXT),
    ];
    // Two requests with one new key at once: the loser's statement cannot see the winner's row
    // in its snapshot (it waited on it, then did nothing); a second statement does.
    for _ in 0..2 {
        if let Some(row) = sql.query_opt(&statement, &params).await? {
            if !column::<bool>(&row, "same_request")? {
                return Ok(Created::KeyReused);
            }
            return Ok(Created::Task(
                Box::new(Task::from_row(&row)?),
                column(&row, "created")?,
                Connections::from_row(&row)?,
            ));
        }
        if key.is_none() {
            break;
        }
    }
    Ok(Created::AgentNotFound)
}

/// Filters of the task list.
pub struct Filter {
    pub status: Option<&'static str>,
    pub approval: Option<&'static str>,
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

/// The caller's tasks, newest first, `limit` of them before `before`: one statement.
#[tracing::instrument(skip_all)]
pub async fn page<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    filter: &Filter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Task>, DbError> {
    let (at, id) = (before.map(|c| c.at), before.map(|c| c.id));
    let rows = sql
        .query(
            &page_sql(),
            &[
                (&user, Type::UUID),
                (&filter.status, Type::TEXT),
                (&filter.approval, Type::TEXT),
                (&at, Type::TIMESTAMPTZ),
                (&id, Type::UUID),
                (&limit, Type::INT8),
                (&PREVIEW_CHARS, Type::INT4),
            ],
        )
        .await?;
    Task::from_rows(&rows)
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
    row.as_ref()
        .map(|row| Ok((Task::from_row(row)?, Connections::from_row(row)?)))
        .transpose()
}
