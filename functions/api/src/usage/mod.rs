//! `GET /api/usage?days=N`: the caller's token usage of the last N UTC days (today included) by
//! day, agent and model, and where today stands against the daily budget: one statement.
//! [`request`] reads what is asked, [`store`] reads the rows, [`view`] shows them with the budget.

pub mod request;
pub mod store;
pub mod view;

pub use request::{UsageQuery, DEFAULT_DAYS, MAX_DAYS};
pub use store::{usage, Day, Recorded, USAGE};
pub use view::{BudgetView, DayView, UsageView};
/// More rows than any screen shows (90 days × ~110 agent-model pairs a day): past it the answer
/// is cut, and says so (`"truncated": true`).
pub const MAX_ROWS: i64 = 10_000;
