//! The JSON of the task routes: a task (with its series and next occurrence), and pages of them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use shared::http::Timestamp;
use shared::tasks::recurrence::{next_occurrence, RecurrenceError};
use shared::telemetry::Chain;

use super::store::Task;
use crate::cursor::{Page, PageView};

/// A task as every task route shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView<'a> {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub prompt: &'a str,
    pub status: &'static str,
    pub approval_status: &'static str,
    pub scheduled_for: Timestamp,
    pub cron: Option<&'a str>,
    pub time_zone: Option<&'a str>,
    /// Its series (the first occurrence's id) when it recurs; `null` for a one-off task.
    pub series_id: Option<Uuid>,
    /// The series' next slot after this occurrence (whether or not it exists yet).
    pub next_occurrence_at: Option<Timestamp>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<&'a str>,
    pub result: Option<&'a str>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Present (true) only on a list item whose `result` or `lastError` is a preview.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl<'a> TaskView<'a> {
    pub fn of(task: &'a Task, now: DateTime<Utc>) -> Self {
        Self {
            id: task.id,
            agent_id: task.agent_id,
            prompt: &task.prompt,
            status: task.status.as_str(),
            approval_status: task.approval_status.as_str(),
            scheduled_for: task.scheduled_for.into(),
            cron: task.cron.as_deref(),
            time_zone: task.time_zone.as_deref(),
            series_id: task.series_id.or(task.cron.as_ref().map(|_| task.id)),
            next_occurrence_at: next_slot(task, now).map(Timestamp),
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            last_error: task.last_error.as_deref(),
            result: task.result.as_deref(),
            created_at: task.created_at.into(),
            updated_at: task.updated_at.into(),
            truncated: task.truncated,
        }
    }

    /// `{"tasks": [...], "next": ...}`, newest first.
    pub fn page(page: &'a Page<Task>, now: DateTime<Utc>) -> PageView<Self> {
        page.view("tasks", |t| TaskView::of(t, now))
    }
}

/// The next slot of a recurring task after its own. None when it does not recur or its schedule
/// has no future slot; a stored schedule that no longer parses (it did when created) is logged.
fn next_slot(task: &Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = task.cron.as_deref()?;
    match next_occurrence(cron, task.time_zone.as_deref(), task.scheduled_for, now) {
        Ok(at) => Some(at),
        Err(RecurrenceError::NoNext(_)) => None,
        Err(e) => {
            tracing::warn!(task = %task.id, error = %Chain(&e), "a stored schedule does not parse");
            None
        }
    }
}
