//! The health function: `GET /api/health` (public liveness) and `GET /api/health/connections`
//! (admin: connection usage against the limit, with warning/critical levels).

pub mod connections;

use std::time::Duration;

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Env};
use crate::db::{Db, DbError};
use crate::http_error::{db_public_message, json_response, ApiError, RETRY_AFTER_SECS};
use crate::metrics::{Metric, Metrics};
use connections::{ConnectionReport, Thresholds};

#[derive(Clone)]
pub struct HealthConfig {
    /// `HEALTH_API_KEY`: the `x-api-key` value the connections route requires. Unset: the route
    /// answers 403 to everyone.
    api_key: Option<String>,
    pub thresholds: Thresholds,
    /// `HEALTH_DB_TIMEOUT_MS`: bound on the whole database check (checkout included).
    pub db_bound: Duration,
}

impl std::fmt::Debug for HealthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("thresholds", &self.thresholds)
            .field("db_bound", &self.db_bound)
            .finish()
    }
}

fn percent<F: Fn(&str) -> Option<String>>(env: &Env<F>, name: &str, default: f64) -> Result<f64, ConfigError> {
    match env.text(name) {
        None => Ok(default),
        Some(v) => match v.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
            _ => Err(ConfigError::Invalid {
                name: name.into(),
                reason: "expected a percentage above 0 and at most 100".into(),
            }),
        },
    }
}

impl HealthConfig {
    pub fn new(api_key: Option<String>, thresholds: Thresholds, db_bound: Duration) -> Self {
        Self {
            api_key: api_key.filter(|k| !k.is_empty()),
            thresholds,
            db_bound,
        }
    }

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let warning = percent(env, "HEALTH_WARNING_PERCENT", 80.0)?;
        let critical = percent(env, "HEALTH_CRITICAL_PERCENT", 95.0)?;
        if critical < warning {
            return Err(ConfigError::Invalid {
                name: "HEALTH_CRITICAL_PERCENT".into(),
                reason: "must not be below HEALTH_WARNING_PERCENT".into(),
            });
        }
        let db_bound = Duration::from_millis(env.number("HEALTH_DB_TIMEOUT_MS", 1, 60_000)?.unwrap_or(1500));
        Ok(Self::new(
            env.text("HEALTH_API_KEY"),
            Thresholds {
                warning_percent: warning,
                critical_percent: critical,
            },
            db_bound,
        ))
    }
}

/// The health function's state, built once per instance.
#[derive(Clone)]
pub struct Health {
    pub db: Db,
    pub config: HealthConfig,
    pub metrics: Metrics,
}

/// Compares the presented key with the configured one in constant time (for equal lengths).
fn admin_check(config: &HealthConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get("x-api-key").map(|v| v.as_bytes());
    match (config.api_key.as_deref(), presented) {
        (_, None) => Err(ApiError::Unauthorized("an API key is required".into())),
        (Some(expected), Some(given)) if bool::from(expected.as_bytes().ct_eq(given)) => Ok(()),
        _ => Err(ApiError::Forbidden("forbidden".into())),
    }
}

/// Liveness: one trivial statement, the whole check bounded.
#[tracing::instrument(skip_all)]
pub async fn ping(db: &Db, bound: Duration) -> Result<(), DbError> {
    let check = async {
        let conn = db.conn().await?;
        conn.sql().with_bound(bound).simple("SELECT 1").await?;
        Ok(())
    };
    tokio::time::timeout(bound, check)
        .await
        .unwrap_or(Err(DbError::StatementTimeout(bound)))
}

async fn connection_report(h: &Health) -> Result<ConnectionReport, DbError> {
    let bound = h.config.db_bound;
    let work = async {
        let conn = h.db.conn().await?;
        connections::report(&conn.sql().with_bound(bound), h.db.status(), h.config.thresholds).await
    };
    tokio::time::timeout(bound, work)
        .await
        .unwrap_or(Err(DbError::StatementTimeout(bound)))
}

/// The Lambda handler.
pub async fn handle(h: &Health, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    let _in_flight = h.db.begin_request();
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let path = request.raw_http_path().trim_end_matches('/').to_string();
    let mut extra = Vec::new();
    let result = match (request.method(), path.as_str()) {
        (&Method::GET, "/api/health") => Ok(match ping(&h.db, h.config.db_bound).await {
            Ok(()) => json_response(StatusCode::OK, &json!({"status": "ok"}), &request_id),
            Err(e) => unavailable(&e, &request_id),
        }),
        (&Method::GET, "/api/health/connections") => match admin_check(&h.config, request.headers()) {
            Err(e) => Err(e),
            Ok(()) => connection_report(h)
                .await
                .map(|report| {
                    extra.push(Metric::count("ServerConnections", report.active.max(0) as u64));
                    extra.push(Metric::percent("ConnectionUsagePercent", report.usage_percent));
                    let body = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
                    json_response(StatusCode::OK, &body, &request_id)
                })
                .map_err(ApiError::from),
        },
        (_, "/api/health" | "/api/health/connections") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    };
    h.metrics.flush_db(&h.db, &extra);
    Ok(result.unwrap_or_else(|e| e.into_response(&request_id)))
}

fn unavailable(e: &DbError, request_id: &str) -> Response<Body> {
    tracing::warn!(request_id, error = %e, "health: database unavailable");
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"status": "unavailable", "reason": db_public_message(e)}),
        request_id,
    );
    r.headers_mut().insert("retry-after", RETRY_AFTER_SECS.into());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: Option<&str>) -> HealthConfig {
        HealthConfig::new(
            key.map(String::from),
            Thresholds {
                warning_percent: 80.0,
                critical_percent: 95.0,
            },
            Duration::from_secs(1),
        )
    }

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert("x-api-key", k.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_admin_check_wants_the_exact_key() {
        let c = config(Some("s3cret-key"));
        assert!(matches!(
            admin_check(&c, &headers(None)),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            admin_check(&c, &headers(Some("wrong"))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            admin_check(&c, &headers(Some("s3cret-kez"))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            admin_check(&c, &headers(Some("s3cret-key "))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            admin_check(&c, &headers(Some(""))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(admin_check(&c, &headers(Some("s3cret-key"))).is_ok());
    }

    #[test]
    fn without_a_configured_key_nobody_is_admin() {
        let c = config(None);
        assert!(matches!(
            admin_check(&c, &headers(Some(""))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            admin_check(&c, &headers(Some("anything"))),
            Err(ApiError::Forbidden(_))
        ));
        assert!(!format!("{:?}", config(Some("s3cret-key"))).contains("s3cret"));
    }
}
