//! How many model calls one instance runs at once: found from the provider's answers, not set.
//!
//! Additive increase, multiplicative decrease, with two refinements:
//!
//! - **Slow start**: from `SCHEDULER_MIN_CONCURRENCY` the limit grows by one per successful call
//!   (it doubles every round trip) until the provider first throttles.
//! - **Quick recovery, cautious probing**: a throttle cuts the limit to 90 % and remembers where it
//!   was (the ceiling). Below 97 % of the ceiling the limit grows back by one per success; past it
//!   the limit probes by one per round trip, a step that doubles every round trip without a
//!   throttle (so a provider that raised its quota is found in a few round trips, not hundreds).
//!
//! A throttle cuts once per window: calls that started before the last cut were sent under the
//! old limit, and their throttles say nothing new. Only calls made while the instance uses most of
//! its limit grow it (an idle instance learns nothing about the provider).
//!
//! The limiter lives as long as the instance: a warm instance starts its next invocation at what
//! it learned.

use std::sync::Mutex;

/// The cut on a throttle.
const DECREASE: f64 = 0.9;
/// Up to this share of the last ceiling the limit recovers quickly.
const RECOVER_TO: f64 = 0.97;
/// A success grows the limit only when at least this share of it is in use.
const BUSY: f64 = 0.75;

#[derive(Debug)]
pub struct Limiter {
    min: f64,
    max: f64,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    limit: f64,
    /// The limit when the provider last throttled.
    ceiling: Option<f64>,
    /// Probing step past the ceiling, per round trip.
    step: f64,
    /// Successes since the step last doubled.
    acked: f64,
    /// Bumped on every cut: a call remembers the window it started in.
    window: u64,
    throttles: u64,
}

/// What a call told the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The provider answered.
    Success,
    /// The provider throttled.
    Throttled,
    /// Anything else (an error, a timeout): says nothing about the provider's capacity.
    Neutral,
}

impl Limiter {
    /// A limiter between `min` and `max` (at least 1), starting at `min`.
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1) as f64;
        let max = (max as f64).max(min);
        Self {
            min,
            max,
            state: Mutex::new(State {
                limit: min,
                ceiling: None,
                step: 1.0,
                acked: 0.0,
                window: 0,
                throttles: 0,
            }),
        }
    }

    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls that may run at once now.
    pub fn limit(&self) -> usize {
        self.state().limit.floor() as usize
    }

    /// The window a call starting now belongs to.
    pub fn window(&self) -> u64 {
        self.state().window
    }

    /// Throttles seen by this instance.
    pub fn throttles(&self) -> u64 {
        self.state().throttles
    }

    /// Records the end of a call that started in `window`, with `in_flight` calls running
    /// (this one included).
    pub fn record(&self, signal: Signal, window: u64, in_flight: usize) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match signal {
            Signal::Neutral => {}
            Signal::Throttled => {
                s.throttles += 1;
                if window == s.window {
                    s.ceiling = Some(s.limit);
                    s.limit = (s.limit * DECREASE).max(self.min);
                    s.step = 1.0;
                    s.acked = 0.0;
                    s.window += 1;
                }
            }
            Signal::Success => {
                if (in_flight as f64) < s.limit * BUSY {
                    return;
                }
                let recover_to = s.ceiling.map_or(self.max, |c| c * RECOVER_TO);
                if s.limit < recover_to {
                    s.limit = (s.limit + 1.0).min(recover_to);
                } else {
                    s.limit += s.step / s.limit;
                    s.acked += 1.0;
                    if s.acked >= s.limit {
                        s.acked = 0.0;
                        s.step = (s.step * 2.0).min(s.limit / 4.0).max(1.0);
                    }
                }
                s.limit = s.limit.clamp(self.min, self.max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round trips against a provider admitting `quota` calls at once, with a backlog that keeps
    /// the whole limit in use; the limit after each round trip.
    fn simulate(limiter: &Limiter, quota: usize, round_trips: usize) -> Vec<usize> {
        (0..round_trips)
            .map(|_| {
                let n = limiter.limit();
                let window = limiter.window();
                for i in 0..n {
                    let signal = if i < quota { Signal::Success } else { Signal::Throttled };
                    limiter.record(signal, window, limiter.limit());
                }
                limiter.limit()
            })
            .collect()
    }

    #[test]
    fn the_limit_starts_at_the_minimum_and_doubles_while_calls_succeed() {
        let l = Limiter::new(4, 1000);
        assert_eq!(l.limit(), 4);
        assert_eq!(simulate(&l, 10_000, 4), vec![8, 16, 32, 64]);
    }

    #[test]
    fn the_limit_settles_near_the_providers_quota() {
        for quota in [50, 300, 1000] {
            let l = Limiter::new(4, 2000);
            let curve = simulate(&l, quota, 400);
            let tail = &curve[200..];
            let mean = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
            assert!(
                mean > quota as f64 * 0.9 && mean < quota as f64 * 1.05,
                "quota {quota}: mean {mean}, tail {tail:?}"
            );
        }
    }

    #[test]
    fn a_throttle_cuts_once_per_window() {
        let l = Limiter::new(1, 1000);
        simulate(&l, 10_000, 5);
        let before = l.limit();
        let window = l.window();
        for _ in 0..10 {
            l.record(Signal::Throttled, window, before);
        }
        assert_eq!(l.limit(), (before as f64 * DECREASE) as usize);
        assert_eq!(l.throttles(), 10);
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let l = Limiter::new(5, 20);
        simulate(&l, 10_000, 50);
        assert_eq!(l.limit(), 20);
        simulate(&l, 0, 50);
        assert_eq!(l.limit(), 5);
    }

    #[test]
    fn an_instance_using_little_of_its_limit_does_not_grow_it() {
        let l = Limiter::new(10, 1000);
        for _ in 0..100 {
            l.record(Signal::Success, l.window(), 2);
        }
        assert_eq!(l.limit(), 10);
    }

    #[test]
    fn a_raised_quota_is_found_in_a_few_round_trips() {
        let l = Limiter::new(4, 5000);
        simulate(&l, 50, 100);
        let curve = simulate(&l, 1000, 40);
        assert!(curve.iter().any(|&n| n >= 900), "{curve:?}");
    }

    #[test]
    fn errors_and_timeouts_leave_the_limit_alone() {
        let l = Limiter::new(8, 100);
        l.record(Signal::Neutral, l.window(), 8);
        assert_eq!(l.limit(), 8);
        assert_eq!(l.throttles(), 0);
    }
}
