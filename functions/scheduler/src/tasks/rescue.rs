//! What outlives an invocation: leases that expired (rescued, a recurring task's series carried
//! on in the same statement), claims whose answer was lost (handed back), and the due backlog.

use shared::db::{column, DbError, FromRow, Param, Row, Sql, Type};
use shared::tasks::series::Next;
use shared::tasks::{NextColumns, Schedule, INSERT_NEXT};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::next_params;

/// Hands back every task still leased to `owner` (a run that has recorded or handed back all
/// it knew of): pending again, the attempt uncounted. One statement.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn release_orphans<C: GenericClient + Sync>(sql: &Sql<'_, C>, owner: &str) -> Result<u64, DbError> {
    sql.execute(
        "UPDATE agent_tasks
            SET status = 'pending', attempts = greatest(attempts - 1, 0),
                lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE status = 'running' AND lease_owner = $1",
        &[(&owner, Type::TEXT)],
    )
    .await
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Back to `pending`.
    pub pending: i64,
    /// `failed`: the expired attempt was the last one.
    pub failed: i64,
    /// Series suspended by a failure found here.
    pub suspended: i64,
}

/// A recurring task on its last attempt whose lease expired: the rescue will fail it, and its
/// series needs its next occurrence from the same statement.
#[derive(Debug, Clone)]
pub struct ExpiredOccurrence {
    pub id: Uuid,
    pub schedule: Schedule,
}

impl FromRow for ExpiredOccurrence {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(by_name!(row, Self { id; schedule: Schedule::from_row(row)? }))
    }
}

/// The recurring tasks the next rescue will fail (read, so their next occurrences can be computed).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn expired_last_occurrences<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
) -> Result<Vec<ExpiredOccurrence>, DbError> {
    let rows = sql
        .query(
            "SELECT id, cron, time_zone, scheduled_for, approval_status, series_failures FROM agent_tasks
              WHERE status = 'running' AND lease_expires_at < now()
                AND cron IS NOT NULL AND attempts >= max_attempts
              ORDER BY lease_expires_at
              LIMIT $1",
            &[(&limit, Type::INT8)],
        )
        .await?;
    ExpiredOccurrence::from_rows(&rows)
}

/// Tasks whose lease expired (their instance crashed or timed out) go back to `pending`, or to
/// `failed` when that was their last attempt (the attempt was counted when claimed); a recurring
/// one that fails here gets its next occurrence (`planned`, from [`expired_last_occurrences`])
/// in the same statement. A recurring task on its last attempt that is not planned is left for
/// the next rescue, so its series is never cut.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn rescue<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
    planned: &[(Uuid, Option<Next>)],
) -> Result<Rescued, DbError> {
    let ids: Vec<Uuid> = planned.iter().map(|(id, _)| *id).collect();
    let nexts: Vec<Option<&Next>> = planned.iter().map(|(_, n)| n.as_ref()).collect();
    let next = NextColumns::of(&nexts);
    let plan: [Param<'_>; 2] = [(&limit, Type::INT8), (&ids, Type::UUID_ARRAY)];
    let row = sql
        .query_one(
            &("WITH plan AS (
                 SELECT * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::int4[], $6::text[])
                     AS p(id, next_at, next_approval, next_failures, next_note)
             ), done AS (
                 UPDATE agent_tasks t
                    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                        last_error = 'lease expired: the instance running it stopped before finishing',
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                  WHERE t.id = ANY(ARRAY(SELECT id FROM agent_tasks
                                          WHERE status = 'running' AND lease_expires_at < now()
                                            AND (cron IS NULL OR attempts < max_attempts OR id = ANY($2))
                                          ORDER BY lease_expires_at
                                          LIMIT $1
                                          FOR UPDATE SKIP LOCKED))
                    AND t.status = 'running'
              RETURNING t.id, t.status
             ), fin AS (
                 SELECT d.id, p.next_at, p.next_approval, p.next_failures, p.next_note
                   FROM done d JOIN plan p ON p.id = d.id
                  WHERE d.status = 'failed'
             ), nxt AS ("
                .to_string()
                + INSERT_NEXT
                + ")
             SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    (SELECT count(*) FROM nxt WHERE suspended) AS suspended
               FROM done"),
            &[&plan[..], &next_params(&next)].concat(),
        )
        .await?;
    Ok(by_name!(
        &row,
        Rescued {
            pending,
            failed,
            suspended
        }
    ))
}

/// Due, approved, pending tasks not yet claimed, and running tasks whose lease has expired.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn due_counts<C: GenericClient + Sync>(sql: &Sql<'_, C>) -> Result<(i64, i64), DbError> {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM agent_tasks
                      WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now())
                        AS due,
                    (SELECT count(*) FROM agent_tasks
                      WHERE status = 'running' AND lease_expires_at < now()) AS expired",
            &[],
        )
        .await?;
    Ok((column(&row, "due")?, column(&row, "expired")?))
}
