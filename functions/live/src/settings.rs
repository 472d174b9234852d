//! The live function's settings.

use shared::config::{ConfigError, Env, Setting, Unit};

pub const LIVE_MAX_CONNECTIONS_PER_USER: Setting = Setting::number(
    "LIVE_MAX_CONNECTIONS_PER_USER",
    1,
    1_000,
    10,
    Unit::Plain,
    "open WebSocket connections one user may have (tabs, devices); the next `$connect` is refused with 429",
);

pub const SETTINGS: &[&Setting] = &[&LIVE_MAX_CONNECTIONS_PER_USER];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_connections_per_user: i64,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_connections_per_user: i64::try_from(env.number(&LIVE_MAX_CONNECTIONS_PER_USER)?).unwrap_or(10),
        })
    }
}
