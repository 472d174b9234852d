//! The agent model behind one trait: the reply to a chat message and the work of a task.
//! The deterministic local model is the default so the product runs offline; remote clients
//! (an OpenAI-compatible endpoint with the `openai` feature, Amazon Bedrock with `bedrock`) plug
//! in behind the same trait. Only the binaries that call a model enable those features.

#[cfg(feature = "bedrock")]
pub mod bedrock;
#[cfg(feature = "openai")]
pub mod openai;

mod agent;
mod local;
mod provider;
mod request;
mod settings;

pub use self::agent::{
    AgentModel, ModelError, Reply, SharedModel, StreamedReply, TextStream, ToolCallSlot, Usage, UsageSlot,
};
pub use self::local::{LocalModel, LOCAL_MODEL_NAME};
pub use self::provider::{from_env, ModelInitError};
pub use self::request::{normalized, ChatMessage, ModelRequest, Role, ToolCall, ToolSpec, NO_RESULT};
pub use self::settings::{
    ModelLimits, BEDROCK_MODEL_ID, LOCAL_MODEL_LATENCY_MS, MODEL_MAX_REPLY_BYTES, MODEL_MAX_TOKENS, MODEL_PROVIDER,
    MODEL_STREAM_GAP_MS, MODEL_TIMEOUT_MS, OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL, SETTINGS,
};
