//! What an invocation reports: why it stopped ([`Stop`]), its counts ([`Summary`], filled by
//! [`tally`] as batches are recorded), what its runs cost ([`Spent`]), and its metrics lines (every
//! name from [`shared::metrics::name`]).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use shared::db::{activity, Db};
use shared::metrics::{name, Metric, Metrics};
use shared::telemetry::Chain;

use crate::tasks::{Finished, Outcome};

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
    /// Tasks whose agent's run paused for a person's approval of a tool call.
    pub awaiting_approval: u64,
    /// Runs whose wait for an approval outlived `AGENT_APPROVAL_TTL_HOURS`: ended, their tasks failed.
    pub expired: u64,
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

/// Counts a recorded batch into the summary.
pub(crate) fn tally(summary: &mut Summary, finished: &[Finished]) {
    for f in finished {
        match f.outcome {
            Outcome::Completed { .. } => summary.completed += 1,
            Outcome::Retry { .. } => summary.retried += 1,
            Outcome::Failed { .. } => summary.failed += 1,
            Outcome::Release => summary.released += 1,
            Outcome::Throttled { .. } => summary.throttled += 1,
            Outcome::AwaitingApproval => summary.awaiting_approval += 1,
        }
        summary.series_ended += u64::from(f.series_ended);
    }
}

/// What this instance's recorded runs cost, by model, and the tasks it deferred to their
/// budget's reset, since the last metrics line.
#[derive(Debug, Default)]
pub(crate) struct Spent(Mutex<Costs>);

/// Tokens (input, output) by model, and deferred tasks.
#[derive(Debug, Default)]
pub(crate) struct Costs {
    tokens: BTreeMap<String, (u64, u64)>,
    deferred: u64,
}

impl Spent {
    /// The counts; a panic elsewhere while they were held leaves them as they were (counters,
    /// never inconsistent), so they are read on rather than lost.
    fn costs(&self) -> MutexGuard<'_, Costs> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn defer(&self, tasks: u64) {
        self.costs().deferred += tasks;
    }

    /// Adds the usage of the completed runs of a recorded batch.
    pub(crate) fn add(&self, finished: &[Finished]) {
        let mut costs = self.costs();
        for f in finished {
            if let Outcome::Completed {
                usage: Some(usage),
                model,
                ..
            } = &f.outcome
            {
                let entry = costs
                    .tokens
                    .entry(model.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default();
                entry.0 += u64::try_from(usage.input_tokens).unwrap_or(0);
                entry.1 += u64::try_from(usage.output_tokens).unwrap_or(0);
            }
        }
    }

    pub(crate) fn deferred(&self) -> u64 {
        self.costs().deferred
    }

    /// Everything counted so far, leaving nothing.
    fn take(&self) -> Costs {
        std::mem::take(&mut *self.costs())
    }
}

/// The concurrency line a running invocation writes every few seconds.
pub(crate) fn concurrency(metrics: &Metrics, limit: usize, in_flight: usize) {
    metrics.emit(&[
        Metric::count(name::SCHEDULER_CONCURRENCY, limit as u64),
        Metric::count(name::TASKS_IN_FLIGHT, in_flight as u64),
    ]);
}

/// One EMF line per run (`None`: it failed): task counts, pool activity and the database's
/// connection usage; and the tokens spent, by model.
pub(crate) async fn emit(metrics: &Metrics, db: &Db, summary: Option<&Summary>, spent: &Spent) {
    let mut extra: Vec<Metric> = match summary {
        Some(s) => [
            (name::TASKS_CLAIMED, s.claimed),
            (name::TASKS_COMPLETED, s.completed),
            (name::TASKS_FAILED, s.failed),
            (name::TASKS_RETRIED, s.retried),
            (name::TASKS_RESCUED, s.rescued),
            (name::SERIES_SUSPENDED, s.series_suspended),
            (name::SERIES_ENDED, s.series_ended),
            (name::TASKS_THROTTLED, s.throttled),
            (name::TASKS_REMAINING_DUE, s.remaining_due),
            (name::SCHEDULER_CONCURRENCY, s.concurrency),
            (name::TASKS_IN_FLIGHT_PEAK, s.peak_in_flight),
            (name::SCHEDULER_CONTINUED, u64::from(s.continued)),
            (name::SCHEDULER_RUN_FAILED, 0),
        ]
        .into_iter()
        .map(|(metric, value)| Metric::count(metric, value))
        .collect(),
        None => vec![Metric::count(name::SCHEDULER_RUN_FAILED, 1)],
    };
    let spent = spent.take();
    extra.push(Metric::count(name::TASKS_DEFERRED, spent.deferred));
    for (model, (input, output)) in &spent.tokens {
        metrics.emit_for_model(
            model,
            &[
                Metric::count(name::TOKENS_IN, *input),
                Metric::count(name::TOKENS_OUT, *output),
            ],
        );
    }
    // After a failed run the database is likely unreachable: do not wait on it again.
    if summary.is_none() {
        metrics.flush_db(db, &extra);
        return;
    }
    let usage = async {
        let conn = db.conn().await?;
        activity::usage(&conn.sql()).await
    }
    .await;
    match usage {
        Ok(usage) => {
            extra.push(Metric::count(
                name::SERVER_CONNECTIONS,
                u64::try_from(usage.active).unwrap_or(0),
            ));
            extra.push(Metric::percent(name::CONNECTION_USAGE_PERCENT, usage.usage_percent));
        }
        Err(e) => tracing::warn!(error = %Chain(&e), "connection usage not read: its metrics are left out"),
    }
    metrics.flush_db(db, &extra);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::Usage;
    use uuid::Uuid;

    fn finished(outcome: Outcome) -> Finished {
        Finished {
            id: Uuid::new_v4(),
            outcome,
            next: None,
            series_ended: false,
        }
    }

    #[test]
    fn a_batch_is_counted_by_outcome() {
        let mut summary = Summary::default();
        let mut ended = finished(Outcome::Failed { error: "x".into() });
        ended.series_ended = true;
        tally(
            &mut summary,
            &[
                finished(Outcome::Release),
                finished(Outcome::Throttled { delay_secs: 1.0 }),
                ended,
            ],
        );
        assert_eq!(
            summary,
            Summary {
                released: 1,
                throttled: 1,
                failed: 1,
                series_ended: 1,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn spent_tokens_add_up_by_model_and_are_taken_once() {
        let spent = Spent::default();
        let run = |model: Option<&str>, input, output| {
            finished(Outcome::Completed {
                result: String::new(),
                usage: Some(Usage {
                    input_tokens: input,
                    output_tokens: output,
                }),
                model: model.map(str::to_string),
            })
        };
        spent.add(&[run(Some("m"), 3, 4), run(Some("m"), 1, 1), run(None, 2, 0)]);
        spent.defer(2);
        assert_eq!(spent.deferred(), 2);
        let costs = spent.take();
        assert_eq!(costs.tokens.get("m"), Some(&(4, 5)));
        assert_eq!(costs.tokens.get("unknown"), Some(&(2, 0)));
        assert_eq!(costs.deferred, 2);
        assert_eq!(spent.deferred(), 0);
    }
}
