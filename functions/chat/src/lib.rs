//! The chat functions: `POST /api/agents/chat` (binary `chat`, buffered) and
//! `POST /api/agents/chat/stream` (binary `chat-stream`, Server-Sent Events). A signed-in user
//! talks to an agent; the conversation is kept by `conversationId`. Two database round trips per
//! message, none held across the model call.

mod handler;
pub mod request;
pub mod settings;
pub mod store;
mod stream;
pub mod turn;

pub use handler::{handle, Chat};
pub use settings::Settings;
pub use stream::{handle_stream, SseBody};
