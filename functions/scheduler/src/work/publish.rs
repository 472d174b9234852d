//! Live updates: one `task.updated` per recorded task, pushed to its owner's connections after
//! the record committed, on a task of its own (the next record does not wait for it), a few
//! batches at a time; an invocation ends only once its pushes have.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use uuid::Uuid;

use shared::db::Db;
use shared::live::{Connections, Delivery, LiveEvent, Publisher};
use shared::telemetry::Chain;

use crate::tasks::TaskConnection;

/// Recorded batches whose pushes may run at once; past it, a record waits for the oldest.
const PUBLISHING_AT_ONCE: usize = 4;

/// The pushes of recorded batches still running, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Publishing(Mutex<VecDeque<JoinHandle<()>>>);

impl Publishing {
    /// The queue; handles stay valid whatever panicked while it was held.
    fn queue(&self) -> MutexGuard<'_, VecDeque<JoinHandle<()>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes a recorded batch's events on their own task (on another core, while the next
    /// batch runs and is recorded), at most [`PUBLISHING_AT_ONCE`] batches at a time: past it,
    /// this waits for the oldest (each is bounded by `LIVE_PUBLISH_TIMEOUT_MS`).
    pub(crate) async fn publish(&self, live: &Publisher, db: &Db, rows: &[TaskConnection]) {
        let deliveries = deliveries(rows);
        let oldest = {
            let mut queue = self.queue();
            queue.retain(|p| !p.is_finished());
            if queue.len() >= PUBLISHING_AT_ONCE {
                queue.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = oldest {
            stopped(oldest.await);
        }
        let (live, db) = (live.clone(), db.clone());
        let pushing = tokio::spawn(async move {
            live.publish(&db, &deliveries).await;
        });
        self.queue().push_back(pushing);
    }

    /// Waits for every batch's pushes still running (each within its bound): the invocation's
    /// response waits for them, as Lambda freezes the instance once it is sent.
    pub(crate) async fn wait(&self) {
        loop {
            let next = self.queue().pop_front();
            let Some(pushing) = next else {
                return;
            };
            stopped(pushing.await);
        }
    }
}

/// Logs a batch's pushes that ended by a panic or a cancellation.
fn stopped(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::warn!(error = %Chain(&e), "a batch's live pushes stopped");
    }
}

/// One `task.updated` per recorded task, to its owner's connections.
fn deliveries(rows: &[TaskConnection]) -> Vec<Delivery> {
    let mut by_task: BTreeMap<Uuid, Delivery> = BTreeMap::new();
    for row in rows {
        let delivery = by_task.entry(row.task_id).or_insert_with(|| Delivery {
            event: LiveEvent::task(row.task_id, row.status.as_str(), row.at),
            to: Connections::default(),
        });
        if row.open {
            delivery.to.open.push(row.connection_id.clone());
        } else {
            delivery.to.expired.push(row.connection_id.clone());
        }
    }
    by_task.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskStatus;

    #[test]
    fn one_event_per_task_to_its_open_and_expired_connections() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let row = |task_id, connection: &str, open| TaskConnection {
            task_id,
            status: TaskStatus::Completed,
            connection_id: connection.into(),
            open,
            at: chrono::Utc::now(),
        };
        let out = deliveries(&[row(a, "c1", true), row(a, "c2", false), row(b, "c3", true)]);
        assert_eq!(out.len(), 2);
        let to_a = out.iter().find(|d| d.to.open.contains(&"c1".to_string())).unwrap();
        assert_eq!(to_a.to.expired, vec!["c2".to_string()]);
        let to_b = out.iter().find(|d| d.to.open.contains(&"c3".to_string())).unwrap();
        assert!(to_b.to.expired.is_empty());
    }
}
