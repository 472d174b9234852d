//! Scheduler settings (`SCHEDULER_*`), read once at start-up.

use std::time::Duration;

use shared::config::{invalid, ConfigError, Env, Setting, Unit};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Most tasks claimed per statement. The batch starts at `concurrency` tasks and doubles
    /// while batches run quickly (under `fast_batch`), up to this; it halves when they are slow.
    pub batch_size: i64,
    /// A batch that runs in less than this is "quick".
    pub fast_batch: Duration,
    /// Tasks run at once.
    pub concurrency: usize,
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
}

pub const SCHEDULER_BATCH_SIZE: Setting = Setting::number(
    "SCHEDULER_BATCH_SIZE",
    1,
    10_000,
    1000,
    Unit::Plain,
    "most tasks claimed per statement (batches start at the concurrency and double while quick)",
);
pub const SCHEDULER_CONCURRENCY: Setting = Setting::number(
    "SCHEDULER_CONCURRENCY",
    1,
    1024,
    16,
    Unit::Plain,
    "tasks run at once per instance",
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
    &SCHEDULER_CONCURRENCY,
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
/// A batch that runs in less than this is "quick".
const FAST_BATCH: Duration = Duration::from_millis(500);
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
            fast_batch: FAST_BATCH,
            concurrency: usize::try_from(env.number(&SCHEDULER_CONCURRENCY)?).unwrap_or(1),
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
        };
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

    /// The first batch's size.
    pub fn initial_batch(&self) -> i64 {
        (self.concurrency as i64).clamp(1, self.batch_size)
    }

    /// The next batch's size after one of `size` tasks took `took`.
    pub fn next_batch(&self, size: i64, took: Duration) -> i64 {
        if took < self.fast_batch {
            (size * 2).min(self.batch_size)
        } else if took > self.fast_batch * 4 {
            (size / 2).max(self.initial_batch())
        } else {
            size
        }
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
    fn batches_grow_while_quick_and_shrink_when_slow() {
        let c = Settings {
            concurrency: 16,
            batch_size: 1000,
            ..Settings::default()
        };
        let mut size = c.initial_batch();
        assert_eq!(size, 16);
        for _ in 0..10 {
            size = c.next_batch(size, Duration::from_millis(10));
        }
        assert_eq!(size, 1000);
        for _ in 0..10 {
            size = c.next_batch(size, Duration::from_secs(30));
        }
        assert_eq!(size, 16);
        assert_eq!(c.next_batch(64, Duration::from_secs(1)), 64);
    }

    #[test]
    fn malformed_settings_are_named() {
        for (k, v) in [
            ("SCHEDULER_BATCH_SIZE", "0"),
            ("SCHEDULER_CONCURRENCY", "lots"),
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
    }
}
