//! One invocation's SQL calls through the pool, each one statement on a connection held only
//! for it (the statements themselves are in [`crate::tasks`]), with what the invocation keeps of
//! them: tasks deferred or cancelled by a claim, tokens spent, live pushes, the most connections
//! the pool held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use shared::db::{Db, DbError};
use shared::live::Publisher;
use shared::metrics::{name, Metric, Metrics};
use shared::tasks::series::{Ending, Next};
use shared::telemetry::Chain;

use super::publish::Publishing;
use super::runner::next_occurrence;
use crate::deadline::Deadline;
use crate::report::{Spent, Summary};
use crate::settings::Settings;
use crate::tasks::{self, ClaimPolicy, ClaimedTask, Finished};

/// The database side of one invocation (`owner`: its lease owner).
pub(crate) struct Store<'a> {
    pub db: &'a Db,
    pub settings: &'a Settings,
    /// Where tasks cancelled by a claim are counted.
    pub metrics: &'a Metrics,
    /// Where tokens spent and tasks deferred are counted.
    pub spent: &'a Spent,
    /// Pushes each recorded batch's events (when on) through `publishing`.
    pub live: &'a Publisher,
    pub publishing: &'a Publishing,
    /// A claim's lease covers what is left of it.
    pub deadline: &'a Deadline,
    /// The lease owner: this invocation's request id.
    pub owner: &'a str,
    /// Most connections the pool held, looked at after each claim and record.
    pub peak: AtomicUsize,
    /// Whether the next claim tries the lone user's claim first.
    pub lone: Mutex<Lone>,
}

/// Claims after the fair claim found a lone user take the cheaper lone claim, until another
/// user's tasks come due (the lone claim then takes nothing and the fair one runs at once).
#[derive(Debug, Default)]
pub(crate) struct Lone {
    user: Option<Uuid>,
    /// Fair claims to make before trying the lone claim again (after it came back empty, e.g.
    /// while another user waits at their in-flight cap).
    pause: u32,
}

/// Fair claims between a lone claim that came back empty and the next try.
const LONE_PAUSE: u32 = 16;

impl Lone {
    /// The user to try the lone claim for.
    fn next(&self) -> Option<Uuid> {
        if self.pause == 0 {
            self.user
        } else {
            None
        }
    }

    /// What a claim of `limit` showed.
    fn saw(&mut self, claimed: &tasks::Claimed, limit: usize) {
        if claimed.fell_back {
            self.pause = LONE_PAUSE;
        } else {
            self.pause = self.pause.saturating_sub(1);
        }
        self.user = claimed.lone_user(limit);
    }
}

impl Store<'_> {
    /// Most connections the pool held after a claim or a record.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note_pool(&self) {
        self.peak.fetch_max(self.db.status().size, Ordering::Relaxed);
    }

    /// Claims up to `limit` due tasks with a lease covering the rest of the invocation. A claim
    /// that comes back short (no backlog) lets the pool give its pooler client back until the
    /// next one.
    pub(crate) async fn claim(&self, limit: usize) -> Result<Vec<ClaimedTask>, DbError> {
        // The lease covers everything this invocation could still do, plus a grace period.
        let lease_secs = (self.deadline.remaining() + self.settings.lease_grace).as_secs_f64();
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
            lone: self.lone.lock().unwrap_or_else(PoisonError::into_inner).next(),
        };
        let claimed = async {
            let conn = self.db.conn().await?;
            tasks::claim(&conn.sql(), self.owner, lease_secs, policy).await
        }
        .await;
        self.note_pool();
        let claimed = claimed?;
        self.lone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saw(&claimed, limit);
        if claimed.deferred > 0 {
            tracing::info!(
                deferred = claimed.deferred,
                "tasks over their daily token budget deferred to 00:00 UTC"
            );
            self.spent.defer(claimed.deferred);
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
        if claimed.tasks.len() < limit {
            // No backlog: no pooler client is held while the model works (release mode) until
            // the next poll.
            self.db.release_idle();
        }
        Ok(claimed.tasks)
    }

    /// Records a batch; the number of series it suspended.
    pub(crate) async fn record(&self, finished: &[Finished]) -> Result<u64, DbError> {
        let counts = async {
            let conn = self.db.conn().await?;
            tasks::finish(&conn.sql(), self.owner, finished).await
        }
        .await;
        self.note_pool();
        let counts = counts?;
        // Committed, the connection given back: each task's owner hears of it (bounded; a
        // failed push never fails the run).
        if self.live.is_on() && !counts.live.is_empty() {
            self.publishing.publish(self.live, self.db, &counts.live).await;
        }
        self.spent.add(finished);
        if counts.finished < finished.len() as i64 {
            tracing::warn!(
                expected = finished.len(),
                recorded = counts.finished,
                "some leases were lost before the batch was recorded (expired, or another instance took over)"
            );
        }
        Ok(u64::try_from(counts.suspended).unwrap_or(0))
    }

    /// Best effort, at the end of a failed run: tasks still leased to this invocation go back to
    /// pending, their attempt uncounted (else their lease expires and the next run rescues them).
    pub(crate) async fn release_orphans(&self) {
        let released = async {
            let conn = self.db.conn().await?;
            tasks::release_orphans(&conn.sql(), self.owner).await
        }
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                tasks = n,
                "tasks claimed by a statement whose answer was lost handed back"
            ),
            Err(e) => tracing::warn!(
                error = %Chain(&e),
                "could not hand back orphaned claims; their leases will expire"
            ),
        }
    }

    /// The next occurrence of each recurring occurrence about to fail (the cron evaluated in
    /// Rust); those whose series can go no further are counted as ended.
    fn plan_failed(
        &self,
        occurrences: &[tasks::ExpiredOccurrence],
        summary: &mut Summary,
    ) -> Vec<(Uuid, Option<Next>)> {
        let now = Utc::now();
        let planned: Vec<(Uuid, Option<Next>)> = occurrences
            .iter()
            .map(|t| {
                let next = next_occurrence(self.settings, t.id, t.schedule.occurrence(), Ending::Failed, now);
                (t.id, next)
            })
            .collect();
        summary.series_ended += planned.iter().filter(|(_, next)| next.is_none()).count() as u64;
        planned
    }

    /// Fails or re-queues tasks whose lease expired (a crashed or stopped instance); the
    /// recurring ones get their series' next occurrence in the same statement.
    pub(crate) async fn rescue(&self, summary: &mut Summary) -> Result<(), DbError> {
        let conn = self.db.conn().await?;
        let sql = conn.sql();
        // The next occurrences are computed here: the cron is evaluated in Rust.
        let expired = tasks::expired_last_occurrences(&sql, self.settings.rescue_limit).await?;
        let planned = self.plan_failed(&expired, summary);
        let rescued = tasks::rescue(&sql, self.settings.rescue_limit, &planned).await?;
        summary.rescued = (rescued.pending + rescued.failed) as u64;
        summary.failed += rescued.failed as u64;
        summary.series_suspended += rescued.suspended as u64;
        Ok(())
    }

    /// Ends runs that waited for a decision past their `paused_until` and fails their tasks;
    /// the recurring ones get their series' next occurrence in the same statement.
    pub(crate) async fn expire(&self, summary: &mut Summary) -> Result<(), DbError> {
        let conn = self.db.conn().await?;
        let sql = conn.sql();
        let expiring = tasks::expiring_occurrences(&sql, self.settings.rescue_limit).await?;
        let planned = self.plan_failed(&expiring, summary);
        let expired = tasks::expire(&sql, self.settings.rescue_limit, &planned).await?;
        if expired.runs > 0 {
            tracing::info!(
                runs = expired.runs,
                tasks_failed = expired.failed,
                "runs that waited for an approval past AGENT_APPROVAL_TTL_HOURS expired"
            );
        }
        summary.expired = u64::try_from(expired.runs).unwrap_or(0);
        summary.failed += u64::try_from(expired.failed).unwrap_or(0);
        summary.series_suspended += u64::try_from(expired.suspended).unwrap_or(0);
        Ok(())
    }

    /// Due, approved, pending tasks not yet claimed.
    pub(crate) async fn remaining_due(&self) -> Result<u64, DbError> {
        let conn = self.db.conn().await?;
        let (due, _expired) = tasks::due_counts(&conn.sql()).await?;
        Ok(due.max(0) as u64)
    }
}
