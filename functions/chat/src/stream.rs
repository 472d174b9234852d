//! `POST /api/agents/chat/stream` (binary `chat-stream`, behind a Lambda function URL with
//! response streaming): the same turn as the buffered route, the reply as Server-Sent Events.
//!
//! - Before the first byte (auth, validation, rate limit, idempotency, round trip 1, and the
//!   model's answer to the call: throttling, errors) failures are the buffered route's JSON
//!   errors with their status.
//! - Then `meta` (`conversationId`, the reply's `id`), a `delta` (`{"text"}`) per chunk as the
//!   model writes it, and `done` (the stored message, as the buffered route answers it) after
//!   round trip 2 stored the whole reply once; or `error` (`{"code", "message"}`) when the model
//!   fails or stalls after streaming began: the user's message stays, a retry answers it.
//! - No connection is held while the model streams. A client that disconnects does not stop the
//!   turn: the reply is still stored whole (the invocation runs until it is), and a retry with
//!   the same `Idempotency-Key` gets it as one `meta` and one `done`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use shared::http::{request_id, ApiError};
use uuid::Uuid;

use crate::handler::{model_error, prepare, release_turn, reply_json, store, Chat, Prepared, Turn};
use crate::store::ReplyToStore;

pub type SseBody = StreamBody<BoxStream<'static, Result<hyper_frame::Frame, Infallible>>>;

/// The body frame type, named once.
mod hyper_frame {
    pub type Frame = http_body::Frame<bytes::Bytes>;
}

/// One Server-Sent Event.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn body_of(chunks: BoxStream<'static, Bytes>) -> SseBody {
    StreamBody::new(chunks.map(|b| Ok(http_body::Frame::data(b))).boxed())
}

/// A buffered response (an error found before the first byte) as this function's body.
fn buffered(response: Response<Body>) -> Response<SseBody> {
    let (parts, body) = response.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    Response::from_parts(parts, body_of(futures_util::stream::iter([bytes]).boxed()))
}

fn sse(chunks: BoxStream<'static, Bytes>, request_id: &str) -> Response<SseBody> {
    let mut response = Response::new(body_of(chunks));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

fn error_event(e: &ApiError) -> Bytes {
    let (_, code, _) = e.parts();
    event("error", &json!({"code": code, "message": e.public_message()}))
}

/// Gives idle pooler clients back and writes the request's metrics line.
fn finish(chat: &Chat) {
    chat.db.release_idle();
    chat.metrics.flush_db(&chat.db, &[]);
}

/// The Lambda handler (streaming).
pub async fn handle_stream(chat: Arc<Chat>, request: Request) -> Result<Response<SseBody>, Infallible> {
    let in_flight = chat.db.begin_request();
    let id = request_id(&request);
    let timeout = chat.settings.stream_timeout;
    let turn = match prepare(&chat, &request, "/api/agents/chat/stream", timeout).await {
        Ok(Turn::Ready(turn)) => turn,
        Ok(Turn::Replay { conversation_id, reply }) => {
            finish(&chat);
            let events = [
                event("meta", &json!({"conversationId": conversation_id, "id": reply.id})),
                event("done", &reply_json(conversation_id, &reply)),
            ];
            return Ok(sse(futures_util::stream::iter(events).boxed(), &id));
        }
        Err(e) => {
            finish(&chat);
            return Ok(buffered(e.into_response(&id)));
        }
    };

    // No connection is held while the model writes (release mode closes the pooler client too).
    chat.db.release_idle();
    let deadline = tokio::time::Instant::now() + timeout;
    let model_stream = match tokio::time::timeout_at(deadline, chat.model.stream_reply(&turn.model_request)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Ok(refuse(&chat, &turn, model_error(e), &id).await),
        Err(_) => return Ok(refuse(&chat, &turn, ApiError::ModelTimeout, &id).await),
    };

    let reply_id = Uuid::new_v4();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        // A client gone does not stop the turn: sends to it just fail.
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(bytes).await;
            }
        };
        send(event(
            "meta",
            &json!({"conversationId": turn.conversation_id, "id": reply_id}),
        ))
        .await;
        let mut text = String::new();
        let mut model_stream = model_stream;
        let streamed = loop {
            match tokio::time::timeout_at(deadline, model_stream.text.next()).await {
                Err(_) => break Err(ApiError::ModelTimeout),
                Ok(None) => break Ok(()),
                Ok(Some(Ok(chunk))) => {
                    text.push_str(&chunk);
                    send(event("delta", &json!({ "text": chunk }))).await;
                }
                Ok(Some(Err(e))) => break Err(model_error(e)),
            }
        };
        let last = match streamed {
            Ok(()) => match store(
                &chat,
                &turn,
                ReplyToStore {
                    content: &text,
                    usage: model_stream.usage(),
                    model: model_stream.model.as_deref(),
                },
                Some(reply_id),
            )
            .await
            {
                Ok(Some(reply)) => event("done", &reply_json(turn.conversation_id, &reply)),
                Ok(None) => error_event(&ApiError::Conflict(
                    "a request with this Idempotency-Key was answered meanwhile; retry to get its reply".into(),
                )),
                Err(e) => error_event(&e),
            },
            Err(e) => {
                tracing::warn!(error = %e, streamed_bytes = text.len(), "the model failed mid-stream");
                // The user's message stays; its lease and slot go back so a retry answers it.
                release_turn(&chat, turn.user, Some(turn.message_id), turn.lease).await;
                error_event(&e)
            }
        };
        send(last).await;
        finish(&chat);
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(sse(chunks.boxed(), &id))
}

/// The model refused before the first byte: an ordinary JSON error, the turn released.
async fn refuse(chat: &Chat, turn: &Prepared, e: ApiError, request_id: &str) -> Response<SseBody> {
    release_turn(chat, turn.user, Some(turn.message_id), turn.lease).await;
    finish(chat);
    buffered(e.into_response(request_id))
}
