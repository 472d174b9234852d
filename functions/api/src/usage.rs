//! `GET /api/usage?days=N`: the caller's token usage of the last N UTC days (today included) by
//! day, agent and model, and where today stands against the daily budget: one statement.

use chrono::{NaiveDate, NaiveTime, TimeDelta};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, Row, Sql, Type};

use crate::agents::time;

/// `days` when not given, and the most a request may ask for.
pub const DEFAULT_DAYS: i32 = 7;
pub const MAX_DAYS: i32 = 90;
/// More rows than any screen shows (90 days × ~110 agent-model pairs a day): past it the answer
/// is cut, and says so (`"truncated": true`).
pub const MAX_ROWS: i64 = 10_000;

/// One `usage_daily` row of the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    pub date: NaiveDate,
    pub agent_id: Uuid,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub calls: i32,
}

/// Today against the per-user daily budget (`USAGE_USER_DAILY_TOKENS`; `null`s when unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    pub daily_tokens: Option<i64>,
    pub used_tokens: i64,
    pub remaining_tokens: Option<i64>,
    pub resets_at: String,
}

/// The answer of `GET /api/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub days: Vec<Day>,
    pub budget: Budget,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
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

/// The caller's usage of the last `days` UTC days and today's standing against `daily_tokens`
/// (0: unlimited).
#[tracing::instrument(skip_all)]
pub async fn usage<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    days: i32,
    daily_tokens: i64,
) -> Result<Usage, DbError> {
    let cap = MAX_ROWS + 1;
    let rows = sql
        .query(USAGE, &[(&user, Type::UUID), (&days, Type::INT4), (&cap, Type::INT8)])
        .await?;
    let (today, used_tokens) = match rows.first() {
        Some(row) => (column::<NaiveDate>(row, "today")?, column::<i64>(row, "used_tokens")?),
        None => return Err(DbError::Decode("the usage statement returned no row".into())),
    };
    let mut list = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(day) = day(row)? {
            list.push(day);
        }
    }
    let truncated = list.len() > usize::try_from(MAX_ROWS).unwrap_or(usize::MAX);
    list.truncate(usize::try_from(MAX_ROWS).unwrap_or(usize::MAX));
    let daily = (daily_tokens > 0).then_some(daily_tokens);
    Ok(Usage {
        days: list,
        budget: Budget {
            daily_tokens: daily,
            used_tokens,
            remaining_tokens: daily.map(|b| b.saturating_sub(used_tokens).max(0)),
            resets_at: time((today + TimeDelta::days(1)).and_time(NaiveTime::MIN).and_utc()),
        },
        truncated,
    })
}

/// A usage row; `None` for the row of NULLs the statement gives when there is none.
fn day(row: &Row) -> Result<Option<Day>, DbError> {
    let Some(date) = column::<Option<NaiveDate>>(row, "day")? else {
        return Ok(None);
    };
    Ok(Some(Day {
        date,
        agent_id: column(row, "agent_id")?,
        model: column(row, "model")?,
        input_tokens: column(row, "input_tokens")?,
        output_tokens: column(row, "output_tokens")?,
        calls: column(row, "calls")?,
    }))
}
