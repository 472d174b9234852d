//! Shared helpers of the integration tests and benchmarks: the local stand-ins of outside
//! services ([`fakes`]), the functions in process as the tests drive them ([`harness`],
//! [`models`], [`scheduling`]), the infrastructure under them ([`helpers`]: databases, pgbouncer,
//! Postgres clusters, the Lambda Runtime API, bounded waiting), `cargo lambda`
//! ([`cargo_lambda`]), the SAM template ([`template`]), real MCP servers ([`mcp_servers`]), and
//! what the benchmarks share.

pub mod bench;
pub mod bouncer;
pub mod browser;
pub mod cargo_lambda;
pub mod cluster;
pub mod database;
pub mod fakes;
pub mod harness;
pub mod helpers;
pub mod live_gateway;
pub mod mcp_servers;
pub mod models;
pub mod monitor;
mod process;
pub mod runtime;
pub mod scheduling;
pub mod stats;
pub mod template;
pub mod wait;
