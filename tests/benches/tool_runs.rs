//! `tool_runs`: agents that call tools, at scale (issue 22). One scheduler instance in process
//! (pool of 2 through pgbouncer, the tests' margins) drains a backlog of tasks whose agent has one
//! tool; each run is three steps: a model call that calls the tool, the tool call, a model call
//! that answers (script `[Call(lookup), Answer]`). The model stand-in answers each call after
//! 1 s and admits at most 300 calls at once (429 with `Retry-After: 2` beyond it, as OpenAI
//! throttles); the tool (on loopback) answers after 200 ms.
//!
//! Prints:
//! - runs/s (whole run, and steady between 10 % and 90 % of it) against the bound: 300 calls
//!   at once, 2 model-seconds per run, so at most 150 runs/s if the model were the only cost;
//! - step overhead: per run that was never throttled, the time from its run row (created right
//!   after its claim) to its task recorded, minus its two model calls and its tool call as the
//!   stand-ins timed them (arrival to answer), divided by its 3 steps; p50/p99/max, and each gap
//!   apart;
//! - peak server connections to Postgres (`pg_stat_activity`, every 20 ms) and peak pooler
//!   clients (the pool's size);
//! - RSS of this process (`/proc/self/status` `VmRSS`, every 100 ms) above its level before the
//!   run, per run in flight at the peak. The stand-ins run in this process too.
//!
//! Run: `scripts/bench tool_runs`. `TOOL_RUNS_TASKS` (default 6000), `TOOL_RUNS_QUOTA`
//! (default 300), `TOOL_RUNS_MIN_CONCURRENCY` (default the quota), `TOOL_RUNS_MAX_CONCURRENCY`
//! (default 1000).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer};
use integration_tests::helpers::{memory_kib, watch_connections, TestDb};
use integration_tests::models::openai_model_at;
use integration_tests::scheduling::{invoke, schedule_event, scheduler_on, seed_agent, seed_tasks, test_config};
use integration_tests::stats::percentile;
use serde_json::json;

const MODEL_LATENCY: Duration = Duration::from_secs(1);
const TOOL_LATENCY: Duration = Duration::from_millis(200);
const MODEL_CALLS_PER_RUN: f64 = 2.0;
const STEPS_PER_RUN: f64 = 3.0;
const SECRET: &str = "tool-signing-secret-for-the-bench";

/// (start, end) of a call at a stand-in, in seconds since the epoch.
type Span = (f64, f64);

/// One run as the stand-ins saw it: its admitted model calls, its throttled ones, its tool calls.
#[derive(Default, Clone)]
struct Seen {
    model: Vec<Span>,
    throttled: usize,
    tools: Vec<Span>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn line(name: &str, values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(values, 0.5) * 1000.0,
        percentile(values, 0.99) * 1000.0,
        values.last().copied().unwrap_or(f64::NAN) * 1000.0
    )
}

#[tokio::main]
async fn main() {
    let tasks = env_number("TOOL_RUNS_TASKS", 6000) as i32;
    let quota = env_number("TOOL_RUNS_QUOTA", 300) as usize;
    let min_concurrency = env_number("TOOL_RUNS_MIN_CONCURRENCY", quota as u64) as usize;
    let max_concurrency = env_number("TOOL_RUNS_MAX_CONCURRENCY", 1000) as usize;

    let db = TestDb::new().await;
    let admin = db.direct().await;
    let agent = seed_agent(&admin).await;
    let tool = ToolServer::start(ToolMode::Delay(TOOL_LATENCY)).await;
    tool.stop_recording();
    admin
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, timeout_ms)
             VALUES ($1, 'lookup', 'looks something up', '{\"type\": \"object\"}', $2, 5000)",
            &[&agent, &tool.url],
        )
        .await
        .unwrap();
    seed_tasks(&admin, agent, tasks, "tool-run", "", "").await;
    admin.execute("VACUUM ANALYZE agent_tasks", &[]).await.unwrap();
    let model = ToolModel::start_with_quota(
        ToolScript {
            steps: vec![Step::Call(vec![("lookup", json!({"q": "x"}))]), Step::Answer("done")],
            latency: MODEL_LATENCY,
        },
        quota,
    )
    .await;
    model.stop_recording();

    let mut settings = test_config();
    settings.min_concurrency = min_concurrency;
    settings.max_concurrency = max_concurrency;
    settings.task_timeout = Duration::from_secs(60);
    settings.runs.policy.allow_loopback = true;
    settings.runs.secret = Some(Arc::from(SECRET.as_bytes()));
    println!(
        "{tasks} tasks, each run: model 1 s (calls the tool) → tool 200 ms → model 1 s (answers); \
         quota {quota} model calls at once; scheduler in process: pool 2, batch {}, concurrency {min_concurrency}..{max_concurrency}, record interval {} ms",
        settings.batch_size,
        settings.record_interval.as_millis()
    );
    // The bench's own session is closed during the run: every server connection seen is the scheduler's.
    drop(admin);
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(30))),
        settings,
    );

    // Watchers: server connections, pooler clients (the pool's size), this process's RSS.
    let (stop_connections, connections) = watch_connections(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_clients = Arc::new(AtomicUsize::new(0));
    let pool = s.db.clone();
    let sampler = {
        let (stop, peak_rss, peak_clients) = (stop.clone(), peak_rss.clone(), peak_clients.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(memory_kib(std::process::id()).1, Ordering::Relaxed);
                peak_clients.fetch_max(pool.status().size, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = memory_kib(std::process::id()).1;

    let started = Instant::now();
    let started_at = SystemTime::now();
    let summary = invoke(&s, schedule_event(), Duration::from_secs(600))
        .await
        .expect("the invocation ends");
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    stop_connections.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_connections = connections.await.unwrap_or(0);
    let peak_rss = peak_rss.load(Ordering::Relaxed).max(rss_before);
    let peak_clients = peak_clients.load(Ordering::Relaxed);

    // Each run: when its row was created, when its task was recorded.
    let admin = db.direct().await;
    let rows = admin
        .query(
            "SELECT r.id::text, t.prompt, extract(epoch FROM r.created_at)::float8,
                    extract(epoch FROM t.updated_at)::float8, t.status
               FROM agent_runs r JOIN agent_tasks t ON t.id = r.task_id",
            &[],
        )
        .await
        .unwrap();
    let completed = rows.iter().filter(|r| r.get::<_, String>(4) == "completed").count();
    let failed = rows.iter().filter(|r| r.get::<_, String>(4) == "failed").count();
    let mut prompt_of_run = HashMap::new();
    for r in &rows {
        prompt_of_run.insert(r.get::<_, String>(0), r.get::<_, String>(1));
    }
    let calls = model.calls.lock().unwrap().clone();
    let tools = tool.timings.lock().unwrap().clone();
    let mut by_prompt: HashMap<&str, Seen> = HashMap::new();
    for c in &calls {
        let entry = by_prompt.entry(c.prompt.as_str()).or_default();
        if c.admitted {
            entry.model.push((epoch(c.received), epoch(c.answered)));
        } else {
            entry.throttled += 1;
        }
    }
    for t in &tools {
        if let Some(prompt) = prompt_of_run.get(&t.run_id) {
            by_prompt
                .entry(prompt.as_str())
                .or_default()
                .tools
                .push((epoch(t.received), epoch(t.answered)));
        }
    }

    // Step overhead over the runs never throttled: run row → recorded, minus model and tool time.
    let (mut per_step, mut start_gap, mut model_tool, mut tool_model, mut end_gap) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut answers = Vec::new();
    for r in &rows {
        let (prompt, begun, recorded) = (r.get::<_, String>(1), r.get::<_, f64>(2), r.get::<_, f64>(3));
        let Some(Seen {
            model: mut model_calls,
            throttled,
            tools: tool_calls,
        }) = by_prompt.get(prompt.as_str()).cloned()
        else {
            continue;
        };
        if let Some(last) = model_calls.iter().map(|c| c.1).reduce(f64::max) {
            answers.push(last);
        }
        if r.get::<_, String>(4) != "completed" || throttled > 0 || model_calls.len() != 2 || tool_calls.len() != 1 {
            continue;
        }
        model_calls.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (m1, m2, t) = (model_calls[0], model_calls[1], tool_calls[0]);
        let busy = (m1.1 - m1.0) + (m2.1 - m2.0) + (t.1 - t.0);
        per_step.push(((recorded - begun) - busy) / STEPS_PER_RUN);
        start_gap.push(m1.0 - begun);
        model_tool.push(t.0 - m1.1);
        tool_model.push(m2.0 - t.1);
        end_gap.push(recorded - m2.1);
    }
    let clean = per_step.len();

    // Runs answered between 10 % and 90 % of the run (the last model call's end).
    let t0 = epoch(started_at);
    let (from, to) = (t0 + seconds * 0.1, t0 + seconds * 0.9);
    let steady = answers.iter().filter(|a| **a >= from && **a <= to).count() as f64 / (to - from);
    let bound = quota as f64 / (MODEL_CALLS_PER_RUN * MODEL_LATENCY.as_secs_f64());
    let overall = completed as f64 / seconds;
    let throttled = model.load.throttled.load(Ordering::SeqCst);

    println!("summary: {summary:?}");
    println!(
        "runs: {completed}/{tasks} completed ({failed} failed) in {seconds:.1} s: {overall:.1} runs/s overall \
         ({:.2} of the bound), {steady:.1} runs/s steady, 10-90 % ({:.2} of the bound); bound {bound:.0} runs/s \
         ({quota} calls at once / {MODEL_CALLS_PER_RUN} model-seconds per run)",
        overall / bound,
        steady / bound
    );
    println!(
        "model: {} calls admitted, {throttled} throttled (429), peak {} at once; tool: {} calls",
        model.load.admitted.load(Ordering::SeqCst),
        model.load.peak.load(Ordering::SeqCst),
        tools.len()
    );
    println!(
        "step overhead over {clean} runs never throttled ((recorded - run row created - model and tool time at the stand-ins) / 3 steps): {}",
        line("per step", &mut per_step)
    );
    println!("  {}", line("run row → 1st model call", &mut start_gap));
    println!("  {}", line("1st model answer → tool call", &mut model_tool));
    println!("  {}", line("tool answer → 2nd model call", &mut tool_model));
    println!("  {}", line("2nd model answer → task recorded", &mut end_gap));
    println!(
        "connections: peak {peak_connections} server connections to Postgres, peak {peak_clients} pooler clients \
         (pool max 2), with {} runs in flight at the peak",
        summary.peak_in_flight
    );
    println!(
        "memory: RSS {:.1} MiB before, {:.1} MiB peak: {:.1} KiB per run in flight (stand-ins included)",
        rss_before as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        peak_rss.saturating_sub(rss_before) as f64 / summary.peak_in_flight.max(1) as f64
    );
}
