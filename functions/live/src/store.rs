//! The live function's SQL: one statement per route.

use chrono::{DateTime, Utc};
use shared::db::{column, DbError, Sql, Type};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// API Gateway closes every connection after 2 hours: a row older than that is certainly gone
/// (its `$disconnect` was lost), and is removed by the user's next `$connect`.
pub const MAX_CONNECTION_HOURS: f64 = 2.0;

/// What `$connect`'s statement decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Yes,
    /// The user has this many open connections already.
    TooMany(i64),
}

/// Stores connection `id` of `user` (open until `expires_at`) unless the user has
/// `max` open connections already: the check and the insert in one statement. Expired
/// connections do not count; rows older than API Gateway's 2-hour limit are removed.
#[tracing::instrument(skip_all)]
pub async fn connect<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    id: &str,
    user: Uuid,
    expires_at: DateTime<Utc>,
    max: i64,
) -> Result<Admitted, DbError> {
    let row = sql
        .query_one(
            "WITH stale AS (
                 DELETE FROM live_connections
                  WHERE user_id = $2 AND connected_at < now() - make_interval(hours => $5::float8::int4)
                 RETURNING connection_id
             ), open AS (
                 SELECT count(*) AS n FROM live_connections
                  WHERE user_id = $2 AND expires_at > now()
                    AND connection_id NOT IN (SELECT connection_id FROM stale)
             ), ins AS (
                 INSERT INTO live_connections (connection_id, user_id, expires_at)
                 SELECT $1, $2, $3 FROM open WHERE open.n < $4
                     ON CONFLICT (connection_id) DO NOTHING
                 RETURNING 1
             )
             -- A retried $connect of a connection already stored for this user is admitted.
             SELECT (SELECT count(*) FROM ins)
                    + (SELECT count(*) FROM live_connections WHERE connection_id = $1 AND user_id = $2) AS inserted,
                    (SELECT n FROM open) AS open",
            &[
                (&id, Type::TEXT),
                (&user, Type::UUID),
                (&expires_at, Type::TIMESTAMPTZ),
                (&max, Type::INT8),
                (&MAX_CONNECTION_HOURS, Type::FLOAT8),
            ],
        )
        .await?;
    if column::<i64>(&row, "inserted")? >= 1 {
        Ok(Admitted::Yes)
    } else {
        Ok(Admitted::TooMany(column(&row, "open")?))
    }
}

/// Forgets connection `id`: one statement; whether it was there.
#[tracing::instrument(skip_all)]
pub async fn disconnect<C: GenericClient + Sync>(sql: &Sql<'_, C>, id: &str) -> Result<bool, DbError> {
    let n = sql
        .execute(
            "DELETE FROM live_connections WHERE connection_id = $1",
            &[(&id, Type::TEXT)],
        )
        .await?;
    Ok(n > 0)
}
