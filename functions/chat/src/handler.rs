//! `POST /api/agents/chat` (binary `chat`): the buffered adapter over `service`. The whole turn
//! runs inside `shared::http::serve` (request id, in-flight mark, metrics line, errors as JSON);
//! the stored reply is the body.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::http::{serve, view_response, ApiError};

use shared::agent::run::Calls;

use crate::service::{self, Chat, Ran, Turn};
use crate::view::PausedView;

const ROUTE: &str = "/api/agents/chat";

/// The Lambda handler.
pub async fn handle(chat: &Chat, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    serve(&chat.db, &chat.metrics, request, |request, id| async move {
        respond(chat, &request, &id).await
    })
    .await
}

async fn respond(chat: &Chat, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
    let answer = match service::prepare(chat, request, ROUTE, chat.settings.model_timeout).await? {
        Turn::Replay(answer) => answer,
        Turn::Ready(turn) if turn.is_run() => match service::run(chat, &turn, Calls::Whole, None, None).await? {
            Ran::Answered(answer) => answer,
            Ran::AwaitingApproval { run_id, calls } => {
                return Ok(view_response(
                    StatusCode::ACCEPTED,
                    &PausedView::new(run_id, &calls),
                    request_id,
                ))
            }
        },
        Turn::Ready(turn) => service::answer(chat, &turn).await?,
    };
    Ok(view_response(StatusCode::OK, &answer.view(), request_id))
}
