//! Integration tests: a real Postgres behind a real pgbouncer in transaction mode
//! (`scripts/stack up`), a fresh database per test.

use integration_tests::helpers;

mod agent_runs;
mod agents_api;
mod alerting;
mod api;
mod approvals;
mod browser;
mod chat;
mod chat_abuse;
mod chat_stream;
mod chat_tools;
mod configuration;
mod data_api;
mod data_layer;
mod deployment;
mod faults;
mod health;
mod hostile_input;
mod lambda_watch;
mod lifecycle;
mod live;
mod mcp_servers;
mod mcp_tools;
mod migrations;
mod model_capacity;
mod model_tools;
mod model_usage;
mod scheduler;
mod secrets;
mod streaming;
mod tls;
mod tool_calls;
mod tool_sources_api;
