//! `/api/tasks`: the caller's tasks, created with validation under per-user limits, listed, read,
//! and approved, rejected or cancelled by guarded statements (never lost to a racing scheduler
//! run). [`request`] reads what is asked, [`store`] runs the statements, [`view`] shows tasks;
//! this module holds the rules between them: the limits, and what a decision means.

pub mod request;
pub mod store;
pub mod view;

use chrono::Utc;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::Sql;
use shared::http::ApiError;
use shared::live::Connections;
use shared::tasks::series::{self, Ending, Scope};
use shared::tasks::{decide_with_connections, task_state, Decision, TaskStatus};
use shared::telemetry::Chain;

pub use request::{parse, Filter, NewTask, TaskBody};
pub use store::{
    admission, approve, insert, lock_user, one, one_sql, page, page_sql, Admission, Created, Insert, Quota, Task,
    PREVIEW_CHARS,
};
pub use view::TaskView;

/// `Retry-After` of a creation refused for too many active tasks: they end when they run, so
/// there is no exact time; a minute is a polite pace to ask again.
const ACTIVE_TASKS_RETRY_SECS: u64 = 60;

/// Creates the task under the caller's limits, in the caller's transaction (`sql`): the
/// creations of one user are serialised, then counted, then the task is inserted (or found by
/// its Idempotency-Key). A refusal by the limits is an error; a reused key or an unknown agent is
/// what [`Created`] says, once the transaction is over.
#[tracing::instrument(skip_all)]
pub async fn create<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    task: &Insert<'_>,
    quota: Quota,
) -> Result<Created, ApiError> {
    lock_user(sql, user).await?;
    match admission(sql, user, task.key, quota).await? {
        Admission::Admitted => Ok(insert(sql, user, task).await?),
        Admission::RateLimited { retry_after_secs } => Err(ApiError::TooManyRequests { retry_after_secs }),
        Admission::TooManyActive { active } => Err(ApiError::QuotaExceeded {
            code: "too_many_active_tasks",
            message: format!(
                "{active} of your tasks are pending or running; the limit is {}: cancel some or wait for them to finish",
                quota.max_active
            ),
            retry_after_secs: ACTIVE_TASKS_RETRY_SECS,
        }),
    }
}

impl Created {
    /// The task and whether it was inserted now, with the owner's live connections; a reused
    /// Idempotency-Key (422) or an unknown agent (404) as the error it is.
    pub fn into_task(self) -> Result<(Box<Task>, bool, Connections), ApiError> {
        match self {
            Created::Task {
                task,
                fresh,
                connections,
            } => Ok((task, fresh, connections)),
            Created::KeyReused => Err(ApiError::key_reused()),
            Created::AgentNotFound => Err(ApiError::NotFoundWith("agent not found")),
        }
    }
}

/// A person's decision on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Reject,
    Cancel,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Reject => "rejected",
            Action::Cancel => "cancelled",
        }
    }
}

/// Approve, reject or cancel task `id` of `user`: one guarded statement; 409 naming the current
/// state when the decision no longer applies (the scheduler claimed the task meanwhile, it
/// ended, or it was decided already). The task as it is after, and the owner's live connections.
#[tracing::instrument(skip_all)]
pub async fn decide<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    id: Uuid,
    action: Action,
) -> Result<(Task, Connections), ApiError> {
    let not_found = || ApiError::NotFoundWith("task not found");
    let (decided, connections) = match action {
        Action::Approve => match approve(sql, user, id).await? {
            Some((task, connections)) => return Ok((task, connections)),
            None => (false, Connections::default()),
        },
        Action::Reject | Action::Cancel => {
            let state = task_state(sql, id, Some(user)).await?.ok_or_else(not_found)?;
            // Cancelling an occurrence of a series cancels the series; rejecting one rejects
            // that occurrence (the next one asks again).
            let (decision, ending, scope) = match action {
                Action::Reject => (Decision::Reject, Ending::Rejected, Scope::Occurrence),
                _ if state.schedule.cron.is_some() => (Decision::Cancel, Ending::Cancelled, Scope::Series),
                _ => (Decision::Cancel, Ending::Cancelled, Scope::Occurrence),
            };
            let next = state.schedule.occurrence().and_then(|o| {
                series::next(&o, ending, scope, Utc::now(), i32::MAX).unwrap_or_else(|e| {
                    // Its schedule was checked at creation: the series simply ends here.
                    tracing::warn!(task = %id, error = %Chain(&e), "no next occurrence after a decision");
                    None
                })
            });
            if state.status == TaskStatus::Pending {
                decide_with_connections(sql, id, Some(user), decision, scope, next.as_ref()).await?
            } else {
                (false, Connections::default())
            }
        }
    };
    let current = one(sql, user, id).await?.ok_or_else(not_found)?;
    if decided {
        return Ok((current, connections));
    }
    Err(ApiError::Conflict(if current.status == TaskStatus::Pending {
        format!(
            "the task cannot be {} now: its approval is already {}",
            action.past(),
            current.approval_status.as_str()
        )
    } else {
        format!(
            "the task cannot be {} now: it is {}",
            action.past(),
            current.status.as_str()
        )
    }))
}
