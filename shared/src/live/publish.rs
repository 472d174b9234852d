//! The publisher: events, settings, pushes (feature `live`).
//!
//! [`Publisher::publish`] here; the events in `event`, the settings in `settings`, one bounded
//! push (and the deletion of gone connections) in `push`.

mod event;
mod push;
mod settings;

use std::time::Duration;

use aws_sdk_apigatewaymanagement::Client;
use futures_util::StreamExt;

use self::push::{close, forget, post, Job};
use crate::config::{ConfigError, Env};
use crate::db::Db;
use crate::metrics::{name, Metric, Metrics};

pub use self::event::{Delivery, LiveEvent};
pub use self::push::PushError;
pub use self::settings::{
    LiveSettings, LIVE_ENDPOINT, LIVE_PUBLISH_TIMEOUT_MS, LIVE_PUSH_CONCURRENCY, LIVE_PUSH_TIMEOUT_MS, SETTINGS,
};

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
                tracing::warn!(
                    error = %crate::telemetry::Chain(&e),
                    connections = remove.len(),
                    "could not delete gone live connections"
                );
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
