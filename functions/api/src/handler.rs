//! Routing and authentication of the API function: each route reads its query (and body), runs
//! its resource's statements on a pooled connection given back before answering, and answers
//! the resource's view.

use chrono::Utc;
use lambda_http::http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use uuid::Uuid;

use shared::auth::{authenticate_request, Authenticator, User};
use shared::db::Db;
use shared::http::{idempotency_key, json_body, serve, view_response, ApiError};
use shared::live::{Connections, Delivery, LiveEvent, Publisher};
use shared::metrics::Metrics;
use shared::telemetry::Chain;

use crate::agents::{self, AgentsView, OwnedAgentView};
use crate::conversations::{self, ConversationView, ConversationsQuery, MessageView, MessagesQuery};
use crate::query::Query;
use crate::runs::{self, RunView, Verdict};
use crate::settings::Settings;
use crate::tasks::{self, Action, Filter, Insert, Quota, Task, TaskView};
use crate::tool_sources::{self, SourceToolsView, SourcesView};
use crate::tools::{self, ToolsView};
use crate::usage::{self, UsageQuery, UsageView};

/// The API function's state, built once per instance.
pub struct Api {
    pub db: Db,
    pub auth: Authenticator,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Live updates (off when `LIVE_ENDPOINT` is unset).
    pub live: Publisher,
}

/// The routes; ids are still text (a malformed one is a 404, like a missing one).
enum Route<'a> {
    Agents,
    CreateAgent,
    UpdateAgent(&'a str),
    Tools(&'a str),
    ReplaceTools(&'a str),
    ToolSources(&'a str),
    SourceTools(&'a str, &'a str),
    ReplaceToolSources(&'a str),
    Conversations,
    Messages(&'a str),
    ListTasks,
    CreateTask,
    Task(&'a str),
    Decide(&'a str, Action),
    Run(&'a str),
    DecideCall(&'a str, &'a str, Verdict),
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
        ["", "api", "agents"] if *method == Method::POST => Ok(Route::CreateAgent),
        ["", "api", "agents"] => only(Method::GET, Route::Agents),
        ["", "api", "agents", id] => only(Method::PATCH, Route::UpdateAgent(id)),
        ["", "api", "agents", id, "tools"] if *method == Method::PUT => Ok(Route::ReplaceTools(id)),
        ["", "api", "agents", id, "tools"] => only(Method::GET, Route::Tools(id)),
        ["", "api", "agents", id, "tool-sources"] if *method == Method::PUT => Ok(Route::ReplaceToolSources(id)),
        ["", "api", "agents", id, "tool-sources"] => only(Method::GET, Route::ToolSources(id)),
        ["", "api", "agents", id, "tool-sources", name, "tools"] => only(Method::GET, Route::SourceTools(id, name)),
        ["", "api", "conversations"] => only(Method::GET, Route::Conversations),
        ["", "api", "conversations", id, "messages"] => only(Method::GET, Route::Messages(id)),
        ["", "api", "tasks"] if *method == Method::POST => Ok(Route::CreateTask),
        ["", "api", "tasks"] => only(Method::GET, Route::ListTasks),
        ["", "api", "tasks", id] => only(Method::GET, Route::Task(id)),
        ["", "api", "tasks", id, "approve"] => only(Method::POST, Route::Decide(id, Action::Approve)),
        ["", "api", "tasks", id, "reject"] => only(Method::POST, Route::Decide(id, Action::Reject)),
        ["", "api", "tasks", id, "cancel"] => only(Method::POST, Route::Decide(id, Action::Cancel)),
        ["", "api", "runs", id] => only(Method::GET, Route::Run(id)),
        ["", "api", "runs", id, "tool-calls", call, "approve"] => {
            only(Method::POST, Route::DecideCall(id, call, Verdict::Approve))
        }
        ["", "api", "runs", id, "tool-calls", call, "reject"] => {
            only(Method::POST, Route::DecideCall(id, call, Verdict::Reject))
        }
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
    match route {
        Route::Agents => {
            Query::of(request, &[])?;
            let agents = {
                let conn = api.db.conn().await?;
                agents::usable(&conn.sql(), user.id).await?
            };
            ok(&AgentsView::of(&agents), request_id)
        }
        Route::CreateAgent => {
            Query::of(request, &[])?;
            let agent = agents::parse_new(json_body(request, api.settings.max_body_bytes)?)?;
            let created = {
                let mut conn = api.db.conn().await?;
                let tx = conn.transaction().await?;
                let created = agents::create(&tx.sql(), user.id, &agent).await?;
                tx.commit().await?;
                created
            };
            Ok(view_response(
                StatusCode::CREATED,
                &OwnedAgentView::of(&created),
                request_id,
            ))
        }
        Route::UpdateAgent(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let patch = agents::parse_patch(json_body(request, api.settings.max_body_bytes)?)?;
            let updated = {
                let conn = api.db.conn().await?;
                agents::update(&conn.sql(), user.id, id, &patch).await?
            };
            let updated = updated.ok_or(ApiError::NotFoundWith("agent not found"))?;
            ok(&OwnedAgentView::of(&updated), request_id)
        }
        Route::Tools(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let listed = {
                let conn = api.db.conn().await?;
                tools::list(&conn.sql(), user.id, id).await?
            };
            let listed = listed.ok_or(ApiError::NotFoundWith("agent not found"))?;
            ok(&ToolsView::of(&listed), request_id)
        }
        Route::ReplaceTools(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let asked = tools::parse(
                json_body(request, api.settings.max_body_bytes)?,
                &api.settings.tool_policy,
            )?;
            let replaced = {
                let mut conn = api.db.conn().await?;
                let tx = conn.transaction().await?;
                let replaced = tools::replace(&tx.sql(), user.id, id, &asked).await?;
                tx.commit().await?;
                replaced
            };
            ok(&ToolsView::of(&replaced), request_id)
        }
        Route::ToolSources(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let listed = {
                let conn = api.db.conn().await?;
                tool_sources::list(&conn.sql(), user.id, id).await?
            };
            let listed = listed.ok_or(ApiError::NotFoundWith("agent not found"))?;
            ok(&SourcesView::of(&listed), request_id)
        }
        Route::SourceTools(id, name) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let row = {
                let conn = api.db.conn().await?;
                tool_sources::sealed(&conn.sql(), user.id, id, name).await?
            };
            let row = row.ok_or(ApiError::NotFoundWith("tool source not found"))?;
            // In release mode no pooler client is held while the MCP server works (warm mode,
            // the api's default, keeps its one idle client: no statement runs meanwhile).
            api.db.release_idle();
            let source = row
                .open(id, api.settings.seal_key.as_deref())
                .map_err(|e| ApiError::Upstream(format!("the source cannot be used: {e}")))?;
            let mcp = api
                .settings
                .mcp()
                .ok_or_else(|| ApiError::Upstream("no client for MCP servers on this deployment".into()))?;
            let tools = mcp
                .tools(&source)
                .await
                .map_err(|e| ApiError::Upstream(format!("the MCP server could not be listed: {}", Chain(&e))))?;
            ok(&SourceToolsView::of(&source, &tools), request_id)
        }
        Route::ReplaceToolSources(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            // Auth headers are sealed for this agent while the body is read, before any checkout.
            let asked = tool_sources::parse(
                json_body(request, api.settings.max_body_bytes)?,
                &api.settings.tool_policy,
                api.settings.seal_key.as_deref(),
                id,
            )?;
            let replaced = {
                let mut conn = api.db.conn().await?;
                let tx = conn.transaction().await?;
                let replaced = tool_sources::replace(&tx.sql(), user.id, id, &asked).await?;
                tx.commit().await?;
                replaced
            };
            ok(&SourcesView::of(&replaced), request_id)
        }
        Route::Conversations => {
            let asked = ConversationsQuery::of(request, &api.settings)?;
            let page = {
                let conn = api.db.conn().await?;
                conversations::page(&conn.sql(), user.id, asked.agent, asked.page).await?
            };
            ok(&ConversationView::page(&page), request_id)
        }
        Route::Messages(id) => {
            let asked = MessagesQuery::of(request, &api.settings)?;
            let id = path_id(id)?;
            let window = {
                let conn = api.db.conn().await?;
                conversations::messages(&conn.sql(), user.id, id, asked.page).await?
            };
            let window = window.ok_or(ApiError::NotFoundWith("conversation not found"))?;
            ok(&MessageView::page(&window), request_id)
        }
        Route::ListTasks => {
            let q = Query::of(request, &["status", "approval", "limit", "before"])?;
            let filter = Filter::of(&q)?;
            let asked = q.page(&api.settings)?;
            let page = {
                let conn = api.db.conn().await?;
                tasks::page(&conn.sql(), user.id, &filter, asked).await?
            };
            ok(&TaskView::page(&page, Utc::now()), request_id)
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
            ok(&TaskView::of(&task, Utc::now()), request_id)
        }
        Route::Decide(id, action) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let (task, connections) = {
                let conn = api.db.conn().await?;
                tasks::decide(&conn.sql(), user.id, id, action).await?
            };
            // Committed, and the connection given back: the owner's other tabs hear of it.
            publish_task(api, &task, connections).await;
            ok(&TaskView::of(&task, Utc::now()), request_id)
        }
        Route::Run(id) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let run = {
                let conn = api.db.conn().await?;
                runs::one(&conn.sql(), user.id, id).await?
            };
            let run = run.ok_or(ApiError::NotFoundWith("run not found"))?;
            ok(&RunView::of(&run), request_id)
        }
        Route::DecideCall(id, call, verdict) => {
            Query::of(request, &[])?;
            let id = path_id(id)?;
            let call = runs::tool_call_id(call).ok_or(ApiError::NotFoundWith("tool call not found"))?;
            let (decided, run) = {
                let mut conn = api.db.conn().await?;
                let decided = {
                    let tx = conn.transaction().await?;
                    let decided = runs::decide(&tx.sql(), user.id, id, call, verdict).await?;
                    tx.commit().await?;
                    decided
                };
                (decided, runs::one(&conn.sql(), user.id, id).await?)
            };
            // Committed, and the connection given back: the owner's tabs hear of the task resumed.
            if let Some((task, at)) = decided.task {
                if api.live.is_on() && !decided.connections.is_empty() {
                    let delivery = Delivery {
                        event: LiveEvent::task(task, "pending", at),
                        to: decided.connections,
                    };
                    api.live.publish(&api.db, &[delivery]).await;
                }
            }
            let run = run.ok_or(ApiError::NotFoundWith("run not found"))?;
            ok(&RunView::of(&run), request_id)
        }
        Route::Usage => {
            let asked = UsageQuery::of(request)?;
            let recorded = {
                let conn = api.db.conn().await?;
                usage::usage(&conn.sql(), user.id, asked.days).await?
            };
            ok(&UsageView::of(&recorded, api.settings.daily_tokens), request_id)
        }
    }
}

/// A 200 answering `view`.
fn ok<V: Serialize>(view: &V, request_id: &str) -> Result<Response<Body>, ApiError> {
    Ok(view_response(StatusCode::OK, view, request_id))
}

/// A path id: a malformed one names no row of the caller's, like a missing one.
fn path_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

async fn create_task(api: &Api, request: &Request, user: User, request_id: &str) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let body = json_body(request, api.settings.max_body_bytes)?;
    let now = Utc::now();
    let input = tasks::parse(body, &api.settings, now)?;
    let key = idempotency_key(request)?;
    let due = input.first_due(now)?;
    let fingerprint = input.fingerprint()?;
    let insert = Insert {
        task: &input,
        due,
        key: key.as_deref(),
        fingerprint: &fingerprint,
    };
    let created = {
        let mut conn = api.db.conn().await?;
        let tx = conn.transaction().await?;
        let created = tasks::create(&tx.sql(), user.id, &insert, Quota::of(&api.settings)).await?;
        tx.commit().await?;
        created
    };
    let (task, fresh, connections) = created.into_task()?;
    if fresh {
        publish_task(api, &task, connections).await;
    }
    let mut response = view_response(StatusCode::CREATED, &TaskView::of(&task, now), request_id);
    if !fresh {
        // The task this Idempotency-Key created before, as it is now.
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `task.updated` to the owner's live connections (bounded; never the request's failure).
async fn publish_task(api: &Api, task: &Task, connections: Connections) {
    if api.live.is_on() && !connections.is_empty() {
        let delivery = Delivery {
            event: LiveEvent::task(task.id, task.status.as_str(), task.updated_at),
            to: connections,
        };
        api.live.publish(&api.db, &[delivery]).await;
    }
}
