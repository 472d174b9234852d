//! The model call, bounded, with no connection held: a whole reply, or a streamed one read chunk
//! by chunk. A failure releases the turn; model errors are mapped to [`ApiError`]s here only.

use std::future::Future;

use futures_util::StreamExt;
use shared::http::ApiError;
use shared::model::{ModelError, Reply, StreamedReply};
use tokio::time::Instant;
use uuid::Uuid;

use super::end::{or_release, store};
use super::{Answer, Chat, Prepared};

/// The buffered call: the whole reply within the model's bound, then round trip 2.
pub(crate) async fn answer(chat: &Chat, turn: &Prepared) -> Result<Answer, ApiError> {
    // No connection is held here: round trip 1 gave its connection back, and in release mode
    // the pooler client is closed too while the model thinks.
    chat.db.release_idle();
    let deadline = Instant::now() + turn.model_timeout;
    let reply = bounded(deadline, chat.model.complete(&turn.model_request)).await;
    let reply = or_release(chat, turn, reply).await?;
    store(chat, turn, &reply, None, None).await
}

/// A reply being streamed: its id (announced in `meta` before it is stored) and the deadline
/// that bounds it, first chunk to last.
pub(crate) struct ReplyStream {
    id: Uuid,
    streamed: StreamedReply,
    deadline: Instant,
}

impl ReplyStream {
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }
}

/// The streamed call, up to the model's answer to it (throttling and errors come before the
/// first byte).
pub(crate) async fn open_stream(chat: &Chat, turn: &Prepared) -> Result<ReplyStream, ApiError> {
    // No connection is held while the model writes (release mode closes the pooler client too).
    chat.db.release_idle();
    let deadline = Instant::now() + turn.model_timeout;
    let streamed = bounded(deadline, chat.model.stream_reply(&turn.model_request)).await;
    let streamed = or_release(chat, turn, streamed).await?;
    Ok(ReplyStream {
        id: Uuid::new_v4(),
        streamed,
        deadline,
    })
}

/// Reads a streamed reply to its end, each chunk given to `on_chunk` as it comes, then round trip
/// 2 stores it whole, once.
pub(crate) async fn stream<F, Fut>(
    chat: &Chat,
    turn: &Prepared,
    mut reply: ReplyStream,
    mut on_chunk: F,
) -> Result<Answer, ApiError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut text = String::new();
    loop {
        let next = bounded(reply.deadline, async { reply.streamed.text.next().await.transpose() }).await;
        match or_release(chat, turn, next).await? {
            Some(chunk) => {
                text.push_str(&chunk);
                on_chunk(chunk).await;
            }
            None => break,
        }
    }
    let usage = reply.streamed.usage();
    let whole = Reply::text(text, usage, reply.streamed.model);
    store(chat, turn, &whole, Some(reply.id), None).await
}

/// A model call bounded by `deadline`: its error mapped, past the deadline a timeout.
async fn bounded<T>(deadline: Instant, call: impl Future<Output = Result<T, ModelError>>) -> Result<T, ApiError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result.map_err(model_error),
        Err(_) => Err(ApiError::ModelTimeout),
    }
}

pub(super) fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::Timeout(_) => ApiError::ModelTimeout,
        // Throttling is not the request's failure: come back when the provider said (5 s when
        // it did not). The message stays stored; a retry with the same key answers it.
        ModelError::Throttled { retry_after } => ApiError::ModelBusy {
            retry_after_secs: retry_after.map_or(5, |d| d.as_secs_f64().ceil().max(1.0) as u64),
        },
        other => ApiError::ModelFailed(other.into()),
    }
}
