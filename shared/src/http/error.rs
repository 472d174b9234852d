//! The HTTP API's one error enum, mapped to status codes in one place. Bodies are
//! `{"error": {"code": "...", "message": "..."}}` and never carry SQL, stack traces or
//! connection strings.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

use super::response::{view_response, with_retry_after, RETRY_AFTER_SECS};
use crate::db::{Cause, DbError};
use crate::telemetry::Chain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    NotFoundWith(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A per-user quota other than the request rate (`code` names it, e.g. `too_many_active_tasks`).
    #[error("{message}")]
    QuotaExceeded {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error("{message}")]
    InProgress { message: String, retry_after_secs: u64 },
    #[error("the sign-in service is unavailable; retry shortly")]
    AuthUnavailable { retry_after_secs: u64 },
    #[error("the model provider is busy; retry shortly")]
    ModelBusy { retry_after_secs: u64 },
    #[error("the model did not answer in time")]
    ModelTimeout,
    /// An agent's run made its `AGENT_MAX_STEPS` model calls and was still calling tools.
    #[error("the agent made {0} model calls without a final answer (AGENT_MAX_STEPS)")]
    StepLimit(u32),
    /// A server we called for the caller (an MCP server) could not answer: the message says
    /// why, in our words (HTTP 502).
    #[error("{0}")]
    Upstream(String),
    /// The model provider failed; the cause goes to the log, never to the body.
    #[error("the model failed")]
    ModelFailed(#[source] Cause),
    /// A fault of ours that is not the database's (HTTP 500; the cause goes to the log).
    #[error("internal error")]
    Internal(#[source] Cause),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl ApiError {
    /// An Idempotency-Key seen before with another body (422).
    pub fn key_reused() -> Self {
        Self::Unprocessable("this Idempotency-Key was used for a different request".into())
    }

    /// The Idempotency-Key's request was answered by another request while this one worked (409).
    pub fn answered_meanwhile() -> Self {
        Self::Conflict("a request with this Idempotency-Key was answered meanwhile; retry to get its reply".into())
    }

    /// Status, machine-readable code and optional `Retry-After` seconds.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<u64>) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            Self::NotFound | Self::NotFoundWith(_) => (StatusCode::NOT_FOUND, "not_found", None),
            Self::ModelTimeout => (StatusCode::GATEWAY_TIMEOUT, "model_timeout", None),
            Self::StepLimit(_) => (StatusCode::BAD_GATEWAY, "step_limit", None),
            Self::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_failed", None),
            Self::ModelFailed(_) => (StatusCode::BAD_GATEWAY, "model_error", None),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::Conflict(_) | Self::Database(DbError::Constraint { .. }) => (StatusCode::CONFLICT, "conflict", None),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", None),
            Self::TooManyRequests { retry_after_secs } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(*retry_after_secs))
            }
            Self::QuotaExceeded {
                code, retry_after_secs, ..
            } => (StatusCode::TOO_MANY_REQUESTS, code, Some(*retry_after_secs)),
            Self::InProgress { retry_after_secs, .. } => (StatusCode::CONFLICT, "in_progress", Some(*retry_after_secs)),
            Self::AuthUnavailable { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                Some(*retry_after_secs),
            ),
            Self::ModelBusy { retry_after_secs } => {
                (StatusCode::SERVICE_UNAVAILABLE, "model_busy", Some(*retry_after_secs))
            }
            Self::Database(DbError::PoolTimeout(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "saturated", Some(RETRY_AFTER_SECS))
            }
            Self::Database(DbError::Unreachable { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                Some(RETRY_AFTER_SECS),
            ),
            Self::Database(DbError::StatementTimeout(_)) => (StatusCode::GATEWAY_TIMEOUT, "database_timeout", None),
            Self::Database(DbError::Other { .. } | DbError::Decode { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        }
    }

    /// The message a client sees: the error itself for client errors, a fixed sentence for
    /// server-side ones (details go to the log, not the body).
    pub fn public_message(&self) -> String {
        match self {
            Self::Database(e) => db_public_message(e).into(),
            Self::ModelFailed(_) => "the model failed to answer".into(),
            Self::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let (status, code, retry_after) = self.parts();
        let chain = Chain(&self);
        if status.is_server_error() {
            tracing::error!(request_id, status = status.as_u16(), code, error = %chain, "request failed");
        } else {
            tracing::info!(request_id, status = status.as_u16(), code, error = %chain, "request rejected");
        }
        let body = ErrorView {
            error: ErrorBody {
                code,
                message: self.public_message(),
            },
        };
        let response = view_response(status, &body, request_id);
        match retry_after {
            Some(secs) => with_retry_after(response, secs),
            None => response,
        }
    }
}

/// Every error's body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(serde::Serialize)]
struct ErrorView {
    error: ErrorBody,
}

/// The code and the sanitised message of an error.
#[derive(serde::Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

/// What a client is told about a database error (the details go to the log).
pub fn db_public_message(e: &DbError) -> &'static str {
    match e {
        DbError::PoolTimeout(_) => "the service is busy; retry shortly",
        DbError::Unreachable { .. } => "the database is unavailable; retry shortly",
        DbError::StatementTimeout(_) => "the database did not answer in time",
        DbError::Constraint { .. } => "the request conflicts with existing data",
        DbError::Other { .. } | DbError::Decode { .. } => "internal error",
    }
}
