//! One invocation: the Lambda [`handle`]r reads the trigger and the deadline, then
//! [`Scheduler::run`] builds the invocation's work ([`Store`], [`Runner`]) and its [`Pipeline`],
//! rescues expired leases, expires runs that waited too long for an approval, runs the pipeline, counts what is left, starts the next invocation
//! when a backlog outlived this one, and reports.

use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Instant;

use lambda_runtime::LambdaEvent;
use uuid::Uuid;

use shared::telemetry::Chain;

use crate::deadline::Deadline;
use crate::error::SchedulerError;
use crate::instance::Scheduler;
use crate::pipeline::{Pace, Pipeline};
use crate::report::{self, Stop, Summary};
use crate::trigger::Trigger;
use crate::work::{Runner, Store, Toolboxes, Worker};

/// The Lambda handler.
pub async fn handle(s: &Scheduler, event: LambdaEvent<serde_json::Value>) -> Result<Summary, SchedulerError> {
    let trigger =
        Trigger::parse(&event.payload).inspect_err(|e| tracing::warn!(error = %Chain(e), "rejected payload"))?;
    let deadline = Deadline::from_context_ms(event.context.deadline, s.settings.max_run);
    let owner = if event.context.request_id.is_empty() {
        Uuid::new_v4().to_string()
    } else {
        event.context.request_id.clone()
    };
    let _in_flight = s.db.begin_request();
    let result = s.run(trigger, deadline, &owner).await;
    report::emit(&s.metrics, &s.db, result.as_ref().ok(), &s.spent).await;
    s.db.release_idle();
    result
}

impl Scheduler {
    /// One invocation: rescue, then claim, run and record tasks until drained, capped or out of
    /// time.
    pub async fn run(&self, trigger: Trigger, deadline: Deadline, owner: &str) -> Result<Summary, SchedulerError> {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run: trigger.dry_run,
            ..Summary::default()
        };
        let store = Store {
            db: &self.db,
            settings: &self.settings,
            metrics: &self.metrics,
            spent: &self.spent,
            live: &self.live,
            publishing: &self.publishing,
            deadline: &deadline,
            owner,
            peak: AtomicUsize::new(0),
            lone: Mutex::default(),
        };
        let result = self.run_inner(trigger, &deadline, &store, &mut summary).await;
        self.publishing.wait().await;
        summary.concurrency = self.limiter.limit() as u64;
        summary.deferred = self.spent.deferred();
        if let Ok(stop) = result {
            summary.continued = self.continue_if_needed(trigger, stop, &summary).await;
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let pool = self.db.status();
        let connections = store.peak().max(pool.size);
        match &result {
            Ok(_) => tracing::info!(
                claimed = summary.claimed,
                completed = summary.completed,
                failed = summary.failed,
                retried = summary.retried,
                rescued = summary.rescued,
                expired = summary.expired,
                released = summary.released,
                remaining_due = summary.remaining_due,
                throttled = summary.throttled,
                concurrency = summary.concurrency,
                peak_in_flight = summary.peak_in_flight,
                continued = summary.continued,
                duration_ms = summary.duration_ms,
                dry_run = summary.dry_run,
                connections,
                pool_max = pool.max_size,
                "scheduler run"
            ),
            Err(e) => tracing::error!(
                error = %Chain(e),
                claimed = summary.claimed,
                completed = summary.completed,
                duration_ms = summary.duration_ms,
                connections,
                "scheduler run failed"
            ),
        }
        result.map(|_| summary)
    }

    async fn run_inner(
        &self,
        trigger: Trigger,
        deadline: &Deadline,
        store: &Store<'_>,
        summary: &mut Summary,
    ) -> Result<Stop, SchedulerError> {
        if trigger.dry_run {
            summary.remaining_due = store.remaining_due().await?;
            return Ok(Stop::Drained);
        }
        store.rescue(summary).await?;
        store.expire(summary).await?;
        let worker = Worker {
            runner: Runner {
                model: &self.model,
                settings: &self.settings,
                deadline,
                db: &self.db,
                toolboxes: Toolboxes::default(),
            },
            store,
        };
        // With a pool of two, a claim and a record run at once; with one, they take turns.
        let parallel = self.db.status().max_size >= 2;
        let cap = trigger.max_tasks.or(self.settings.max_tasks).unwrap_or(u64::MAX);
        let pipeline = Pipeline {
            work: &worker,
            limiter: &self.limiter,
            metrics: &self.metrics,
            deadline,
            pace: Pace::new(&self.settings, parallel, cap),
        };
        let stop = pipeline.run(summary).await?;
        summary.remaining_due = store.remaining_due().await?;
        Ok(stop)
    }

    /// Starts the next invocation when this one's deadline stopped it with a backlog left, within
    /// the chain's bounds (see `continuation`).
    async fn continue_if_needed(&self, trigger: Trigger, stop: Stop, summary: &Summary) -> bool {
        let Some(next) = &self.continuation else {
            return false;
        };
        let link = trigger.continuation.unwrap_or(0) + 1;
        if !self.settings.self_invoke
            || stop != Stop::Deadline
            || summary.remaining_due == 0
            || summary.completed == 0
            || link > self.settings.max_continuations
        {
            return false;
        }
        match next.invoke(link).await {
            Ok(()) => {
                tracing::info!(link, remaining_due = summary.remaining_due, "next invocation started");
                true
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), link, "could not start the next invocation; the schedule will");
                false
            }
        }
    }
}
