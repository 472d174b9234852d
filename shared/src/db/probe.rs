//! The pooler's side of connection health: a fresh client connection (not from the pool, so it
//! sees what a new Lambda instance would see), bounded, that recognises a pooler refusing
//! clients because its client limit is reached. `pg_stat_activity` cannot see that: the pooler
//! refuses before any server connection is involved.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::tls::Tls;
use super::DbSettings;

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    /// A new client was admitted.
    Ok,
    /// The pooler refused a new client: its client limit is reached.
    Refused,
    /// No answer within the bound, or the connection failed otherwise.
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub status: ProbeStatus,
    pub latency_ms: f64,
    /// What the pooler or the driver said, when it refused or failed: for the log only. A
    /// view shows `status` (the health route says why in its own words); raw driver text never
    /// reaches a response body.
    #[serde(skip)]
    pub detail: Option<String>,
}

/// The wording of a refusal because the client limit is reached: pgbouncer's
/// `no more connections allowed (max_client_conn)` and Supavisor's `Max client connections
/// reached` (and the `too many clients` of a Postgres reached directly).
pub fn is_client_limit_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("max_client_conn")
        || m.contains("max client connections")
        || m.contains("no more connections allowed")
        || m.contains("too many clients")
        || m.contains("too many connections")
}

/// Opens one client connection with `settings` (and the pool's TLS connector), within `bound`,
/// and closes it. See [`super::Db::probe_pooler`].
#[tracing::instrument(skip_all)]
pub(crate) async fn probe(settings: &DbSettings, tls: Tls, bound: Duration) -> Probe {
    let started = Instant::now();
    let attempt = async {
        let mut config = settings.pg_config();
        config.connect_timeout(bound);
        let (client, connection) = config.connect(tls).await.map_err(|e| describe(&e))?;
        let driver = tokio::spawn(connection);
        let answered = client.simple_query("SELECT 1").await.map_err(|e| describe(&e));
        drop(client);
        let _ = driver.await;
        answered.map(|_| ())
    };
    let result = tokio::time::timeout(bound, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {bound:?}")));
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(()) => Probe {
            status: ProbeStatus::Ok,
            latency_ms,
            detail: None,
        },
        Err(message) => Probe {
            status: if is_client_limit_refusal(&message) {
                ProbeStatus::Refused
            } else {
                ProbeStatus::Unreachable
            },
            latency_ms,
            detail: Some(message),
        },
    }
}

/// The server's message when there is one (what a pooler says), else the error's own text.
fn describe(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| crate::telemetry::Chain(e).to_string(), |db| db.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_poolers_wordings_are_recognised() {
        assert!(is_client_limit_refusal("no more connections allowed (max_client_conn)"));
        assert!(is_client_limit_refusal("Max client connections reached"));
        assert!(is_client_limit_refusal("sorry, too many clients already"));
        assert!(!is_client_limit_refusal(
            "password authentication failed for user \"x\""
        ));
        assert!(!is_client_limit_refusal("connection refused"));
    }
}
