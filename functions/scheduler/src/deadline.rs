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
        let remaining = if deadline_ms < EPOCH_FLOOR_MS {
            Duration::from_millis(deadline_ms)
        } else {
            Duration::from_millis(deadline_ms.saturating_sub(now_ms))
        };
        Deadline {
            at: Instant::now() + remaining.min(max_run),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_style_relative_deadline_is_read_as_a_duration() {
        let d = Deadline::from_context_ms(600_000, Duration::from_secs(3600));
        assert!(d.remaining() > Duration::from_secs(590) && d.remaining() <= Duration::from_secs(600));
    }

    #[test]
    fn an_epoch_deadline_in_the_past_leaves_nothing() {
        let d = Deadline::from_context_ms(1_700_000_000_000, Duration::from_secs(3600));
        assert_eq!(d.remaining(), Duration::ZERO);
    }

    #[test]
    fn the_cap_applies() {
        let far = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
        let d = Deadline::from_context_ms(far, Duration::from_secs(10));
        assert!(d.remaining() <= Duration::from_secs(10));
    }
}
