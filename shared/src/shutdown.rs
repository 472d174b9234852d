//! Graceful shutdown: Lambda sends SIGTERM before it shuts an instance down when an extension
//! is registered; the runtime's helper registers a no-op internal extension for that and also
//! handles SIGINT (Ctrl-C locally). The pool is closed so the pooler sees the client leave.

use std::time::Duration;

use crate::db::Db;

/// Time given to a request in progress to finish, `SHUTDOWN_GRACE_MS` (default 350: Lambda
/// allows about 500 ms for the whole shutdown phase of a function with an internal extension).
fn request_grace() -> Duration {
    std::env::var("SHUTDOWN_GRACE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms <= 60_000)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(350))
}
/// Time given to connection tasks to send `Terminate` after the pool closes.
const DRAIN: Duration = Duration::from_millis(100);

/// Registers the shutdown hook. Call in `main`, before `run`.
pub async fn close_pool_on_shutdown(db: Db) {
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        // A request in progress finishes first: its writes are not cut in half.
        let drained = db.wait_for_requests(request_grace()).await;
        let before = db.status();
        db.close();
        if !drained {
            tracing::warn!("shutdown: a request was still running; closing the pool anyway");
        }
        tokio::time::sleep(DRAIN).await;
        tracing::info!(connections = before.size, "shutdown: database pool closed");
    })
    .await;
}
