//! The invocation's time budget, from the Lambda context deadline.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Deadlines below this many ms cannot be epoch times (they would be before 2001): `cargo lambda
/// watch` hands `600000`, meaning "600 s from now".
const EPOCH_FLOOR_MS: u64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// From the context's `deadline` (ms since the epoch), capped at `max_run` from now.
    pub fn from_context_ms(deadline_ms: u64, max_run: Duration) -> Deadline {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Deadline {
            at: Instant::now() + budget(deadline_ms, now_ms, max_run),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The moment from which no more than `left` remains (`None`: before any instant the clock
    /// can tell, so already past).
    pub(crate) fn leaving(&self, left: Duration) -> Option<Instant> {
        self.at.checked_sub(left)
    }
}

/// The time left at `now_ms` (ms since the epoch) before the context's `deadline_ms` (an epoch
/// time, or a duration below [`EPOCH_FLOOR_MS`]), capped at `max_run`.
fn budget(deadline_ms: u64, now_ms: u64, max_run: Duration) -> Duration {
    let remaining = if deadline_ms < EPOCH_FLOOR_MS {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    };
    remaining.min(max_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_watch_style_relative_deadline_is_read_as_a_duration() {
        assert_eq!(budget(600_000, NOW_MS, HOUR), Duration::from_secs(600));
        // The deadline built from it counts down from there: never more, and no less than the
        // time the test itself took.
        let before = Instant::now();
        let d = Deadline::from_context_ms(600_000, HOUR);
        let left = d.remaining();
        let took = before.elapsed();
        assert!(left <= Duration::from_secs(600), "{left:?}");
        assert!(left + took >= Duration::from_secs(600), "{left:?} after {took:?}");
    }

    #[test]
    fn an_epoch_deadline_is_the_time_left_until_it() {
        assert_eq!(budget(NOW_MS + 1_234, NOW_MS, HOUR), Duration::from_millis(1_234));
    }

    #[test]
    fn an_epoch_deadline_in_the_past_leaves_nothing() {
        assert_eq!(budget(NOW_MS - 1, NOW_MS, HOUR), Duration::ZERO);
        let d = Deadline::from_context_ms(1_700_000_000_000, HOUR);
        assert_eq!(d.remaining(), Duration::ZERO);
    }

    #[test]
    fn the_moment_a_margin_is_left_is_that_margin_before_the_deadline() {
        let d = Deadline::from_context_ms(600_000, HOUR);
        let at = d.leaving(Duration::from_secs(10)).unwrap();
        assert_eq!(d.leaving(Duration::ZERO).unwrap() - at, Duration::from_secs(10));
    }

    #[test]
    fn the_cap_applies() {
        assert_eq!(
            budget(NOW_MS + 3_600_000, NOW_MS, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            budget(3_600_000, NOW_MS, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
