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

/// CPU seconds (user + system) process `pid` has used so far (`/proc/<pid>/stat`, at Linux's
/// 100 ticks a second); 0 when unreadable.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (in parentheses, which may hold spaces): utime and
    // stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
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
