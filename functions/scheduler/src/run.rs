use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use uuid::Uuid;

use shared::db::{activity, Db, DbError};
use shared::live::{Connections, Delivery, LiveEvent, Publisher};
use shared::metrics::{name, Metric, Metrics};
use shared::model::{ModelError, ModelRequest, SharedModel};

use crate::continuation::Continue;
use crate::deadline::Deadline;
use crate::limiter::Limiter;
use crate::pipeline::Pipeline;
use crate::settings::Settings;
use crate::tasks::{self, ClaimPolicy, ClaimedTask, Finished, Outcome};
use crate::trigger::{BadPayload, Trigger};
use shared::tasks::series::{self, Ending, Next, Occurrence, Scope};

/// Longest result or error text stored per task.
const MAX_TEXT_BYTES: usize = 64 * 1024;

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
    spent: Arc<std::sync::Mutex<Spent>>,
    /// Live updates (off unless [`Scheduler::with_live`]).
    pub live: Publisher,
    /// The pushes of recorded batches still running (each its own task, so the next record
    /// does not wait for them); an invocation ends only once they have.
    publishing: Arc<std::sync::Mutex<std::collections::VecDeque<tokio::task::JoinHandle<()>>>>,
}

/// Recorded batches whose pushes may run at once; past it, a record waits for the oldest.
const PUBLISHING_AT_ONCE: usize = 4;

/// One `task.updated` per recorded task, to its owner's connections.
fn deliveries(rows: &[tasks::TaskConnection]) -> Vec<Delivery> {
    let mut by_task: std::collections::BTreeMap<Uuid, Delivery> = std::collections::BTreeMap::new();
    for row in rows {
        let delivery = by_task.entry(row.task_id).or_insert_with(|| Delivery {
            event: LiveEvent::task(row.task_id, &row.status, row.at),
            to: Connections::default(),
        });
        if row.open {
            delivery.to.open.push(row.connection_id.clone());
        } else {
            delivery.to.expired.push(row.connection_id.clone());
        }
    }
    by_task.into_values().collect()
}

/// Tokens by model and deferred tasks, since the last metrics line.
#[derive(Debug, Default)]
struct Spent {
    tokens: std::collections::BTreeMap<String, (u64, u64)>,
    deferred: u64,
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

/// Why an invocation stopped claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Nothing due was left (and nothing it handed back for throttling was about to be due).
    Drained,
    /// The deadline came.
    Deadline,
    /// The cap on claimed tasks was reached.
    Cap,
}

/// The invocation's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub rescued: u64,
    pub remaining_due: u64,
    pub duration_ms: u64,
    /// Tasks claimed but given back unstarted because the deadline came first.
    pub released: u64,
    /// Recurring series suspended by this run (failed too many times in a row).
    pub series_suspended: u64,
    /// Recurring series that ended because their cron or time zone no longer evaluates.
    pub series_ended: u64,
    /// Tasks the model provider throttled: handed back for later, no attempt counted.
    pub throttled: u64,
    /// The instance's concurrency limit when the run ended.
    pub concurrency: u64,
    /// Most model calls in flight at once during the run.
    pub peak_in_flight: u64,
    /// Whether this run started the next invocation (a backlog outlived its deadline).
    pub continued: bool,
    /// Tasks over their owner's or agent's daily tokens, moved to 00:00 UTC (attempts untouched).
    pub deferred: u64,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    BadPayload(#[from] BadPayload),
    #[error("scheduler stopped by a database failure: {0}")]
    Database(#[from] DbError),
}

impl From<SchedulerError> for Diagnostic {
    fn from(e: SchedulerError) -> Self {
        let error_type = match &e {
            SchedulerError::BadPayload(_) => "BadPayload",
            SchedulerError::Database(DbError::PoolTimeout(_)) => "DatabaseSaturated",
            SchedulerError::Database(DbError::Unreachable(_)) => "DatabaseUnavailable",
            SchedulerError::Database(DbError::StatementTimeout(_)) => "DatabaseTimeout",
            SchedulerError::Database(_) => "DatabaseError",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// The Lambda handler.
pub async fn handle(s: &Scheduler, event: LambdaEvent<serde_json::Value>) -> Result<Summary, SchedulerError> {
    let trigger = Trigger::parse(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected payload"))?;
    let deadline = Deadline::from_context_ms(event.context.deadline, s.settings.max_run);
    let owner = if event.context.request_id.is_empty() {
        Uuid::new_v4().to_string()
    } else {
        event.context.request_id.clone()
    };
    let _in_flight = s.db.begin_request();
    let result = s.run(trigger, deadline, &owner).await;
    s.emit_metrics(result.as_ref().ok()).await;
    s.db.release_idle();
    result
}

impl Scheduler {
    /// One invocation: rescue, then claim/run/finish batches until drained, capped or out of time.
    pub async fn run(&self, trigger: Trigger, deadline: Deadline, owner: &str) -> Result<Summary, SchedulerError> {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run: trigger.dry_run,
            ..Summary::default()
        };
        let mut peak = 0usize;
        let result = self.run_inner(trigger, &deadline, owner, &mut summary, &mut peak).await;
        self.published().await;
        summary.concurrency = self.limiter.limit() as u64;
        summary.deferred = self.spent.lock().map_or(0, |s| s.deferred);
        if let Ok(stop) = result {
            summary.continued = self.continue_if_needed(trigger, stop, &summary).await;
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let pool = self.db.status();
        match &result {
            Ok(_) => tracing::info!(
                claimed = summary.claimed,
                completed = summary.completed,
                failed = summary.failed,
                retried = summary.retried,
                rescued = summary.rescued,
                released = summary.released,
                remaining_due = summary.remaining_due,
                throttled = summary.throttled,
                concurrency = summary.concurrency,
                peak_in_flight = summary.peak_in_flight,
                continued = summary.continued,
                duration_ms = summary.duration_ms,
                dry_run = summary.dry_run,
                connections = peak.max(pool.size),
                pool_max = pool.max_size,
                "scheduler run"
            ),
            Err(e) => tracing::error!(
                error = %e,
                claimed = summary.claimed,
                completed = summary.completed,
                duration_ms = summary.duration_ms,
                connections = peak.max(pool.size),
                "scheduler run failed"
            ),
        }
        result.map(|_| summary)
    }

    async fn run_inner(
        &self,
        trigger: Trigger,
        deadline: &Deadline,
        owner: &str,
        summary: &mut Summary,
        peak: &mut usize,
    ) -> Result<Stop, SchedulerError> {
        if trigger.dry_run {
            let conn = self.db.conn().await?;
            let (due, _expired) = tasks::due_counts(&conn.sql()).await?;
            summary.remaining_due = due.max(0) as u64;
            return Ok(Stop::Drained);
        }
        self.rescue(summary).await?;
        let cap = trigger.max_tasks.or(self.settings.max_tasks).unwrap_or(u64::MAX);
        let stop = Pipeline::new(self, deadline, owner, cap).run(summary, peak).await?;
        let conn = self.db.conn().await?;
        let (due, _) = tasks::due_counts(&conn.sql()).await?;
        summary.remaining_due = due.max(0) as u64;
        Ok(stop)
    }

    /// Fails or re-queues tasks whose lease expired (a crashed or stopped instance); the
    /// recurring ones get their series' next occurrence in the same statement.
    async fn rescue(&self, summary: &mut Summary) -> Result<(), DbError> {
        let conn = self.db.conn().await?;
        let sql = conn.sql();
        // The next occurrences are computed here: the cron is evaluated in Rust.
        let expired = tasks::expired_last_occurrences(&sql, self.settings.rescue_limit).await?;
        let now = chrono::Utc::now();
        let planned: Vec<(Uuid, Option<Next>)> = expired
            .iter()
            .map(|t| (t.id, self.next_of(t.id, t.schedule.occurrence(), Ending::Failed, now)))
            .collect();
        summary.series_ended += planned.iter().filter(|(_, next)| next.is_none()).count() as u64;
        let rescued = tasks::rescue(&sql, self.settings.rescue_limit, &planned).await?;
        summary.rescued = (rescued.pending + rescued.failed) as u64;
        summary.failed += rescued.failed as u64;
        summary.series_suspended += rescued.suspended as u64;
        Ok(())
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
                tracing::warn!(error = %e, link, "could not start the next invocation; the schedule will");
                false
            }
        }
    }

    /// One EMF line per run: task counts, pool activity and the database's connection usage.
    async fn emit_metrics(&self, summary: Option<&Summary>) {
        let mut extra = match summary {
            Some(s) => vec![
                Metric::count(name::TASKS_CLAIMED, s.claimed),
                Metric::count(name::TASKS_COMPLETED, s.completed),
                Metric::count(name::TASKS_FAILED, s.failed),
                Metric::count(name::TASKS_RETRIED, s.retried),
                Metric::count(name::TASKS_RESCUED, s.rescued),
                Metric::count(name::SERIES_SUSPENDED, s.series_suspended),
                Metric::count(name::SERIES_ENDED, s.series_ended),
                Metric::count(name::TASKS_THROTTLED, s.throttled),
                Metric::count(name::TASKS_REMAINING_DUE, s.remaining_due),
                Metric::count(name::SCHEDULER_CONCURRENCY, s.concurrency),
                Metric::count(name::TASKS_IN_FLIGHT_PEAK, s.peak_in_flight),
                Metric::count(name::SCHEDULER_CONTINUED, u64::from(s.continued)),
                Metric::count(name::SCHEDULER_RUN_FAILED, 0),
            ],
            None => vec![Metric::count(name::SCHEDULER_RUN_FAILED, 1)],
        };
        let spent = self
            .spent
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        extra.push(Metric::count(name::TASKS_DEFERRED, spent.deferred));
        for (model, (input, output)) in &spent.tokens {
            self.metrics.emit_for_model(
                model,
                &[
                    Metric::count(name::TOKENS_IN, *input),
                    Metric::count(name::TOKENS_OUT, *output),
                ],
            );
        }
        // After a failed run the database is likely unreachable: do not wait on it again.
        if summary.is_none() {
            self.metrics.flush_db(&self.db, &extra);
            return;
        }
        let usage = async {
            let conn = self.db.conn().await?;
            activity::usage(&conn.sql()).await
        }
        .await;
        if let Ok(usage) = usage {
            extra.push(Metric::count(
                name::SERVER_CONNECTIONS,
                u64::try_from(usage.active).unwrap_or(0),
            ));
            extra.push(Metric::percent(name::CONNECTION_USAGE_PERCENT, usage.usage_percent));
        }
        self.metrics.flush_db(&self.db, &extra);
    }

    /// Claims up to `limit` due tasks with a lease covering the rest of the invocation.
    pub(crate) async fn claim(
        &self,
        deadline: &Deadline,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<ClaimedTask>, DbError> {
        // The lease covers everything this invocation could still do, plus a grace period.
        let lease_secs = (deadline.remaining() + self.settings.lease_grace).as_secs_f64();
        let policy = ClaimPolicy {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            // Unset: a quarter of the most an instance may run at once.
            per_user: i64::try_from(
                self.settings
                    .max_in_flight_per_user
                    .unwrap_or_else(|| (self.settings.max_concurrency / 4).max(1)),
            )
            .unwrap_or(i64::MAX),
            start: Uuid::new_v4(),
            user_daily_tokens: self.settings.user_daily_tokens,
        };
        let claimed = {
            let conn = self.db.conn().await?;
            tasks::claim(&conn.sql(), owner, lease_secs, policy).await?
        };
        if claimed.deferred > 0 {
            tracing::info!(
                deferred = claimed.deferred,
                "tasks over their daily token budget deferred to 00:00 UTC"
            );
            if let Ok(mut spent) = self.spent.lock() {
                spent.deferred += claimed.deferred;
            }
        }
        if !claimed.agent_unavailable.is_empty() {
            tracing::warn!(
                tasks = ?claimed.agent_unavailable,
                "tasks cancelled unrun: their owner may no longer use their agent"
            );
            self.metrics.emit(&[Metric::count(
                name::TASKS_AGENT_UNAVAILABLE,
                claimed.agent_unavailable.len() as u64,
            )]);
        }
        Ok(claimed.tasks)
    }

    /// Best effort, at the end of a failed run: tasks still leased to `owner` go back to pending,
    /// their attempt uncounted (else their lease expires and the next run rescues them).
    pub(crate) async fn release_orphans(&self, owner: &str) {
        let released = async {
            let conn = self.db.conn().await?;
            tasks::release_orphans(&conn.sql(), owner).await
        }
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                tasks = n,
                "tasks claimed by a statement whose answer was lost handed back"
            ),
            Err(e) => tracing::warn!(error = %e, "could not hand back orphaned claims; their leases will expire"),
        }
    }

    /// Pushes a recorded batch's events on their own task (on another core, while the next
    /// batch runs and is recorded), at most [`PUBLISHING_AT_ONCE`] batches at a time: past it,
    /// this waits for the oldest (each is bounded by `LIVE_PUBLISH_TIMEOUT_MS`).
    async fn publish(&self, deliveries: Vec<Delivery>) {
        let oldest = {
            let Ok(mut publishing) = self.publishing.lock() else {
                return;
            };
            publishing.retain(|p| !p.is_finished());
            if publishing.len() >= PUBLISHING_AT_ONCE {
                publishing.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = oldest {
            if let Err(e) = oldest.await {
                tracing::warn!(error = %e, "a batch's live pushes stopped");
            }
        }
        let (live, db) = (self.live.clone(), self.db.clone());
        let pushing = tokio::spawn(async move {
            live.publish(&db, &deliveries).await;
        });
        if let Ok(mut publishing) = self.publishing.lock() {
            publishing.push_back(pushing);
        }
    }

    /// Waits for every batch's pushes still running (each within its bound): the invocation's
    /// response waits for them, as Lambda freezes the instance once it is sent.
    async fn published(&self) {
        loop {
            let next = self.publishing.lock().ok().and_then(|mut p| p.pop_front());
            let Some(pushing) = next else {
                return;
            };
            if let Err(e) = pushing.await {
                tracing::warn!(error = %e, "a batch's live pushes stopped");
            }
        }
    }

    /// Records a batch; the number of series it suspended.
    pub(crate) async fn finish(&self, owner: &str, finished: &[Finished]) -> Result<u64, DbError> {
        let counts = {
            let conn = self.db.conn().await?;
            tasks::finish(&conn.sql(), owner, finished).await?
        };
        // Committed, the connection given back: each task's owner hears of it (bounded; a
        // failed push never fails the run).
        if self.live.is_on() && !counts.live.is_empty() {
            self.publish(deliveries(&counts.live)).await;
        }
        if let Ok(mut spent) = self.spent.lock() {
            for f in finished {
                if let Outcome::Completed {
                    usage: Some(usage),
                    model,
                    ..
                } = &f.outcome
                {
                    let entry = spent
                        .tokens
                        .entry(model.clone().unwrap_or_else(|| "unknown".into()))
                        .or_default();
                    entry.0 += u64::try_from(usage.input_tokens).unwrap_or(0);
                    entry.1 += u64::try_from(usage.output_tokens).unwrap_or(0);
                }
            }
        }
        if counts.finished < finished.len() as i64 {
            tracing::warn!(
                expected = finished.len(),
                recorded = counts.finished,
                "some leases were lost before the batch was recorded (expired, or another instance took over)"
            );
        }
        Ok(u64::try_from(counts.suspended).unwrap_or(0))
    }

    /// The series rule for one ending (none for a task that does not recur, or a broken cron).
    fn next_of(
        &self,
        id: Uuid,
        occurrence: Option<Occurrence<'_>>,
        ending: Ending,
        now: DateTime<Utc>,
    ) -> Option<Next> {
        let occurrence = occurrence?;
        series::next(
            &occurrence,
            ending,
            Scope::Occurrence,
            now,
            self.settings.series_failure_limit,
        )
        .inspect_err(|e| tracing::warn!(task = %id, error = %e, "recurrence not scheduled"))
        .ok()
        .flatten()
    }

    pub(crate) async fn run_task(&self, task: ClaimedTask, deadline: &Deadline, margin: Duration) -> Finished {
        let remaining = deadline.remaining();
        if remaining <= margin {
            return Finished {
                id: task.id,
                outcome: Outcome::Release,
                next: None,
                series_ended: false,
            };
        }
        // A task may use the margin's first half; the second half is left for recording it.
        let budget = self.settings.task_timeout.min(remaining - margin / 2);
        let request = ModelRequest::task(&task.instructions, &task.prompt);
        let result = match tokio::time::timeout(budget, self.model.complete(&request)).await {
            Ok(r) => r,
            Err(_) => Err(ModelError::Timeout(budget.as_millis() as u64)),
        };
        let outcome = match result {
            Ok(reply) => Outcome::Completed {
                result: truncate(reply.text),
                usage: reply.usage,
                model: reply.model,
            },
            Err(ModelError::Throttled { retry_after }) => Outcome::Throttled {
                delay_secs: self.settings.throttle_delay(retry_after).as_secs_f64(),
            },
            Err(e) => {
                // The provider's words go to the log; the task keeps a class users may read.
                tracing::warn!(task = %task.id, attempt = task.attempts, error = %e, "task attempt failed");
                let error = e.public_summary().to_string();
                if task.attempts >= task.max_attempts {
                    Outcome::Failed { error }
                } else {
                    Outcome::Retry {
                        error,
                        delay_secs: self.settings.retry_delay(task.attempts).as_secs_f64(),
                    }
                }
            }
        };
        let ending = match outcome {
            Outcome::Completed { .. } => Some(Ending::Completed),
            Outcome::Failed { .. } => Some(Ending::Failed),
            Outcome::Retry { .. } | Outcome::Release | Outcome::Throttled { .. } => None,
        };
        let next =
            ending.and_then(|ending| self.next_of(task.id, task.schedule.occurrence(), ending, chrono::Utc::now()));
        Finished {
            id: task.id,
            series_ended: ending.is_some() && task.schedule.cron.is_some() && next.is_none(),
            outcome,
            next,
        }
    }
}

pub(crate) fn tally(summary: &mut Summary, finished: &[Finished]) {
    for f in finished {
        match f.outcome {
            Outcome::Completed { .. } => summary.completed += 1,
            Outcome::Retry { .. } => summary.retried += 1,
            Outcome::Failed { .. } => summary.failed += 1,
            Outcome::Release => summary.released += 1,
            Outcome::Throttled { .. } => summary.throttled += 1,
        }
        summary.series_ended += u64::from(f.series_ended);
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
