//! `cold_start`: each function's release binary started against a local Lambda Runtime API (the
//! real wire protocol) with its first event already queued, 20 times: spawn-to-first-response
//! time (init phase included: config, TLS set-up, the pool's first connection through pgbouncer
//! on loopback, the graceful-shutdown extension's registration) and peak RSS (VmHWM).
//!
//! Run: `scripts/bench cold_start` (COLD_STARTS=20).

use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::fakes;
use integration_tests::helpers::{built_binary, deadline_in, InvokeResult, RuntimeApi, TestDb};
use integration_tests::stats::percentile;
use serde_json::Value;

const SECRET: &str = "cold-start-jwt-secret-with-at-least-32-chars";
const SUPABASE: &str = "https://cold.supabase.co";

async fn one_cold_start(function: &str, event: &Value, db: &TestDb) -> (f64, u64, bool) {
    let runtime = RuntimeApi::start().await;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(built_binary("release", function))
        .envs(runtime.function_env(function))
        .env("DATABASE_URL", &db.pooled_url)
        .env("SUPABASE_URL", SUPABASE)
        .env("SUPABASE_JWT_SECRET", SECRET)
        .env("HEALTH_API_KEY", "cold-start-key")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the function");
    let result = runtime.invoke(event, deadline_in(Duration::from_secs(60))).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let rss = child
        .id()
        .map_or(0, |pid| integration_tests::helpers::memory_kib(pid).0);
    let ok = match result {
        InvokeResult::Response(v) => v.get("statusCode").is_none_or(|s| s == 200),
        InvokeResult::Error(_) => false,
    };
    let _ = child.kill().await;
    (ms, rss, ok)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = std::env::var("COLD_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize);
    let db = TestDb::new().await;
    db.direct()
        .await
        .batch_execute("INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'demo', 'public')")
        .await
        .unwrap();
    let token = fakes::hs256(
        SECRET,
        &fakes::claims(&format!("{SUPABASE}/auth/v1"), "5b1c7a2e-8f6d-4c3b-9a1e-2d4f6b8c0e13"),
    );
    let chat = fakes::chat_event(&token);
    let events = [
        ("chat", chat),
        (
            "health",
            serde_json::from_str(include_str!("../../events/health.json")).unwrap(),
        ),
        (
            "scheduler",
            serde_json::from_str(include_str!("../../events/schedule.json")).unwrap(),
        ),
    ];
    println!(
        "cold_start: {runs} cold starts per function, release binaries, pool's first connection through pgbouncer"
    );
    println!();
    println!("| function | binary KiB | p50 ms | p90 ms | max ms | peak RSS MiB (max) | all answered |");
    println!("|---|---|---|---|---|---|---|");
    for (function, event) in &events {
        let size = std::fs::metadata(built_binary("release", function)).map_or(0, |m| m.len() / 1024);
        let mut times = Vec::new();
        let mut rss_max = 0;
        let mut all_ok = true;
        for _ in 0..runs {
            let (ms, rss, ok) = one_cold_start(function, event, &db).await;
            times.push(ms);
            rss_max = rss_max.max(rss);
            all_ok &= ok;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {function} | {size} | {:.1} | {:.1} | {:.1} | {:.1} | {all_ok} |",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[times.len() - 1],
            rss_max as f64 / 1024.0
        );
    }
}
