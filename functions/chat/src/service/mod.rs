//! The turn, whichever way its reply is delivered: `begin` ([`prepare`]: the route, the user,
//! the body, the key and round trip 1, whose connection goes back before the model is called),
//! `call` (the model: [`answer`] for a whole reply; [`open_stream`] then [`stream`] for a
//! streamed one; model errors become [`ApiError`](shared::http::ApiError)s there, once), `run`
//! (an agent with tools: [`run`], the agent's loop, whole or streamed, its steps stored as they
//! complete; it answers, or pauses for a person's approval) and `end`
//! (round trip 2, the reply stored once then pushed to the user's other tabs; or the release of a
//! turn that failed: its lease and in-flight slot go back, the user's message stays, so a retry
//! with the same Idempotency-Key answers it).
//!
//! The adapters (`handler`, `stream`) reach the store, the decision and the views only through
//! this module.

mod begin;
mod call;
mod end;
mod run;

use chrono::{DateTime, Utc};
use shared::auth::{Authenticator, User};
use shared::db::Db;
use shared::live::Publisher;
use shared::metrics::Metrics;
use shared::model::{ModelRequest, SharedModel};
use uuid::Uuid;

use crate::settings::Settings;
use crate::turn::{AgentRun, StoredReply};
pub(crate) use crate::view::{Event, ReplyView};
pub(crate) use begin::prepare;
pub(crate) use call::{answer, open_stream, stream};
pub(crate) use run::{run, Ran};

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
        let auth = Authenticator::new(shared::auth::AuthConfig::from_env(env)?)?;
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

/// A turn ready for the model: round trip 1 done, its connection given back.
pub(crate) struct Prepared {
    user: User,
    agent_id: Uuid,
    key: Option<String>,
    conversation_id: Uuid,
    message_id: Uuid,
    model_request: ModelRequest,
    /// The model call's bound (the message's lease covers it).
    model_timeout: std::time::Duration,
    lease: DateTime<Utc>,
    /// The agent has tools: the turn is this run.
    run: Option<AgentRun>,
}

impl Prepared {
    pub(crate) fn conversation_id(&self) -> Uuid {
        self.conversation_id
    }

    /// The turn is an agent's run with tools.
    pub(crate) fn is_run(&self) -> bool {
        self.run.is_some()
    }
}

/// A stored reply and its conversation: what both routes answer.
pub(crate) struct Answer {
    conversation_id: Uuid,
    reply: StoredReply,
}

impl Answer {
    /// The buffered route's body, and the stream's `done`.
    pub(crate) fn view(&self) -> ReplyView<'_> {
        ReplyView::new(
            self.conversation_id,
            self.reply.id,
            &self.reply.content,
            self.reply.created_at,
        )
    }

    /// The stream's `meta` for this reply.
    pub(crate) fn meta(&self) -> Event<'static> {
        Event::meta(self.conversation_id, self.reply.id)
    }
}

/// What round trip 1 decided.
pub(crate) enum Turn {
    /// This Idempotency-Key's reply is stored: answer it again.
    Replay(Answer),
    Ready(Prepared),
}
