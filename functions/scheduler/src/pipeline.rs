//! One invocation's work as a continuous pipeline rather than batch after batch, driven through
//! the [`Work`] trait (claim, run, record):
//!
//! - **claim**: whenever enough of the concurrency limit is free (an eighth of it is kept claimed
//!   ahead, so a freed slot starts its next task at once), at most `SCHEDULER_BATCH_SIZE` per
//!   statement. Claims follow the limit: an instance never holds more than it can start within
//!   one claim. With no backlog left, it looks for newly due tasks every
//!   `SCHEDULER_POLL_INTERVAL_MS` while anything still runs.
//! - **run**: model calls, as many at once as the limiter allows; no connection is touched.
//! - **record**: finished tasks together, in one statement, at most `SCHEDULER_RECORD_INTERVAL_MS`
//!   after the first of them finished (or `SCHEDULER_BATCH_SIZE` at once).
//!
//! With a pool of two, a claim and a record run at the same time on the two connections; with
//! one, they take turns. When a claim or a record fails (the database went away), nothing more is
//! claimed: the calls running end, the tasks claimed but not started are handed back, what
//! finished is recorded (a failed record is tried three times), and then the run reports the
//! failure; only what could not be recorded waits for its lease to expire. The invocation ends
//! when nothing is due, running or unrecorded (an idle system: one claim that finds nothing), or
//! when its deadline comes (tasks not started are handed back, uncounted). It waits on tasks it
//! handed back for throttling that come due before its deadline.
//!
//! Between events the loop sleeps until the earliest moment something is due: a task finishing,
//! a claim or a record answering, or a clock (the deadline's safety margin, the next poll, the
//! next record, the end of a record's backoff, a throttled task coming due, the next
//! concurrency report), never on a fixed tick.

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, OptionFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};

use shared::db::DbError;
use shared::metrics::Metrics;
use shared::telemetry::Chain;

use crate::deadline::Deadline;
use crate::limiter::{Limiter, Signal};
use crate::report::{self, tally, Stop, Summary};
use crate::settings::Settings;
use crate::tasks::{ClaimedTask, Finished, Outcome};
use crate::work::Work;

/// How often a running invocation reports its concurrency.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// A failed record is tried this many times in all, `RECORD_BACKOFF` × the failures apart.
const RECORD_TRIES: u32 = 3;
const RECORD_BACKOFF: Duration = Duration::from_millis(250);

/// A record's result (series suspended), with its batch to try again when it failed.
type Recorded = (Result<u64, DbError>, Vec<Finished>);

/// The pipeline's bounds and clocks, from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Most tasks claimed, or recorded, per statement.
    pub batch: usize,
    /// Nothing is claimed or started once less than this remains before the deadline.
    pub margin: Duration,
    pub poll_interval: Duration,
    pub record_interval: Duration,
    /// A claim and a record may run at the same time (two connections); else they take turns.
    pub parallel: bool,
    /// Most tasks claimed in all.
    pub cap: u64,
}

impl Pace {
    pub(crate) fn new(settings: &Settings, parallel: bool, cap: u64) -> Self {
        Self {
            batch: usize::try_from(settings.batch_size).unwrap_or(usize::MAX).max(1),
            margin: settings.safety_margin,
            poll_interval: settings.poll_interval,
            record_interval: settings.record_interval,
            parallel,
            cap,
        }
    }
}

/// One invocation's pipeline over `work`.
pub(crate) struct Pipeline<'a, W> {
    pub work: &'a W,
    pub limiter: &'a Limiter,
    pub metrics: &'a Metrics,
    pub deadline: &'a Deadline,
    pub pace: Pace,
}

impl<'a, W: Work> Pipeline<'a, W> {
    /// Runs until drained, capped or out of time; a claim or record failure ends it once what
    /// runs has finished and what finished is recorded.
    pub(crate) async fn run(self, summary: &mut Summary) -> Result<Stop, DbError> {
        let Pipeline {
            work,
            limiter,
            metrics,
            deadline,
            pace,
        } = self;
        let Pace {
            batch,
            margin,
            parallel,
            cap,
            ..
        } = pace;
        let mut ready: VecDeque<ClaimedTask> = VecDeque::new();
        let mut running: FuturesUnordered<BoxFuture<'a, (Finished, u64)>> = FuturesUnordered::new();
        let mut done: Vec<Finished> = Vec::new();
        let mut first_done = Instant::now();
        let mut claiming: Option<BoxFuture<'a, Result<Vec<ClaimedTask>, DbError>>> = None;
        let mut asked = 0usize;
        // A record gives its batch back with the result: a failed one is tried again.
        let mut recording: Option<BoxFuture<'a, Recorded>> = None;
        // A claim or record failed: claim nothing more, let the running calls end, record what
        // can be recorded (tried `RECORD_TRIES` times), then report the failure.
        let mut failure: Option<DbError> = None;
        let mut record_failures = 0u32;
        let mut record_after: Option<Instant> = None;
        // The last claim came back short: no backlog, poll for newly due tasks.
        let mut dry = false;
        let mut last_claim: Option<Instant> = None;
        // A task handed back for throttling comes due before the deadline: wait for it.
        let mut throttled_until: Option<Instant> = None;
        let mut stop: Option<Stop> = None;
        let mut reported = Instant::now();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(reported + REPORT_EVERY));
        tokio::pin!(sleep);

        loop {
            if stop.is_none() && deadline.remaining() <= margin {
                stop = Some(Stop::Deadline);
            }
            if stop == Some(Stop::Deadline) || failure.is_some() {
                if done.is_empty() && !ready.is_empty() {
                    first_done = Instant::now();
                }
                done.extend(ready.drain(..).map(|t| Finished::released(t.id)));
            }

            let limit = limiter.limit();
            while running.len() < limit {
                let Some(task) = ready.pop_front() else { break };
                let window = limiter.window();
                running.push(work.run(task).map(move |f| (f, window)).boxed());
            }
            summary.peak_in_flight = summary.peak_in_flight.max(running.len() as u64);

            // When the next poll for newly due tasks is due (no backlog, capacity free).
            let mut next_poll: Option<Instant> = None;
            if claiming.is_none() && stop.is_none() && failure.is_none() && (parallel || recording.is_none()) {
                if summary.claimed >= cap {
                    stop = Some(Stop::Cap);
                } else {
                    let ahead = limit.div_ceil(8);
                    let want = (limit + ahead).saturating_sub(running.len() + ready.len());
                    let due = if dry {
                        let now = Instant::now();
                        let poll_at = last_claim.map_or(now, |at| at + pace.poll_interval);
                        if now < poll_at && want > 0 {
                            next_poll = Some(poll_at);
                        }
                        now >= poll_at
                    } else {
                        want >= (ahead / 2).max(1)
                    };
                    if due && want > 0 {
                        asked = want
                            .min(batch)
                            .min(usize::try_from(cap - summary.claimed).unwrap_or(usize::MAX));
                        last_claim = Some(Instant::now());
                        claiming = Some(work.claim(asked).boxed());
                    }
                }
            }

            // When the batch waiting is next due to be recorded (its interval, or a backoff).
            let mut next_record: Option<Instant> = None;
            if recording.is_none() && !done.is_empty() && (parallel || claiming.is_none()) {
                let now = Instant::now();
                let interval_over = first_done + pace.record_interval;
                let quiet = running.is_empty() && ready.is_empty() && claiming.is_none();
                if let Some(after) = record_after.filter(|at| now < *at) {
                    next_record = Some(after);
                } else if done.len() >= batch || now >= interval_over || quiet {
                    let finished = mem::take(&mut done);
                    recording = Some(
                        async move {
                            let result = work.record(&finished).await;
                            (result, finished)
                        }
                        .boxed(),
                    );
                } else {
                    next_record = Some(interval_over);
                }
            }

            let idle =
                running.is_empty() && ready.is_empty() && done.is_empty() && claiming.is_none() && recording.is_none();
            if idle {
                if let Some(e) = failure {
                    // Everything this run knew of is recorded or handed back; a task still
                    // leased to it was claimed by a statement whose answer was lost (timed out
                    // client-side after the server committed): hand it back too.
                    work.release_orphans().await;
                    return Err(e);
                }
                let waiting = throttled_until.is_some_and(|t| Instant::now() < t);
                if stop.is_some() {
                    break;
                }
                if dry && !waiting {
                    stop = Some(Stop::Drained);
                    break;
                }
            }

            if reported.elapsed() >= REPORT_EVERY {
                reported = Instant::now();
                report::concurrency(metrics, limit, running.len());
            }

            // Asleep until the earliest clock, unless an event comes first.
            let now = Instant::now();
            let clocks = [
                // While claiming: when less than the safety margin will be left.
                stop.is_none().then(|| deadline.leaving(margin)).flatten(),
                next_poll,
                next_record,
                throttled_until.filter(|t| now < *t),
            ];
            let wake = clocks.into_iter().flatten().fold(reported + REPORT_EVERY, Instant::min);
            let wake = tokio::time::Instant::from_std(wake);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }

            tokio::select! {
                Some((finished, window)) = running.next(), if !running.is_empty() => {
                    let signal = match finished.outcome {
                        Outcome::Completed { .. } => Signal::Success,
                        Outcome::Throttled { delay_secs } => {
                            // Due in the database once recorded, plus the delay; seen by a poll
                            // after that.
                            let due = Instant::now()
                                + Duration::from_secs_f64(delay_secs.max(0.0))
                                + pace.record_interval
                                + pace.poll_interval * 2;
                            if deadline.remaining() > margin
                                && due < Instant::now() + (deadline.remaining() - margin)
                            {
                                throttled_until = Some(throttled_until.map_or(due, |t| t.max(due)));
                            }
                            Signal::Throttled
                        }
                        _ => Signal::Neutral,
                    };
                    limiter.record(signal, window, running.len() + 1);
                    if done.is_empty() {
                        first_done = Instant::now();
                    }
                    done.push(finished);
                }
                claimed = OptionFuture::from(claiming.as_mut()), if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Some(Ok(tasks)) => {
                            dry = tasks.len() < asked;
                            summary.claimed += tasks.len() as u64;
                            ready.extend(tasks);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %Chain(&e), "claim failed: finishing what runs, then stopping");
                            failure.get_or_insert(e);
                        }
                        None => {}
                    }
                }
                recorded = OptionFuture::from(recording.as_mut()), if recording.is_some() => {
                    recording = None;
                    match recorded {
                        Some((Ok(suspended), finished)) => {
                            tally(summary, &finished);
                            summary.series_suspended += suspended;
                            record_failures = 0;
                            record_after = None;
                        }
                        Some((Err(e), finished)) => {
                            record_failures += 1;
                            if record_failures >= RECORD_TRIES {
                                // Their leases expire and the next invocation rescues them.
                                tracing::error!(
                                    error = %Chain(&e),
                                    tasks = finished.len() + done.len(),
                                    "could not record finished tasks"
                                );
                                return Err(e);
                            }
                            tracing::warn!(error = %Chain(&e), attempt = record_failures, "record failed: trying again");
                            let mut again = finished;
                            again.append(&mut done);
                            done = again;
                            record_after = Some(Instant::now() + RECORD_BACKOFF * record_failures);
                            failure.get_or_insert(e);
                        }
                        None => {}
                    }
                }
                () = &mut sleep => {}
            }
        }
        Ok(stop.unwrap_or(Stop::Drained))
    }
}

#[cfg(test)]
mod tests;
