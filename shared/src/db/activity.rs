//! Connection usage as the database sees it (`pg_stat_activity` against `max_connections`), in
//! one pooler-safe statement. Complete figures need a role that sees every session (superuser,
//! or a member of `pg_read_all_stats`/`pg_monitor`).

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::{column, DbError, Sql};

/// Server connections (client backends) in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    pub connections: i64,
    pub running: i64,
    pub idle: i64,
    pub idle_in_transaction: i64,
    pub waiting: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionUsage {
    /// Server connections in use (every client backend, whatever its state).
    pub active: i64,
    /// Of which running a statement.
    pub running: i64,
    pub idle: i64,
    pub idle_in_transaction: i64,
    /// Waiting on a lock.
    pub waiting: i64,
    /// `max_connections` minus the slots reserved for superusers.
    pub limit: i64,
    pub usage_percent: f64,
    pub by_database: Vec<Group>,
    pub by_application: Vec<Group>,
}

/// Reads `pg_stat_activity` and the limit in one round trip.
#[tracing::instrument(skip_all)]
pub async fn usage<C: GenericClient + Sync>(sql: &Sql<'_, C>) -> Result<ConnectionUsage, DbError> {
    let row = sql
        .query_one(
            "WITH s AS (
                 SELECT coalesce(datname, '') AS db, coalesce(application_name, '') AS app, state,
                        wait_event_type
                   FROM pg_stat_activity
                  WHERE backend_type = 'client backend'
             ), groups AS (
                 SELECT kind, name, count(*) AS connections,
                        count(*) FILTER (WHERE state = 'active') AS running,
                        count(*) FILTER (WHERE state = 'idle') AS idle,
                        count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_transaction,
                        count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting
                   FROM (SELECT 'db' AS kind, db AS name, state, wait_event_type FROM s
                         UNION ALL
                         SELECT 'app', app, state, wait_event_type FROM s) g
                  GROUP BY kind, name
             )
             SELECT (current_setting('max_connections')::int
                     - current_setting('superuser_reserved_connections')::int
                     - coalesce(current_setting('reserved_connections', true)::int, 0))::int8 AS connection_limit,
                    (SELECT count(*) FROM s) AS active,
                    (SELECT count(*) FROM s WHERE state = 'active') AS running,
                    (SELECT count(*) FROM s WHERE state = 'idle') AS idle,
                    (SELECT count(*) FROM s WHERE state LIKE 'idle in transaction%') AS idle_in_transaction,
                    (SELECT count(*) FROM s WHERE wait_event_type = 'Lock') AS waiting,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                         'name', name, 'connections', connections, 'running', running, 'idle', idle,
                         'idleInTransaction', idle_in_transaction, 'waiting', waiting) ORDER BY name), '[]')
                       FROM groups WHERE kind = 'db') AS by_database,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                         'name', name, 'connections', connections, 'running', running, 'idle', idle,
                         'idleInTransaction', idle_in_transaction, 'waiting', waiting) ORDER BY name), '[]')
                       FROM groups WHERE kind = 'app') AS by_application",
            &[],
        )
        .await?;
    let limit: i64 = column(&row, "connection_limit")?;
    let active: i64 = column(&row, "active")?;
    let groups = |name: &str| -> Result<Vec<Group>, DbError> {
        serde_json::from_value(column::<serde_json::Value>(&row, name)?).map_err(|e| DbError::decode_column(name, e))
    };
    Ok(ConnectionUsage {
        active,
        running: column(&row, "running")?,
        idle: column(&row, "idle")?,
        idle_in_transaction: column(&row, "idle_in_transaction")?,
        waiting: column(&row, "waiting")?,
        limit,
        usage_percent: percent_of(active, limit),
        by_database: groups("by_database")?,
        by_application: groups("by_application")?,
    })
}

/// `part` as a percentage of `whole`, to two decimals; a limit of zero is full.
fn percent_of(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        #[allow(clippy::cast_precision_loss)]
        let p = (part as f64 * 10_000.0 / whole as f64).round() / 100.0;
        p
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_a_percentage_of_the_limit() {
        assert!((percent_of(6, 100) - 6.0).abs() < 1e-9);
        assert!((percent_of(1, 3) - 33.33).abs() < 1e-9);
        assert!((percent_of(5, 0) - 100.0).abs() < 1e-9);
    }
}
