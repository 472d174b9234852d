//! `GET /api/usage?days=N`: the caller's token usage of the last N UTC days (today included) by
//! day, agent and model, and where today stands against the daily budget: one statement.
//! [`store`] reads it, [`view`] shows it with the budget.

pub mod store;
pub mod view;

use shared::http::ApiError;

use crate::query::Query;

pub use store::{usage, Day, Recorded, USAGE};
pub use view::{BudgetView, DayView, UsageView};

/// `days` when not given, and the most a request may ask for.
pub const DEFAULT_DAYS: i32 = 7;
pub const MAX_DAYS: i32 = 90;
/// More rows than any screen shows (90 days × ~110 agent-model pairs a day): past it the answer
/// is cut, and says so (`"truncated": true`).
pub const MAX_ROWS: i64 = 10_000;

/// `days`: 1..=[`MAX_DAYS`] ([`DEFAULT_DAYS`] when absent).
pub fn days(query: &Query) -> Result<i32, ApiError> {
    Ok(query.number("days", 1, MAX_DAYS)?.unwrap_or(DEFAULT_DAYS))
}
