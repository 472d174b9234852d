//! Integration tests: a real Postgres behind a real pgbouncer in transaction mode
//! (`scripts/stack up`), a fresh database per test.

mod helpers;

mod data_layer;
mod lifecycle;
mod migrations;
