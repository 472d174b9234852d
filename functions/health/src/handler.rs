//! The health routes.

use std::time::{Duration, Instant};

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use shared::db::activity::{self, ConnectionUsage};
use shared::db::probe::{Probe, ProbeStatus};
use shared::db::{Db, DbError, PoolStatus};
use shared::http::{db_public_message, serve, view_response, with_retry_after, ApiError, Reply, RETRY_AFTER_SECS};
use shared::metrics::{name, Metric, Metrics};
use shared::telemetry::Chain;
use subtle::ConstantTimeEq;

use crate::settings::{Settings, Thresholds};

/// The health function's state, built once per instance.
#[derive(Clone)]
pub struct Health {
    pub db: Db,
    pub settings: Settings,
    pub metrics: Metrics,
}

/// Usage level against the connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn of(usage_percent: f64, thresholds: Thresholds) -> Level {
        if usage_percent >= thresholds.critical_percent {
            Level::Critical
        } else if usage_percent >= thresholds.warning_percent {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// The body of `/api/health`: `{"status":"ok"}`, or `unavailable` with a sanitised reason.
#[derive(Debug, Serialize)]
struct Liveness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl Liveness {
    fn ok() -> Self {
        Self {
            status: "ok",
            reason: None,
        }
    }
}

/// The body of `/api/health/connections`: the server-side view (absent when the database could
/// not be asked), the pooler-side view, and the worst of their levels.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionReport {
    #[serde(flatten)]
    usage: Option<ConnectionUsage>,
    level: Level,
    /// Why the level is what it is, when it is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    pool: PoolStatus,
    latency_ms: f64,
    thresholds: Thresholds,
    pooler: PoolerView,
}

/// The pooler as a new client sees it, and this instance's own recent waits for a connection.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolerView {
    probe: Probe,
    level: Level,
    pool_wait_ms: f64,
    pool_wait_max_ms: f64,
    pool_timeouts: u64,
}

impl PoolerView {
    fn of(probe: Probe, db: &Db) -> Self {
        let recent = db.recent_activity();
        let level = match probe.status {
            ProbeStatus::Refused | ProbeStatus::Unreachable => Level::Critical,
            ProbeStatus::Ok if recent.pool_timeouts > 0 => Level::Warning,
            ProbeStatus::Ok => Level::Ok,
        };
        Self {
            probe,
            level,
            pool_wait_ms: recent.mean_wait_ms,
            pool_wait_max_ms: recent.max_wait_ms,
            pool_timeouts: recent.pool_timeouts,
        }
    }

    fn reason(&self) -> Option<String> {
        match self.probe.status {
            ProbeStatus::Refused => Some("the pooler refuses new clients: its client limit is reached".into()),
            ProbeStatus::Unreachable => Some("the pooler does not admit a new client".into()),
            ProbeStatus::Ok if self.pool_timeouts > 0 => {
                Some("this instance waited past its pool timeout recently".into())
            }
            ProbeStatus::Ok => None,
        }
    }
}

/// Compares the presented key with the configured one in constant time (for equal lengths).
fn admin_check(settings: &Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get("x-api-key").map(lambda_http::http::HeaderValue::as_bytes);
    match (settings.api_key(), presented) {
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
    let bound = h.settings.db_bound;
    let started = Instant::now();
    let server = async {
        let work = async {
            let conn = h.db.conn().await?;
            activity::usage(&conn.sql().with_bound(bound)).await
        };
        tokio::time::timeout(bound, work)
            .await
            .unwrap_or(Err(DbError::StatementTimeout(bound)))
    };
    // One after the other: the probe's own connection must not count in the server's view.
    let usage = server.await;
    let probe = h.db.probe_pooler("health-probe", bound).await;
    if let Some(detail) = &probe.detail {
        tracing::warn!(status = ?probe.status, detail, "health: the pooler probe failed");
    }
    let pooler = PoolerView::of(probe, &h.db);
    let server_level = usage
        .as_ref()
        .ok()
        .map(|u| Level::of(u.usage_percent, h.settings.thresholds));
    let usage = match usage {
        Ok(u) => Some(u),
        // The pooler refusing clients is the answer: report it rather than fail.
        Err(_) if pooler.level == Level::Critical => None,
        Err(e) => return Err(e),
    };
    let level = server_level.unwrap_or(Level::Ok).max(pooler.level);
    let reason = if pooler.level >= server_level.unwrap_or(Level::Ok) {
        pooler.reason()
    } else {
        Some("database connections near their limit".into())
    };
    Ok(ConnectionReport {
        usage,
        level,
        reason: reason.filter(|_| level != Level::Ok),
        pool: h.db.status(),
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        thresholds: h.settings.thresholds,
        pooler,
    })
}

/// The Lambda handler.
pub async fn handle(h: &Health, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    serve(&h.db, &h.metrics, request, |request, id| respond(h, request, id)).await
}

async fn respond(h: &Health, request: Request, request_id: String) -> Reply {
    let path = request.raw_http_path().trim_end_matches('/').to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/api/health") => Ok(match ping(&h.db, h.settings.db_bound).await {
            Ok(()) => view_response(StatusCode::OK, &Liveness::ok(), &request_id),
            Err(e) => unavailable(&e, &request_id),
        })
        .into(),
        (&Method::GET, "/api/health/connections") => {
            if let Err(e) = admin_check(&h.settings, request.headers()) {
                return Err(e).into();
            }
            match connection_report(h).await {
                Ok(report) => {
                    let mut metrics = vec![Metric::count(
                        name::POOLER_REFUSED,
                        u64::from(report.pooler.probe.status != ProbeStatus::Ok),
                    )];
                    if let Some(usage) = &report.usage {
                        metrics.push(Metric::count(
                            name::SERVER_CONNECTIONS,
                            u64::try_from(usage.active).unwrap_or(0),
                        ));
                        metrics.push(Metric::percent(name::CONNECTION_USAGE_PERCENT, usage.usage_percent));
                    }
                    Reply {
                        result: Ok(view_response(StatusCode::OK, &report, &request_id)),
                        metrics,
                    }
                }
                Err(e) => Err(ApiError::from(e)).into(),
            }
        }
        (_, "/api/health" | "/api/health/connections") => Err(ApiError::MethodNotAllowed).into(),
        _ => Err(ApiError::NotFound).into(),
    }
}

fn unavailable(e: &DbError, request_id: &str) -> Response<Body> {
    tracing::warn!(request_id, error = %Chain(e), "health: database unavailable");
    with_retry_after(
        view_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &Liveness {
                status: "unavailable",
                reason: Some(db_public_message(e)),
            },
            request_id,
        ),
        RETRY_AFTER_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Env;

    fn settings(key: Option<&str>) -> Settings {
        let pairs: Vec<(&str, &str)> = key.map(|k| ("HEALTH_API_KEY", k)).into_iter().collect();
        Settings::from_env(&Env::from_pairs(pairs)).unwrap()
    }

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert("x-api-key", k.parse().unwrap());
        }
        h
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let t = Thresholds {
            warning_percent: 80.0,
            critical_percent: 95.0,
        };
        assert_eq!(Level::of(79.9, t), Level::Ok);
        assert_eq!(Level::of(80.0, t), Level::Warning);
        assert_eq!(Level::of(94.99, t), Level::Warning);
        assert_eq!(Level::of(95.0, t), Level::Critical);
        assert_eq!(Level::of(120.0, t), Level::Critical);
    }

    #[test]
    fn the_admin_check_wants_the_exact_key() {
        let c = settings(Some("s3cret-key"));
        assert!(matches!(
            admin_check(&c, &headers(None)),
            Err(ApiError::Unauthorized(_))
        ));
        for wrong in ["wrong", "s3cret-kez", "s3cret-key ", ""] {
            assert!(
                matches!(admin_check(&c, &headers(Some(wrong))), Err(ApiError::Forbidden(_))),
                "{wrong:?}"
            );
        }
        assert!(admin_check(&c, &headers(Some("s3cret-key"))).is_ok());
    }

    #[test]
    fn without_a_configured_key_nobody_is_admin() {
        let c = settings(None);
        for key in ["", "anything"] {
            assert!(matches!(
                admin_check(&c, &headers(Some(key))),
                Err(ApiError::Forbidden(_))
            ));
        }
    }
}
