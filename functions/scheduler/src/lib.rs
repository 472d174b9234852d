//! The scheduler function: claims due, approved agent tasks, runs them with a concurrency that
//! follows the model provider (`limiter`), records finished tasks together in one statement,
//! schedules recurrences and rescues expired leases, continuously while the invocation's deadline
//! allows (`pipeline`); a backlog that outlives the deadline starts the next invocation
//! (`continuation`). No connection is held while tasks run.

pub mod continuation;
mod deadline;
pub mod limiter;
mod pipeline;
mod run;
pub mod settings;
pub mod tasks;
mod trigger;

pub use deadline::Deadline;
pub use run::{handle, Scheduler, SchedulerError, Stop, Summary};
pub use settings::Settings;
pub use shared::tasks::{recurrence, series};
pub use trigger::{BadPayload, Trigger};
