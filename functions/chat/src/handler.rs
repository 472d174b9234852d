//! `POST /api/agents/chat`: authenticate, validate, round trip 1, the model, round trip 2.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use shared::auth::{authenticate_request, Authenticator, User};
use shared::db::Db;
use shared::http::{idempotency_key, json_body, json_response, serve, ApiError};
use shared::live::{Connections, Delivery, LiveEvent, Publisher};
use shared::metrics::{name, Metric, Metrics};
use shared::model::{ModelError, ModelRequest, SharedModel, Usage};
use uuid::Uuid;

use crate::request::{self, ChatInput};
use crate::settings::Settings;
use crate::store::{self, ReplyToStore, StoredReply, TurnKeys, TurnLimits, TurnRequest};
use crate::turn::{decide, TurnStart};

/// Added to the model's bound to form the lease of a message being answered.
const ANSWER_LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The chat function's state, built once per instance.
pub struct Chat {
    pub db: Db,
    pub auth: Authenticator,
    pub model: SharedModel,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Live updates (off when `LIVE_ENDPOINT` is unset).
    pub live: Publisher,
}

impl Chat {
    /// An instance's state from its (secrets-resolved) environment: settings, the Supabase token
    /// check, the model, and the warmed pool named `function` (its metrics too).
    pub async fn from_env(env: &shared::config::Env, function: &str) -> Result<Chat, lambda_http::Error> {
        let settings = Settings::from_env(env)?;
        let auth = Authenticator::new(shared::auth::AuthConfig::from_env(env)?);
        let model = shared::model::from_env(env).await?;
        let db = shared::lifecycle::database(env, function, shared::db::PoolDefaults { max_size: 1 }).await?;
        let metrics = Metrics::new(env, function);
        let live = Publisher::from_env(env, &metrics).await?;
        Ok(Chat {
            db,
            auth,
            model,
            settings,
            metrics,
            live,
        })
    }
}

/// The Lambda handler.
pub async fn handle(chat: &Chat, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    serve(&chat.db, &chat.metrics, request, |request, id| async move {
        respond(chat, &request, &id).await
    })
    .await
}

/// A turn ready for the model: round trip 1 done, its connection given back.
pub(crate) struct Prepared {
    pub user: User,
    pub agent_id: Uuid,
    pub key: Option<String>,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub model_request: ModelRequest,
    pub lease: chrono::DateTime<chrono::Utc>,
}

/// What round trip 1 decided.
pub(crate) enum Turn {
    /// This Idempotency-Key's reply is stored: answer it again.
    Replay {
        conversation_id: Uuid,
        reply: StoredReply,
    },
    Ready(Prepared),
}

/// Everything before the model: the route, the user, the body, the key, round trip 1, for a
/// model call bounded by `model_timeout` (the message's lease covers it).
pub(crate) async fn prepare(
    chat: &Chat,
    request: &Request,
    route: &str,
    model_timeout: std::time::Duration,
) -> Result<Turn, ApiError> {
    let path = request.raw_http_path().trim_end_matches('/').to_string();
    if path != route {
        return Err(ApiError::NotFound);
    }
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let user = authenticate_request(&chat.auth, request).await?;
    let body = json_body(request, chat.settings.max_body_bytes)?;
    let input = request::parse(body, chat.settings.max_message_chars)?;
    let key = idempotency_key(request)?;

    let (start, lease) = begin(chat, user, &input, key.as_deref(), model_timeout).await?;
    match start {
        TurnStart::AgentNotFound => Err(ApiError::NotFoundWith("agent not found")),
        TurnStart::ConversationNotFound => Err(ApiError::NotFoundWith("conversation not found")),
        TurnStart::KeyReused => Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".into(),
        )),
        TurnStart::RateLimited { retry_after_secs } => Err(ApiError::TooManyRequests { retry_after_secs }),
        TurnStart::BudgetExhausted { retry_after_secs } => {
            chat.metrics.emit(&[Metric::count(name::BUDGET_EXHAUSTED, 1)]);
            Err(ApiError::QuotaExceeded {
                code: "budget_exhausted",
                message: "the daily token budget (yours or this agent's) is spent; it resets at 00:00 UTC".into(),
                retry_after_secs,
            })
        }
        TurnStart::InProgress {
            retry_after_secs,
            release,
        } => {
            if release {
                release_turn(chat, user, None, lease).await;
            }
            Err(ApiError::InProgress {
                message: "a request with this Idempotency-Key is being answered".into(),
                retry_after_secs,
            })
        }
        TurnStart::Replay { conversation_id, reply } => Ok(Turn::Replay { conversation_id, reply }),
        TurnStart::Ready {
            conversation_id,
            message_id,
            instructions,
            history,
        } => Ok(Turn::Ready(Prepared {
            user,
            agent_id: input.agent_id,
            key,
            conversation_id,
            message_id,
            model_request: ModelRequest::conversation(instructions, history),
            lease,
        })),
    }
}

async fn respond(chat: &Chat, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    let turn = match prepare(chat, request, "/api/agents/chat", chat.settings.model_timeout).await? {
        Turn::Replay { conversation_id, reply } => return Ok(reply_response(conversation_id, &reply, request_id)),
        Turn::Ready(turn) => turn,
    };

    // No connection is held here: round trip 1 gave its connection back, and in release mode
    // the pooler client is closed too while the model thinks.
    chat.db.release_idle();
    let generated =
        match tokio::time::timeout(chat.settings.model_timeout, chat.model.complete(&turn.model_request)).await {
            Ok(result) => result.map_err(model_error),
            Err(_) => Err(ApiError::ModelTimeout),
        };
    let reply = match generated {
        Ok(reply) => reply,
        Err(e) => {
            // The message stays stored; its lease and the user's slot go back so a retry may
            // answer it.
            release_turn(chat, turn.user, Some(turn.message_id), turn.lease).await;
            return Err(e);
        }
    };
    let to_store = ReplyToStore {
        content: &reply.text,
        usage: reply.usage,
        model: reply.model.as_deref(),
    };
    match store(chat, &turn, to_store, None).await? {
        Some(reply) => Ok(reply_response(turn.conversation_id, &reply, request_id)),
        None => Err(ApiError::Conflict(
            "a request with this Idempotency-Key was answered meanwhile; retry to get its reply".into(),
        )),
    }
}

/// Round trip 2 (it releases the slot too; when it fails, the slot is released apart).
pub(crate) async fn store(
    chat: &Chat,
    turn: &Prepared,
    reply: ReplyToStore<'_>,
    reply_id: Option<Uuid>,
) -> Result<Option<StoredReply>, ApiError> {
    let keys = TurnKeys {
        user_id: turn.user.id,
        agent_id: turn.agent_id,
        conversation_id: turn.conversation_id,
        idempotency_key: turn.key.as_deref(),
    };
    let stored = async {
        let conn = chat.db.conn().await?;
        store::store_reply(&conn.sql(), &keys, reply, turn.lease, reply_id).await
    }
    .await;
    match stored {
        Ok(stored) => {
            if let (Some(usage), Some(_)) = (reply.usage, &stored) {
                emit_tokens(&chat.metrics, reply.model, usage);
            }
            let Some((stored, connections)) = stored else {
                return Ok(None);
            };
            // Committed, and no connection held: the user's message and the reply reach the
            // user's other tabs (bounded; a failed push never fails the turn).
            if chat.live.is_on() && !connections.is_empty() {
                let deliveries = [
                    Delivery {
                        event: LiveEvent::message(turn.conversation_id, turn.message_id, "user", chrono::Utc::now()),
                        to: connections.clone(),
                    },
                    Delivery {
                        event: LiveEvent::message(turn.conversation_id, stored.id, "assistant", stored.created_at),
                        to: Connections {
                            open: connections.open,
                            expired: Vec::new(),
                        },
                    },
                ];
                chat.live.publish(&chat.db, &deliveries).await;
            }
            Ok(Some(stored))
        }
        Err(e) => {
            release_turn(chat, turn.user, Some(turn.message_id), turn.lease).await;
            Err(e.into())
        }
    }
}

/// `TokensIn`/`TokensOut` of one stored reply, by model.
fn emit_tokens(metrics: &Metrics, model: Option<&str>, usage: Usage) {
    metrics.emit_for_model(
        model.unwrap_or("unknown"),
        &[
            Metric::count(name::TOKENS_IN, u64::try_from(usage.input_tokens).unwrap_or(0)),
            Metric::count(name::TOKENS_OUT, u64::try_from(usage.output_tokens).unwrap_or(0)),
        ],
    );
}

/// Round trip 1; the connection goes back to the pool before the model is called. The decision,
/// and this request's lease.
async fn begin(
    chat: &Chat,
    user: User,
    input: &ChatInput,
    key: Option<&str>,
    model_timeout: std::time::Duration,
) -> Result<(TurnStart, chrono::DateTime<chrono::Utc>), ApiError> {
    let limits = TurnLimits {
        rate_limit: chat.settings.rate_limit,
        rate_window_secs: chat.settings.rate_window.as_secs_f64(),
        max_in_flight: chat.settings.max_in_flight,
        // Past the model's bound and round trip 2's, the lease is certainly stale.
        answer_lease_secs: (model_timeout + ANSWER_LEASE_MARGIN).as_secs_f64(),
        history: chat.settings.history,
        user_daily_tokens: chat.settings.user_daily_tokens,
    };
    let turn = TurnRequest {
        user_id: user.id,
        agent_id: input.agent_id,
        conversation_id: input.conversation_id,
        message: &input.message,
        idempotency_key: key,
    };
    let row = {
        let conn = chat.db.conn().await?;
        store::begin_turn(&conn.sql(), turn, limits).await?
    };
    let lease = row.lease_until;
    Ok((decide(row, &input.message), lease))
}

/// Best effort: gives a turn's lease and in-flight slot back (both expire on their own anyway).
pub(crate) async fn release_turn(
    chat: &Chat,
    user: User,
    message_id: Option<Uuid>,
    lease: chrono::DateTime<chrono::Utc>,
) {
    let released = async {
        let conn = chat.db.conn().await?;
        store::release_turn(&conn.sql(), user.id, message_id, lease).await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release the turn; its lease will expire");
    }
}

pub(crate) fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::Timeout(_) => ApiError::ModelTimeout,
        // Throttling is not the request's failure: come back when the provider said (5 s when
        // it did not). The message stays stored; a retry with the same key answers it.
        ModelError::Throttled { retry_after } => ApiError::ModelBusy {
            retry_after_secs: retry_after.map_or(5, |d| d.as_secs_f64().ceil().max(1.0) as u64),
        },
        other => ApiError::ModelFailed(other.to_string()),
    }
}

fn reply_response(conversation_id: Uuid, reply: &StoredReply, request_id: &str) -> Response<Body> {
    json_response(StatusCode::OK, &reply_json(conversation_id, reply), request_id)
}

/// The answer to a message, as the buffered route returns it (and the stream's `done` event).
pub(crate) fn reply_json(conversation_id: Uuid, reply: &StoredReply) -> serde_json::Value {
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
