//! The API function's settings.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shared::agent::mcp::Mcp;
use shared::agent::sealed::SealKey;
use shared::agent::settings::AGENT_MCP_ENCRYPTION_KEY;
use shared::agent::ToolPolicy;
use shared::config::{invalid, ConfigError, Env, Setting, Unit};

pub const API_MAX_BODY_BYTES: Setting = Setting::number(
    "API_MAX_BODY_BYTES",
    1024,
    1024 * 1024,
    65_536,
    Unit::Bytes,
    "bodies above are refused before parsing (413)",
);
pub const API_PAGE_SIZE: Setting = Setting::number(
    "API_PAGE_SIZE",
    1,
    1000,
    20,
    Unit::Plain,
    "items per page of a list route when `limit` is not given",
);
pub const API_MAX_PAGE_SIZE: Setting = Setting::number(
    "API_MAX_PAGE_SIZE",
    1,
    1000,
    100,
    Unit::Plain,
    "largest `limit` a list route accepts (422 above)",
);
pub const TASK_MAX_PROMPT_CHARS: Setting = Setting::number(
    "TASK_MAX_PROMPT_CHARS",
    1,
    100_000,
    8000,
    Unit::Plain,
    "longest task prompt, in characters after trimming (413 above)",
);
pub const TASK_MAX_HORIZON_DAYS: Setting = Setting::number(
    "TASK_MAX_HORIZON_DAYS",
    1,
    3650,
    366,
    Unit::Plain,
    "how far ahead a task's `scheduledFor` may be (422 beyond)",
);
pub const TASK_MAX_ATTEMPTS: Setting = Setting::number(
    "TASK_MAX_ATTEMPTS",
    1,
    100,
    10,
    Unit::Plain,
    "largest `maxAttempts` a task may ask for (422 above); 3 when not given",
);

pub const TASKS_MAX_ACTIVE_PER_USER: Setting = Setting::number(
    "TASKS_MAX_ACTIVE_PER_USER",
    1,
    1_000_000,
    100,
    Unit::Plain,
    "a user's tasks pending or running at once (a series counts once: one occurrence is in flight); creating one more is a 429 `too_many_active_tasks`",
);
pub const TASKS_RATE_LIMIT: Setting = Setting::number(
    "TASKS_RATE_LIMIT",
    1,
    1_000_000,
    30,
    Unit::Plain,
    "tasks a user may create per `TASKS_RATE_WINDOW_SECS` (429 `rate_limited` above; idempotent replays are free)",
);
pub const TASKS_RATE_WINDOW_SECS: Setting = Setting::number(
    "TASKS_RATE_WINDOW_SECS",
    1,
    86_400,
    60,
    Unit::Seconds,
    "the task-creation rate limit's window (sliding, per user)",
);
pub const TASKS_MIN_INTERVAL_SECS: Setting = Setting::number(
    "TASKS_MIN_INTERVAL_SECS",
    60,
    86_400,
    60,
    Unit::Seconds,
    "shortest gap between two runs of a recurring task's cron (422 naming `cron` below); a seconds field is always refused",
);

pub const SETTINGS: &[&Setting] = &[
    &API_MAX_BODY_BYTES,
    &API_PAGE_SIZE,
    &API_MAX_PAGE_SIZE,
    &TASK_MAX_PROMPT_CHARS,
    &TASK_MAX_HORIZON_DAYS,
    &TASK_MAX_ATTEMPTS,
    &TASKS_MAX_ACTIVE_PER_USER,
    &TASKS_RATE_LIMIT,
    &TASKS_RATE_WINDOW_SECS,
    &TASKS_MIN_INTERVAL_SECS,
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_body_bytes: usize,
    pub page_size: i64,
    pub max_page_size: i64,
    pub max_prompt_chars: usize,
    pub horizon_days: i64,
    pub max_attempts: i32,
    pub max_active_tasks: i64,
    pub task_rate_limit: i64,
    pub task_rate_window: Duration,
    pub min_interval: Duration,
    /// `USAGE_USER_DAILY_TOKENS` (shared with chat and the scheduler): 0 is unlimited.
    pub daily_tokens: i64,
    /// The outbound rules a tool's URL must pass to be saved (`AGENT_TOOL_*`, shared with the
    /// functions that call tools).
    pub tool_policy: ToolPolicy,
    /// The key MCP sources' auth headers are sealed with (`AGENT_MCP_ENCRYPTION_KEY`, shared
    /// with the functions that call MCP servers); `None`: unset, a source with one is refused.
    pub seal_key: Option<Arc<SealKey>>,
    /// The MCP client that lists a source's tools for its owner, built at its first use under
    /// `tool_policy` (`None` inside: it could not be built).
    pub mcp: Arc<OnceLock<Option<Arc<Mcp>>>>,
}

impl Settings {
    /// The MCP client, built once.
    pub fn mcp(&self) -> Option<Arc<Mcp>> {
        self.mcp
            .get_or_init(|| {
                Mcp::new(Arc::new(self.tool_policy.clone()), Duration::ZERO)
                    .inspect_err(|e| tracing::error!(error = %shared::telemetry::Chain(e), "no client for MCP servers"))
                    .ok()
                    .map(Arc::new)
            })
            .clone()
    }
}

impl Default for Settings {
    /// The declared defaults.
    fn default() -> Self {
        Self::from_env(&Env::default()).unwrap_or_else(|e| unreachable!("declared defaults are valid: {e}"))
    }
}

/// `AGENT_MCP_ENCRYPTION_KEY`: `None` when unset or empty; not 64 hex digits is a configuration
/// error (the instance does not start).
fn seal_key(env: &Env) -> Result<Option<Arc<SealKey>>, ConfigError> {
    let Some(hex) = env.text(&AGENT_MCP_ENCRYPTION_KEY).filter(|k| !k.trim().is_empty()) else {
        return Ok(None);
    };
    SealKey::from_hex(&hex)
        .map(|key| Some(Arc::new(key)))
        .map_err(|e| invalid(AGENT_MCP_ENCRYPTION_KEY.name, e.to_string()))
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let number = |s: &Setting| env.number(s).map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let settings = Self {
            max_body_bytes: usize::try_from(env.number(&API_MAX_BODY_BYTES)?).unwrap_or(usize::MAX),
            page_size: number(&API_PAGE_SIZE)?,
            max_page_size: number(&API_MAX_PAGE_SIZE)?,
            max_prompt_chars: usize::try_from(env.number(&TASK_MAX_PROMPT_CHARS)?).unwrap_or(usize::MAX),
            horizon_days: number(&TASK_MAX_HORIZON_DAYS)?,
            max_attempts: i32::try_from(env.number(&TASK_MAX_ATTEMPTS)?).unwrap_or(100),
            max_active_tasks: number(&TASKS_MAX_ACTIVE_PER_USER)?,
            task_rate_limit: number(&TASKS_RATE_LIMIT)?,
            task_rate_window: env.duration(&TASKS_RATE_WINDOW_SECS)?,
            min_interval: env.duration(&TASKS_MIN_INTERVAL_SECS)?,
            daily_tokens: shared::usage::user_daily_tokens(env)?,
            tool_policy: ToolPolicy::from_env(env)?,
            seal_key: seal_key(env)?,
            mcp: Arc::default(),
        };
        if settings.page_size > settings.max_page_size {
            return Err(invalid(API_PAGE_SIZE.name, "must not be above API_MAX_PAGE_SIZE"));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seal_key_is_optional_and_a_malformed_one_stops_the_instance() {
        assert!(Settings::from_env(&Env::default()).unwrap().seal_key.is_none());
        let key = "ab".repeat(32);
        let set = Settings::from_env(&Env::default().with("AGENT_MCP_ENCRYPTION_KEY", &key)).unwrap();
        assert!(set.seal_key.is_some());
        let bad = Settings::from_env(&Env::default().with("AGENT_MCP_ENCRYPTION_KEY", "abcd")).unwrap_err();
        assert!(bad.to_string().contains("AGENT_MCP_ENCRYPTION_KEY"), "{bad}");
        assert!(!bad.to_string().contains("abcd"), "{bad}");
    }
}
