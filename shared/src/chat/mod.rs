//! The chat function: `POST /api/agents/chat`. A signed-in user talks to an agent; the
//! conversation is kept by `conversationId`. Two database round trips per message, none held
//! across the model call.

pub mod request;
pub mod store;

use std::time::Duration;

use lambda_http::http::{header, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use crate::auth::Authenticator;
use crate::config::{ConfigError, Env};
use crate::db::Db;
use crate::http_error::{json_response, ApiError};
use crate::metrics::Metrics;
use crate::model::{ModelError, ModelRequest, SharedModel};
use store::{StoredReply, TurnLimits, TurnStart};

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `CHAT_MAX_MESSAGE_CHARS` (4000): longest message after trimming (413 above).
    pub max_message_chars: usize,
    /// `CHAT_MAX_BODY_BYTES` (65536): bodies above are refused before parsing (413).
    pub max_body_bytes: usize,
    /// `CHAT_HISTORY_MESSAGES` (20): earlier messages given to the model.
    pub history: i64,
    /// `CHAT_RATE_LIMIT` messages per `CHAT_RATE_WINDOW_SECS` per user (30 per 60 s).
    pub rate_limit: i64,
    pub rate_window: Duration,
    /// `CHAT_MODEL_TIMEOUT_MS` (15000): bound on the model call (504 past it).
    pub model_timeout: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 4000,
            max_body_bytes: 64 * 1024,
            history: 20,
            rate_limit: 30,
            rate_window: Duration::from_secs(60),
            model_timeout: Duration::from_secs(15),
        }
    }
}

impl ChatConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            max_message_chars: env
                .number("CHAT_MAX_MESSAGE_CHARS", 1, 100_000)?
                .unwrap_or(d.max_message_chars as u64) as usize,
            max_body_bytes: env
                .number("CHAT_MAX_BODY_BYTES", 1024, 6 * 1024 * 1024)?
                .unwrap_or(d.max_body_bytes as u64) as usize,
            history: env
                .number("CHAT_HISTORY_MESSAGES", 0, 1000)?
                .unwrap_or(d.history as u64) as i64,
            rate_limit: env
                .number("CHAT_RATE_LIMIT", 1, 1_000_000)?
                .unwrap_or(d.rate_limit as u64) as i64,
            rate_window: Duration::from_secs(env.number("CHAT_RATE_WINDOW_SECS", 1, 86_400)?.unwrap_or(60)),
            model_timeout: Duration::from_millis(env.number("CHAT_MODEL_TIMEOUT_MS", 1, 300_000)?.unwrap_or(15_000)),
        })
    }
}

/// The chat function's state, built once per instance.
pub struct Chat {
    pub db: Db,
    pub auth: Authenticator,
    pub model: SharedModel,
    pub config: ChatConfig,
    pub metrics: Metrics,
}

/// The Lambda handler.
pub async fn handle(chat: &Chat, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    let _in_flight = chat.db.begin_request();
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let result = respond(chat, &request, &request_id).await;
    chat.metrics.flush_db(&chat.db, &[]);
    Ok(result.unwrap_or_else(|e| e.into_response(&request_id)))
}

fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::Timeout(_) => ApiError::ModelTimeout,
        other => ApiError::ModelFailed(other.to_string()),
    }
}

fn reply_body(conversation_id: uuid::Uuid, reply: &StoredReply) -> serde_json::Value {
    json!({
        "conversationId": conversation_id,
        "message": {
            "id": reply.id,
            "role": "assistant",
            "content": reply.content,
            "createdAt": reply.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    })
}

async fn respond(chat: &Chat, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    let path = request.raw_http_path().trim_end_matches('/').to_string();
    if path != "/api/agents/chat" {
        return Err(ApiError::NotFound);
    }
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let gateway_claims = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
        }
        _ => None,
    };
    let user = chat
        .auth
        .authenticate(request.headers(), gateway_claims)
        .await
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;

    request::check_content_type(
        request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let body: &[u8] = request.body().as_ref();
    if body.len() > chat.config.max_body_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than {} bytes",
            chat.config.max_body_bytes
        )));
    }
    let input = request::parse(body, chat.config.max_message_chars)?;
    let key = request::idempotency_key(request.headers().get("idempotency-key").map(|v| v.as_bytes()))?;

    let limits = TurnLimits {
        rate_limit: chat.config.rate_limit,
        rate_window_secs: chat.config.rate_window.as_secs_f64(),
        history: chat.config.history,
    };
    // Round trip 1; the connection goes back to the pool before the model is called.
    let start = {
        let conn = chat.db.conn().await?;
        store::begin_turn(
            &conn.sql(),
            user.id,
            input.agent_id,
            input.conversation_id,
            &input.message,
            key.as_deref(),
            limits,
        )
        .await?
    };
    let (conversation_id, instructions, history) = match start {
        TurnStart::AgentNotFound => return Err(ApiError::NotFoundWith("agent not found")),
        TurnStart::ConversationNotFound => return Err(ApiError::NotFoundWith("conversation not found")),
        TurnStart::RateLimited { retry_after_secs } => return Err(ApiError::TooManyRequests { retry_after_secs }),
        TurnStart::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is being answered".into(),
            ))
        }
        TurnStart::Replay { conversation_id, reply } => {
            return Ok(json_response(
                StatusCode::OK,
                &reply_body(conversation_id, &reply),
                request_id,
            ))
        }
        TurnStart::Ready {
            conversation_id,
            instructions,
            history,
        } => (conversation_id, instructions, history),
    };

    let model_request = ModelRequest {
        instructions,
        messages: history,
    };
    let text = match tokio::time::timeout(chat.config.model_timeout, chat.model.generate(&model_request)).await {
        Ok(result) => result.map_err(model_error)?,
        Err(_) => return Err(ApiError::ModelTimeout),
    };

    // Round trip 2.
    let stored = {
        let conn = chat.db.conn().await?;
        store::store_reply(&conn.sql(), user.id, conversation_id, &text, key.as_deref()).await?
    };
    match stored {
        Some(reply) => Ok(json_response(
            StatusCode::OK,
            &reply_body(conversation_id, &reply),
            request_id,
        )),
        None => Err(ApiError::Conflict(
            "a request with this Idempotency-Key was answered meanwhile; retry to get its reply".into(),
        )),
    }
}
