//! The shared library of the agent backend: configuration, the pooler-safe database layer,
//! migrations, telemetry and the Lambda lifecycle helpers used by every function.

pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod health;
pub mod http_error;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod scheduler;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
