//! The pipeline's loop against an in-memory stand-in for the database and the model: no
//! Postgres, the same loop.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use shared::config::Env;
use shared::db::DbError;
use shared::metrics::{Metrics, Sink};
use shared::tasks::series::Approval;
use shared::tasks::Schedule;

use super::{Pace, Pipeline};
use crate::deadline::Deadline;
use crate::limiter::Limiter;
use crate::report::{Stop, Summary};
use crate::settings::Settings;
use crate::tasks::{ClaimedTask, Finished, Outcome};
use crate::work::Work;

/// Due tasks, model calls that take `run_for`, and the failures a test asks for.
#[derive(Default)]
struct Fake {
    run_for: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    due: VecDeque<Uuid>,
    /// How many tasks each claim asked for.
    asked: Vec<usize>,
    /// The claims (counted from 1) that fail.
    failing_claim: Option<usize>,
    /// Records that fail before one succeeds.
    failing_records: u32,
    record_attempts: u32,
    /// Each successful record's tasks.
    records: Vec<Vec<Uuid>>,
    in_flight: usize,
    peak_in_flight: usize,
    orphans_released: bool,
    /// What the pipeline did, in order.
    log: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Claim,
    ClaimFailed,
    Recorded,
    RecordFailed,
}

fn outage() -> DbError {
    DbError::unreachable("the fake database went away")
}

impl Fake {
    fn with_due(tasks: usize, run_for: Duration) -> Self {
        let fake = Fake {
            run_for,
            ..Fake::default()
        };
        fake.state().due = (0..tasks).map(|_| Uuid::new_v4()).collect();
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn task(id: Uuid) -> ClaimedTask {
    ClaimedTask {
        id,
        user_id: None,
        agent_id: Uuid::nil(),
        prompt: "p".into(),
        instructions: "i".into(),
        attempts: 1,
        max_attempts: 3,
        schedule: Schedule {
            cron: None,
            time_zone: None,
            scheduled_for: Utc::now(),
            approval: Approval::Approved,
            series_failures: 0,
        },
    }
}

impl Work for Fake {
    async fn claim(&self, n: usize) -> Result<Vec<ClaimedTask>, DbError> {
        let mut state = self.state();
        state.asked.push(n);
        if state.failing_claim == Some(state.asked.len()) {
            state.log.push(Event::ClaimFailed);
            return Err(outage());
        }
        state.log.push(Event::Claim);
        let take = n.min(state.due.len());
        Ok(state.due.drain(..take).map(task).collect())
    }

    async fn run(&self, task: ClaimedTask) -> Finished {
        {
            let mut state = self.state();
            state.in_flight += 1;
            state.peak_in_flight = state.peak_in_flight.max(state.in_flight);
        }
        tokio::time::sleep(self.run_for).await;
        self.state().in_flight -= 1;
        Finished {
            id: task.id,
            outcome: Outcome::Completed {
                result: "done".into(),
                usage: None,
                model: None,
            },
            next: None,
            series_ended: false,
        }
    }

    async fn record(&self, batch: &[Finished]) -> Result<u64, DbError> {
        let mut state = self.state();
        state.record_attempts += 1;
        if state.failing_records > 0 {
            state.failing_records -= 1;
            state.log.push(Event::RecordFailed);
            return Err(outage());
        }
        state.log.push(Event::Recorded);
        state.records.push(batch.iter().map(|f| f.id).collect());
        Ok(0)
    }

    async fn release_orphans(&self) {
        self.state().orphans_released = true;
    }
}

fn settings() -> Settings {
    Settings {
        batch_size: 1000,
        poll_interval: Duration::from_millis(10),
        record_interval: Duration::from_millis(20),
        safety_margin: Duration::from_millis(10),
        ..Settings::default()
    }
}

/// Runs the pipeline over `fake` with a fixed concurrency of `limit`, `budget` before the
/// deadline, at most `cap` tasks.
async fn drive(
    fake: &Fake,
    settings: &Settings,
    limit: usize,
    budget: Duration,
    cap: u64,
) -> (Result<Stop, DbError>, Summary) {
    let limiter = Limiter::new(limit, limit);
    let metrics = Metrics::new(&Env::default(), "scheduler").with_sink(Sink::Buffer(Default::default()));
    // A duration below the epoch floor: the deadline is `budget` from now.
    let deadline = Deadline::from_context_ms(budget.as_millis() as u64, budget);
    let mut summary = Summary::default();
    let pipeline = Pipeline {
        work: fake,
        limiter: &limiter,
        metrics: &metrics,
        deadline: &deadline,
        pace: Pace::new(settings, true, cap),
    };
    let stop = pipeline.run(&mut summary).await;
    (stop, summary)
}

#[tokio::test]
async fn it_keeps_claiming_while_capacity_is_free_and_ends_once_drained() {
    let fake = Fake::with_due(100, Duration::from_millis(2));
    let (stop, summary) = drive(&fake, &settings(), 8, Duration::from_secs(60), u64::MAX).await;
    assert_eq!(stop.unwrap(), Stop::Drained);
    assert_eq!((summary.claimed, summary.completed), (100, 100), "{summary:?}");
    let state = fake.state();
    assert!(state.due.is_empty());
    assert_eq!(state.peak_in_flight, 8, "the whole limit in use");
    assert_eq!(summary.peak_in_flight, 8);
    // The limit and an eighth of it ahead, never more: claims follow capacity.
    assert!(state.asked.iter().all(|&n| (1..=9).contains(&n)), "{:?}", state.asked);
    assert!(state.asked.len() >= 100 / 9, "{:?}", state.asked);
    let mut recorded = state.records.concat();
    recorded.sort();
    recorded.dedup();
    assert_eq!(recorded.len(), 100, "each task recorded once");
}

#[tokio::test]
async fn the_deadline_stops_claiming_and_leaves_the_rest_unclaimed() {
    let fake = Fake::with_due(10_000, Duration::from_millis(20));
    let settings = Settings {
        safety_margin: Duration::from_millis(200),
        ..settings()
    };
    let started = Instant::now();
    let (stop, summary) = drive(&fake, &settings, 4, Duration::from_millis(400), u64::MAX).await;
    assert_eq!(stop.unwrap(), Stop::Deadline);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "claims go on until the margin"
    );
    let state = fake.state();
    assert!(!state.due.is_empty(), "work left unclaimed");
    assert_eq!(summary.claimed as usize, 10_000 - state.due.len());
    assert!(summary.completed > 0);
    // Every task claimed is recorded: run, or handed back unstarted.
    assert_eq!(summary.completed + summary.released, summary.claimed, "{summary:?}");
    assert_eq!(state.records.concat().len() as u64, summary.claimed);
}

#[tokio::test]
async fn the_cap_stops_claiming() {
    let fake = Fake::with_due(100, Duration::from_millis(1));
    let (stop, summary) = drive(&fake, &settings(), 4, Duration::from_secs(60), 10).await;
    assert_eq!(stop.unwrap(), Stop::Cap);
    assert_eq!((summary.claimed, summary.completed), (10, 10));
    assert_eq!(fake.state().due.len(), 90);
}

#[tokio::test]
async fn finished_tasks_are_recorded_in_batches() {
    let fake = Fake::with_due(50, Duration::from_millis(1));
    let settings = Settings {
        batch_size: 10,
        // Only a full batch, or the end, records.
        record_interval: Duration::from_secs(3600),
        ..settings()
    };
    let (stop, summary) = drive(&fake, &settings, 16, Duration::from_secs(60), u64::MAX).await;
    assert_eq!(stop.unwrap(), Stop::Drained);
    assert_eq!(summary.completed, 50);
    let state = fake.state();
    assert!(state.asked.iter().all(|&n| n <= 10), "a claim takes a batch at most");
    assert_eq!(state.records.concat().len(), 50);
    let sizes: Vec<usize> = state.records.iter().map(Vec::len).collect();
    // A record waits for a whole batch; only the one after the backlog ran out holds less.
    let (_last, full) = sizes.split_last().unwrap();
    assert!(full.iter().all(|&n| n >= 10), "{sizes:?}");
    assert!(sizes.len() <= 6, "{sizes:?}");
}

/// A run over `tasks` quick tasks whose records fail `failing` times before one succeeds.
async fn with_failing_records(tasks: usize, failing: u32) -> (Fake, Summary) {
    let fake = Fake::with_due(tasks, Duration::from_millis(1));
    fake.state().failing_records = failing;
    let (stop, summary) = drive(&fake, &settings(), 8, Duration::from_secs(60), u64::MAX).await;
    assert!(matches!(stop, Err(DbError::Unreachable { .. })), "{stop:?}");
    (fake, summary)
}

#[tokio::test]
async fn a_failed_record_is_tried_again_then_the_run_reports_the_failure() {
    let (fake, summary) = with_failing_records(5, 1).await;
    let state = fake.state();
    assert_eq!(state.record_attempts, 2);
    assert_eq!(state.records.concat().len(), 5, "recorded on the second try");
    assert_eq!(summary.completed, 5);
    let failed = state.log.iter().position(|e| *e == Event::RecordFailed).unwrap();
    assert_eq!(
        &state.log[failed..],
        [Event::RecordFailed, Event::Recorded],
        "nothing claimed after the failure, though the claim came back short (polls would go on)"
    );
    assert!(state.orphans_released);
}

#[tokio::test]
async fn a_record_failing_every_try_ends_the_run() {
    let (fake, summary) = with_failing_records(3, 3).await;
    let state = fake.state();
    assert_eq!(state.record_attempts, 3);
    let failed = state.log.iter().position(|e| *e == Event::RecordFailed).unwrap();
    assert_eq!(
        &state.log[failed..],
        [Event::RecordFailed; 3],
        "no claim after the failure"
    );
    assert!(state.records.is_empty());
    assert_eq!(summary.completed, 0, "nothing counted that was not recorded");
    assert!(!state.orphans_released, "their leases expire instead");
}

#[tokio::test]
async fn a_failed_claim_stops_claiming_and_what_runs_is_finished_and_recorded() {
    let fake = Fake::with_due(100, Duration::from_millis(30));
    fake.state().failing_claim = Some(2);
    let (stop, summary) = drive(&fake, &settings(), 4, Duration::from_secs(60), u64::MAX).await;
    assert!(matches!(stop, Err(DbError::Unreachable { .. })), "{stop:?}");
    let state = fake.state();
    assert_eq!(state.asked.len(), 2, "no claim after the failed one: {:?}", state.asked);
    assert_eq!(
        state.log.last(),
        Some(&Event::Recorded),
        "what ran is recorded after it"
    );
    assert_eq!(summary.claimed, 5, "the limit and one ahead");
    assert_eq!(summary.completed + summary.released, 5, "{summary:?}");
    assert!(summary.completed >= 4, "what was running finished: {summary:?}");
    assert_eq!(state.records.concat().len(), 5);
    assert_eq!(state.due.len(), 95);
    assert!(state.orphans_released);
}
