//! The health function's settings.

use std::time::Duration;

use shared::config::{invalid, ConfigError, Env, Setting};

pub const HEALTH_API_KEY: Setting = Setting::secret(
    "HEALTH_API_KEY",
    "the `x-api-key` value `/api/health/connections` requires (unset: the route answers 403 to everyone)",
);
pub const HEALTH_WARNING_PERCENT: Setting =
    Setting::percent("HEALTH_WARNING_PERCENT", 80.0, "connection usage reported as `warning`");
pub const HEALTH_CRITICAL_PERCENT: Setting = Setting::percent(
    "HEALTH_CRITICAL_PERCENT",
    95.0,
    "connection usage reported as `critical`",
);
pub const HEALTH_DB_TIMEOUT_MS: Setting = Setting::millis(
    "HEALTH_DB_TIMEOUT_MS",
    1,
    60_000,
    1500,
    "bound on a whole database check, checkout included (503 past it)",
);

pub const SETTINGS: &[&Setting] = &[
    &HEALTH_API_KEY,
    &HEALTH_WARNING_PERCENT,
    &HEALTH_CRITICAL_PERCENT,
    &HEALTH_DB_TIMEOUT_MS,
];

/// Usage levels, in percent of the connection limit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    pub warning_percent: f64,
    pub critical_percent: f64,
}

#[derive(Clone)]
pub struct Settings {
    api_key: Option<String>,
    pub thresholds: Thresholds,
    /// Bound on the whole database check (checkout included).
    pub db_bound: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("thresholds", &self.thresholds)
            .field("db_bound", &self.db_bound)
            .finish()
    }
}

impl Settings {
    pub fn new(api_key: Option<String>, thresholds: Thresholds, db_bound: Duration) -> Self {
        Self {
            api_key: api_key.filter(|k| !k.is_empty()),
            thresholds,
            db_bound,
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let warning = env.percent(&HEALTH_WARNING_PERCENT)?;
        let critical = env.percent(&HEALTH_CRITICAL_PERCENT)?;
        if critical < warning {
            return Err(invalid(
                HEALTH_CRITICAL_PERCENT.name,
                "must not be below HEALTH_WARNING_PERCENT",
            ));
        }
        Ok(Self::new(
            env.text(&HEALTH_API_KEY),
            Thresholds {
                warning_percent: warning,
                critical_percent: critical,
            },
            env.duration(&HEALTH_DB_TIMEOUT_MS)?,
        ))
    }

    /// The configured admin key, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_named_errors() {
        let s = Settings::from_env(&Env::default()).unwrap();
        assert!((s.thresholds.warning_percent - 80.0).abs() < f64::EPSILON);
        assert_eq!(s.db_bound, Duration::from_millis(1500));
        assert!(s.api_key().is_none());
        let err = Settings::from_env(&Env::from_pairs([
            ("HEALTH_WARNING_PERCENT", "90"),
            ("HEALTH_CRITICAL_PERCENT", "85"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("HEALTH_CRITICAL_PERCENT"));
        let s = Settings::from_env(&Env::from_pairs([("HEALTH_API_KEY", "s3cret-key")])).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
