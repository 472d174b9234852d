//! The JSON of `GET /api/usage`: the days, and today against the per-user daily budget.

use chrono::NaiveDate;
use serde::Serialize;
use shared::http::Timestamp;
use uuid::Uuid;

use super::store::Recorded;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageView<'a> {
    pub days: Vec<DayView<'a>>,
    pub budget: BudgetView,
    /// Present (true) only when the days were cut at [`super::MAX_ROWS`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One `usage_daily` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DayView<'a> {
    pub date: NaiveDate,
    pub agent_id: Uuid,
    pub model: &'a str,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub calls: i32,
}

/// Today against the per-user daily budget (`USAGE_USER_DAILY_TOKENS`; `null`s when unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetView {
    pub daily_tokens: Option<i64>,
    pub used_tokens: i64,
    pub remaining_tokens: Option<i64>,
    /// The next UTC midnight.
    pub resets_at: Timestamp,
}

impl<'a> UsageView<'a> {
    /// `daily_tokens`: the budget (0: unlimited).
    pub fn of(recorded: &'a Recorded, daily_tokens: i64) -> Self {
        let days = recorded.days.iter().map(|d| DayView {
            date: d.day,
            agent_id: d.agent_id,
            model: &d.model,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            calls: d.calls,
        });
        let daily = (daily_tokens > 0).then_some(daily_tokens);
        let used = recorded.used_tokens;
        Self {
            days: days.collect(),
            budget: BudgetView {
                daily_tokens: daily,
                used_tokens: used,
                remaining_tokens: daily.map(|b| b.saturating_sub(used).max(0)),
                resets_at: recorded.resets_at.into(),
            },
            truncated: recorded.truncated,
        }
    }
}
