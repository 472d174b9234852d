//! The scheduler's SQL: set-based, one statement per step and batch, every write guarded by the
//! lease owner so a stale instance cannot overwrite a newer run.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{DbError, Sql, Type};

/// A task this invocation holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: Uuid,
    pub prompt: String,
    pub instructions: String,
    /// Attempts including this one.
    pub attempts: i32,
    pub max_attempts: i32,
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub scheduled_for: DateTime<Utc>,
}

/// Claims up to `limit` due, approved, pending tasks, oldest first, skipping rows another
/// instance holds; takes a lease of `lease_secs` and counts the attempt.
///
/// `id = ANY(ARRAY(subquery))` rather than `id IN (subquery)`: the locked ids are computed once
/// and the rows reached through the primary key; with `IN`, Postgres plans a hash semi-join
/// over a sequential scan of the whole table (measured: 59 ms against 17 ms per 1000 of 100k).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn claim<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: &str,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<ClaimedTask>, DbError> {
    let rows = sql
        .query(
            "UPDATE agent_tasks t
                SET status = 'running', lease_owner = $1,
                    lease_expires_at = now() + make_interval(secs => $2),
                    attempts = t.attempts + 1, updated_at = now()
               FROM agents a
              WHERE a.id = t.agent_id
                AND t.id = ANY(ARRAY(SELECT id FROM agent_tasks
                                      WHERE status = 'pending' AND approval_status = 'approved'
                                        AND scheduled_for <= now()
                                      ORDER BY scheduled_for, id
                                      LIMIT $3
                                      FOR UPDATE SKIP LOCKED))
          RETURNING t.id, t.prompt, a.instructions, t.attempts, t.max_attempts, t.cron, t.time_zone,
                    t.scheduled_for",
            &[(&owner, Type::TEXT), (&lease_secs, Type::FLOAT8), (&limit, Type::INT8)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ClaimedTask {
            id: r.get(0),
            prompt: r.get(1),
            instructions: r.get(2),
            attempts: r.get(3),
            max_attempts: r.get(4),
            cron: r.get(5),
            time_zone: r.get(6),
            scheduled_for: r.get(7),
        })
        .collect())
}

/// How one claimed task ended in this invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed {
        result: String,
    },
    /// Failed with attempts left: pending again after `delay_secs`.
    Retry {
        error: String,
        delay_secs: f64,
    },
    /// Failed for good (`max_attempts` reached).
    Failed {
        error: String,
    },
    /// Never started (the deadline came first): pending again, the attempt not counted.
    Release,
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "completed",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Release => "release",
        }
    }
}

/// One finished task: its outcome and, for a recurring task that reached a final state, when
/// its next occurrence is due.
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: Uuid,
    pub outcome: Outcome,
    pub next_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishCounts {
    /// Rows this instance still held the lease of and updated.
    pub finished: i64,
    /// Next occurrences created (a racing instance may have created one first).
    pub scheduled: i64,
}

/// Records a whole batch in one statement: completed, retried, failed and released tasks, and
/// the next occurrence of recurring ones (at most once each, by the occurrence unique key).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn finish<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: &str,
    batch: &[Finished],
) -> Result<FinishCounts, DbError> {
    if batch.is_empty() {
        return Ok(FinishCounts::default());
    }
    let ids: Vec<Uuid> = batch.iter().map(|f| f.id).collect();
    let kinds: Vec<&str> = batch.iter().map(|f| f.outcome.kind()).collect();
    let bodies: Vec<Option<&str>> = batch
        .iter()
        .map(|f| match &f.outcome {
            Outcome::Completed { result } => Some(result.as_str()),
            Outcome::Retry { error, .. } | Outcome::Failed { error } => Some(error.as_str()),
            Outcome::Release => None,
        })
        .collect();
    let delays: Vec<f64> = batch
        .iter()
        .map(|f| match f.outcome {
            Outcome::Retry { delay_secs, .. } => delay_secs,
            _ => 0.0,
        })
        .collect();
    let next: Vec<Option<DateTime<Utc>>> = batch.iter().map(|f| f.next_at).collect();
    let row = sql
        .query_one(
            "WITH o AS (
                 SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::float8[], $6::timestamptz[])
                     AS o(id, kind, body, delay_secs, next_at)
             ), fin AS (
                 UPDATE agent_tasks t
                    SET status = CASE o.kind WHEN 'completed' THEN 'completed'
                                             WHEN 'failed' THEN 'failed'
                                             ELSE 'pending' END,
                        result = CASE WHEN o.kind = 'completed' THEN o.body ELSE t.result END,
                        last_error = CASE WHEN o.kind IN ('retry', 'failed') THEN o.body
                                          WHEN o.kind = 'completed' THEN NULL
                                          ELSE t.last_error END,
                        scheduled_for = CASE WHEN o.kind = 'retry'
                                             THEN now() + make_interval(secs => o.delay_secs)
                                             ELSE t.scheduled_for END,
                        attempts = CASE WHEN o.kind = 'release' THEN greatest(t.attempts - 1, 0)
                                        ELSE t.attempts END,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                   FROM o
                  WHERE t.id = o.id AND t.lease_owner = $1 AND t.status = 'running'
              RETURNING t.id, t.agent_id, t.user_id, t.prompt, t.approval_status, t.cron, t.time_zone,
                        t.series_id, t.max_attempts, o.kind, o.next_at
             ), nxt AS (
                 INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for, cron,
                                          time_zone, series_id, max_attempts)
                 SELECT agent_id, user_id, prompt, approval_status, next_at, cron, time_zone,
                        coalesce(series_id, id), max_attempts
                   FROM fin
                  WHERE kind IN ('completed', 'failed') AND next_at IS NOT NULL AND cron IS NOT NULL
                     ON CONFLICT (series_id, scheduled_for) WHERE series_id IS NOT NULL DO NOTHING
              RETURNING 1
             )
             SELECT (SELECT count(*) FROM fin), (SELECT count(*) FROM nxt)",
            &[
                (&owner, Type::TEXT),
                (&ids, Type::UUID_ARRAY),
                (&kinds, Type::TEXT_ARRAY),
                (&bodies, Type::TEXT_ARRAY),
                (&delays, Type::FLOAT8_ARRAY),
                (&next, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    Ok(FinishCounts {
        finished: row.get(0),
        scheduled: row.get(1),
    })
}

/// Gives claimed tasks back untouched (attempt not counted), e.g. when the invocation fails.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn release<C: GenericClient + Sync>(sql: &Sql<'_, C>, owner: &str, ids: &[Uuid]) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    sql.execute(
        "UPDATE agent_tasks
            SET status = 'pending', attempts = greatest(attempts - 1, 0),
                lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE id = ANY($2) AND lease_owner = $1 AND status = 'running'",
        &[(&owner, Type::TEXT), (&ids, Type::UUID_ARRAY)],
    )
    .await
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Back to `pending`.
    pub pending: i64,
    /// `failed`: the expired attempt was the last one.
    pub failed: i64,
}

/// Tasks whose lease expired (their instance crashed or timed out) go back to `pending`, or to
/// `failed` when that was their last attempt (the attempt was counted when claimed).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn rescue<C: GenericClient + Sync>(sql: &Sql<'_, C>, limit: i64) -> Result<Rescued, DbError> {
    let row = sql
        .query_one(
            "WITH done AS (
                 UPDATE agent_tasks t
                    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                        last_error = 'lease expired: the instance running it stopped before finishing',
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                  WHERE t.id = ANY(ARRAY(SELECT id FROM agent_tasks
                                          WHERE status = 'running' AND lease_expires_at < now()
                                          ORDER BY lease_expires_at
                                          LIMIT $1
                                          FOR UPDATE SKIP LOCKED))
                    AND t.status = 'running'
              RETURNING t.status
             )
             SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed')
               FROM done",
            &[(&limit, Type::INT8)],
        )
        .await?;
    Ok(Rescued {
        pending: row.get(0),
        failed: row.get(1),
    })
}

/// Due, approved, pending tasks not yet claimed, and running tasks whose lease has expired.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn due_counts<C: GenericClient + Sync>(sql: &Sql<'_, C>) -> Result<(i64, i64), DbError> {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM agent_tasks
                      WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()),
                    (SELECT count(*) FROM agent_tasks
                      WHERE status = 'running' AND lease_expires_at < now())",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
