//! `model_bound`: real model work at scale. The release `scheduler` binary, driven through a local
//! Lambda Runtime API with the template's run bounds (280 s per invocation, 20 s margin, pool of
//! 2), drains a backlog against the OpenAI-compatible stand-in under a provider quota: at most
//! `quota` calls at once (429 with `Retry-After` beyond it), each answered after 1 s ± 20 %.
//! The function's own self-invocation goes to a stand-in of Lambda's `Invoke` API; the bench
//! then starts that invocation as the platform would, on the same warm instance.
//!
//! Prints, per quota: sustained tasks/s (whole run, and steady state between 10 % and 90 % of
//! it), the share of the quota's ceiling (`quota / latency`), throttles, peak server connections,
//! peak RSS, invocations. Writes the concurrency curves (calls in flight at the provider every
//! 500 ms, the limit the scheduler reports every 10 s) to `docs/model_bound.svg`.
//!
//! Run: `scripts/bench model_bound`. `MODEL_BOUND_TASKS` (default 100000) tasks for quota 300,
//! then `quota × MODEL_BOUND_FOLLOW_SECS` (default 120) tasks for each of
//! `MODEL_BOUND_FOLLOW_QUOTAS` (default `50,1000`).

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::fakes::{FakeServer, Quota};
use integration_tests::helpers::{
    built_binary, deadline_in, memory_kib, watch_connections, InvokeResult, RuntimeApi, TestDb,
};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const LATENCY: Duration = Duration::from_secs(1);
/// Lambda's invocation timeout in the template.
const INVOCATION: Duration = Duration::from_secs(300);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Run {
    quota: usize,
    tasks: i64,
    completed: i64,
    seconds: f64,
    steady_rate: f64,
    throttled: usize,
    peak_connections: i64,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    peak_in_flight: usize,
    invocations: usize,
    /// (seconds, admitted calls in flight at the provider)
    in_flight: Vec<(f64, usize)>,
    /// (seconds, the scheduler's reported limit)
    limits: Vec<(f64, f64)>,
}

async fn seed(db: &TestDb, n: i64) {
    let admin = db.direct().await;
    let agent: uuid::Uuid = admin
        .query_one(
            "INSERT INTO agents (name, instructions) VALUES ('worker', 'Be brief.') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    integration_tests::helpers::seed_due_tasks(&admin, agent, n).await;
}

async fn run(quota: usize, tasks: i64) -> Run {
    let db = TestDb::new().await;
    seed(&db, tasks).await;
    let provider = FakeServer::openai().await;
    provider.stop_recording();
    provider.set_quota(Quota {
        concurrent: quota,
        latency: LATENCY,
        jitter: 0.2,
    });
    let lambda = FakeServer::lambda().await;
    let runtime = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(built_binary("release", "scheduler"))
        .envs(runtime.function_env("scheduler"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("DB_POOL_MAX_SIZE", "2")
        .env("DB_STATEMENT_TIMEOUT_MS", "10000")
        .env("MODEL_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", format!("{}/v1", provider.url()))
        .env("OPENAI_MODEL", "stand-in")
        .env("MODEL_TIMEOUT_MS", "60000")
        .env("SCHEDULER_MAX_RUN_MS", "280000")
        .env("SCHEDULER_SAFETY_MARGIN_MS", "20000")
        .env("SCHEDULER_TASK_TIMEOUT_MS", "60000")
        .env("SCHEDULER_MAX_CONCURRENCY", (quota * 2).max(500).to_string())
        .env("SCHEDULER_SELF_INVOKE", "true")
        .env("AWS_ENDPOINT_URL_LAMBDA", lambda.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the release scheduler (cargo build --release --bins)");
    let pid = child.id().expect("pid");

    // The limit the scheduler reports (EMF `SchedulerConcurrency`, every 10 s of a run).
    let started = Instant::now();
    let limits = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let reported = limits.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(doc) = serde_json::from_str::<Value>(&line) {
                if let Some(limit) = doc["SchedulerConcurrency"].as_f64() {
                    reported.lock().unwrap().push((started.elapsed().as_secs_f64(), limit));
                }
            }
        }
    });
    // Calls in flight at the provider, every 500 ms.
    let in_flight = Arc::new(Mutex::new(Vec::new()));
    let (curve, load) = (in_flight.clone(), provider.load.clone());
    let sampler = tokio::spawn(async move {
        loop {
            let now = load.in_flight.load(Ordering::SeqCst);
            curve.lock().unwrap().push((started.elapsed().as_secs_f64(), now));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (stop, monitor) = watch_connections(&db);
    // The instance at rest after init, before its first invocation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kib = memory_kib(pid).1;

    let mut payload: Value =
        serde_json::from_str(include_str!("../../events/schedule.json")).expect("events/schedule.json");
    let mut invocations = 0;
    let mut peak_in_flight = 0;
    loop {
        let result = runtime.invoke(&payload, deadline_in(INVOCATION)).await;
        invocations += 1;
        match result {
            InvokeResult::Response(summary) => {
                peak_in_flight = peak_in_flight.max(summary["peakInFlight"].as_u64().unwrap_or(0) as usize);
                println!("  invocation {invocations}: {summary}");
            }
            InvokeResult::Error(e) => panic!("the scheduler failed: {e}"),
        }
        // The platform starts the continuation the function asked for.
        let next = lambda.seen.lock().unwrap().get(invocations - 1).map(|r| r.body.clone());
        match next {
            Some(body) => payload = body,
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak_connections = monitor.await.unwrap_or(0);
    sampler.abort();
    let peak_rss_kib = memory_kib(pid).0;
    let _ = child.kill().await;

    let completed: i64 = db
        .direct()
        .await
        .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    let in_flight = in_flight.lock().unwrap().clone();
    let limits = limits.lock().unwrap().clone();
    Run {
        quota,
        tasks,
        completed,
        seconds,
        steady_rate: steady_rate(&in_flight, seconds),
        throttled: provider.load.throttled.load(Ordering::SeqCst),
        peak_connections,
        idle_rss_kib,
        peak_rss_kib,
        peak_in_flight,
        invocations,
        in_flight,
        limits,
    }
}

/// Calls completed per second between 10 % and 90 % of the run: by Little's law, the mean
/// number in flight at the provider over the mean latency.
fn steady_rate(in_flight: &[(f64, usize)], seconds: f64) -> f64 {
    let window: Vec<usize> = in_flight
        .iter()
        .filter(|(t, _)| *t >= seconds * 0.1 && *t <= seconds * 0.9)
        .map(|(_, n)| *n)
        .collect();
    if window.is_empty() {
        return 0.0;
    }
    window.iter().sum::<usize>() as f64 / window.len() as f64 / LATENCY.as_secs_f64()
}

/// A line chart of every run's calls in flight (lines) and reported limit (dots), with each
/// quota dashed: plain SVG, no plotting dependency for one figure.
fn svg(runs: &[Run]) -> String {
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let (w, h, left, bottom, top, right) = (900.0, 420.0, 60.0, 40.0, 30.0, 160.0);
    let max_t = runs.iter().map(|r| r.seconds).fold(1.0, f64::max).ceil();
    let max_y = runs
        .iter()
        .flat_map(|r| {
            r.in_flight
                .iter()
                .map(|p| p.1 as f64)
                .chain(r.limits.iter().map(|p| p.1))
                .chain([r.quota as f64])
        })
        .fold(1.0, f64::max)
        * 1.1;
    let x = |t: f64| left + t / max_t * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - top - bottom);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="18" font-size="14">calls in flight at the provider (lines), the limit the scheduler reports (dots), the quota (dashed)</text>"#
    );
    let (x0, y0, x1, y1) = (x(0.0), y(0.0), x(max_t), y(max_y));
    let _ = writeln!(
        out,
        r#"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="black" fill="none"/>"#
    );
    for i in 0..=5 {
        let v = max_y / 1.1 * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#,
            left - 6.0,
            y(v) + 4.0,
            v
        );
        let t = max_t * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0} s</text>"#,
            x(t),
            h - bottom + 16.0,
            t
        );
    }
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = r
            .in_flight
            .iter()
            .map(|(t, n)| format!("{:.1},{:.1}", x(*t), y(*n as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" stroke="{color}" fill="none" stroke-width="1.5"/>"#,
            points.join(" ")
        );
        for (t, limit) in &r.limits {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(*t),
                y(*limit)
            );
        }
        let q = y(r.quota as f64);
        let _ = writeln!(
            out,
            r#"<line x1="{x0}" y1="{q:.1}" x2="{x1}" y2="{q:.1}" stroke="{color}" stroke-dasharray="4 4" stroke-width="1"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">quota {}: {:.0} tasks/s</text>"#,
            x1 + 8.0,
            top + 20.0 + 18.0 * i as f64,
            r.quota,
            r.completed as f64 / r.seconds
        );
    }
    out.push_str("</svg>\n");
    out
}

#[tokio::main]
async fn main() {
    let main_tasks = env_number("MODEL_BOUND_TASKS", 100_000) as i64;
    let follow_secs = env_number("MODEL_BOUND_FOLLOW_SECS", 120) as i64;
    let follow: Vec<usize> = std::env::var("MODEL_BOUND_FOLLOW_QUOTAS")
        .unwrap_or_else(|_| "50,1000".into())
        .split(',')
        .filter_map(|q| q.trim().parse().ok())
        .collect();
    let mut plan = vec![(300usize, main_tasks)];
    plan.extend(follow.iter().map(|&q| (q, q as i64 * follow_secs)));

    let mut runs = Vec::new();
    for (quota, tasks) in plan {
        println!("quota {quota}: {tasks} tasks, 1 s ± 20 % per call");
        let r = run(quota, tasks).await;
        let rate = r.completed as f64 / r.seconds;
        let ceiling = r.quota as f64 / LATENCY.as_secs_f64();
        println!(
            "  {}/{} completed in {:.1} s: {:.1} tasks/s overall, {:.1} steady ({:.1} % of the quota's {:.0}/s); \
             {} throttles ({:.2}/s); peak {} in flight; {} server connections at most; \
             RSS {:.1} MiB idle, {:.1} MiB peak ({:.1} KiB per call in flight); {} invocation(s)",
            r.completed,
            r.tasks,
            r.seconds,
            rate,
            r.steady_rate,
            100.0 * r.steady_rate / ceiling,
            ceiling,
            r.throttled,
            r.throttled as f64 / r.seconds,
            r.peak_in_flight,
            r.peak_connections,
            r.idle_rss_kib as f64 / 1024.0,
            r.peak_rss_kib as f64 / 1024.0,
            r.peak_rss_kib.saturating_sub(r.idle_rss_kib) as f64 / r.peak_in_flight.max(1) as f64,
            r.invocations,
        );
        runs.push(r);
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/model_bound.svg");
    std::fs::write(path, svg(&runs)).expect("write docs/model_bound.svg");
    println!("curve: docs/model_bound.svg");
}
