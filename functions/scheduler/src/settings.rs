//! Scheduler settings (`SCHEDULER_*`), read once at start-up.

use std::time::Duration;

use shared::config::{invalid, ConfigError, Env, Setting, Unit};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Most tasks claimed, or recorded, per statement.
    pub batch_size: i64,
    /// Model calls run at once per instance: the limiter starts at the minimum and finds the
    /// provider's capacity up to the maximum (see `limiter`).
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    /// While no backlog is left, how often a running invocation looks for newly due tasks.
    pub poll_interval: Duration,
    /// Longest a finished task waits before its outcome is recorded.
    pub record_interval: Duration,
    /// Whether an invocation stopped by its deadline with a backlog left starts the next one
    /// (an asynchronous invoke of this function), and how many times in a row.
    pub self_invoke: bool,
    pub max_continuations: u32,
    /// Bound on one model call.
    pub task_timeout: Duration,
    /// Stop claiming and starting tasks when less than this remains before the deadline.
    pub safety_margin: Duration,
    /// Added to the invocation deadline to form the lease expiry.
    pub lease_grace: Duration,
    /// Backoff: base delay of the first retry, doubled per attempt, capped, with equal jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Cap on one invocation's run time, whatever the context deadline says.
    pub max_run: Duration,
    /// Default cap on tasks claimed per invocation (a manual `maxTasks` overrides it).
    pub max_tasks: Option<u64>,
    /// Expired leases rescued per invocation.
    pub rescue_limit: i64,
    /// Failed occurrences in a row that suspend a series.
    pub series_failure_limit: i32,
    /// A throttled task's delay when the provider gives none.
    pub throttle_delay: Duration,
    /// A user's share of tasks in flight while others wait (`None`: a quarter of the limit).
    pub max_in_flight_per_user: Option<usize>,
    /// `USAGE_USER_DAILY_TOKENS` (0: unlimited).
    pub user_daily_tokens: i64,
    /// How agents with tools run (`AGENT_*`).
    pub runs: shared::agent::settings::RunSettings,
}

pub const SCHEDULER_BATCH_SIZE: Setting = Setting::number(
    "SCHEDULER_BATCH_SIZE",
    1,
    10_000,
    1000,
    Unit::Plain,
    "most tasks claimed, or recorded, per statement",
);
pub const SCHEDULER_MAX_IN_FLIGHT_PER_USER: Setting = Setting::optional_number(
    "SCHEDULER_MAX_IN_FLIGHT_PER_USER",
    1,
    10_000,
    Unit::Plain,
    "a user's tasks in flight (across instances) that a claim gives them while other users' tasks are due; capacity nobody else wants still goes to them (unset: a quarter of `SCHEDULER_MAX_CONCURRENCY`)",
);
pub const SCHEDULER_MIN_CONCURRENCY: Setting = Setting::number(
    "SCHEDULER_MIN_CONCURRENCY",
    1,
    10_000,
    4,
    Unit::Plain,
    "model calls in flight per instance at first, and never fewer however much the provider throttles",
);
pub const SCHEDULER_MAX_CONCURRENCY: Setting = Setting::number(
    "SCHEDULER_MAX_CONCURRENCY",
    1,
    10_000,
    500,
    Unit::Plain,
    "most model calls in flight per instance (each an HTTP connection: Lambda allows 1,024 open files); between the two, the instance grows while calls succeed and cuts on throttling",
);
pub const SCHEDULER_POLL_INTERVAL_MS: Setting = Setting::millis(
    "SCHEDULER_POLL_INTERVAL_MS",
    10,
    60_000,
    500,
    "while an invocation runs with no backlog left, how often it looks for newly due tasks",
);
pub const SCHEDULER_RECORD_INTERVAL_MS: Setting = Setting::millis(
    "SCHEDULER_RECORD_INTERVAL_MS",
    1,
    60_000,
    100,
    "longest a finished task waits before its outcome is recorded (outcomes are recorded together)",
);
pub const SCHEDULER_SELF_INVOKE: Setting = Setting::flag(
    "SCHEDULER_SELF_INVOKE",
    false,
    "an invocation its deadline stopped with due tasks left invokes this function again, asynchronously (`AWS_LAMBDA_FUNCTION_NAME`); the template turns it on",
);
pub const SCHEDULER_MAX_CONTINUATIONS: Setting = Setting::number(
    "SCHEDULER_MAX_CONTINUATIONS",
    0,
    1000,
    100,
    Unit::Plain,
    "most invocations in a row started by self-invocation; the chain also stops when no backlog is left or a run completes nothing",
);
pub const SCHEDULER_TASK_TIMEOUT_MS: Setting = Setting::millis(
    "SCHEDULER_TASK_TIMEOUT_MS",
    1,
    DAY_MS,
    60_000,
    "bound on one task's model call",
);
pub const SCHEDULER_SAFETY_MARGIN_MS: Setting = Setting::millis(
    "SCHEDULER_SAFETY_MARGIN_MS",
    1,
    DAY_MS,
    10_000,
    "stop claiming and starting tasks when less than this remains before the deadline",
);
pub const SCHEDULER_LEASE_GRACE_MS: Setting = Setting::millis(
    "SCHEDULER_LEASE_GRACE_MS",
    1,
    DAY_MS,
    30_000,
    "added to the invocation deadline to form the lease expiry",
);
pub const SCHEDULER_RETRY_BASE_MS: Setting = Setting::millis(
    "SCHEDULER_RETRY_BASE_MS",
    1,
    DAY_MS,
    30_000,
    "delay before the first retry; doubled per attempt, with equal jitter",
);
pub const SCHEDULER_RETRY_MAX_MS: Setting =
    Setting::millis("SCHEDULER_RETRY_MAX_MS", 1, DAY_MS, 3_600_000, "cap on the retry delay");
pub const SCHEDULER_MAX_RUN_MS: Setting = Setting::millis(
    "SCHEDULER_MAX_RUN_MS",
    1,
    DAY_MS,
    840_000,
    "cap on one invocation's run time, whatever the context deadline says",
);
pub const SCHEDULER_MAX_TASKS: Setting = Setting::optional_number(
    "SCHEDULER_MAX_TASKS",
    1,
    10_000_000,
    Unit::Plain,
    "default cap on tasks claimed per invocation (a manual `maxTasks` overrides it)",
);

pub const SCHEDULER_SERIES_FAILURE_LIMIT: Setting = Setting::number(
    "SCHEDULER_SERIES_FAILURE_LIMIT",
    1,
    1000,
    3,
    Unit::Plain,
    "failed occurrences in a row after which a recurring series is suspended (its next occurrence waits for approval)",
);

pub const SCHEDULER_THROTTLE_DELAY_MS: Setting = Setting::millis(
    "SCHEDULER_THROTTLE_DELAY_MS",
    1,
    DAY_MS,
    5000,
    "when a throttling provider says nothing, a throttled task waits this long (plus up to half again, random) before it is due again",
);

pub const SETTINGS: &[&Setting] = &[
    &SCHEDULER_BATCH_SIZE,
    &SCHEDULER_MIN_CONCURRENCY,
    &SCHEDULER_MAX_CONCURRENCY,
    &SCHEDULER_MAX_IN_FLIGHT_PER_USER,
    &SCHEDULER_POLL_INTERVAL_MS,
    &SCHEDULER_RECORD_INTERVAL_MS,
    &SCHEDULER_SELF_INVOKE,
    &SCHEDULER_MAX_CONTINUATIONS,
    &SCHEDULER_TASK_TIMEOUT_MS,
    &SCHEDULER_SAFETY_MARGIN_MS,
    &SCHEDULER_LEASE_GRACE_MS,
    &SCHEDULER_RETRY_BASE_MS,
    &SCHEDULER_RETRY_MAX_MS,
    &SCHEDULER_MAX_RUN_MS,
    &SCHEDULER_MAX_TASKS,
    &SCHEDULER_SERIES_FAILURE_LIMIT,
    &SCHEDULER_THROTTLE_DELAY_MS,
];

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Expired leases rescued per invocation.
const RESCUE_LIMIT: i64 = 10_000;

impl Default for Settings {
    /// The declared defaults.
    fn default() -> Self {
        Self::from_env(&Env::default()).unwrap_or_else(|e| unreachable!("declared defaults are valid: {e}"))
    }
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let settings = Self {
            batch_size: i64::try_from(env.number(&SCHEDULER_BATCH_SIZE)?).unwrap_or(i64::MAX),
            min_concurrency: usize::try_from(env.number(&SCHEDULER_MIN_CONCURRENCY)?).unwrap_or(1),
            max_concurrency: usize::try_from(env.number(&SCHEDULER_MAX_CONCURRENCY)?).unwrap_or(1),
            poll_interval: env.duration(&SCHEDULER_POLL_INTERVAL_MS)?,
            record_interval: env.duration(&SCHEDULER_RECORD_INTERVAL_MS)?,
            self_invoke: env.flag(&SCHEDULER_SELF_INVOKE)?,
            max_continuations: u32::try_from(env.number(&SCHEDULER_MAX_CONTINUATIONS)?).unwrap_or(0),
            task_timeout: env.duration(&SCHEDULER_TASK_TIMEOUT_MS)?,
            safety_margin: env.duration(&SCHEDULER_SAFETY_MARGIN_MS)?,
            lease_grace: env.duration(&SCHEDULER_LEASE_GRACE_MS)?,
            retry_base: env.duration(&SCHEDULER_RETRY_BASE_MS)?,
            retry_max: env.duration(&SCHEDULER_RETRY_MAX_MS)?,
            max_run: env.duration(&SCHEDULER_MAX_RUN_MS)?,
            max_tasks: env.optional_number(&SCHEDULER_MAX_TASKS)?,
            rescue_limit: RESCUE_LIMIT,
            series_failure_limit: i32::try_from(env.number(&SCHEDULER_SERIES_FAILURE_LIMIT)?).unwrap_or(i32::MAX),
            throttle_delay: env.duration(&SCHEDULER_THROTTLE_DELAY_MS)?,
            max_in_flight_per_user: env
                .optional_number(&SCHEDULER_MAX_IN_FLIGHT_PER_USER)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            user_daily_tokens: shared::usage::user_daily_tokens(env)?,
            runs: shared::agent::settings::RunSettings::from_env(env)?,
        };
        if settings.max_concurrency < settings.min_concurrency {
            return Err(invalid(
                SCHEDULER_MAX_CONCURRENCY.name,
                "must not be below SCHEDULER_MIN_CONCURRENCY",
            ));
        }
        if settings.retry_max < settings.retry_base {
            return Err(invalid(
                SCHEDULER_RETRY_MAX_MS.name,
                "must not be below SCHEDULER_RETRY_BASE_MS",
            ));
        }
        Ok(settings)
    }

    /// How long a throttled task waits: what the provider said, else the default with up to
    /// half again of random jitter (so throttled tasks do not come back in step).
    pub fn throttle_delay(&self, said: Option<Duration>) -> Duration {
        said.unwrap_or_else(|| self.throttle_delay + (self.throttle_delay / 2).mul_f64(fastrand::f64()))
    }

    /// Delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`, capped, with equal
    /// jitter (half fixed, half random), so delays grow and instances do not retry in step.
    pub fn retry_delay(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 31) as u32 - 1;
        let full = self
            .retry_base
            .checked_mul(1u32 << exp.min(20))
            .unwrap_or(self.retry_max)
            .min(self.retry_max);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let c = Settings {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..Settings::default()
        };
        for _ in 0..100 {
            let d1 = c.retry_delay(1);
            let d2 = c.retry_delay(2);
            let d3 = c.retry_delay(3);
            assert!(d1 >= Duration::from_secs(5) && d1 <= Duration::from_secs(10));
            assert!(d2 >= Duration::from_secs(10) && d2 <= Duration::from_secs(20));
            assert!(d3 >= Duration::from_secs(20) && d3 <= Duration::from_secs(40));
            assert!(c.retry_delay(30) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn malformed_settings_are_named() {
        for (k, v) in [
            ("SCHEDULER_BATCH_SIZE", "0"),
            ("SCHEDULER_MAX_CONCURRENCY", "lots"),
            ("SCHEDULER_TASK_TIMEOUT_MS", "-5"),
        ] {
            let err = Settings::from_env(&env(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
        let err = Settings::from_env(&env(&[
            ("SCHEDULER_RETRY_BASE_MS", "5000"),
            ("SCHEDULER_RETRY_MAX_MS", "10"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("SCHEDULER_RETRY_MAX_MS"));
        let err = Settings::from_env(&env(&[
            ("SCHEDULER_MIN_CONCURRENCY", "50"),
            ("SCHEDULER_MAX_CONCURRENCY", "10"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("SCHEDULER_MAX_CONCURRENCY"));
    }
}
