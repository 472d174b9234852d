//! The frontend's routes besides chat: the agents a user may use, their conversation history,
//! their tasks with the human approval step, and their token usage against the daily budget.
//! Read routes are one statement each; every state change is one guarded statement.

pub mod agents;
pub mod conversations;
pub mod cursor;
mod handler;
mod query;
pub mod settings;
pub mod tasks;
pub mod usage;

pub use handler::{handle, Api};
pub use settings::Settings;
