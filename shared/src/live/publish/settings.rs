//! The publishing settings (`LIVE_*`) and the [`LiveSettings`] read from them: the Management
//! API endpoint (https, or plain http only on loopback; unset: live updates off) and the bounds.

use std::time::Duration;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

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

#[cfg(test)]
mod tests {
    use super::*;

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
