//! The frontend's routes besides chat: the agents a user may use (and their own, created and
//! edited, with their tools and their tool sources, the MCP servers), their conversation history, their tasks with the human approval
//! step, their agents' runs with the approval of the tool calls that wait for one, and their token usage against the daily budget.
//! Read routes are one statement each; every state change is one guarded statement.
//!
//! Modules, and the one direction they depend in (`→`: uses):
//!
//! - `handler`: routing, authentication, connections and answers
//!   → the resources [`agents`], [`tools`], [`tool_sources`], [`conversations`], [`tasks`], [`runs`], [`usage`].
//! - each resource: its `mod.rs` (its rules, and what it re-exports) → `request` (what a caller
//!   asks: typed bodies for agents, tools, tool sources and tasks, filters for tasks, query parameters for
//!   conversations and usage), `store` (its statements, rows decoded by
//!   column name) and `view` (its JSON); `view` → `store` (the rows it shows), `store` →
//!   `request` (what it writes). None of them uses `handler`.
//! - the helpers every resource may use: [`query`] (query strings), [`cursor`] (keyset pages),
//!   `row` (row decoding) and [`settings`]; they use no resource.

pub mod agents;
pub mod conversations;
pub mod cursor;
mod handler;
pub mod query;
mod row;
pub mod runs;
pub mod settings;
pub mod tasks;
pub mod tool_sources;
pub mod tools;
pub mod usage;

pub use handler::{handle, Api};
pub use settings::Settings;
