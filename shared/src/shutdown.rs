//! Graceful shutdown: Lambda sends SIGTERM before it shuts an instance down when an extension
//! is registered; the runtime's helper registers a no-op internal extension for that and also
//! handles SIGINT (Ctrl-C locally). The pool is closed so the pooler sees the client leave.

use std::time::Duration;

use crate::db::Db;

/// Time given to connection tasks to send `Terminate` after the pool closes (Lambda allows
/// about 500 ms for the whole shutdown phase).
const DRAIN: Duration = Duration::from_millis(100);

/// Registers the shutdown hook. Call in `main`, before `run`.
pub async fn close_pool_on_shutdown(db: Db) {
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        let before = db.status();
        db.close();
        tokio::time::sleep(DRAIN).await;
        tracing::info!(connections = before.size, "shutdown: database pool closed");
    })
    .await;
}
