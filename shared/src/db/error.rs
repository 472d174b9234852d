//! Database errors, classified so each boundary can answer truthfully: a saturated pool is not a
//! validation error, a slow statement is not a crash.

use std::time::Duration;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

/// What went wrong talking to the database. Messages never contain SQL text, parameters or
/// connection strings.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Every pooled connection was busy for the whole wait timeout (HTTP 503 + Retry-After).
    #[error("no database connection became free within {0:?}")]
    PoolTimeout(Duration),
    /// The database or pooler could not be reached, or the connection broke (HTTP 503).
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// A statement ran past its bound and was cancelled on the server (HTTP 504).
    #[error("database statement exceeded its {0:?} bound and was cancelled")]
    StatementTimeout(Duration),
    /// A constraint rejected the write (HTTP 409).
    #[error("constraint violated: {constraint}")]
    Constraint { constraint: String, code: String },
    /// A row did not have the expected shape (a column missing or of another type) (HTTP 500).
    #[error("unexpected row: {0}")]
    Decode(String),
    /// Anything else (HTTP 500).
    #[error("database error: {0}")]
    Other(String),
}

/// The coarse kind of a [`DbError`], for metrics and status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    PoolTimeout,
    Unreachable,
    StatementTimeout,
    Constraint,
    Other,
}

impl DbError {
    pub fn kind(&self) -> DbErrorKind {
        match self {
            Self::PoolTimeout(_) => DbErrorKind::PoolTimeout,
            Self::Unreachable(_) => DbErrorKind::Unreachable,
            Self::StatementTimeout(_) => DbErrorKind::StatementTimeout,
            Self::Constraint { .. } => DbErrorKind::Constraint,
            Self::Decode(_) | Self::Other(_) => DbErrorKind::Other,
        }
    }

    /// Classifies an error from a statement that ran (or tried to run) on a connection.
    pub fn from_pg(err: &tokio_postgres::Error, statement_bound: Duration) -> Self {
        if err.is_closed() {
            return Self::Unreachable("the connection was closed".into());
        }
        if let Some(db) = err.as_db_error() {
            let code = db.code();
            if *code == SqlState::QUERY_CANCELED {
                return Self::StatementTimeout(statement_bound);
            }
            let class = &code.code()[..2];
            return match class {
                "23" => Self::Constraint {
                    constraint: db.constraint().unwrap_or("unnamed").to_string(),
                    code: code.code().to_string(),
                },
                // connection exception, insufficient resources, operator intervention
                // (admin shutdown, crash, cannot connect now), and pooler-side errors.
                "08" | "53" | "57" => Self::Unreachable(db.message().to_string()),
                _ => Self::Other(format!("{} ({})", db.message(), code.code())),
            };
        }
        // No server error: an I/O or protocol failure on the socket. The causes are I/O errors;
        // none carries the connection string.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Unreachable(message)
    }

    /// Classifies a failure to get a connection from the pool.
    pub fn from_pool(err: PoolError, wait: Duration, connect: Duration) -> Self {
        match err {
            PoolError::Timeout(TimeoutType::Wait) => Self::PoolTimeout(wait),
            PoolError::Timeout(TimeoutType::Create) => {
                Self::Unreachable(format!("no connection established within {connect:?}"))
            }
            PoolError::Timeout(TimeoutType::Recycle) => Self::Unreachable("connection check timed out".into()),
            PoolError::Backend(e) => Self::from_pg(&e, Duration::ZERO).into_unreachable(),
            PoolError::Closed => Self::Unreachable("the pool is closed (shutting down)".into()),
            PoolError::NoRuntimeSpecified => Self::Other("pool built without a runtime".into()),
            PoolError::PostCreateHook(e) => Self::Unreachable(e.to_string()),
        }
    }

    /// A failure while connecting is always "unreachable", whatever the server said.
    fn into_unreachable(self) -> Self {
        match self {
            Self::Unreachable(m) | Self::Other(m) | Self::Decode(m) => Self::Unreachable(m),
            Self::Constraint { constraint, .. } => Self::Unreachable(constraint),
            Self::StatementTimeout(_) => Self::Unreachable("connection attempt cancelled".into()),
            Self::PoolTimeout(d) => Self::PoolTimeout(d),
        }
    }
}
