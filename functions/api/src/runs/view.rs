//! The JSON of the run routes: a run, its steps in order and the calls waiting for a decision.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use shared::http::Timestamp;

use super::store::{AwaitingCall, Run, StepRow};

/// A run as `GET /api/runs/{id}` and the decision routes show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView<'a> {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub task_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub status: &'a str,
    pub last_error: Option<&'a str>,
    pub paused_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub steps: Vec<StepView<'a>>,
    pub awaiting: Vec<AwaitingView<'a>>,
}

/// One step message: the assistant's (its text and calls) or a call's result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView<'a> {
    pub step: i32,
    pub role: &'a str,
    pub content: &'a str,
    pub tool_calls: Option<&'a Value>,
    pub tool_call_id: Option<&'a str>,
    pub created_at: Timestamp,
}

/// A call waiting for a person's decision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingView<'a> {
    pub tool_call_id: &'a str,
    pub name: &'a str,
    pub arguments: &'a Value,
    pub reason: &'a str,
}

impl<'a> RunView<'a> {
    pub fn of(run: &'a Run) -> Self {
        let r = &run.row;
        Self {
            id: r.id,
            agent_id: r.agent_id,
            task_id: r.task_id,
            conversation_id: r.conversation_id,
            status: &r.status,
            last_error: r.last_error.as_deref(),
            paused_until: r.paused_until.map(Timestamp),
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
            steps: run.steps.iter().map(StepView::of).collect(),
            awaiting: run.awaiting.iter().map(AwaitingView::of).collect(),
        }
    }
}

impl<'a> StepView<'a> {
    fn of(step: &'a StepRow) -> Self {
        Self {
            step: step.step,
            role: &step.role,
            content: &step.content,
            tool_calls: step.tool_calls.as_ref(),
            tool_call_id: step.tool_call_id.as_deref(),
            created_at: step.created_at.into(),
        }
    }
}

impl<'a> AwaitingView<'a> {
    fn of(call: &'a AwaitingCall) -> Self {
        Self {
            tool_call_id: &call.tool_call_id,
            name: &call.name,
            arguments: &call.arguments,
            reason: &call.reason,
        }
    }
}
