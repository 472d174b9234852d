//! What a caller asks of their usage: `?days=N`, parsed.

use lambda_http::Request;
use shared::http::ApiError;

use crate::query::Query;

/// `days` when not given, and the most a request may ask for.
pub const DEFAULT_DAYS: i32 = 7;
pub const MAX_DAYS: i32 = 90;

/// `GET /api/usage?days=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    /// 1..=[`MAX_DAYS`] ([`DEFAULT_DAYS`] when absent).
    pub days: i32,
}

impl UsageQuery {
    pub fn of(request: &Request) -> Result<Self, ApiError> {
        let q = Query::of(request, &["days"])?;
        Ok(Self {
            days: q.number("days", 1, MAX_DAYS)?.unwrap_or(DEFAULT_DAYS),
        })
    }
}
