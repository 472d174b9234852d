//! One task's run: the model call within the task's time budget (for an agent with tools, the
//! agent's run: see [`super::agent_run`]), its outcome (completed, retried, failed, throttled,
//! paused for approval, or released when the deadline came first), and a recurring task's next
//! occurrence. A task of an agent without tools touches no connection (its agent's tools are
//! read once per invocation).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use shared::db::{Db, DbError};
use shared::model::{ModelError, ModelRequest, SharedModel};
use shared::tasks::series::{self, Ending, Next, Occurrence, Scope};
use shared::telemetry::Chain;

use crate::deadline::Deadline;
use crate::settings::Settings;
use crate::tasks::{ClaimedTask, Finished, Outcome};

/// Longest result or error text stored per task.
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Runs tasks against the model within an invocation's deadline.
pub(crate) struct Runner<'a> {
    pub model: &'a SharedModel,
    pub settings: &'a Settings,
    pub deadline: &'a Deadline,
    /// For agents with tools: the pool their steps are stored through and each agent's tools
    /// as this invocation read them (the tool-call client is built at the first tool run).
    pub db: &'a Db,
    pub toolboxes: super::Toolboxes,
}

impl Runner<'_> {
    pub(crate) async fn run(&self, task: ClaimedTask) -> Finished {
        let margin = self.settings.safety_margin;
        let remaining = self.deadline.remaining();
        if remaining <= margin {
            return Finished::released(task.id);
        }
        // A task may use the margin's first half; the second half is left for recording it.
        let budget = self.settings.task_timeout.min(remaining - margin / 2);
        let outcome = match self.toolboxes.of(self.db, &self.settings.runs, task.agent_id).await {
            Ok(Some(tools)) => super::agent_run::run(self, &task, &tools, budget).await,
            Ok(None) => self.model_call(&task, budget).await,
            Err(e) => self.store_failed(&task, &e),
        };
        let ending = match outcome {
            Outcome::Completed { .. } => Some(Ending::Completed),
            Outcome::Failed { .. } => Some(Ending::Failed),
            Outcome::Retry { .. } | Outcome::Release | Outcome::Throttled { .. } | Outcome::AwaitingApproval => None,
        };
        let next = ending
            .and_then(|ending| next_occurrence(self.settings, task.id, task.schedule.occurrence(), ending, Utc::now()));
        Finished {
            id: task.id,
            series_ended: ending.is_some() && task.schedule.cron.is_some() && next.is_none(),
            outcome,
            next,
        }
    }
}

impl Runner<'_> {
    /// The task's one model call, within `budget`.
    async fn model_call(&self, task: &ClaimedTask, budget: std::time::Duration) -> Outcome {
        let request = ModelRequest::task(&task.instructions, &task.prompt);
        let result = match tokio::time::timeout(budget, self.model.complete(&request)).await {
            Ok(r) => r,
            Err(_) => Err(ModelError::Timeout(budget.as_millis() as u64)),
        };
        match result {
            Ok(reply) => Outcome::Completed {
                result: truncate(reply.text),
                usage: reply.usage,
                model: reply.model,
            },
            Err(e) => self.model_failed(task, &e),
        }
    }

    /// A model call's failure: throttled (no attempt counted), else retried while attempts are
    /// left, then failed.
    pub(crate) fn model_failed(&self, task: &ClaimedTask, e: &ModelError) -> Outcome {
        if let ModelError::Throttled { retry_after } = e {
            return Outcome::Throttled {
                delay_secs: self.settings.throttle_delay(*retry_after).as_secs_f64(),
            };
        }
        // The provider's words go to the log; the task keeps a class users may read.
        tracing::warn!(task = %task.id, attempt = task.attempts, error = %Chain(e), "task attempt failed");
        self.attempt_failed(task, e.public_summary().to_string())
    }

    /// A statement of the task's run failed: retried like a model failure.
    pub(crate) fn store_failed(&self, task: &ClaimedTask, e: &DbError) -> Outcome {
        tracing::warn!(task = %task.id, attempt = task.attempts, error = %Chain(e), "task attempt could not store its run");
        self.attempt_failed(
            task,
            "store_error: the run's steps could not be stored (details in the function's log)".into(),
        )
    }

    fn attempt_failed(&self, task: &ClaimedTask, error: String) -> Outcome {
        if task.attempts >= task.max_attempts {
            Outcome::Failed { error }
        } else {
            Outcome::Retry {
                error,
                delay_secs: self.settings.retry_delay(task.attempts).as_secs_f64(),
            }
        }
    }
}

/// The series rule for one ending: the next occurrence, or none for a task that does not recur
/// or whose cron no longer evaluates (logged; the caller counts the series as ended).
pub(crate) fn next_occurrence(
    settings: &Settings,
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
        settings.series_failure_limit,
    )
    .inspect_err(|e| tracing::warn!(task = %id, error = %Chain(e), "recurrence not scheduled"))
    .ok()
    .flatten()
}

pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = truncate(text);
        assert_eq!(cut.len(), MAX_TEXT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into()), "short");
    }
}
