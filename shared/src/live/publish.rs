//! The publisher: events, settings, pushes (feature `live`).

use std::time::Duration;

use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Connections;
use uuid::Uuid;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};
use crate::db::{Db, DbError, Type};
use crate::metrics::{name, Metric, Metrics};

pub const LIVE_ENDPOINT: Setting = Setting::text(
    "LIVE_ENDPOINT",
    None,
    "the WebSocket API's Management API endpoint (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`; locally the dev gateway's `http://127.0.0.1:9001`); unset: live updates off, nothing pushed",
);
pub const LIVE_PUSH_TIMEOUT_MS: Setting = Setting::millis(
    "LIVE_PUSH_TIMEOUT_MS",
    50,
    10_000,
    1_000,
    "bound of one push (`PostToConnection`/`DeleteConnection`); past it the push counts as failed",
);
pub const LIVE_PUBLISH_TIMEOUT_MS: Setting = Setting::millis(
    "LIVE_PUBLISH_TIMEOUT_MS",
    50,
    10_000,
    2_000,
    "bound of all the pushes of one change: the most live updates add to a request; pushes not done by then count as failed",
);
pub const LIVE_PUSH_CONCURRENCY: Setting = Setting::number(
    "LIVE_PUSH_CONCURRENCY",
    1,
    256,
    32,
    Unit::Plain,
    "pushes in flight at once per instance",
);

pub const SETTINGS: &[&Setting] = &[
    &LIVE_ENDPOINT,
    &LIVE_PUSH_TIMEOUT_MS,
    &LIVE_PUBLISH_TIMEOUT_MS,
    &LIVE_PUSH_CONCURRENCY,
];

/// One live event (serialised as the JSON the browser receives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LiveEvent {
    /// A message stored in one of the user's conversations.
    #[serde(rename = "message.created", rename_all = "camelCase")]
    MessageCreated {
        conversation_id: Uuid,
        message_id: Uuid,
        role: String,
        at: DateTime<Utc>,
    },
    /// One of the user's tasks changed (created, decided, run, retried, ended).
    #[serde(rename = "task.updated", rename_all = "camelCase")]
    TaskUpdated {
        task_id: Uuid,
        status: String,
        at: DateTime<Utc>,
    },
}

impl LiveEvent {
    pub fn message(conversation_id: Uuid, message_id: Uuid, role: &str, at: DateTime<Utc>) -> Self {
        Self::MessageCreated {
            conversation_id,
            message_id,
            role: role.to_string(),
            at,
        }
    }

    /// `at`: when the change was made (the changing statement's `now()`).
    pub fn task(task_id: Uuid, status: &str, at: DateTime<Utc>) -> Self {
        Self::TaskUpdated {
            task_id,
            status: status.to_string(),
            at,
        }
    }
}

/// One event and who gets it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: LiveEvent,
    pub to: Connections,
}

/// What publishing came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub sent: u64,
    /// 410: the connection was gone (its row deleted).
    pub gone: u64,
    /// Closed: past their token's expiry (their rows deleted).
    pub closed: u64,
    /// Failed or past a bound (`LivePushFailed`).
    pub failed: u64,
}

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the connection is gone (410)")]
    Gone,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the Management API refused the push: {0}")]
    Refused(String),
}

/// Publishing settings.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub endpoint: Option<String>,
    pub push_timeout: Duration,
    pub publish_timeout: Duration,
    pub concurrency: usize,
}

impl LiveSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let endpoint = env.text(&LIVE_ENDPOINT).filter(|e| !e.trim().is_empty());
        if let Some(e) = &endpoint {
            let url = url::Url::parse(e).map_err(|err| invalid(LIVE_ENDPOINT.name, format!("not a URL ({err})")))?;
            let loopback = matches!(url.host(), Some(url::Host::Domain("localhost")))
                || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback());
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(invalid(
                    LIVE_ENDPOINT.name,
                    "expected https:// (plain http only on loopback)",
                ));
            }
        }
        Ok(Self {
            endpoint,
            push_timeout: env.duration(&LIVE_PUSH_TIMEOUT_MS)?,
            publish_timeout: env.duration(&LIVE_PUBLISH_TIMEOUT_MS)?,
            concurrency: usize::try_from(env.number(&LIVE_PUSH_CONCURRENCY)?).unwrap_or(32),
        })
    }
}

/// Pushes events to connections; cheap to clone. Off (pushes nothing) when `LIVE_ENDPOINT` is unset.
#[derive(Clone)]
pub struct Publisher {
    client: Option<Client>,
    settings: LiveSettings,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

/// The SDK's HTTP client: hyper + rustls with ring (the one TLS stack of the project).
fn http_client() -> aws_sdk_apigatewaymanagement::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl Publisher {
    /// Live updates off.
    pub fn off() -> Self {
        Self {
            client: None,
            settings: LiveSettings {
                endpoint: None,
                push_timeout: Duration::from_secs(1),
                publish_timeout: Duration::from_secs(2),
                concurrency: 1,
            },
            metrics: None,
        }
    }

    /// From the environment: off when `LIVE_ENDPOINT` is unset (no SDK client built); else an
    /// SDK client for the endpoint (region and credentials from the environment, as Lambda
    /// gives them), no SDK retries (a push is a hint), the push bound as its operation timeout.
    pub async fn from_env(env: &Env, metrics: &Metrics) -> Result<Self, ConfigError> {
        let settings = LiveSettings::from_env(env)?;
        let Some(endpoint) = settings.endpoint.clone() else {
            return Ok(Self::off());
        };
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(settings.push_timeout)
                    .connect_timeout(settings.push_timeout)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await;
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&config)
            .endpoint_url(endpoint.trim_end_matches('/'))
            .build();
        Ok(Self {
            client: Some(Client::from_conf(config)),
            settings,
            metrics: Some(metrics.clone()),
        })
    }

    /// With a client built elsewhere (a test's static credentials, another endpoint).
    pub fn from_client(client: Client, settings: LiveSettings, metrics: Option<Metrics>) -> Self {
        Self {
            client: Some(client),
            settings,
            metrics,
        }
    }

    pub fn is_on(&self) -> bool {
        self.client.is_some()
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// Pushes each delivery to its open connections and closes its expired ones, concurrently
    /// and within the bounds; then deletes the rows of connections found gone or closed (one
    /// statement, a connection checked out only for it). Never fails: failures are counted
    /// (`LivePushFailed`) and logged. Call it after the change committed, with no connection held.
    pub async fn publish(&self, db: &Db, deliveries: &[Delivery]) -> Published {
        let Some(client) = &self.client else {
            return Published::default();
        };
        if deliveries.iter().all(|d| d.to.is_empty()) {
            return Published::default();
        }
        let mut jobs = Vec::new();
        let mut closing = std::collections::HashSet::new();
        for d in deliveries {
            let payload = match serde_json::to_vec(&d.event) {
                Ok(p) => std::sync::Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %e, "a live event could not be serialised");
                    continue;
                }
            };
            jobs.extend(d.to.open.iter().map(|c| Job::Post(c.clone(), payload.clone())));
            for c in &d.to.expired {
                if closing.insert(c.clone()) {
                    jobs.push(Job::Close(c.clone()));
                }
            }
        }
        let total = jobs.len() as u64;
        let push_timeout = self.settings.push_timeout;
        let outcomes = futures_util::stream::iter(jobs)
            .map(|job| async move {
                match job {
                    Job::Post(id, payload) => {
                        let r = post(client, &id, payload.as_ref().clone(), push_timeout).await;
                        (id, false, r)
                    }
                    Job::Close(id) => {
                        let r = close(client, &id, push_timeout).await;
                        (id, true, r)
                    }
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1));
        let mut report = Published::default();
        let mut remove: Vec<String> = Vec::new();
        let mut done = 0u64;
        let collect = async {
            let mut outcomes = std::pin::pin!(outcomes);
            while let Some((id, is_close, result)) = outcomes.next().await {
                done += 1;
                match (is_close, result) {
                    (false, Ok(())) => report.sent += 1,
                    (true, Ok(()) | Err(PushError::Gone)) => {
                        report.closed += 1;
                        remove.push(id);
                    }
                    (false, Err(PushError::Gone)) => {
                        report.gone += 1;
                        remove.push(id);
                    }
                    (_, Err(e)) => {
                        report.failed += 1;
                        tracing::warn!(error = %e, connection = %id, "live push failed");
                    }
                }
            }
        };
        if tokio::time::timeout(self.settings.publish_timeout, collect)
            .await
            .is_err()
        {
            let unfinished = total.saturating_sub(done);
            report.failed += unfinished;
            tracing::warn!(
                unfinished,
                bound_ms = self.settings.publish_timeout.as_millis() as u64,
                "live pushes cut at their overall bound"
            );
        }
        if !remove.is_empty() {
            if let Err(e) = forget(db, &remove, self.settings.push_timeout).await {
                tracing::warn!(error = %e, connections = remove.len(), "could not delete gone live connections");
            }
        }
        if report.failed > 0 {
            if let Some(m) = &self.metrics {
                m.emit(&[Metric::count(name::LIVE_PUSH_FAILED, report.failed)]);
            }
        }
        report
    }
}

/// One push.
enum Job {
    Post(String, std::sync::Arc<Vec<u8>>),
    Close(String),
}

/// `PostToConnection`, bounded.
async fn post(client: &Client, id: &str, payload: Vec<u8>, bound: Duration) -> Result<(), PushError> {
    let call = client
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new(payload))
        .send();
    match tokio::time::timeout(bound, call).await {
        Err(_) => Err(PushError::Timeout(bound)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(sdk_error(e)),
    }
}

/// `DeleteConnection`, bounded.
async fn close(client: &Client, id: &str, bound: Duration) -> Result<(), PushError> {
    let call = client.delete_connection().connection_id(id).send();
    match tokio::time::timeout(bound, call).await {
        Err(_) => Err(PushError::Timeout(bound)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(sdk_error(e)),
    }
}

fn sdk_error<E>(e: SdkError<E, HttpResponse>) -> PushError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if e.raw_response().is_some_and(|r| r.status().as_u16() == 410) {
        return PushError::Gone;
    }
    match e {
        SdkError::TimeoutError(_) => PushError::Refused("timed out".into()),
        other => PushError::Refused(aws_sdk_apigatewaymanagement::error::DisplayErrorContext(other).to_string()),
    }
}

/// Deletes connections found gone or closed: one bounded statement.
async fn forget(db: &Db, ids: &[String], bound: Duration) -> Result<(), DbError> {
    let conn = db.conn().await?;
    conn.sql()
        .with_bound(bound)
        .execute(
            "DELETE FROM live_connections WHERE connection_id = ANY($1)",
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_ids_and_status_in_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let id = Uuid::nil();
        let task = serde_json::to_value(LiveEvent::TaskUpdated {
            task_id: id,
            status: "completed".into(),
            at,
        })
        .unwrap_or_default();
        assert_eq!(
            task,
            serde_json::json!({"type": "task.updated", "taskId": id, "status": "completed", "at": "2025-01-02T03:04:05Z"})
        );
        let message = serde_json::to_value(LiveEvent::message(id, id, "assistant", at)).unwrap_or_default();
        assert_eq!(
            message,
            serde_json::json!({"type": "message.created", "conversationId": id, "messageId": id, "role": "assistant", "at": "2025-01-02T03:04:05Z"})
        );
    }

    #[test]
    fn an_unset_endpoint_is_off_and_a_clear_text_remote_one_is_refused() {
        let env = Env::default();
        assert!(LiveSettings::from_env(&env).is_ok_and(|s| s.endpoint.is_none()));
        let env = Env::default().with("LIVE_ENDPOINT", "http://example.com/prod");
        assert!(LiveSettings::from_env(&env).is_err());
        let env = Env::default().with("LIVE_ENDPOINT", "http://127.0.0.1:9001");
        assert!(LiveSettings::from_env(&env).is_ok());
    }
}
