//! Local stand-ins for the services the tests cannot reach, speaking their real wire formats,
//! one file each; each runs on 127.0.0.1 and records what it was sent:
//!
//! - `supabase_auth`: Supabase Auth's JWKS endpoint, and access tokens as a project issues
//!   them (or an attacker forges them);
//! - `openai`: an OpenAI-compatible chat-completions API, plain and streamed;
//! - `bedrock`: Bedrock's Converse and ConverseStream APIs;
//! - `lambda`: Lambda's `Invoke` API (the scheduler's continuation);
//! - `secrets_manager`: Secrets Manager (moto) behind the Parameters and Secrets extension;
//! - `tool_server`: an agent's tool, recording calls (headers, exact body) and answering as set;
//! - `tool_model`: a model that calls tools, as OpenAI and Bedrock write tool calls, whole and
//!   streamed, checking each history as they do.
//!
//! `server` is the recording server the request-and-answer ones run on, `streaming` what
//! the streaming ones share.

mod bedrock;
mod lambda;
mod openai;
mod secrets_manager;
mod server;
mod streaming;
mod supabase_auth;
mod tool_model;
mod tool_server;

pub use bedrock::{bedrock_streaming, bedrock_streaming_with};
pub use openai::{openai_streaming, openai_streaming_provider, StreamingProvider};
pub use secrets_manager::{secrets_extension, Moto};
pub use server::{FakeServer, Load, Mode, Quota, Seen, PLAIN_USAGE};
pub use streaming::{streamed_usage, Frames, LastWritten, StreamScript};
pub use supabase_auth::{chat_event, claims, es256, hs256, rs256, unsigned};
pub use tool_model::{ModelCall, Step, ToolModel, ToolScript};
pub use tool_server::{ToolHit, ToolMode, ToolServer, ToolTiming};
