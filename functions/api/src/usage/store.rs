//! The usage statement: the caller's `usage_daily` rows and today's total, in one round trip.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Sql, Type};

use super::MAX_ROWS;
use crate::row::row;

row! {
    /// One `usage_daily` row of the caller's.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Day {
        pub day: NaiveDate,
        pub agent_id: Uuid,
        pub model: String,
        pub input_tokens: i64,
        pub output_tokens: i64,
        pub calls: i32,
    }
}

/// What the statement read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The end of the database's UTC today: when the daily budget resets.
    pub resets_at: DateTime<Utc>,
    /// Tokens used today, every agent and model.
    pub used_tokens: i64,
    /// Newest day first, at most [`MAX_ROWS`].
    pub days: Vec<Day>,
    /// More rows than [`MAX_ROWS`] matched.
    pub truncated: bool,
}

/// `$1` the user, `$2` the number of days, `$3` the row cap. One row per usage row (newest day
/// first), each carrying the database's UTC today and the tokens used today; one row of NULL
/// usage columns when there is none.
pub const USAGE: &str = "WITH today AS (
         SELECT (now() AT TIME ZONE 'UTC')::date AS today
     ), used AS (
         SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)::int8 AS used_tokens
           FROM usage_daily u, today
          WHERE u.user_id = $1 AND u.day = today.today
     )
     SELECT today.today, used.used_tokens,
            r.day, r.agent_id, r.model, r.input_tokens, r.output_tokens, r.calls
       FROM today CROSS JOIN used
       LEFT JOIN LATERAL (
            SELECT u.day, u.agent_id, u.model, u.input_tokens, u.output_tokens, u.calls
              FROM usage_daily u
             WHERE u.user_id = $1 AND u.day > today.today - $2::int4 AND u.day <= today.today
             ORDER BY u.day DESC, u.agent_id, u.model
             LIMIT $3) r ON true";

/// The caller's usage of the last `days` UTC days, and today's total.
#[tracing::instrument(skip_all)]
pub async fn usage<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid, days: i32) -> Result<Recorded, DbError> {
    let cap = MAX_ROWS + 1;
    let rows = sql
        .query(USAGE, &[(&user, Type::UUID), (&days, Type::INT4), (&cap, Type::INT8)])
        .await?;
    let first = rows
        .first()
        .ok_or_else(|| DbError::decode("the usage statement returned no row"))?;
    let today: NaiveDate = column(first, "today")?;
    let used_tokens = column(first, "used_tokens")?;
    let tomorrow = today
        .succ_opt()
        .ok_or_else(|| DbError::decode(format!("column today: {today} has no next day")))?;
    let mut list = Vec::with_capacity(rows.len());
    for row in &rows {
        // No usage at all is one row of NULL usage columns.
        if column::<Option<NaiveDate>>(row, "day")?.is_some() {
            list.push(Day::from_row(row)?);
        }
    }
    let max = usize::try_from(MAX_ROWS).unwrap_or(usize::MAX);
    let truncated = list.len() > max;
    list.truncate(max);
    Ok(Recorded {
        resets_at: tomorrow.and_time(NaiveTime::MIN).and_utc(),
        used_tokens,
        days: list,
        truncated,
    })
}
