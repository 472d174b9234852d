//! What two or more functions share, in layers that depend one way (features never import
//! each other's internals; the platform imports no feature).
//!
//! Platform, always built:
//! - [`config`]: the one configuration reader: declared settings ([`config::Setting`]), one
//!   environment snapshot ([`config::Env`]) and the README's settings tables
//!   (`setting`, `env`, `table`).
//! - [`db`]: `settings` (URL parsing in `settings::url`, TLS modes in `settings::ssl`), `tls`,
//!   `pool` (one warm pool per instance, release mode), `sql` (bounded, pooler-safe statements),
//!   `cancel` (server-side cancel), `error` (classified errors keeping their cause), `row`
//!   (decoding by column name), `counters`, `activity` (the `pg_stat_activity` report), `probe`
//!   (the pooler as a new client sees it), `migrate`.
//! - [`metrics`] (CloudWatch EMF lines; every metric name once, in `metrics::name`),
//!   [`telemetry`] (tracing set-up; [`telemetry::Chain`] prints an error with its causes),
//!   [`lifecycle`] (init and graceful shutdown), [`secrets`] (Secrets Manager through the Lambda
//!   extension).
//!
//! Features on top, each behind a Cargo feature so a binary compiles only what it calls:
//! - [`http`] (`http`): the handler wrapper, the one API error enum and its status map, typed
//!   request bodies and their validating newtypes (`body`), response builders (`response`),
//!   content-type and size checks (`request`).
//! - [`time`] (`http`): [`time::Timestamp`], the one RFC 3339 format of every HTTP answer.
//! - [`auth`] (`auth`): Supabase access tokens: `settings`, `verify` (HS256, ES256/RS256),
//!   `jwks` (the signing-key cache), `request` (the bearer token or the authorizer's claims).
//! - [`model`] (`model`): the agent model: `agent` (the trait, errors, usage), `request`
//!   (messages and history normalisation), `settings`, `local` (the local model), `provider`
//!   (selection from the environment); `openai` and `bedrock` behind their features.
//! - [`tasks`] (`tasks`): task states, `recurrence`, `series`.
//! - [`usage`] (`usage`): token budgets and their UTC reset.
//! - [`outbound`] (`auth`, `openai` or `agent`): clients built with their bounds, capped reads
//!   of outbound HTTP answers.
//! - [`agent`] (`agent`): agents that act: `address` (which addresses a tool may be called at),
//!   `tool_call` (the outbound rules, the signed and bounded call of a tool).
//! - [`live`]: a change's live connections (the SQL fragment every publisher adds); with
//!   feature `live`, `publish` (events, settings, the pushes through the API Gateway
//!   Management API).
//!
//! Binaries: `migrate` and `dev-token` (`src/bin/`). Each function's own handler, request types,
//! views and SQL live in `functions/<name>/`; `docs/ARCHITECTURE.md` draws the whole layout.

pub mod config;
pub mod db;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod secrets;
pub mod telemetry;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "auth")]
pub mod auth;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "model")]
pub mod model;
#[cfg(any(feature = "auth", feature = "openai", feature = "agent"))]
pub mod outbound;
#[cfg(feature = "tasks")]
pub mod tasks;
#[cfg(feature = "http")]
pub mod time;
#[cfg(feature = "usage")]
pub mod usage;
