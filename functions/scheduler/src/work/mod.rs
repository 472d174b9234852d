//! The work the pipeline drives, behind one small trait ([`Work`]): claim a batch, run one task,
//! record a batch, hand back what a failed run still holds. The pipeline knows nothing else of
//! the database or the model, so its loop is tested against an in-memory stand-in.
//!
//! The production [`Worker`] joins its two halves:
//!
//! - [`runner`]: one task's model call, into its [`Finished`] outcome (no connection touched);
//!   for an agent with tools, [`agent_run`]: the run's loop, its steps stored as they complete.
//! - [`store`]: the SQL calls of one invocation through the pool (the statements are in
//!   [`crate::tasks`]), with their bookkeeping; [`publish`] pushes what a record committed.

pub(crate) mod agent_run;
pub(crate) mod publish;
pub(crate) mod runner;
pub(crate) mod store;

use std::future::Future;

use shared::db::DbError;

use crate::tasks::{ClaimedTask, Finished};

pub(crate) use agent_run::Toolboxes;
pub(crate) use runner::Runner;
pub(crate) use store::Store;

/// What one invocation's pipeline does with tasks.
pub(crate) trait Work: Sync {
    /// Claims up to `n` due tasks, leased to this invocation.
    fn claim(&self, n: usize) -> impl Future<Output = Result<Vec<ClaimedTask>, DbError>> + Send;

    /// Runs one claimed task; how it went is its outcome, never an error.
    fn run(&self, task: ClaimedTask) -> impl Future<Output = Finished> + Send;

    /// Records finished tasks together; the number of series the batch suspended.
    fn record(&self, batch: &[Finished]) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// Best effort, at the end of a failed run: hands back the tasks still leased to it.
    fn release_orphans(&self) -> impl Future<Output = ()> + Send;
}

/// The production work: model calls by the runner, statements by the store.
pub(crate) struct Worker<'a> {
    pub runner: Runner<'a>,
    pub store: &'a Store<'a>,
}

impl Work for Worker<'_> {
    async fn claim(&self, n: usize) -> Result<Vec<ClaimedTask>, DbError> {
        self.store.claim(n).await
    }

    async fn run(&self, task: ClaimedTask) -> Finished {
        self.runner.run(task).await
    }

    async fn record(&self, batch: &[Finished]) -> Result<u64, DbError> {
        self.store.record(batch).await
    }

    async fn release_orphans(&self) {
        self.store.release_orphans().await;
    }
}
