//! One invocation's work as a continuous pipeline rather than batch after batch:
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
//! failure; only what could not be recorded waits for its lease to expire. The invocation ends when nothing is due, running or unrecorded (an idle
//! system: one claim that finds nothing), or when its deadline comes (tasks not started are
//! handed back, uncounted). It waits on tasks it handed back for throttling that come due before
//! its deadline.

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, OptionFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};

use shared::db::DbError;
use shared::metrics::{name, Metric};

use crate::deadline::Deadline;
use crate::limiter::Signal;
use crate::run::{tally, Scheduler, SchedulerError, Stop, Summary};
use crate::tasks::{ClaimedTask, Finished, Outcome};

/// How often the pipeline looks at its clocks when nothing else wakes it.
const TICK: Duration = Duration::from_millis(50);
/// How often a running invocation reports its concurrency.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// A failed record is tried this many times in all, `RECORD_BACKOFF` × the failures apart.
const RECORD_TRIES: u32 = 3;
const RECORD_BACKOFF: Duration = Duration::from_millis(250);

/// A record's result (series suspended), with its batch to try again when it failed.
type Recorded = (Result<u64, DbError>, Vec<Finished>);

pub(crate) struct Pipeline<'a> {
    s: &'a Scheduler,
    deadline: &'a Deadline,
    owner: &'a str,
    cap: u64,
}

impl<'a> Pipeline<'a> {
    pub(crate) fn new(s: &'a Scheduler, deadline: &'a Deadline, owner: &'a str, cap: u64) -> Self {
        Self {
            s,
            deadline,
            owner,
            cap,
        }
    }

    pub(crate) async fn run(self, summary: &mut Summary, peak: &mut usize) -> Result<Stop, SchedulerError> {
        let Pipeline {
            s,
            deadline,
            owner,
            cap,
        } = self;
        let settings = &s.settings;
        let batch = usize::try_from(settings.batch_size).unwrap_or(usize::MAX).max(1);
        let parallel = s.db.status().max_size >= 2;
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
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Instant::now();

        loop {
            if stop.is_none() && deadline.remaining() <= settings.safety_margin {
                stop = Some(Stop::Deadline);
            }
            if stop == Some(Stop::Deadline) || failure.is_some() {
                if done.is_empty() && !ready.is_empty() {
                    first_done = Instant::now();
                }
                done.extend(ready.drain(..).map(|t| Finished {
                    id: t.id,
                    outcome: Outcome::Release,
                    next: None,
                    series_ended: false,
                }));
            }

            let limit = s.limiter.limit();
            while running.len() < limit {
                let Some(task) = ready.pop_front() else { break };
                let window = s.limiter.window();
                let margin = settings.safety_margin;
                running.push(s.run_task(task, deadline, margin).map(move |f| (f, window)).boxed());
            }
            summary.peak_in_flight = summary.peak_in_flight.max(running.len() as u64);

            if claiming.is_none() && stop.is_none() && failure.is_none() && (parallel || recording.is_none()) {
                if summary.claimed >= cap {
                    stop = Some(Stop::Cap);
                } else {
                    let ahead = limit.div_ceil(8);
                    let want = (limit + ahead).saturating_sub(running.len() + ready.len());
                    let due = if dry {
                        last_claim.is_none_or(|at| at.elapsed() >= settings.poll_interval)
                    } else {
                        want >= (ahead / 2).max(1)
                    };
                    if due && want > 0 {
                        asked = want
                            .min(batch)
                            .min(usize::try_from(cap - summary.claimed).unwrap_or(usize::MAX));
                        last_claim = Some(Instant::now());
                        claiming = Some(s.claim(deadline, owner, asked).boxed());
                    }
                }
            }

            let may_record = record_after.is_none_or(|at| Instant::now() >= at);
            if recording.is_none() && !done.is_empty() && may_record && (parallel || claiming.is_none()) {
                let quiet = running.is_empty() && ready.is_empty() && claiming.is_none();
                if done.len() >= batch || first_done.elapsed() >= settings.record_interval || quiet {
                    let finished = mem::take(&mut done);
                    recording = Some(
                        async move {
                            let result = s.finish(owner, &finished).await;
                            (result, finished)
                        }
                        .boxed(),
                    );
                }
            }

            let idle =
                running.is_empty() && ready.is_empty() && done.is_empty() && claiming.is_none() && recording.is_none();
            if idle {
                if let Some(e) = failure {
                    // Everything this run knew of is recorded or handed back; a task still
                    // leased to it was claimed by a statement whose answer was lost (timed out
                    // client-side after the server committed): hand it back too.
                    s.release_orphans(owner).await;
                    return Err(e.into());
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
                s.metrics.emit(&[
                    Metric::count(name::SCHEDULER_CONCURRENCY, limit as u64),
                    Metric::count(name::TASKS_IN_FLIGHT, running.len() as u64),
                ]);
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
                                + settings.record_interval
                                + settings.poll_interval * 2;
                            if deadline.remaining() > settings.safety_margin
                                && due < Instant::now() + (deadline.remaining() - settings.safety_margin)
                            {
                                throttled_until = Some(throttled_until.map_or(due, |t| t.max(due)));
                            }
                            Signal::Throttled
                        }
                        _ => Signal::Neutral,
                    };
                    s.limiter.record(signal, window, running.len() + 1);
                    if done.is_empty() {
                        first_done = Instant::now();
                    }
                    done.push(finished);
                }
                claimed = OptionFuture::from(claiming.as_mut()), if claiming.is_some() => {
                    claiming = None;
                    *peak = (*peak).max(s.db.status().size);
                    match claimed {
                        Some(Ok(tasks)) => {
                            dry = tasks.len() < asked;
                            summary.claimed += tasks.len() as u64;
                            ready.extend(tasks);
                            if dry {
                                // No backlog: no pooler client is held while the model works
                                // (release mode) until the next poll.
                                s.db.release_idle();
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "claim failed: finishing what runs, then stopping");
                            failure.get_or_insert(e);
                        }
                        None => {}
                    }
                }
                recorded = OptionFuture::from(recording.as_mut()), if recording.is_some() => {
                    recording = None;
                    *peak = (*peak).max(s.db.status().size);
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
                                tracing::error!(error = %e, tasks = finished.len() + done.len(), "could not record finished tasks");
                                return Err(e.into());
                            }
                            tracing::warn!(error = %e, attempt = record_failures, "record failed: trying again");
                            let mut again = finished;
                            again.append(&mut done);
                            done = again;
                            record_after = Some(Instant::now() + RECORD_BACKOFF * record_failures);
                            failure.get_or_insert(e);
                        }
                        None => {}
                    }
                }
                _ = tick.tick() => {}
            }
        }
        Ok(stop.unwrap_or(Stop::Drained))
    }
}
