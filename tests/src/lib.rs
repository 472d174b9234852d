//! Shared helpers of the integration tests and benchmarks.

pub mod bench;
pub mod bouncer;
pub mod browser;
pub mod cluster;
pub mod database;
pub mod fakes;
pub mod helpers;
pub mod live_gateway;
pub mod monitor;
mod process;
pub mod runtime;
pub mod stats;
pub mod wait;
