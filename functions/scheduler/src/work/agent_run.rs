//! A task of an agent with tools: the agent's run ([`shared::agent::run`]) begun, or resumed
//! from the steps an earlier attempt stored, within the task's budget; its end becomes the
//! task's outcome and the run's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use shared::agent::run::{drive, Calls, End, Limits, Run, RunError, Tool};
use shared::agent::settings::RunSettings;
use shared::agent::store::{self, DbSteps, Place, OPERATOR};
use shared::agent::toolbox;
use shared::db::{Db, DbError};
use shared::model::{ChatMessage, ModelError, Role};
use shared::telemetry::Chain;

use super::runner::{truncate, Runner};
use crate::tasks::{ClaimedTask, Outcome};

/// Each agent's tools, read once per invocation (`None`: an agent without tools or tool sources).
#[derive(Default)]
pub(crate) struct Toolboxes(Mutex<HashMap<Uuid, Option<Arc<Vec<Tool>>>>>);

impl Toolboxes {
    /// The tools of `agent`, its MCP sources' listed after the connection is given back
    /// (`None`: its tasks are one model call).
    pub(crate) async fn of(
        &self,
        runner_db: &Db,
        settings: &RunSettings,
        agent: Uuid,
    ) -> Result<Option<Arc<Vec<Tool>>>, DbError> {
        if let Some(tools) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&agent) {
            return Ok(tools.clone());
        }
        let (tools, sources) = {
            let conn = runner_db.conn().await?;
            let sql = conn.sql();
            (
                store::tools_of(&sql, agent).await?,
                store::sources_of(&sql, agent).await?,
            )
        };
        let tools = if tools.is_empty() && sources.is_empty() {
            None
        } else {
            let key = settings.seal_key.as_deref();
            Some(Arc::new(
                toolbox::with_sources(tools, agent, &sources, key, settings.caller()).await,
            ))
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent, tools.clone());
        Ok(tools)
    }
}

/// The calls a paused run waits on.
struct Pause {
    waiting: Vec<String>,
    unknown: Vec<String>,
}

/// Runs `task`'s agent with `tools` within `budget`: the task's outcome.
pub(crate) async fn run(runner: &Runner<'_>, task: &ClaimedTask, tools: &[Tool], budget: Duration) -> Outcome {
    let begun = async {
        let conn = runner.db.conn().await?;
        store::begin_task_run(&conn.sql(), task.id, task.agent_id, task.user_id).await
    };
    let stored = match begun.await {
        Ok(stored) => stored,
        Err(e) => return runner.store_failed(task, &e),
    };
    // A task's own run starts from its prompt; a chat turn's run it resumes, from the
    // conversation before the run.
    let mut history = if stored.conversation.is_some() {
        stored.before
    } else {
        vec![ChatMessage::text(Role::User, task.prompt.as_str())]
    };
    history.extend(stored.messages);
    let settings = &runner.settings.runs;
    let limits = Limits {
        max_steps: settings.max_steps,
        parallel_calls: settings.parallel_calls,
        deadline: Instant::now() + budget,
        calls: Calls::Whole,
    };
    let steps = DbSteps {
        db: runner.db,
        place: Place {
            run: stored.id,
            user: task.user_id.unwrap_or(OPERATOR),
            // A chat turn's run: its answer lands in its conversation.
            conversation: stored.conversation,
        },
        answer_stored_apart: false,
    };
    let run = Run {
        id: stored.id,
        agent_id: task.agent_id,
        user_id: task.user_id,
        instructions: &task.instructions,
        history,
        steps: stored.steps,
        usage: stored.usage,
        decisions: stored.decisions,
        calls: stored.calls,
    };
    let result = drive(
        runner.model.as_ref(),
        tools,
        settings.caller(),
        limits,
        run,
        &steps,
        None,
    )
    .await;
    let (outcome, pause) = match result {
        Ok(done) => match done.end {
            End::Answered { text, model } => (
                Outcome::Completed {
                    result: truncate(text),
                    usage: done.usage,
                    model,
                },
                None,
            ),
            End::StepLimit => (
                Outcome::Failed {
                    error: format!(
                        "step_limit: the agent made {} model calls (AGENT_MAX_STEPS) without a final answer",
                        done.steps
                    ),
                },
                None,
            ),
            End::AwaitingApproval { calls, unknown } => (
                Outcome::AwaitingApproval,
                Some(Pause {
                    waiting: calls.into_iter().map(|c| c.id).collect(),
                    unknown: unknown.into_iter().map(|c| c.id).collect(),
                }),
            ),
        },
        Err(RunError::Model(e)) => (runner.model_failed(task, &e), None),
        Err(RunError::Store(e)) => (runner.store_failed(task, &e), None),
        // The task's own bound: a timeout like a model call's. The invocation's end: handed
        // back, to resume from its stored steps in the next one.
        Err(RunError::Deadline) if budget >= runner.settings.task_timeout => (
            runner.model_failed(task, &ModelError::Timeout(budget.as_millis() as u64)),
            None,
        ),
        Err(RunError::Deadline) => (Outcome::Release, None),
    };
    let status = match &outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::Failed { error } if error.starts_with("step_limit") => "step_limit",
        Outcome::Failed { .. } => "failed",
        Outcome::AwaitingApproval => "awaiting_approval",
        // Left as the next attempt finds it.
        Outcome::Retry { .. } | Outcome::Release | Outcome::Throttled { .. } => return outcome,
    };
    let error = match &outcome {
        Outcome::Failed { error } => Some(error.as_str()),
        _ => None,
    };
    let ended = async {
        let conn = runner.db.conn().await?;
        match &pause {
            Some(p) => store::pause(&conn.sql(), stored.id, settings.approval_ttl, &p.waiting, &p.unknown).await,
            None => store::end_run(&conn.sql(), stored.id, status, error, None).await,
        }
    };
    if let Err(e) = ended.await {
        // The task's outcome is what users read; the run's row catches up at its next attempt.
        tracing::warn!(task = %task.id, run = %stored.id, error = %Chain(&e), "the run's end was not stored");
    }
    outcome
}
