//! The chat functions: `POST /api/agents/chat` (binary `chat`, buffered) and
//! `POST /api/agents/chat/stream` (binary `chat-stream`, Server-Sent Events). A signed-in user
//! talks to an agent; the conversation is kept by `conversationId`. Two database round trips per
//! message, none held across the model call.
//!
//! Modules, dependencies pointing one way only (down this list):
//! - `handler` (buffered) and `stream` (SSE): the adapters, siblings over `service`; neither
//!   imports the other, nor anything below `service`.
//! - `service`: the turn (prepare, call, store, release) and the model-error mapping.
//! - [`request`] (the body, parsed), [`settings`], `view` (the answers' wire shapes) and
//!   [`store`] (the SQL of both round trips).
//! - [`turn`]: the pure decision over round trip 1's row; imports nothing from the crate.
//!
//! ```text
//! handler ──┐
//!           ├──> service ──> request, settings, view
//! stream ───┘       │
//!                   ├──> store ──> turn
//!                   └──> turn
//! ```

mod handler;
pub mod request;
mod service;
pub mod settings;
pub mod store;
mod stream;
pub mod turn;
mod view;

pub use handler::handle;
pub use service::Chat;
pub use settings::Settings;
pub use stream::{handle_stream, SseBody};
