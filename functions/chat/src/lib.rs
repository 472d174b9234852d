//! The chat function: `POST /api/agents/chat`. A signed-in user talks to an agent; the
//! conversation is kept by `conversationId`. Two database round trips per message, none held
//! across the model call.

mod handler;
pub mod request;
pub mod settings;
pub mod store;
pub mod turn;

pub use handler::{handle, Chat};
pub use settings::Settings;
