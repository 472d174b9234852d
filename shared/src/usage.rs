//! Token budgets: the per-user daily cap every function that admits, runs or reports model
//! calls reads (chat admits, the scheduler defers, the API reports), and when a UTC day ends.

use chrono::{DateTime, Duration, NaiveTime, Utc};

use crate::config::{ConfigError, Env, Setting, Unit};

pub const USAGE_USER_DAILY_TOKENS: Setting = Setting::number(
    "USAGE_USER_DAILY_TOKENS",
    0,
    1_000_000_000_000,
    0,
    Unit::Plain,
    "tokens (input + output) a user may spend per UTC day across agents, chat and tasks (0: unlimited); past it chat answers 429 `budget_exhausted` and tasks wait for the next day",
);

pub const SETTINGS: &[&Setting] = &[&USAGE_USER_DAILY_TOKENS];

/// The per-user daily budget; 0 is unlimited.
pub fn user_daily_tokens(env: &Env) -> Result<i64, ConfigError> {
    Ok(i64::try_from(env.number(&USAGE_USER_DAILY_TOKENS)?).unwrap_or(i64::MAX))
}

/// When the UTC day of `now` ends: budgets reset then.
pub fn next_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + Duration::days(1))
        .and_time(NaiveTime::MIN)
        .and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_reset_at_the_next_utc_midnight() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(next_reset(at("2026-12-04T15:30:00Z")), at("2026-12-05T00:00:00Z"));
        assert_eq!(next_reset(at("2026-12-31T23:59:59Z")), at("2027-01-01T00:00:00Z"));
        assert_eq!(next_reset(at("2026-12-04T00:00:00Z")), at("2026-12-05T00:00:00Z"));
    }
}
