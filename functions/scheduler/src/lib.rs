//! The scheduler function: claims due, approved agent tasks, runs them with a concurrency that
//! follows the model provider (`limiter`), records finished tasks together in one statement,
//! schedules recurrences and rescues expired leases, continuously while the invocation's deadline
//! allows (`pipeline`); a backlog that outlives the deadline starts the next invocation
//! (`continuation`). No connection is held while tasks run.
//!
//! # Modules, in one direction
//!
//! ```text
//! run ──> pipeline ──> work ──> tasks
//!  │         │          │         ^
//!  │         └──────────┴──> report
//!  ├──> work, report            (run builds the work and reports the run)
//!  ├──> instance ──> work::publish, report::Spent
//!  └──> error ──> trigger
//! ```
//!
//! - `run`: the Lambda handler and one invocation: builds the work and the pipeline, rescues,
//!   runs the pipeline, continues, reports. Nothing below it knows of it.
//! - `instance`: the [`Scheduler`], what an instance keeps across invocations.
//! - `pipeline`: the claim / run / record loop, over the `Work` trait only.
//! - `work`: that trait and its production side: one task's model call (`runner`), the SQL calls
//!   of an invocation (`store`), live pushes after a record (`publish`).
//! - `report`: [`Summary`], [`Stop`], the tally of recorded batches, tokens spent, metrics lines.
//! - [`tasks`]: the statements (claim, finish, rescue), one round trip each.
//! - `error`: [`SchedulerError`] and the `errorType` of each cause.
//! - Leaves, used from above: [`limiter`], [`settings`], [`continuation`], `deadline`,
//!   `trigger`.

pub mod continuation;
mod deadline;
mod error;
mod instance;
pub mod limiter;
mod pipeline;
mod report;
mod run;
pub mod settings;
pub mod tasks;
mod trigger;
mod work;

pub use deadline::Deadline;
pub use error::{error_type, SchedulerError};
pub use instance::Scheduler;
pub use report::{Stop, Summary};
pub use run::handle;
pub use settings::Settings;
pub use shared::tasks::{recurrence, series};
pub use trigger::{BadPayload, Trigger};
