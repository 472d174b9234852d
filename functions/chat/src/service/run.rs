//! A turn of an agent with tools: the agent's loop ([`shared::agent::run`]) within the turn's
//! bound, whole or streamed, its tool-calling steps stored in the conversation as they complete
//! (no connection held while the model or a tool works). It answers (round trip 2 stores the
//! answer once, with the Idempotency-Key, and ends the run), or pauses for a person's approval
//! of a call, or ends at the step limit; a failure releases the turn like a failed model call.

use shared::agent::run::{drive, Calls, End, Event, Limits, Run, RunError};
use shared::agent::store::{self, DbSteps, Place};
use shared::agent::toolbox;
use shared::http::ApiError;
use shared::model::{Reply, ToolCall};
use shared::telemetry::Chain;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use uuid::Uuid;

use super::call::model_error;
use super::end::{or_release, release_turn, store};
use super::{Answer, Chat, Prepared};

/// How a run of a turn ended.
pub(crate) enum Ran {
    Answered(Answer),
    /// Calls wait for a person (`POST /api/runs/{run}/tool-calls/{call}/approve|reject`).
    AwaitingApproval {
        run_id: Uuid,
        calls: Vec<ToolCall>,
    },
}

/// Runs the turn's agent: `calls` says whether the model's text is streamed (to `events`, with
/// the tool calls and results). `reply_id`: the id the answer is stored under (the stream's
/// `meta` announced it).
pub(crate) async fn run(
    chat: &Chat,
    turn: &Prepared,
    calls: Calls,
    events: Option<&UnboundedSender<Event>>,
    reply_id: Option<Uuid>,
) -> Result<Ran, ApiError> {
    let Some(agent) = &turn.run else {
        return Err(ApiError::Internal(
            "a turn without tools was run as an agent's run".into(),
        ));
    };
    // No connection is held while the model or a tool works (release mode closes the client).
    chat.db.release_idle();
    let settings = &chat.settings.runs;
    let limits = Limits {
        max_steps: settings.max_steps,
        parallel_calls: settings.parallel_calls,
        deadline: Instant::now() + turn.model_timeout,
        calls,
    };
    let steps = DbSteps {
        db: &chat.db,
        place: Place {
            run: agent.id,
            user: turn.user.id,
            conversation: Some(turn.conversation_id),
        },
        answer_stored_apart: true,
    };
    let run = Run {
        id: agent.id,
        agent_id: turn.agent_id,
        user_id: Some(turn.user.id),
        instructions: &turn.model_request.instructions,
        history: turn.model_request.messages.clone(),
        steps: 0,
        usage: None,
        decisions: Default::default(),
        calls: Default::default(),
    };
    // The MCP sources' tools, listed now that no connection is held.
    let key = settings.seal_key.as_deref();
    let tools = toolbox::with_sources(
        agent.tools.clone(),
        turn.agent_id,
        &agent.sources,
        key,
        settings.caller(),
    )
    .await;
    let ran = drive(
        chat.model.as_ref(),
        &tools,
        settings.caller(),
        limits,
        run,
        &steps,
        events,
    )
    .await;
    let done = match ran {
        Ok(done) => done,
        Err(e) => {
            let error = match e {
                RunError::Model(e) => model_error(e),
                RunError::Deadline => ApiError::ModelTimeout,
                RunError::Store(e) => ApiError::Database(e),
            };
            end(chat, agent.id, "failed", Some(error.public_message()), None).await;
            return or_release(chat, turn, Err(error)).await;
        }
    };
    match done.end {
        End::Answered { text, model } => {
            let reply = Reply {
                text,
                tool_calls: Vec::new(),
                usage: done.usage,
                model,
            };
            let answer = store(chat, turn, &reply, reply_id, Some((agent.id, done.steps))).await?;
            Ok(Ran::Answered(answer))
        }
        End::StepLimit => {
            let error = ApiError::StepLimit(done.steps);
            end(chat, agent.id, "step_limit", Some(error.to_string()), None).await;
            or_release(chat, turn, Err(error)).await
        }
        End::AwaitingApproval { calls, unknown } => {
            let ids = |calls: &[ToolCall]| calls.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
            let paused = async {
                let conn = chat.db.conn().await?;
                store::pause(
                    &conn.sql(),
                    agent.id,
                    settings.approval_ttl,
                    &ids(&calls),
                    &ids(&unknown),
                )
                .await
            };
            if let Err(e) = paused.await {
                tracing::warn!(run = %agent.id, error = %Chain(&e), "the run's pause was not stored");
            }
            // The turn is over for now: its lease and in-flight slot go back.
            release_turn(chat, turn.user.id, Some(turn.message_id), turn.lease).await;
            Ok(Ran::AwaitingApproval {
                run_id: agent.id,
                calls,
            })
        }
    }
}

/// Best effort: the run's status (a failure is logged; the answer the caller gets stands).
async fn end(chat: &Chat, run: Uuid, status: &str, error: Option<String>, pause: Option<std::time::Duration>) {
    let ended = async {
        let conn = chat.db.conn().await?;
        store::end_run(&conn.sql(), run, status, error.as_deref(), pause).await
    }
    .await;
    if let Err(e) = ended {
        tracing::warn!(run = %run, error = %Chain(&e), "the run's end was not stored");
    }
}
