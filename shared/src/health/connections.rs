//! Connection usage as the database sees it, in one pooler-safe statement.

use std::time::Instant;

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::db::{DbError, PoolStatus, Sql};

/// Usage level against the connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn of(usage_percent: f64, warning: f64, critical: f64) -> Level {
        if usage_percent >= critical {
            Level::Critical
        } else if usage_percent >= warning {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// Server connections (client backends) in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
pub struct ConnectionReport {
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
    pub level: Level,
    pub by_database: Vec<Group>,
    pub by_application: Vec<Group>,
    pub pool: PoolStatus,
    pub latency_ms: f64,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    pub warning_percent: f64,
    pub critical_percent: f64,
}

/// Reads `pg_stat_activity` and the limit in one round trip. Complete figures need a role that
/// sees every session (superuser, or a member of `pg_read_all_stats`/`pg_monitor`).
#[tracing::instrument(skip_all)]
pub async fn report<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    pool: PoolStatus,
    thresholds: Thresholds,
) -> Result<ConnectionReport, DbError> {
    let started = Instant::now();
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
                     - coalesce(current_setting('reserved_connections', true)::int, 0))::int8,
                    (SELECT count(*) FROM s),
                    (SELECT count(*) FROM s WHERE state = 'active'),
                    (SELECT count(*) FROM s WHERE state = 'idle'),
                    (SELECT count(*) FROM s WHERE state LIKE 'idle in transaction%'),
                    (SELECT count(*) FROM s WHERE wait_event_type = 'Lock'),
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                         'name', name, 'connections', connections, 'running', running, 'idle', idle,
                         'idleInTransaction', idle_in_transaction, 'waiting', waiting) ORDER BY name), '[]')
                       FROM groups WHERE kind = 'db'),
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                         'name', name, 'connections', connections, 'running', running, 'idle', idle,
                         'idleInTransaction', idle_in_transaction, 'waiting', waiting) ORDER BY name), '[]')
                       FROM groups WHERE kind = 'app')",
            &[],
        )
        .await?;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let limit: i64 = row.get(0);
    let active: i64 = row.get(1);
    let usage_percent = if limit > 0 {
        (active as f64 * 10_000.0 / limit as f64).round() / 100.0
    } else {
        100.0
    };
    let groups = |i: usize| -> Result<Vec<Group>, DbError> {
        serde_json::from_value(row.get::<_, serde_json::Value>(i))
            .map_err(|e| DbError::Other(format!("unexpected pg_stat_activity shape: {e}")))
    };
    Ok(ConnectionReport {
        active,
        running: row.get(2),
        idle: row.get(3),
        idle_in_transaction: row.get(4),
        waiting: row.get(5),
        limit,
        usage_percent,
        level: Level::of(usage_percent, thresholds.warning_percent, thresholds.critical_percent),
        by_database: groups(6)?,
        by_application: groups(7)?,
        pool,
        latency_ms,
        thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        assert_eq!(Level::of(79.9, 80.0, 95.0), Level::Ok);
        assert_eq!(Level::of(80.0, 80.0, 95.0), Level::Warning);
        assert_eq!(Level::of(94.99, 80.0, 95.0), Level::Warning);
        assert_eq!(Level::of(95.0, 80.0, 95.0), Level::Critical);
        assert_eq!(Level::of(120.0, 80.0, 95.0), Level::Critical);
    }
}
