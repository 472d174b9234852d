//! `tool_runs`: agents that call tools, at scale (issues 22 and 27). One scheduler instance in
//! process (pool of 2 through pgbouncer, the tests' margins) drains a backlog of tasks whose agent
//! has one tool; each run is three steps: a model call that calls the tool, the tool call, a model
//! call that answers (script `[Call(tool), Answer]`). The model stand-in answers each call after
//! 1 s and admits at most 300 calls at once (429 with `Retry-After: 2` beyond it, as OpenAI
//! throttles); the tool answers after 200 ms. Two variants of the tool (`TOOL_RUNS_TOOL`):
//! - `http`: an HTTP tool (`agent_tools`, signed calls) on loopback, in this process;
//! - `mcp`: the `slow_lookup` tool of tests/mcp/server.py (the official Python SDK over
//!   Streamable HTTP, its own process on loopback), reached through an `agent_tool_sources` row
//!   (`allowed_tools {slow_lookup}`, approval `never`; the tool is read-only anyway). The model
//!   calls `bench__slow_lookup` with the run's prompt as `q`, so the server's record tells runs
//!   apart. With `TOOL_RUNS_MCP_SERVERS` > 1, that many server processes, one agent (and one
//!   source) on each, the tasks shared among them.
//!
//! Before the `mcp` variant, a small measure of one MCP call (`TOOL_RUNS_MCP_CALLS` sequential
//! calls through `Mcp::call` of a tool that answers at once): reusing one `Mcp` (a warm session)
//! vs a fresh `Mcp` for each call (a new session: a new connection, `initialize`,
//! `notifications/initialized`, the standalone GET stream, the call), on the Python server and on
//! `@modelcontextprotocol/server-everything` (node), p50/p99 and the ratio new/warm.
//!
//! Prints, per variant:
//! - runs/s (whole run, and steady between 10 % and 90 % of it) against the bound: 300 calls
//!   at once, 2 model-seconds per run, so at most 150 runs/s if the model were the only cost;
//! - step overhead: per run that was never throttled, the time from its run row (created right
//!   after its claim) to its task recorded, minus its two model calls and its tool call as the
//!   stand-ins timed them (HTTP: arrival to answer at the tool server; MCP: the tool's own start
//!   to end inside the server, so the MCP client, HTTP, and the server's SDK count as
//!   overhead), divided by its 3 steps; p50/p99/max, and each gap apart;
//! - peak server connections to Postgres (`pg_stat_activity`, every 20 ms) and peak pooler
//!   clients (the pool's size);
//! - RSS of this process (`/proc/self/status` `VmRSS`, every 100 ms) above its level before the
//!   run, per run in flight at the peak (the model stand-in, and the HTTP tool, run in this
//!   process too; the MCP servers' RSS is printed apart);
//! - CPU seconds of this process and of the MCP servers during the invocation.
//!
//! Run: `scripts/bench tool_runs`. `TOOL_RUNS_TOOL` (`http`, `mcp`, default both in sequence),
//! `TOOL_RUNS_TASKS` (default 6000), `TOOL_RUNS_QUOTA` (default 300), `TOOL_RUNS_MIN_CONCURRENCY`
//! (default the quota), `TOOL_RUNS_MAX_CONCURRENCY` (default 1000), `TOOL_RUNS_MCP_SERVERS`
//! (default 1), `TOOL_RUNS_MCP_CALLS` (default 200; 0 skips the per-call measure). The MCP
//! servers need `scripts/tools mcp`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer};
use integration_tests::helpers::{memory_kib, watch_connections, TestDb};
use integration_tests::mcp_servers::{Everything, PyMcp, PyMcpOptions};
use integration_tests::models::openai_model_at;
use integration_tests::monitor::cpu_seconds;
use integration_tests::scheduling::{invoke, schedule_event, scheduler_on, seed_agent, seed_tasks, test_config};
use integration_tests::stats::percentile;
use serde_json::json;
use shared::agent::mcp::{Approval, Mcp, Source};
use shared::agent::tool_call::ToolPolicy;

const MODEL_LATENCY: Duration = Duration::from_secs(1);
const TOOL_LATENCY: Duration = Duration::from_millis(200);
const MODEL_CALLS_PER_RUN: f64 = 2.0;
const STEPS_PER_RUN: f64 = 3.0;
const SECRET: &str = "tool-signing-secret-for-the-bench";
/// The MCP source's name: the model sees its tool as `bench__slow_lookup`.
const SOURCE: &str = "bench";
const MCP_TOOL: &str = "slow_lookup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Http,
    Mcp,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Http => "http",
            Variant::Mcp => "mcp",
        }
    }
}

/// (start, end) of a call at a stand-in, in seconds since the epoch.
type Span = (f64, f64);

/// A tool call at its server: when the request arrived, when the tool started and ended (for
/// the HTTP tool, arrival and start are the same).
#[derive(Debug, Clone, Copy, Default)]
struct ToolSpan {
    arrived: f64,
    started: f64,
    ended: f64,
}

/// One run as the stand-ins saw it: its admitted model calls, its throttled ones, its tool calls.
#[derive(Default, Clone)]
struct Seen {
    model: Vec<Span>,
    throttled: usize,
    tools: Vec<ToolSpan>,
}

/// What a variant's run measured, for the side-by-side lines at the end.
struct Figures {
    variant: Variant,
    completed: usize,
    seconds: f64,
    overall: f64,
    steady: f64,
    bound: f64,
    step_p50: f64,
    step_p99: f64,
    peak_connections: i64,
    peak_clients: usize,
    peak_in_flight: u64,
    kib_per_run: f64,
    throttled: usize,
}

#[derive(Clone, Copy)]
struct Sizes {
    tasks: i32,
    quota: usize,
    min_concurrency: usize,
    max_concurrency: usize,
    mcp_servers: usize,
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

fn loopback_policy() -> Arc<ToolPolicy> {
    Arc::new(ToolPolicy {
        allow_loopback: true,
        allowed_hosts: Vec::new(),
        max_response_bytes: 256 * 1024,
    })
}

#[tokio::main]
async fn main() {
    let sizes = Sizes {
        tasks: env_number("TOOL_RUNS_TASKS", 6000) as i32,
        quota: env_number("TOOL_RUNS_QUOTA", 300) as usize,
        min_concurrency: 0,
        max_concurrency: env_number("TOOL_RUNS_MAX_CONCURRENCY", 1000) as usize,
        mcp_servers: env_number("TOOL_RUNS_MCP_SERVERS", 1).max(1) as usize,
    };
    let sizes = Sizes {
        min_concurrency: env_number("TOOL_RUNS_MIN_CONCURRENCY", sizes.quota as u64) as usize,
        ..sizes
    };
    let variants = match std::env::var("TOOL_RUNS_TOOL").as_deref() {
        Ok("http") => vec![Variant::Http],
        Ok("mcp") => vec![Variant::Mcp],
        Ok("" | "both") | Err(_) => vec![Variant::Http, Variant::Mcp],
        Ok(other) => panic!("TOOL_RUNS_TOOL={other}: http, mcp or both"),
    };
    let mcp_calls = env_number("TOOL_RUNS_MCP_CALLS", 200) as usize;
    if variants.contains(&Variant::Mcp) && mcp_calls > 0 {
        per_call_overhead(mcp_calls).await;
    }
    let mut figures = Vec::new();
    for variant in variants {
        figures.push(scenario(variant, &sizes).await);
    }
    if figures.len() > 1 {
        println!("\n== side by side ==");
        for f in &figures {
            println!(
                "{:>4}: {} runs in {:.1} s, {:.1} runs/s overall ({:.2} of the {:.0} bound), {:.1} steady ({:.2}); \
                 {} throttled; step overhead p50 {:.2} ms, p99 {:.2} ms; peak {} server conns, {} pooler clients, \
                 {} in flight; {:.1} KiB per run in flight",
                f.variant.name(),
                f.completed,
                f.seconds,
                f.overall,
                f.overall / f.bound,
                f.bound,
                f.steady,
                f.steady / f.bound,
                f.throttled,
                f.step_p50 * 1000.0,
                f.step_p99 * 1000.0,
                f.peak_connections,
                f.peak_clients,
                f.peak_in_flight,
                f.kib_per_run
            );
        }
    }
}

/// `n` sequential calls of a tool that answers at once, through a warm session and through a
/// new session each, on both MCP servers.
async fn per_call_overhead(n: usize) {
    println!("== one MCP call: warm session vs new session per call ({n} sequential calls each) ==");
    let python = PyMcp::start(PyMcpOptions::default()).await;
    let everything = Everything::start().await;
    let targets = [
        (
            "tests/mcp/server.py (Python SDK)",
            python.url.clone(),
            MCP_TOOL,
            json!({"q": "x", "delay_ms": 0}),
        ),
        (
            "server-everything (node)",
            everything.url.clone(),
            "echo",
            json!({"message": "x"}),
        ),
    ];
    let policy = loopback_policy();
    let timeout = Duration::from_secs(10);
    for (name, url, tool, arguments) in targets {
        let source = Source {
            id: uuid::Uuid::new_v4(),
            name: SOURCE.into(),
            url,
            auth_header: None,
            allowed_tools: None,
            approval: Approval::Never,
            timeout,
        };
        let timed = |mcp: Arc<Mcp>| {
            let (source, arguments) = (source.clone(), arguments.clone());
            async move {
                let at = Instant::now();
                mcp.call(&source, tool, &arguments, timeout)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {tool}: {e}"));
                at.elapsed().as_secs_f64()
            }
        };
        let new_mcp = || Arc::new(Mcp::new(policy.clone(), Duration::from_secs(60)).expect("MCP client"));
        // Warm: one Mcp, its session made by a first call not counted.
        let warm_mcp = new_mcp();
        let first = timed(warm_mcp.clone()).await;
        let mut warm = Vec::with_capacity(n);
        for _ in 0..n {
            warm.push(timed(warm_mcp.clone()).await);
        }
        // New: a fresh Mcp (built before the clock starts) for each call, dropped after it.
        let mut new = Vec::with_capacity(n);
        for _ in 0..n {
            let mcp = new_mcp();
            new.push(timed(mcp).await);
        }
        warm.sort_by(f64::total_cmp);
        new.sort_by(f64::total_cmp);
        let (w50, w99) = (percentile(&warm, 0.5), percentile(&warm, 0.99));
        let (n50, n99) = (percentile(&new, 0.5), percentile(&new, 0.99));
        println!(
            "{name}: warm session p50 {:.2} ms, p99 {:.2} ms; new session per call p50 {:.2} ms, p99 {:.2} ms; \
             new/warm {:.1}x at p50, {:.1}x at p99 (the warm session's first call: {:.2} ms)",
            w50 * 1000.0,
            w99 * 1000.0,
            n50 * 1000.0,
            n99 * 1000.0,
            n50 / w50,
            n99 / w99,
            first * 1000.0
        );
    }
}

/// The MCP servers' record: each `slow_lookup` call by its `q` (the run's prompt).
fn mcp_spans(servers: &[PyMcp]) -> HashMap<String, ToolSpan> {
    let mut spans: HashMap<String, ToolSpan> = HashMap::new();
    for server in servers {
        for call in server.calls() {
            if call.tool.as_deref() != Some(MCP_TOOL) {
                continue;
            }
            let Some(q) = call.arguments.as_ref().and_then(|a| a["q"].as_str()) else {
                continue;
            };
            let at = call.raw["at"].as_f64().unwrap_or(f64::NAN);
            let span = spans.entry(q.to_string()).or_default();
            match call.event.as_str() {
                "rpc" => span.arrived = at,
                "tool" => span.started = at,
                "tool_finished" => span.ended = at,
                _ => {}
            }
        }
    }
    spans
}

async fn scenario(variant: Variant, sizes: &Sizes) -> Figures {
    let Sizes {
        tasks,
        quota,
        min_concurrency,
        max_concurrency,
        mcp_servers,
    } = *sizes;
    println!("\n== tool runs, {} tool ==", variant.name());
    let db = TestDb::new().await;
    let admin = db.direct().await;
    let mut tool = None;
    let mut servers = Vec::new();
    let tool_name = match variant {
        Variant::Http => {
            let agent = seed_agent(&admin).await;
            let server = ToolServer::start(ToolMode::Delay(TOOL_LATENCY)).await;
            server.stop_recording();
            admin
                .execute(
                    "INSERT INTO agent_tools (agent_id, name, description, parameters, url, timeout_ms)
                     VALUES ($1, 'lookup', 'looks something up', '{\"type\": \"object\"}', $2, 5000)",
                    &[&agent, &server.url],
                )
                .await
                .unwrap();
            seed_tasks(&admin, agent, tasks, "tool-run", "", "").await;
            tool = Some(server);
            "lookup"
        }
        Variant::Mcp => {
            servers = join_all((0..mcp_servers).map(|_| PyMcp::start(PyMcpOptions::default()))).await;
            let share = tasks / mcp_servers as i32;
            for (i, server) in servers.iter().enumerate() {
                let agent = seed_agent(&admin).await;
                admin
                    .execute(
                        "INSERT INTO agent_tool_sources (agent_id, name, url, allowed_tools, approval, timeout_ms)
                         VALUES ($1, $2, $3, ARRAY[$4], 'never', 5000)",
                        &[&agent, &SOURCE, &server.url, &MCP_TOOL],
                    )
                    .await
                    .unwrap();
                let n = if i == 0 {
                    tasks - share * (mcp_servers as i32 - 1)
                } else {
                    share
                };
                seed_tasks(&admin, agent, n, &format!("tool-run-s{i}"), "", "").await;
            }
            "bench__slow_lookup"
        }
    };
    admin.execute("VACUUM ANALYZE agent_tasks", &[]).await.unwrap();
    let model = ToolModel::start_with_quota(
        ToolScript {
            steps: vec![
                Step::Call(vec![(tool_name, json!({"q": "{prompt}"}))]),
                Step::Answer("done"),
            ],
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
    let tool_text = match variant {
        Variant::Http => "HTTP tool 200 ms (in process)".to_string(),
        Variant::Mcp => format!(
            "MCP tool {tool_name} 200 ms ({mcp_servers} Python server process(es), one agent and source on each)"
        ),
    };
    println!(
        "{tasks} tasks, each run: model 1 s (calls the tool) → {tool_text} → model 1 s (answers); \
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

    // Watchers: server connections, pooler clients (the pool's size), this process's RSS, the MCP servers' RSS.
    let server_pids: Vec<u32> = servers.iter().filter_map(PyMcp::pid).collect();
    let servers_rss = |pids: &[u32]| pids.iter().map(|p| memory_kib(*p).1).sum::<u64>();
    let (stop_connections, connections) = watch_connections(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_servers_rss = Arc::new(AtomicU64::new(0));
    let peak_clients = Arc::new(AtomicUsize::new(0));
    let pool = s.db.clone();
    let sampler = {
        let (stop, peak_rss, peak_servers_rss, peak_clients) = (
            stop.clone(),
            peak_rss.clone(),
            peak_servers_rss.clone(),
            peak_clients.clone(),
        );
        let pids = server_pids.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(memory_kib(std::process::id()).1, Ordering::Relaxed);
                peak_servers_rss.fetch_max(servers_rss(&pids), Ordering::Relaxed);
                peak_clients.fetch_max(pool.status().size, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = memory_kib(std::process::id()).1;
    let servers_rss_before = servers_rss(&server_pids);
    let cpu_before = cpu_seconds(std::process::id());
    let servers_cpu_before: Vec<f64> = server_pids.iter().map(|p| cpu_seconds(*p)).collect();

    let started = Instant::now();
    let started_at = SystemTime::now();
    let summary = invoke(&s, schedule_event(), Duration::from_secs(600))
        .await
        .expect("the invocation ends");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu_before;
    let servers_cpu: Vec<f64> = server_pids
        .iter()
        .zip(&servers_cpu_before)
        .map(|(p, before)| cpu_seconds(*p) - before)
        .collect();
    stop.store(true, Ordering::Relaxed);
    stop_connections.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_connections = connections.await.unwrap_or(0);
    let peak_rss = peak_rss.load(Ordering::Relaxed).max(rss_before);
    let peak_servers_rss = peak_servers_rss.load(Ordering::Relaxed).max(servers_rss_before);
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
    let calls = model.calls.lock().unwrap().clone();
    let mut by_prompt: HashMap<String, Seen> = HashMap::new();
    for c in &calls {
        let entry = by_prompt.entry(c.prompt.clone()).or_default();
        if c.admitted {
            entry.model.push((epoch(c.received), epoch(c.answered)));
        } else {
            entry.throttled += 1;
        }
    }
    let tool_calls = if let Some(server) = &tool {
        let mut prompt_of_run = HashMap::new();
        for r in &rows {
            prompt_of_run.insert(r.get::<_, String>(0), r.get::<_, String>(1));
        }
        let timings = server.timings.lock().unwrap().clone();
        for t in &timings {
            if let Some(prompt) = prompt_of_run.get(&t.run_id) {
                let (arrived, ended) = (epoch(t.received), epoch(t.answered));
                by_prompt.entry(prompt.clone()).or_default().tools.push(ToolSpan {
                    arrived,
                    started: arrived,
                    ended,
                });
            }
        }
        timings.len()
    } else {
        let spans = mcp_spans(&servers);
        let count = spans.values().filter(|s| s.started > 0.0).count();
        for (prompt, span) in spans {
            by_prompt.entry(prompt).or_default().tools.push(span);
        }
        count
    };

    // Step overhead over the runs never throttled: run row → recorded, minus model and tool time.
    let (mut per_step, mut start_gap, mut model_tool, mut tool_start, mut tool_model, mut end_gap) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut answers = Vec::new();
    for r in &rows {
        let (prompt, begun, recorded) = (r.get::<_, String>(1), r.get::<_, f64>(2), r.get::<_, f64>(3));
        let Some(Seen {
            model: mut model_calls,
            throttled,
            tools,
        }) = by_prompt.get(prompt.as_str()).cloned()
        else {
            continue;
        };
        if let Some(last) = model_calls.iter().map(|c| c.1).reduce(f64::max) {
            answers.push(last);
        }
        if r.get::<_, String>(4) != "completed"
            || throttled > 0
            || model_calls.len() != 2
            || tools.len() != 1
            || tools[0].started <= 0.0
            || tools[0].ended <= 0.0
        {
            continue;
        }
        model_calls.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (m1, m2, t) = (model_calls[0], model_calls[1], tools[0]);
        let busy = (m1.1 - m1.0) + (m2.1 - m2.0) + (t.ended - t.started);
        per_step.push(((recorded - begun) - busy) / STEPS_PER_RUN);
        start_gap.push(m1.0 - begun);
        model_tool.push(t.arrived - m1.1);
        tool_start.push(t.started - t.arrived);
        tool_model.push(m2.0 - t.ended);
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
        "model: {} calls admitted, {throttled} throttled (429), peak {} at once; tool: {tool_calls} calls",
        model.load.admitted.load(Ordering::SeqCst),
        model.load.peak.load(Ordering::SeqCst),
    );
    let tool_time = match variant {
        Variant::Http => "the tool call (arrival to answer at the tool server)",
        Variant::Mcp => "the tool's own run (start to end inside the MCP server)",
    };
    println!(
        "step overhead over {clean} runs never throttled ((recorded - run row created - model calls - {tool_time}) / 3 steps): {}",
        line("per step", &mut per_step)
    );
    let mut steps = per_step.clone();
    steps.sort_by(f64::total_cmp);
    println!("  {}", line("run row → 1st model call", &mut start_gap));
    match variant {
        Variant::Http => {
            println!("  {}", line("1st model answer → tool call arrives", &mut model_tool));
            println!("  {}", line("tool answer → 2nd model call", &mut tool_model));
        }
        Variant::Mcp => {
            println!(
                "  {}",
                line(
                    "1st model answer → tools/call POST arrives at the server",
                    &mut model_tool
                )
            );
            println!(
                "  {}",
                line(
                    "tools/call POST arrives → the tool starts (server's SDK)",
                    &mut tool_start
                )
            );
            println!(
                "  {}",
                line(
                    "the tool ends → 2nd model call (server's SDK, SSE answer, client)",
                    &mut tool_model
                )
            );
        }
    }
    println!("  {}", line("2nd model answer → task recorded", &mut end_gap));
    println!(
        "connections: peak {peak_connections} server connections to Postgres, peak {peak_clients} pooler clients \
         (pool max 2), with {} runs in flight at the peak",
        summary.peak_in_flight
    );
    let kib_per_run = peak_rss.saturating_sub(rss_before) as f64 / summary.peak_in_flight.max(1) as f64;
    println!(
        "memory: RSS {:.1} MiB before, {:.1} MiB peak: {kib_per_run:.1} KiB per run in flight (stand-ins included)",
        rss_before as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
    );
    println!(
        "cpu: this process {cpu:.1} s in {seconds:.1} s ({:.2} cores)",
        cpu / seconds
    );
    if variant == Variant::Mcp {
        println!(
            "mcp servers: RSS {:.1} MiB before, {:.1} MiB peak (all {} together); cpu {} in {seconds:.1} s",
            servers_rss_before as f64 / 1024.0,
            peak_servers_rss as f64 / 1024.0,
            servers.len(),
            servers_cpu
                .iter()
                .map(|c| format!("{c:.1} s ({:.2} cores)", c / seconds))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    drop(servers);
    Figures {
        variant,
        completed,
        seconds,
        overall,
        steady,
        bound,
        step_p50: percentile(&steps, 0.5),
        step_p99: percentile(&steps, 0.99),
        peak_connections,
        peak_clients,
        peak_in_flight: summary.peak_in_flight,
        kib_per_run,
        throttled,
    }
}
