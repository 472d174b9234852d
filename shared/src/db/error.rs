//! Database errors, classified so each boundary can answer truthfully: a saturated pool is not a
//! validation error, a slow statement is not a crash.

use std::time::Duration;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

/// The error underneath a [`DbError`], kept for the log (`source()`), never for a response.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to the database. Messages never contain SQL text, parameters or
/// connection strings; the driver's error stays reachable as the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Every pooled connection was busy for the whole wait timeout (HTTP 503 + Retry-After).
    #[error("no database connection became free within {0:?}")]
    PoolTimeout(Duration),
    /// The database or pooler could not be reached, or the connection broke (HTTP 503).
    #[error("database unreachable: {what}")]
    Unreachable {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// A statement ran past its bound and was cancelled on the server (HTTP 504).
    #[error("database statement exceeded its {0:?} bound and was cancelled")]
    StatementTimeout(Duration),
    /// A constraint rejected the write (HTTP 409).
    #[error("constraint violated: {constraint}")]
    Constraint { constraint: String, code: String },
    /// A row did not have the expected shape (a column missing or of another type) (HTTP 500).
    #[error("unexpected row: {what}")]
    Decode {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// Anything else (HTTP 500).
    #[error("database error: {what}")]
    Other {
        what: String,
        #[source]
        source: Option<Cause>,
    },
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
    /// The database or pooler is out of reach, with no error underneath.
    pub fn unreachable(what: impl Into<String>) -> Self {
        Self::Unreachable {
            what: what.into(),
            source: None,
        }
    }

    /// A row that is not what the statement promises.
    pub fn decode(what: impl Into<String>) -> Self {
        Self::Decode {
            what: what.into(),
            source: None,
        }
    }

    /// A column that did not decode, with the decoder's error as the cause.
    pub fn decode_column(column: &str, cause: impl Into<Cause>) -> Self {
        Self::Decode {
            what: format!("column {column}"),
            source: Some(cause.into()),
        }
    }

    pub fn kind(&self) -> DbErrorKind {
        match self {
            Self::PoolTimeout(_) => DbErrorKind::PoolTimeout,
            Self::Unreachable { .. } => DbErrorKind::Unreachable,
            Self::StatementTimeout(_) => DbErrorKind::StatementTimeout,
            Self::Constraint { .. } => DbErrorKind::Constraint,
            Self::Decode { .. } | Self::Other { .. } => DbErrorKind::Other,
        }
    }

    /// Classifies an error from a statement that ran (or tried to run) on a connection.
    pub fn from_pg(err: tokio_postgres::Error, statement_bound: Duration) -> Self {
        if err.is_closed() {
            return Self::Unreachable {
                what: "the connection was closed".into(),
                source: Some(err.into()),
            };
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
                "08" | "53" | "57" => Self::Unreachable {
                    what: format!("the server refused ({})", code.code()),
                    source: Some(err.into()),
                },
                _ => Self::Other {
                    what: format!("the statement failed ({})", code.code()),
                    source: Some(err.into()),
                },
            };
        }
        // No server error: an I/O or protocol failure on the socket. The causes are I/O errors;
        // none carries the connection string.
        Self::Unreachable {
            what: "the connection failed".into(),
            source: Some(err.into()),
        }
    }

    /// Classifies a failure to get a connection from the pool.
    pub fn from_pool(err: PoolError, wait: Duration, connect: Duration) -> Self {
        match err {
            PoolError::Timeout(TimeoutType::Wait) => Self::PoolTimeout(wait),
            PoolError::Timeout(TimeoutType::Create) => {
                Self::unreachable(format!("no connection established within {connect:?}"))
            }
            PoolError::Timeout(TimeoutType::Recycle) => Self::unreachable("connection check timed out"),
            // A failure while connecting is always "unreachable", whatever the server said.
            PoolError::Backend(e) => Self::Unreachable {
                what: "could not connect".into(),
                source: Some(e.into()),
            },
            PoolError::Closed => Self::unreachable("the pool is closed (shutting down)"),
            PoolError::NoRuntimeSpecified => Self::Other {
                what: "pool built without a runtime".into(),
                source: None,
            },
            e @ PoolError::PostCreateHook(_) => Self::Unreachable {
                what: "the new connection's setup failed".into(),
                source: Some(e.into()),
            },
        }
    }
}
