//! What a benchmark watches from outside the system under test.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::database::TestDb;

/// Samples the server connections other than the bench's own every 20 ms; returns the peak.
pub fn watch_connections(db: &TestDb) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let (name, direct) = (db.name.clone(), db.direct_url.clone());
    let stop2 = stop.clone();
    let handle = tokio::spawn(async move {
        let url = format!("{direct}?application_name=bench-admin");
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("monitor connection");
        tokio::spawn(conn);
        while !stop2.load(Ordering::Relaxed) {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = $1 AND backend_type = 'client backend'
                        AND application_name <> 'bench-admin'",
                    &[&name],
                )
                .await
                .map_or(0, |r| r.get(0));
            peak.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak.load(Ordering::Relaxed)
    });
    (stop, handle)
}

/// Peak and current resident memory of process `pid` in KiB (`VmHWM`, `VmRSS`).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
