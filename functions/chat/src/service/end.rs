//! After the model: round trip 2 stores the reply, its tokens are counted and the user's other
//! tabs told; or a failed turn gives its lease and in-flight slot back.

use chrono::{DateTime, Utc};
use shared::http::ApiError;
use shared::live::{Connections, Delivery, LiveEvent};
use shared::metrics::{name, Metric, Metrics};
use shared::model::{Reply, Usage};
use shared::telemetry::Chain;
use uuid::Uuid;

use super::{Answer, Chat, Prepared};
use crate::store::{self, ReplyToStore, TurnKeys};
use crate::turn::StoredReply;

/// Round trip 2: the reply stored (`reply_id`: the id `meta` announced), its tokens counted and
/// the slot released; then the user's other tabs told. A reply stored meanwhile by another
/// request with the same key is [`ApiError::answered_meanwhile`]; when the round trip fails, the
/// turn is released apart.
pub(super) async fn store(
    chat: &Chat,
    turn: &Prepared,
    reply: &Reply,
    reply_id: Option<Uuid>,
    run: Option<(Uuid, u32)>,
) -> Result<Answer, ApiError> {
    let keys = TurnKeys {
        user_id: turn.user.id,
        agent_id: turn.agent_id,
        conversation_id: turn.conversation_id,
        idempotency_key: turn.key.as_deref(),
    };
    let to_store = ReplyToStore {
        content: &reply.text,
        usage: reply.usage,
        model: reply.model.as_deref(),
        run,
    };
    let stored = async {
        let conn = chat.db.conn().await?;
        store::store_reply(&conn.sql(), &keys, to_store, turn.lease, reply_id).await
    }
    .await
    .map_err(ApiError::from);
    let Some((stored, connections)) = or_release(chat, turn, stored).await? else {
        return Err(ApiError::answered_meanwhile());
    };
    if let Some(usage) = reply.usage {
        emit_tokens(&chat.metrics, reply.model.as_deref(), usage);
    }
    publish(chat, turn, &stored, connections).await;
    Ok(Answer {
        conversation_id: turn.conversation_id,
        reply: stored,
    })
}

/// Committed, and no connection held: the user's message and the reply reach the user's other
/// tabs (bounded; a failed push never fails the turn).
async fn publish(chat: &Chat, turn: &Prepared, stored: &StoredReply, connections: Connections) {
    if !chat.live.is_on() || connections.is_empty() {
        return;
    }
    let deliveries = [
        Delivery {
            event: LiveEvent::message(turn.conversation_id, turn.message_id, "user", Utc::now()),
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

/// `result`, the turn released first when it is an error.
pub(super) async fn or_release<T>(chat: &Chat, turn: &Prepared, result: Result<T, ApiError>) -> Result<T, ApiError> {
    if result.is_err() {
        release_turn(chat, turn.user.id, Some(turn.message_id), turn.lease).await;
    }
    result
}

/// Best effort: gives a turn's lease and in-flight slot back (both expire on their own anyway).
pub(super) async fn release_turn(chat: &Chat, user_id: Uuid, message_id: Option<Uuid>, lease: DateTime<Utc>) {
    let released = async {
        let conn = chat.db.conn().await?;
        store::release_turn(&conn.sql(), user_id, message_id, lease).await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %Chain(&e), "could not release the turn; its lease will expire");
    }
}
