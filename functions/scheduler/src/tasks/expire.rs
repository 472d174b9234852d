//! Runs that waited for a person longer than `AGENT_APPROVAL_TTL_HOURS`: ended `expired`, their
//! task failed with the reason (a recurring task's series carried on in the same statement).

use shared::db::{column, DbError};
use shared::db::{Param, Sql, Type};
use shared::tasks::series::Next;
use shared::tasks::{NextColumns, INSERT_NEXT};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::next_params;
use super::rescue::ExpiredOccurrence;

/// The `last_error` of a run, and of its task, that nobody decided on in time.
pub const APPROVAL_EXPIRED: &str = "approval_expired: no decision within AGENT_APPROVAL_TTL_HOURS";

/// What an expiry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Runs ended `expired`.
    pub runs: i64,
    /// Their tasks, failed.
    pub failed: i64,
    /// Series suspended by a failure found here.
    pub suspended: i64,
}

/// The recurring tasks whose paused run the next expiry will end (read, so their next
/// occurrences can be computed).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn expiring_occurrences<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
) -> Result<Vec<ExpiredOccurrence>, DbError> {
    let rows = sql
        .query(
            "SELECT t.id, t.cron, t.time_zone, t.scheduled_for, t.approval_status, t.series_failures
               FROM agent_runs r JOIN agent_tasks t ON t.id = r.task_id
              WHERE r.status = 'awaiting_approval' AND r.paused_until < now()
                AND t.status = 'awaiting_approval' AND t.cron IS NOT NULL
              ORDER BY r.paused_until
              LIMIT $1",
            &[(&limit, Type::INT8)],
        )
        .await?;
    shared::db::FromRow::from_rows(&rows)
}

/// Ends at most `limit` runs paused past their `paused_until` (`expired`, [`APPROVAL_EXPIRED`])
/// and fails their tasks (guarded: only a task still `awaiting_approval`); a recurring one gets
/// its next occurrence (`planned`, from [`expiring_occurrences`]) in the same statement. A run
/// of a recurring task that is not planned is left for the next expiry, so its series is never
/// cut. One statement.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn expire<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
    planned: &[(Uuid, Option<Next>)],
) -> Result<Expired, DbError> {
    let ids: Vec<Uuid> = planned.iter().map(|(id, _)| *id).collect();
    let nexts: Vec<Option<&Next>> = planned.iter().map(|(_, n)| n.as_ref()).collect();
    let next = NextColumns::of(&nexts);
    let plan: [Param<'_>; 2] = [(&limit, Type::INT8), (&ids, Type::UUID_ARRAY)];
    let reason: [Param<'_>; 1] = [(&APPROVAL_EXPIRED, Type::TEXT)];
    let row = sql
        .query_one(
            &("WITH plan AS (
                 SELECT * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::int4[], $6::text[])
                     AS p(id, next_at, next_approval, next_failures, next_note)
             ), runs AS (
                 UPDATE agent_runs r
                    SET status = 'expired', last_error = $7, updated_at = now()
                  WHERE r.id = ANY(ARRAY(SELECT e.id FROM agent_runs e LEFT JOIN agent_tasks t ON t.id = e.task_id
                                          WHERE e.status = 'awaiting_approval' AND e.paused_until < now()
                                            AND (t.cron IS NULL OR t.status <> 'awaiting_approval' OR t.id = ANY($2))
                                          ORDER BY e.paused_until
                                          LIMIT $1
                                          FOR UPDATE OF e SKIP LOCKED))
                    AND r.status = 'awaiting_approval' AND r.paused_until < now()
              RETURNING r.id, r.task_id
             ), done AS (
                 UPDATE agent_tasks t
                    SET status = 'failed', last_error = $7, updated_at = now()
                   FROM runs
                  WHERE t.id = runs.task_id AND t.status = 'awaiting_approval'
              RETURNING t.id
             ), fin AS (
                 SELECT d.id, p.next_at, p.next_approval, p.next_failures, p.next_note
                   FROM done d JOIN plan p ON p.id = d.id
             ), nxt AS ("
                .to_string()
                + INSERT_NEXT
                + ")
             SELECT (SELECT count(*) FROM runs) AS runs,
                    (SELECT count(*) FROM done) AS failed,
                    (SELECT count(*) FROM nxt WHERE suspended) AS suspended"),
            &[&plan[..], &next_params(&next), &reason].concat(),
        )
        .await?;
    Ok(Expired {
        runs: column(&row, "runs")?,
        failed: column(&row, "failed")?,
        suspended: column(&row, "suspended")?,
    })
}
