//! The scheduler function: claims due, approved agent tasks in batches, runs them with bounded
//! concurrency, records each batch in one statement, schedules recurrences and rescues expired
//! leases, while the invocation's deadline allows. With a pool of two, the finish of one batch
//! and the claim of the next run at the same time on the two connections; no connection is held
//! while tasks run.

mod deadline;
pub mod recurrence;
mod run;
pub mod series;
pub mod settings;
pub mod tasks;
mod trigger;

pub use deadline::Deadline;
pub use run::{handle, Scheduler, SchedulerError, Summary};
pub use settings::Settings;
pub use trigger::{BadPayload, Trigger};
