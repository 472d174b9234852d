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
//! - An agent with tools: between `meta` and `done`, each model call's `delta`s, a `tool_call`
//!   (`{"id", "name", "arguments"}`) per call the model makes and a `tool_result`
//!   (`{"toolCallId", "result"}`) as each call ends; a run that pauses for a person's approval
//!   ends with `awaiting_approval` (`{"status", "runId", "toolCalls"}`) instead of `done`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use shared::http::{request_id, set_request_id, ApiError};
use shared::telemetry::Chain;

use shared::agent::run::{self as agent_run, Calls};
use shared::db::RequestGuard;
use uuid::Uuid;

use crate::service::{self, Chat, Event, Prepared, Ran, Turn};
use crate::view::PausedView;

const ROUTE: &str = "/api/agents/chat/stream";

pub type SseBody = StreamBody<BoxStream<'static, Result<http_body::Frame<Bytes>, Infallible>>>;

/// One Server-Sent Event. Its data is written as `shared::http::view_response` writes a view, so
/// `done` carries the buffered route's body byte for byte.
fn frame(event: &Event<'_>) -> Bytes {
    match serde_json::to_string(event) {
        Ok(data) => Bytes::from(format!("event: {}\ndata: {data}\n\n", event.name())),
        // Views hold ids, strings and times: this does not happen. Were it to, the client is
        // told (an `error` event's data always serializes).
        Err(e) => {
            let e = ApiError::Internal(e.into());
            tracing::error!(error = %Chain(&e), event = event.name(), "an event could not be written");
            frame(&Event::error(&e))
        }
    }
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
    set_request_id(headers, request_id);
    response
}

/// Gives idle pooler clients back and writes the request's metrics line.
fn finish(chat: &Chat) {
    chat.db.release_idle();
    chat.metrics.flush_db(&chat.db, &[]);
}

/// A failure before the first byte: an ordinary JSON error (the turn, if any, already released).
fn refuse(chat: &Chat, e: ApiError, request_id: &str) -> Response<SseBody> {
    finish(chat);
    buffered(e.into_response(request_id))
}

/// The Lambda handler (streaming).
pub async fn handle_stream(chat: Arc<Chat>, request: Request) -> Result<Response<SseBody>, Infallible> {
    let in_flight = chat.db.begin_request();
    let id = request_id(&request);
    let turn = match service::prepare(&chat, &request, ROUTE, chat.settings.stream_timeout).await {
        Ok(Turn::Ready(turn)) => turn,
        Ok(Turn::Replay(answer)) => {
            finish(&chat);
            let events = [frame(&answer.meta()), frame(&Event::Done(answer.view()))];
            return Ok(sse(futures_util::stream::iter(events).boxed(), &id));
        }
        Err(e) => return Ok(refuse(&chat, e, &id)),
    };
    if turn.is_run() {
        return Ok(stream_run(chat, turn, in_flight, id).await);
    }
    let reply = match service::open_stream(&chat, &turn).await {
        Ok(reply) => reply,
        Err(e) => return Ok(refuse(&chat, e, &id)),
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream_id = id.clone();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        // A client gone does not stop the turn: sends to it just fail.
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(bytes).await;
            }
        };
        send(frame(&Event::meta(turn.conversation_id(), reply.id()))).await;
        let mut streamed_bytes = 0;
        let streamed = service::stream(&chat, &turn, reply, |chunk| {
            streamed_bytes += chunk.len();
            send(frame(&Event::delta(&chunk)))
        })
        .await;
        let last = match streamed {
            Ok(answer) => frame(&Event::Done(answer.view())),
            Err(e) => {
                tracing::warn!(
                    request_id = %stream_id,
                    error = %Chain(&e),
                    streamed_bytes,
                    "the turn failed after streaming began"
                );
                frame(&Event::error(&e))
            }
        };
        send(last).await;
        finish(&chat);
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(sse(chunks.boxed(), &id))
}

/// An agent's run as Server-Sent Events: the run goes on in its own task; until its first event
/// a failure is still a JSON error with its status, then `meta`, the run's events as they come,
/// and its end (`done`, `awaiting_approval` or `error`).
async fn stream_run(chat: Arc<Chat>, turn: Prepared, in_flight: RequestGuard, id: String) -> Response<SseBody> {
    let reply_id = Uuid::new_v4();
    let conversation_id = turn.conversation_id();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let runner = chat.clone();
    let mut ran =
        tokio::spawn(
            async move { service::run(&runner, &turn, Calls::Streamed, Some(&events_tx), Some(reply_id)).await },
        );
    let first = tokio::select! {
        biased;
        first = events.recv() => first,
        // Ended without an event: its result is the whole answer.
        result = &mut ran => {
            let result = result.unwrap_or_else(|e| Err(ApiError::Internal(e.into())));
            return match result {
                Err(e) => refuse(&chat, e, &id),
                Ok(ran) => {
                    finish(&chat);
                    let events = [frame(&Event::meta(conversation_id, reply_id)), last(&ran)];
                    sse(futures_util::stream::iter(events).boxed(), &id)
                }
            };
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream_id = id.clone();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        // A client gone does not stop the run: sends to it just fail.
        let _ = tx.send(frame(&Event::meta(conversation_id, reply_id))).await;
        let mut next = first;
        while let Some(event) = next {
            let _ = tx.send(event_frame(&event)).await;
            next = events.recv().await;
        }
        let end = match ran.await.unwrap_or_else(|e| Err(ApiError::Internal(e.into()))) {
            Ok(ran) => last(&ran),
            Err(e) => {
                tracing::warn!(request_id = %stream_id, error = %Chain(&e), "the run failed after streaming began");
                frame(&Event::error(&e))
            }
        };
        let _ = tx.send(end).await;
        finish(&chat);
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    sse(chunks.boxed(), &id)
}

/// One event of the run as its Server-Sent Event.
fn event_frame(event: &agent_run::Event) -> Bytes {
    match event {
        agent_run::Event::Delta(text) => frame(&Event::delta(text)),
        agent_run::Event::ToolCall(call) => frame(&Event::ToolCall(call)),
        agent_run::Event::ToolResult { id, content } => frame(&Event::ToolResult {
            tool_call_id: id,
            result: agent_run::result_json(content),
        }),
    }
}

/// A run's last event: the stored answer, or the pause.
fn last(ran: &Ran) -> Bytes {
    match ran {
        Ran::Answered(answer) => frame(&Event::Done(answer.view())),
        Ran::AwaitingApproval { run_id, calls } => frame(&Event::AwaitingApproval(PausedView::new(*run_id, calls))),
    }
}
