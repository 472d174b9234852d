//! Per-pool counters for metrics: read and reset by each metrics flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{DbError, DbErrorKind};

#[derive(Debug, Default)]
pub(crate) struct DbCounters {
    /// Cumulative, never reset (benchmarks read it).
    pub statements: AtomicU64,
    /// Connections opened, cumulative (release mode opens one per use).
    pub connects: AtomicU64,
    checkouts: AtomicU64,
    wait_us: AtomicU64,
    max_wait_us: AtomicU64,
    pool_timeouts: AtomicU64,
    statement_timeouts: AtomicU64,
    errors: AtomicU64,
}

/// What happened on a pool since the previous snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DbActivity {
    pub checkouts: u64,
    pub mean_wait_ms: f64,
    pub max_wait_ms: f64,
    pub pool_timeouts: u64,
    pub statement_timeouts: u64,
    /// Every database error, timeouts included.
    pub errors: u64,
}

impl DbCounters {
    pub fn checkout(&self, waited: Duration) {
        let us = waited.as_micros() as u64;
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        self.wait_us.fetch_add(us, Ordering::Relaxed);
        self.max_wait_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn error(&self, e: &DbError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        match e.kind() {
            DbErrorKind::PoolTimeout => {
                self.pool_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            DbErrorKind::StatementTimeout => {
                self.statement_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The activity since the previous [`DbCounters::take`], without resetting it.
    pub fn peek(&self) -> DbActivity {
        self.read(|counter| counter.load(Ordering::Relaxed))
    }

    /// The activity since the previous call, resetting it.
    pub fn take(&self) -> DbActivity {
        self.read(|counter| counter.swap(0, Ordering::Relaxed))
    }

    fn read(&self, get: impl Fn(&AtomicU64) -> u64) -> DbActivity {
        let checkouts = get(&self.checkouts);
        let wait_us = get(&self.wait_us);
        DbActivity {
            checkouts,
            mean_wait_ms: if checkouts == 0 {
                0.0
            } else {
                wait_us as f64 / checkouts as f64 / 1000.0
            },
            max_wait_ms: get(&self.max_wait_us) as f64 / 1000.0,
            pool_timeouts: get(&self.pool_timeouts),
            statement_timeouts: get(&self.statement_timeouts),
            errors: get(&self.errors),
        }
    }
}
