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
        let checkouts = self.checkouts.load(Ordering::Relaxed);
        let wait_us = self.wait_us.load(Ordering::Relaxed);
        DbActivity {
            checkouts,
            mean_wait_ms: if checkouts == 0 {
                0.0
            } else {
                wait_us as f64 / checkouts as f64 / 1000.0
            },
            max_wait_ms: self.max_wait_us.load(Ordering::Relaxed) as f64 / 1000.0,
            pool_timeouts: self.pool_timeouts.load(Ordering::Relaxed),
            statement_timeouts: self.statement_timeouts.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub fn take(&self) -> DbActivity {
        let checkouts = self.checkouts.swap(0, Ordering::Relaxed);
        let wait_us = self.wait_us.swap(0, Ordering::Relaxed);
        DbActivity {
            checkouts,
            mean_wait_ms: if checkouts == 0 {
                0.0
            } else {
                wait_us as f64 / checkouts as f64 / 1000.0
            },
            max_wait_ms: self.max_wait_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
            pool_timeouts: self.pool_timeouts.swap(0, Ordering::Relaxed),
            statement_timeouts: self.statement_timeouts.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
        }
    }
}
