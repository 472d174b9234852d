//! Scheduler settings (`SCHEDULER_*`), read once at start-up.

use std::time::Duration;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            fast_batch: Duration::from_millis(500),
            concurrency: 16,
            task_timeout: Duration::from_secs(60),
            safety_margin: Duration::from_secs(10),
            lease_grace: Duration::from_secs(30),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_run: Duration::from_secs(14 * 60),
            max_tasks: None,
            rescue_limit: 10_000,
        }
    }
}

impl SchedulerConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(env
                .number(name, 1, 24 * 3600 * 1000)?
                .map(Duration::from_millis)
                .unwrap_or(default))
        };
        let config = Self {
            batch_size: env
                .number("SCHEDULER_BATCH_SIZE", 1, 10_000)?
                .map_or(d.batch_size, |n| n as i64),
            fast_batch: d.fast_batch,
            concurrency: env
                .number("SCHEDULER_CONCURRENCY", 1, 1024)?
                .map_or(d.concurrency, |n| n as usize),
            task_timeout: ms("SCHEDULER_TASK_TIMEOUT_MS", d.task_timeout)?,
            safety_margin: ms("SCHEDULER_SAFETY_MARGIN_MS", d.safety_margin)?,
            lease_grace: ms("SCHEDULER_LEASE_GRACE_MS", d.lease_grace)?,
            retry_base: ms("SCHEDULER_RETRY_BASE_MS", d.retry_base)?,
            retry_max: ms("SCHEDULER_RETRY_MAX_MS", d.retry_max)?,
            max_run: ms("SCHEDULER_MAX_RUN_MS", d.max_run)?,
            max_tasks: env.number("SCHEDULER_MAX_TASKS", 1, 10_000_000)?,
            rescue_limit: d.rescue_limit,
        };
        if config.retry_max < config.retry_base {
            return Err(ConfigError::Invalid {
                name: "SCHEDULER_RETRY_MAX_MS".into(),
                reason: "must not be below SCHEDULER_RETRY_BASE_MS".into(),
            });
        }
        Ok(config)
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
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let c = SchedulerConfig {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..SchedulerConfig::default()
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
        let c = SchedulerConfig {
            concurrency: 16,
            batch_size: 1000,
            ..SchedulerConfig::default()
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
            let err = SchedulerConfig::from_env(&env(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
        let err = SchedulerConfig::from_env(&env(&[
            ("SCHEDULER_RETRY_BASE_MS", "5000"),
            ("SCHEDULER_RETRY_MAX_MS", "10"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("SCHEDULER_RETRY_MAX_MS"));
    }
}
