//! Routing, authentication and the JSON answers of the API function.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};
use uuid::Uuid;

use shared::auth::{authenticate_request, Authenticator, User};
use shared::db::{Db, DbError};
use shared::http::{idempotency_key, json_body, json_response, serve, ApiError};
use shared::live::{Connections, Delivery, LiveEvent, Publisher};
use shared::metrics::Metrics;
use shared::tasks::series::{self, Ending, Scope};
use shared::tasks::{decide_with_connections, task_state, Decision, TaskStatus};

use crate::conversations;
use crate::cursor::Cursor;
use crate::query::Query;
use crate::settings::Settings;
use crate::tasks::{self, Admission, Created, Filter, Quota, Task};
use crate::{agents, tasks::NewTask, usage};

/// `Retry-After` of a creation refused for too many active tasks: they end when they run, so
/// there is no exact time; a minute is a polite pace to ask again.
const ACTIVE_TASKS_RETRY_SECS: u64 = 60;

/// The API function's state, built once per instance.
pub struct Api {
    pub db: Db,
    pub auth: Authenticator,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Live updates (off when `LIVE_ENDPOINT` is unset).
    pub live: Publisher,
}

/// A person's decision on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
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

/// The routes; ids are still text (a malformed one is a 404, like a missing one).
enum Route<'a> {
    Agents,
    Conversations,
    Messages(&'a str),
    ListTasks,
    CreateTask,
    Task(&'a str),
    Decide(&'a str, Action),
    Usage,
}

fn route<'a>(segments: &[&'a str], method: &Method) -> Result<Route<'a>, ApiError> {
    let only = |allowed: Method, route: Route<'a>| {
        if *method == allowed {
            Ok(route)
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    };
    match segments {
        ["", "api", "agents"] => only(Method::GET, Route::Agents),
        ["", "api", "conversations"] => only(Method::GET, Route::Conversations),
        ["", "api", "conversations", id, "messages"] => only(Method::GET, Route::Messages(id)),
        ["", "api", "tasks"] if *method == Method::POST => Ok(Route::CreateTask),
        ["", "api", "tasks"] => only(Method::GET, Route::ListTasks),
        ["", "api", "tasks", id] => only(Method::GET, Route::Task(id)),
        ["", "api", "tasks", id, "approve"] => only(Method::POST, Route::Decide(id, Action::Approve)),
        ["", "api", "tasks", id, "reject"] => only(Method::POST, Route::Decide(id, Action::Reject)),
        ["", "api", "tasks", id, "cancel"] => only(Method::POST, Route::Decide(id, Action::Cancel)),
        ["", "api", "usage"] => only(Method::GET, Route::Usage),
        _ => Err(ApiError::NotFound),
    }
}

/// The Lambda handler.
pub async fn handle(api: &Api, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    serve(&api.db, &api.metrics, request, |request, id| async move {
        respond(api, &request, &id).await
    })
    .await
}

async fn respond(api: &Api, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let route = route(&segments, request.method())?;
    let user = authenticate_request(&api.auth, request).await?;
    let ok = |body: Value| Ok(json_response(StatusCode::OK, &body, request_id));
    match route {
        Route::Agents => {
            Query::of(request, &[])?;
            let agents = {
                let conn = api.db.conn().await?;
                agents::usable(&conn.sql(), user.id).await?
            };
            ok(json!({ "agents": agents.iter().map(agents::Agent::json).collect::<Vec<_>>() }))
        }
        Route::Conversations => {
            let q = Query::of(request, &["agentId", "limit", "before"])?;
            let (agent, before, limit) = (q.uuid("agentId")?, q.before()?, q.limit(&api.settings)?);
            let page = {
                let conn = api.db.conn().await?;
                conversations::page(&conn.sql(), user.id, agent, before, limit + 1).await?
            };
            ok(paged(
                "conversations",
                page,
                limit,
                conversations::Conversation::cursor,
                conversations::Conversation::json,
            ))
        }
        Route::Messages(id) => {
            let q = Query::of(request, &["limit", "before"])?;
            let (before, limit) = (q.before()?, q.limit(&api.settings)?);
            let id = path_id(id)?;
            let window = {
                let conn = api.db.conn().await?;
                conversations::messages(&conn.sql(), user.id, id, before, limit + 1).await?
            };
            let window = window.ok_or(ApiError::NotFoundWith("conversation not found"))?;
            // Fetched newest first; shown oldest to newest, `next` pointing further back.
            let mut body = paged(
                "messages",
                window,
                limit,
                conversations::Message::cursor,
                conversations::Message::json,
            );
            if let Some(list) = body["messages"].as_array_mut() {
                list.reverse();
            }
            ok(body)
        }
        Route::ListTasks => {
            let q = Query::of(request, &["status", "approval", "limit", "before"])?;
            let filter = Filter {
                status: q.choice("status", &["pending", "running", "completed", "failed", "cancelled"])?,
                approval: q.choice("approval", &["pending", "approved", "rejected"])?,
            };
            let (before, limit) = (q.before()?, q.limit(&api.settings)?);
            let page = {
                let conn = api.db.conn().await?;
                tasks::page(&conn.sql(), user.id, &filter, before, limit + 1).await?
            };
            let now = Utc::now();
            ok(paged("tasks", page, limit, Task::cursor, |t| t.json(now)))
        }
        Route::CreateTask => create_task(api, request, user, request_id).await,
        Route::Task(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let task = {
                let conn = api.db.conn().await?;
                tasks::one(&conn.sql(), user.id, id).await?
            };
            let task = task.ok_or(ApiError::NotFoundWith("task not found"))?;
            ok(task.json(Utc::now()))
        }
        Route::Decide(id, action) => {
            Query::of(request, &[])?;
            let (task, connections) = decide_task(api, user, path_id(id)?, action).await?;
            // Committed, and the connection given back: the owner's other tabs hear of it.
            publish_task(api, &task, connections).await;
            ok(task.json(Utc::now()))
        }
        Route::Usage => {
            let q = Query::of(request, &["days"])?;
            let days = q.days()?;
            let usage = {
                let conn = api.db.conn().await?;
                usage::usage(&conn.sql(), user.id, days, api.settings.daily_tokens).await?
            };
            // Plain strings and numbers: serialising cannot fail; if it did, a 500, never a panic.
            ok(serde_json::to_value(&usage).map_err(|e| ApiError::Database(DbError::Other(e.to_string())))?)
        }
    }
}

/// A path id: a malformed one names no row of the caller's, like a missing one.
fn path_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

/// `{name: [...], "next": cursor or null}` from `limit + 1` fetched items.
fn paged<T>(name: &str, mut items: Vec<T>, limit: i64, cursor: fn(&T) -> Cursor, json: impl Fn(&T) -> Value) -> Value {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|i| cursor(i).encode())
    } else {
        None
    };
    json!({ name: items.iter().map(json).collect::<Vec<_>>(), "next": next })
}

async fn create_task(api: &Api, request: &Request, user: User, request_id: &str) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let body = json_body(request, api.settings.max_body_bytes)?;
    let now = Utc::now();
    let input: NewTask = tasks::parse(body, &api.settings, now)?;
    let key = idempotency_key(request)?;
    let due = input.first_due(now)?;
    let quota = Quota {
        max_active: api.settings.max_active_tasks,
        rate_limit: api.settings.task_rate_limit,
        rate_window_secs: api.settings.task_rate_window.as_secs_f64(),
    };
    let created = {
        let mut conn = api.db.conn().await?;
        let tx = conn.transaction().await?;
        let sql = tx.sql();
        tasks::lock_user(&sql, user.id).await?;
        match tasks::admission(&sql, user.id, key.as_deref(), quota).await? {
            Admission::Admitted => {}
            Admission::RateLimited { retry_after_secs } => {
                return Err(ApiError::TooManyRequests { retry_after_secs });
            }
            Admission::TooManyActive { active } => {
                return Err(ApiError::QuotaExceeded {
                    code: "too_many_active_tasks",
                    message: format!(
                        "{active} of your tasks are pending or running; the limit is {}: cancel some or wait for them to finish",
                        quota.max_active
                    ),
                    retry_after_secs: ACTIVE_TASKS_RETRY_SECS,
                });
            }
        }
        let created = tasks::create(&sql, user.id, &input, due, key.as_deref()).await?;
        drop(sql);
        tx.commit().await?;
        created
    };
    match created {
        Created::Task(task, fresh, connections) => {
            if fresh {
                publish_task(api, &task, connections).await;
            }
            let mut response = json_response(StatusCode::CREATED, &task.json(now), request_id);
            if !fresh {
                // The task this Idempotency-Key created before, as it is now.
                response.headers_mut().insert(
                    "idempotent-replayed",
                    lambda_http::http::HeaderValue::from_static("true"),
                );
            }
            Ok(response)
        }
        Created::KeyReused => Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".into(),
        )),
        Created::AgentNotFound => Err(ApiError::NotFoundWith("agent not found")),
    }
}

/// `task.updated` to the owner's live connections (bounded; never the request's failure).
async fn publish_task(api: &Api, task: &Task, connections: Connections) {
    if api.live.is_on() && !connections.is_empty() {
        let delivery = Delivery {
            event: LiveEvent::task(task.id, &task.status, task.updated_at),
            to: connections,
        };
        api.live.publish(&api.db, &[delivery]).await;
    }
}

/// Approve, reject or cancel: one guarded statement; 409 naming the current state when the
/// decision no longer applies (the scheduler claimed the task meanwhile, it ended, or it was
/// decided already).
async fn decide_task(api: &Api, user: User, id: Uuid, action: Action) -> Result<(Task, Connections), ApiError> {
    let conn = api.db.conn().await?;
    let sql = conn.sql();
    let mut connections = Connections::default();
    let (decided, current) = match action {
        Action::Approve => match tasks::approve(&sql, user.id, id).await? {
            Some((task, live)) => {
                connections = live;
                (true, Some(task))
            }
            None => (false, tasks::one(&sql, user.id, id).await?),
        },
        Action::Reject | Action::Cancel => {
            let state = task_state(&sql, id, Some(user.id))
                .await?
                .ok_or(ApiError::NotFoundWith("task not found"))?;
            // Cancelling an occurrence of a series cancels the series; rejecting one rejects
            // that occurrence (the next one asks again).
            let (decision, ending, scope) = match action {
                Action::Reject => (Decision::Reject, Ending::Rejected, Scope::Occurrence),
                _ if state.schedule.cron.is_some() => (Decision::Cancel, Ending::Cancelled, Scope::Series),
                _ => (Decision::Cancel, Ending::Cancelled, Scope::Occurrence),
            };
            let next = state
                .schedule
                .occurrence()
                .and_then(|o| series::next(&o, ending, scope, Utc::now(), i32::MAX).ok().flatten());
            let ended = if state.status == TaskStatus::Pending {
                let (ended, live) =
                    decide_with_connections(&sql, id, Some(user.id), decision, scope, next.as_ref()).await?;
                connections = live;
                ended
            } else {
                false
            };
            (ended, tasks::one(&sql, user.id, id).await?)
        }
    };
    let current = current.ok_or(ApiError::NotFoundWith("task not found"))?;
    if decided {
        return Ok((current, connections));
    }
    Err(ApiError::Conflict(if current.status == "pending" {
        format!(
            "the task cannot be {} now: its approval is already {}",
            action.past(),
            current.approval_status
        )
    } else {
        format!("the task cannot be {} now: it is {}", action.past(), current.status)
    }))
}
