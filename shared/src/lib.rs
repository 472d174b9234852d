//! What two or more functions share, in layers that depend one way:
//!
//! - platform: [`config`] (the one configuration reader), [`db`] (settings, TLS, pool, bounded
//!   pooler-safe statements, errors, migrations, the connection report), [`metrics`],
//!   [`telemetry`], [`lifecycle`] (init and graceful shutdown), [`secrets`] (Secrets Manager
//!   through the Lambda extension);
//! - features on top, each behind a Cargo feature so a binary compiles only what it calls:
//!   [`http`] (API Gateway plumbing), [`auth`] (Supabase tokens), [`model`] (the agent model;
//!   the OpenAI-compatible and Bedrock clients behind `openai` and `bedrock`), [`tasks`] (task
//!   states, recurrence, series), [`usage`] (token budgets and their UTC reset), [`outbound`]
//!   (capped reads of outbound HTTP answers), [`live`] (pushes to WebSocket connections).
//!
//! Each function's own handler, request types and SQL live in `functions/<name>/`.

pub mod config;
pub mod db;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod secrets;
pub mod telemetry;

#[cfg(feature = "auth")]
pub mod auth;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "model")]
pub mod model;
#[cfg(any(feature = "auth", feature = "openai"))]
pub mod outbound;
#[cfg(feature = "tasks")]
pub mod tasks;
#[cfg(feature = "usage")]
pub mod usage;
