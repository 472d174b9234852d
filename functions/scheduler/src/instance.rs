//! The [`Scheduler`]: what an instance keeps across its invocations (the pool, the model, the
//! settings, the concurrency it learned), built once in `main`.

use std::sync::Arc;

use shared::db::Db;
use shared::live::Publisher;
use shared::metrics::Metrics;
use shared::model::SharedModel;

use crate::continuation::Continue;
use crate::limiter::Limiter;
use crate::report::Spent;
use crate::settings::Settings;
use crate::work::publish::Publishing;

/// Everything an invocation needs, built once per instance in `main`.
#[derive(Clone)]
pub struct Scheduler {
    pub db: Db,
    pub model: SharedModel,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Model calls in flight: learned across this instance's invocations.
    pub limiter: Arc<Limiter>,
    /// Starts the next invocation when a backlog outlives this one (`SCHEDULER_SELF_INVOKE`).
    pub continuation: Option<Arc<dyn Continue>>,
    /// What this invocation's recorded runs cost, by model, and the tasks it deferred to their
    /// budget's reset: emitted with the run's metrics.
    pub(crate) spent: Arc<Spent>,
    /// Live updates (off unless [`Scheduler::with_live`]).
    pub live: Publisher,
    /// The pushes of recorded batches still running; an invocation ends only once they have.
    pub(crate) publishing: Arc<Publishing>,
}

impl Scheduler {
    pub fn new(db: Db, model: SharedModel, settings: Settings, metrics: Metrics) -> Self {
        let limiter = Arc::new(Limiter::new(settings.min_concurrency, settings.max_concurrency));
        Self {
            db,
            model,
            settings,
            metrics,
            limiter,
            continuation: None,
            spent: Arc::default(),
            live: Publisher::off(),
            publishing: Arc::default(),
        }
    }

    /// Pushes `task.updated` events after each recorded batch.
    #[must_use]
    pub fn with_live(mut self, live: Publisher) -> Self {
        self.live = live;
        self
    }

    #[must_use]
    pub fn with_continuation(mut self, next: Arc<dyn Continue>) -> Self {
        self.continuation = Some(next);
        self
    }
}
