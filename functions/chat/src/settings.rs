//! The chat function's settings.

use std::time::Duration;

use shared::config::{ConfigError, Env, Setting, Unit};

pub const CHAT_MAX_MESSAGE_CHARS: Setting = Setting::number(
    "CHAT_MAX_MESSAGE_CHARS",
    1,
    100_000,
    4000,
    Unit::Plain,
    "longest message, in characters after trimming (413 above)",
);
pub const CHAT_MAX_BODY_BYTES: Setting = Setting::number(
    "CHAT_MAX_BODY_BYTES",
    1024,
    6 * 1024 * 1024,
    65_536,
    Unit::Bytes,
    "bodies above are refused before parsing (413)",
);
pub const CHAT_HISTORY_MESSAGES: Setting = Setting::number(
    "CHAT_HISTORY_MESSAGES",
    0,
    1000,
    20,
    Unit::Plain,
    "earlier messages of the conversation given to the model",
);
pub const CHAT_RATE_LIMIT: Setting = Setting::number(
    "CHAT_RATE_LIMIT",
    1,
    1_000_000,
    30,
    Unit::Plain,
    "model calls a user may start per window, retries included (429 with `Retry-After` above)",
);
pub const CHAT_RATE_WINDOW_SECS: Setting = Setting::number(
    "CHAT_RATE_WINDOW_SECS",
    1,
    86_400,
    60,
    Unit::Seconds,
    "the rate limit's window (fixed, per user)",
);
pub const CHAT_MAX_IN_FLIGHT: Setting = Setting::number(
    "CHAT_MAX_IN_FLIGHT",
    1,
    1000,
    4,
    Unit::Plain,
    "model calls one user may have in flight at once (429 above)",
);
pub const CHAT_MODEL_TIMEOUT_MS: Setting = Setting::millis(
    "CHAT_MODEL_TIMEOUT_MS",
    1,
    300_000,
    15_000,
    "bound on the model call of one message (504 past it)",
);

pub const CHAT_STREAM_TIMEOUT_MS: Setting = Setting::millis(
    "CHAT_STREAM_TIMEOUT_MS",
    1,
    900_000,
    240_000,
    "bound on a streamed reply (`chat-stream`), first chunk to last (an `error` event past it)",
);

pub const SETTINGS: &[&Setting] = &[
    &CHAT_MAX_MESSAGE_CHARS,
    &CHAT_MAX_BODY_BYTES,
    &CHAT_HISTORY_MESSAGES,
    &CHAT_RATE_LIMIT,
    &CHAT_RATE_WINDOW_SECS,
    &CHAT_MAX_IN_FLIGHT,
    &CHAT_MODEL_TIMEOUT_MS,
    &CHAT_STREAM_TIMEOUT_MS,
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_message_chars: usize,
    pub max_body_bytes: usize,
    pub history: i64,
    pub rate_limit: i64,
    pub rate_window: Duration,
    pub max_in_flight: i64,
    pub model_timeout: Duration,
    pub stream_timeout: Duration,
    /// `USAGE_USER_DAILY_TOKENS` (0: unlimited).
    pub user_daily_tokens: i64,
    /// How agents with tools run (`AGENT_*`).
    pub runs: shared::agent::settings::RunSettings,
}

impl Default for Settings {
    /// The declared defaults.
    fn default() -> Self {
        Self::from_env(&Env::default()).unwrap_or_else(|e| unreachable!("declared defaults are valid: {e}"))
    }
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_message_chars: usize::try_from(env.number(&CHAT_MAX_MESSAGE_CHARS)?).unwrap_or(usize::MAX),
            max_body_bytes: usize::try_from(env.number(&CHAT_MAX_BODY_BYTES)?).unwrap_or(usize::MAX),
            history: i64::try_from(env.number(&CHAT_HISTORY_MESSAGES)?).unwrap_or(i64::MAX),
            rate_limit: i64::try_from(env.number(&CHAT_RATE_LIMIT)?).unwrap_or(i64::MAX),
            rate_window: env.duration(&CHAT_RATE_WINDOW_SECS)?,
            max_in_flight: i64::try_from(env.number(&CHAT_MAX_IN_FLIGHT)?).unwrap_or(i64::MAX),
            model_timeout: env.duration(&CHAT_MODEL_TIMEOUT_MS)?,
            stream_timeout: env.duration(&CHAT_STREAM_TIMEOUT_MS)?,
            user_daily_tokens: shared::usage::user_daily_tokens(env)?,
            runs: shared::agent::settings::RunSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_defaults_are_the_settings_defaults() {
        let s = Settings::default();
        assert_eq!(s.max_message_chars, 4000);
        assert_eq!(s.max_body_bytes, 65_536);
        assert_eq!(s.rate_window, Duration::from_secs(60));
        assert_eq!(s.model_timeout, Duration::from_secs(15));
    }

    #[test]
    fn malformed_values_are_named() {
        for (k, v) in [
            ("CHAT_MAX_MESSAGE_CHARS", "0"),
            ("CHAT_MAX_BODY_BYTES", "10"),
            ("CHAT_RATE_WINDOW_SECS", "soon"),
            ("CHAT_MODEL_TIMEOUT_MS", "-1"),
        ] {
            let err = Settings::from_env(&Env::from_pairs([(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
