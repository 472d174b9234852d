//! Before the model: the request checked and parsed, round trip 1, and its decision read into a
//! [`Turn`].

use chrono::{DateTime, Utc};
use lambda_http::http::Method;
use lambda_http::{Request, RequestExt};
use shared::auth::{authenticate_request, User};
use shared::http::{idempotency_key, json_body, ApiError};
use shared::metrics::{name, Metric};
use shared::model::ModelRequest;

use super::end::release_turn;
use super::{Answer, Chat, Prepared, Turn};
use crate::request::{self, ChatInput};
use crate::store::{self, TurnLimits, TurnRequest};
use crate::turn::{decide, TurnStart};

/// Added to the model's bound to form the lease of a message being answered.
const ANSWER_LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

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
        TurnStart::KeyReused => Err(ApiError::key_reused()),
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
                release_turn(chat, user.id, None, lease).await;
            }
            Err(ApiError::InProgress {
                message: "a request with this Idempotency-Key is being answered".into(),
                retry_after_secs,
            })
        }
        TurnStart::Replay { conversation_id, reply } => Ok(Turn::Replay(Answer { conversation_id, reply })),
        TurnStart::Ready {
            conversation_id,
            message_id,
            instructions,
            history,
            run,
        } => Ok(Turn::Ready(Prepared {
            user,
            agent_id: input.agent_id,
            key,
            conversation_id,
            message_id,
            model_request: ModelRequest::conversation(instructions, history),
            model_timeout,
            lease,
            run,
        })),
    }
}

/// Round trip 1; the connection goes back to the pool before the model is called. The decision,
/// and this request's lease.
async fn begin(
    chat: &Chat,
    user: User,
    input: &ChatInput,
    key: Option<&str>,
    model_timeout: std::time::Duration,
) -> Result<(TurnStart, DateTime<Utc>), ApiError> {
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
