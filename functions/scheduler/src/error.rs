//! How an invocation fails: [`SchedulerError`], and the `errorType` Lambda reports for each
//! cause ([`error_type`], the names the runbook's alarms and searches use).

use lambda_runtime::Diagnostic;
use shared::db::DbError;

use crate::trigger::BadPayload;

/// The `errorType` of a failed invocation, one per cause. Not metric names (those are all in
/// [`shared::metrics::name`]): Lambda's error classification, named in `docs/RUNBOOK.md`.
pub mod error_type {
    pub const BAD_PAYLOAD: &str = "BadPayload";
    /// Every pooled connection stayed busy for the whole wait.
    pub const DATABASE_SATURATED: &str = "DatabaseSaturated";
    /// The database or its pooler could not be reached.
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    /// A statement ran past its bound.
    pub const DATABASE_TIMEOUT: &str = "DatabaseTimeout";
    pub const DATABASE_ERROR: &str = "DatabaseError";
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    BadPayload(#[from] BadPayload),
    #[error("scheduler stopped by a database failure")]
    Database(#[from] DbError),
}

impl SchedulerError {
    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            SchedulerError::BadPayload(_) => error_type::BAD_PAYLOAD,
            SchedulerError::Database(DbError::PoolTimeout(_)) => error_type::DATABASE_SATURATED,
            SchedulerError::Database(DbError::Unreachable { .. }) => error_type::DATABASE_UNAVAILABLE,
            SchedulerError::Database(DbError::StatementTimeout(_)) => error_type::DATABASE_TIMEOUT,
            SchedulerError::Database(_) => error_type::DATABASE_ERROR,
        }
    }
}

impl From<SchedulerError> for Diagnostic {
    fn from(e: SchedulerError) -> Self {
        // The database's own words, not its causes (the driver's text stays in the log).
        let error_message = match &e {
            SchedulerError::Database(db) => format!("{e}: {db}"),
            SchedulerError::BadPayload(_) => e.to_string(),
        };
        Diagnostic {
            error_type: e.error_type().into(),
            error_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_cause_has_its_error_type_and_the_message_names_the_failure() {
        let unreachable = Diagnostic::from(SchedulerError::from(DbError::unreachable("the pool is closed")));
        assert_eq!(unreachable.error_type, "DatabaseUnavailable");
        assert_eq!(
            unreachable.error_message,
            "scheduler stopped by a database failure: database unreachable: the pool is closed"
        );
        let saturated = SchedulerError::from(DbError::PoolTimeout(Duration::from_secs(1)));
        assert_eq!(saturated.error_type(), "DatabaseSaturated");
        let slow = SchedulerError::from(DbError::StatementTimeout(Duration::from_secs(1)));
        assert_eq!(slow.error_type(), "DatabaseTimeout");
        assert_eq!(
            SchedulerError::from(DbError::decode("column x")).error_type(),
            "DatabaseError"
        );
        let bad = Diagnostic::from(SchedulerError::from(BadPayload {
            field: Some("maxTasks".into()),
            reason: "x".into(),
        }));
        assert_eq!(bad.error_type, "BadPayload");
        assert_eq!(bad.error_message, "invalid scheduler payload: maxTasks: x");
    }
}
