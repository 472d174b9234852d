//! `fairness`: one noisy user against two quiet ones (issue 21). User X has `FAIRNESS_X_TASKS`
//! (default 100,000) tasks due when the drain starts; user Y's 100 tasks arrive at once 10 s
//! into it, user Z's 100 one every 250 ms from 20 s on. The release `scheduler` binary, driven
//! through a local Lambda Runtime API with a pool of 2 (as `model_bound`), runs them against an
//! OpenAI-compatible stand-in under a provider quota of 300 calls at once (`429` with
//! `Retry-After: 2` beyond it), each admitted call answered after 1 s ± 20 %.
//!
//! The drain is bounded: the invocation claims for `FAIRNESS_WINDOW_SECS` (default 90; its
//! `SCHEDULER_MAX_RUN_MS` is the window plus the 5 s safety margin), so X's backlog stays due
//! the whole time. The stand-in records when each call it admitted started. Prints, per user:
//! tasks started in the window and the wait (due → first admitted call; for X, whose tasks are
//! all due before the drain starts, from the drain's start) p50/p99/max; the provider rate over
//! the window against the quota's bound (300/s), throttles, peak server connections.
//!
//! `FAIRNESS_BASELINE_BIN`: a scheduler binary with another claim (e.g. the strict due-order
//! claim of 08e3ef3, built in a worktree of that commit) run on the same scenario after ours.
//!
//! Then the claim's plan at `FAIRNESS_EXPLAIN_ROWS` (default 1,000,000) due tasks: 90 % one big
//! user, 9 % 1,000 small users, 1 % operator tasks (no user), plus 160 running; `VACUUM
//! ANALYZE`, then `EXPLAIN (ANALYZE, BUFFERS)` of the claim statement (`tasks::claim_sql`) as
//! `agent_backend`, in a transaction rolled back, for a claim of 1000 and of 40, and the strict
//! due-order claim of 08e3ef3 for reference.
//!
//! Run: `scripts/bench fairness` (`FAIRNESS_PARTS=drain,explain` by default).

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integration_tests::fakes::{FakeServer, Quota};
use integration_tests::helpers::{built_binary, deadline_in, watch_connections, InvokeResult, RuntimeApi, TestDb};
use integration_tests::stats::percentile;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const QUOTA: usize = 300;
const LATENCY: Duration = Duration::from_secs(1);
const JITTER: f64 = 0.2;
const SMALL_TASKS: i64 = 100;
const Y_AT: Duration = Duration::from_secs(10);
const Z_FROM: Duration = Duration::from_secs(20);
const Z_EVERY: Duration = Duration::from_millis(250);
const MARGIN: Duration = Duration::from_secs(5);
/// Warm-up left out of the steady rate (the limiter's slow start from 4 takes about 6 s).
const WARM_UP: f64 = 10.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A direct session the connection count leaves out (`application_name=bench-admin`).
async fn bench_client(db: &TestDb) -> Client {
    let url = format!("{}?application_name=bench-admin", db.direct_url);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("direct connection");
    tokio::spawn(conn);
    client
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Inserts `n` tasks of `user` due now (`prompt` `<tag> <i>`); their due times (unix seconds).
async fn arrive(client: &Client, agent: Uuid, user: Uuid, tag: &str, from: i64, n: i64) -> Vec<(String, f64)> {
    client
        .query(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, $2, $3 || ' ' || i, 'approved', now() FROM generate_series($4::int8, $5::int8) AS i
             RETURNING prompt, extract(epoch FROM scheduled_for)::float8",
            &[&agent, &user, &tag, &from, &(from + n - 1)],
        )
        .await
        .expect("insert arriving tasks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

struct UserWaits {
    user: &'static str,
    tasks: usize,
    started: usize,
    /// Seconds, sorted.
    waits: Vec<f64>,
}

struct Run {
    label: String,
    window: f64,
    users: Vec<UserWaits>,
    /// Calls admitted in the window, and in its part after the warm-up.
    calls: usize,
    steady_calls: usize,
    throttled: usize,
    peak_in_flight: usize,
    peak_connections: i64,
    completed: i64,
    seconds: f64,
    summary: Value,
}

async fn run(label: &str, binary: std::path::PathBuf, x_tasks: i64, window: Duration) -> Run {
    let db = TestDb::new().await;
    let admin = bench_client(&db).await;
    let agent: Uuid = admin
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('worker', 'Be brief.', 'public')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (x, y, z) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // X's backlog, due in the second before the seed, a microsecond apart.
    admin
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, $2, 'x ' || i, 'approved', now() - interval '1 second' + i * interval '1 microsecond'
               FROM generate_series(1, $3::int8) AS i",
            &[&agent, &x, &x_tasks],
        )
        .await
        .expect("seed X");
    admin.batch_execute("VACUUM ANALYZE agent_tasks").await.unwrap();

    // The OpenAI-compatible stand-in under the quota; it records each call (when, its prompt,
    // whether it was admitted).
    let provider = FakeServer::openai().await;
    provider.set_quota(Quota {
        concurrent: QUOTA,
        latency: LATENCY,
        jitter: JITTER,
    });
    let base_url = format!("{}/v1", provider.url());
    let runtime = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(&binary)
        .envs(runtime.function_env("scheduler"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("DB_POOL_MAX_SIZE", "2")
        .env("DB_STATEMENT_TIMEOUT_MS", "10000")
        .env("MODEL_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &base_url)
        .env("OPENAI_MODEL", "stand-in")
        .env("MODEL_TIMEOUT_MS", "60000")
        .env("SCHEDULER_MAX_RUN_MS", (window + MARGIN).as_millis().to_string())
        .env("SCHEDULER_SAFETY_MARGIN_MS", MARGIN.as_millis().to_string())
        .env("SCHEDULER_TASK_TIMEOUT_MS", "60000")
        // As model_bound: the quota, not the cap, is what the limiter finds; the per-user share
        // is the default quarter (150).
        .env("SCHEDULER_MAX_CONCURRENCY", (QUOTA * 2).max(500).to_string())
        .env("SCHEDULER_SELF_INVOKE", "false")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (stop, monitor) = watch_connections(&db);
    let event: Value = serde_json::from_str(include_str!("../../events/schedule.json")).expect("events/schedule.json");
    let t0 = unix_now();
    let started = Instant::now();
    let unix_at = |at: Instant| t0 + at.saturating_duration_since(started).as_secs_f64();
    // Y: 100 at once, 10 s in; Z: one every 250 ms from 20 s on.
    let arrivals = {
        let (y_client, z_client) = (bench_client(&db).await, bench_client(&db).await);
        let y_tasks = tokio::spawn(async move {
            tokio::time::sleep_until((started + Y_AT).into()).await;
            arrive(&y_client, agent, y, "y", 1, SMALL_TASKS).await
        });
        let z_tasks = tokio::spawn(async move {
            let mut due = Vec::new();
            for i in 0..SMALL_TASKS {
                tokio::time::sleep_until((started + Z_FROM + Z_EVERY * i as u32).into()).await;
                due.extend(arrive(&z_client, agent, z, "z", i + 1, 1).await);
            }
            due
        });
        (y_tasks, z_tasks)
    };
    let result = runtime
        .invoke(&event, deadline_in(window + MARGIN + Duration::from_secs(60)))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak_connections = monitor.await.unwrap_or(0);
    let summary = match result {
        InvokeResult::Response(summary) => summary,
        InvokeResult::Error(e) => panic!("the scheduler failed: {e}"),
    };
    let _ = child.kill().await;
    let y_due = arrivals.0.await.expect("Y arrived");
    let z_due = arrivals.1.await.expect("Z arrived");

    let completed: i64 = admin
        .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    // Each admitted call: its task's prompt (the request's last message) and when it started.
    let starts: Vec<(String, f64)> = provider
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|seen| seen.status == 200)
        .map(|seen| {
            let prompt = seen.body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            (prompt, unix_at(seen.at))
        })
        .collect();
    let window_end = t0 + window.as_secs_f64();
    let in_window: Vec<&(String, f64)> = starts.iter().filter(|(_, at)| *at <= window_end).collect();
    // First admitted call of each task.
    let mut first: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for (prompt, at) in &in_window {
        let e = first.entry(prompt.as_str()).or_insert(*at);
        *e = e.min(*at);
    }
    let waits_of = |user: &'static str, due: &[(String, f64)], tasks: usize| {
        let mut waits: Vec<f64> = due
            .iter()
            .filter_map(|(prompt, due)| first.get(prompt.as_str()).map(|at| at - due.max(t0)))
            .collect();
        waits.sort_by(f64::total_cmp);
        UserWaits {
            user,
            tasks,
            started: waits.len(),
            waits,
        }
    };
    let x_waits = {
        let mut waits: Vec<f64> = first
            .iter()
            .filter(|(p, _)| p.starts_with("x "))
            .map(|(_, at)| at - t0)
            .collect();
        waits.sort_by(f64::total_cmp);
        UserWaits {
            user: "X",
            tasks: x_tasks as usize,
            started: waits.len(),
            waits,
        }
    };
    let users = vec![
        x_waits,
        waits_of("Y", &y_due, SMALL_TASKS as usize),
        waits_of("Z", &z_due, SMALL_TASKS as usize),
    ];
    Run {
        label: label.to_string(),
        window: window.as_secs_f64(),
        users,
        calls: in_window.len(),
        steady_calls: in_window.iter().filter(|(_, at)| *at >= t0 + WARM_UP).count(),
        throttled: provider.load.throttled.load(Ordering::SeqCst),
        peak_in_flight: provider.load.peak.load(Ordering::SeqCst),
        peak_connections,
        completed,
        seconds,
        summary,
    }
}

fn report(r: &Run) {
    let bound = QUOTA as f64 / LATENCY.as_secs_f64();
    let rate = r.calls as f64 / r.window;
    let steady = r.steady_calls as f64 / (r.window - WARM_UP);
    println!("{}: invocation {:.1} s, {}", r.label, r.seconds, r.summary);
    println!(
        "| user | tasks | started in the {:.0} s window | wait p50 | wait p99 | wait max |",
        r.window
    );
    println!("|---|---|---|---|---|---|");
    for u in &r.users {
        let fmt = |v: f64| {
            if v.is_nan() {
                "not started".to_string()
            } else {
                format!("{v:.2} s")
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            u.user,
            u.tasks,
            u.started,
            fmt(percentile(&u.waits, 0.5)),
            fmt(percentile(&u.waits, 0.99)),
            fmt(u.waits.last().copied().unwrap_or(f64::NAN)),
        );
    }
    println!(
        "provider: {} calls started in the window: {rate:.1} tasks/s ({:.3} of the quota's {bound:.0}/s); \
         after the {WARM_UP:.0} s warm-up {steady:.1}/s ({:.3}); {} throttles; peak {} in flight; \
         {} completed in the database; {} server connections at most",
        r.calls,
        rate / bound,
        steady / bound,
        r.throttled,
        r.peak_in_flight,
        r.completed,
        r.peak_connections,
    );
    println!();
}

// What runs before the claim in its transaction (rolled back with it).
const AS_IS: &str = "SELECT 1";
const NO_JIT: &str = "SET LOCAL jit = off";
const NONE_RUNNING: &str = "DELETE FROM agent_tasks WHERE status = 'running'";

/// The strict due-order claim before the fair one (08e3ef3), for the plan's reference.
const OLD_CLAIM: &str = "UPDATE agent_tasks t
    SET status = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN 'running' ELSE 'cancelled' END,
        lease_owner = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN $1 END,
        lease_expires_at = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN now() + make_interval(secs => $2) END,
        attempts = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN t.attempts + 1 ELSE t.attempts END,
        last_error = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN t.last_error ELSE $4 END,
        updated_at = now()
   FROM agents a
  WHERE a.id = t.agent_id
    AND t.id = ANY(ARRAY(SELECT id FROM agent_tasks
                          WHERE status = 'pending' AND approval_status = 'approved'
                            AND scheduled_for <= now()
                          ORDER BY scheduled_for, id
                          LIMIT $3
                          FOR UPDATE SKIP LOCKED))
RETURNING t.id, t.status, t.prompt, a.instructions, t.attempts, t.max_attempts, t.cron, t.time_zone,
        t.scheduled_for, t.approval_status, t.series_failures";

/// `EXPLAIN (ANALYZE, BUFFERS)` of the claim as `agent_backend`, rolled back; the plan's lines.
async fn explain(client: &mut Client, old: bool, limit: i64, per_user: i64, setup: &str) -> Vec<String> {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(setup).await.unwrap();
    tx.batch_execute("SET LOCAL ROLE agent_backend").await.unwrap();
    let (owner, lease, error, start, daily) = ("bench", 300.0f64, "agent_unavailable", Uuid::new_v4(), 0i64);
    let rows = if old {
        tx.query_typed(
            &format!("EXPLAIN (ANALYZE, BUFFERS) {OLD_CLAIM}"),
            &[
                (&owner as &(dyn ToSql + Sync), Type::TEXT),
                (&lease, Type::FLOAT8),
                (&limit, Type::INT8),
                (&error, Type::TEXT),
            ],
        )
        .await
    } else {
        tx.query_typed(
            &format!("EXPLAIN (ANALYZE, BUFFERS) {}", scheduler::tasks::claim_sql()),
            &[
                (&owner as &(dyn ToSql + Sync), Type::TEXT),
                (&lease, Type::FLOAT8),
                (&limit, Type::INT8),
                (&error, Type::TEXT),
                (&per_user, Type::INT8),
                (&start, Type::UUID),
                (&daily, Type::INT8),
            ],
        )
        .await
    }
    .expect("EXPLAIN the claim");
    tx.rollback().await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

async fn plans(rows: i64) {
    let db = TestDb::new().await;
    let mut admin = db.direct().await;
    let agent: Uuid = admin
        .query_one(
            "INSERT INTO agents (name, visibility) VALUES ('worker', 'public') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (big, small, operator) = (rows * 90 / 100, rows * 9 / 100, rows - rows * 90 / 100 - rows * 9 / 100);
    let per_small = small / 1000;
    let seeding = Instant::now();
    admin
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, '00000000-0000-4000-8000-00000000b160'::uuid, 'big ' || i, 'approved',
                    now() - interval '1 hour' + i * interval '1 millisecond'
               FROM generate_series(1, $2::int8) AS i",
            &[&agent, &big],
        )
        .await
        .expect("seed the big user");
    admin
        .execute(
            "WITH users AS (SELECT gen_random_uuid() AS id FROM generate_series(1, 1000))
             INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, u.id, 'small ' || i, 'approved', now() - random() * interval '1 hour'
               FROM users u CROSS JOIN generate_series(1, $2::int8) AS i",
            &[&agent, &per_small],
        )
        .await
        .expect("seed the small users");
    admin
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             SELECT $1, 'operator ' || i, 'approved', now() - random() * interval '1 hour'
               FROM generate_series(1, $2::int8) AS i",
            &[&agent, &operator],
        )
        .await
        .expect("seed operator tasks");
    // In flight: 150 of the big user's (its whole share of 150), 10 of small users'.
    admin
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, status, lease_owner,
                                      lease_expires_at, attempts)
             SELECT $1, CASE WHEN i <= 150 THEN '00000000-0000-4000-8000-00000000b160'::uuid
                             ELSE (SELECT user_id FROM agent_tasks WHERE prompt = 'small 1' OFFSET i - 150 LIMIT 1) END,
                    'running ' || i, 'approved', 'running', 'other', now() + interval '5 minutes', 1
               FROM generate_series(1, 160) AS i",
            &[&agent],
        )
        .await
        .expect("seed running tasks");
    admin.batch_execute("VACUUM ANALYZE agent_tasks").await.unwrap();
    let counts = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running'),
                    count(DISTINCT user_id), pg_size_pretty(pg_total_relation_size('agent_tasks'))
               FROM agent_tasks",
            &[],
        )
        .await
        .unwrap();
    println!(
        "plan: {} due ({big} of one user, {per_small} each of 1,000 users, {operator} operator tasks), {} running, \
         {} users, agent_tasks {} with indexes; seeded and analyzed in {:.1} s",
        counts.get::<_, i64>(0),
        counts.get::<_, i64>(1),
        counts.get::<_, i64>(2),
        counts.get::<_, String>(3),
        seeding.elapsed().as_secs_f64()
    );
    let per_user = (500 / 4) as i64;
    for (name, old, limit, setup) in [
        (
            "fair claim, limit 1000 (SCHEDULER_BATCH_SIZE, a backlog's first claim)",
            false,
            1000,
            AS_IS,
        ),
        (
            "fair claim, limit 40 (a steady claim at a limit of 300)",
            false,
            40,
            AS_IS,
        ),
        ("fair claim, limit 40, jit = off", false, 40, NO_JIT),
        ("fair claim, limit 1000, jit = off", false, 1000, NO_JIT),
        (
            "fair claim, limit 40, nothing running (the big user's share open)",
            false,
            40,
            NONE_RUNNING,
        ),
        (
            "strict due-order claim of 08e3ef3, limit 1000 (reference)",
            true,
            1000,
            AS_IS,
        ),
        (
            "strict due-order claim of 08e3ef3, limit 40 (reference)",
            true,
            40,
            AS_IS,
        ),
    ] {
        // Once to warm the cache, then the plan printed.
        let _ = explain(&mut admin, old, limit, per_user, setup).await;
        let lines = explain(&mut admin, old, limit, per_user, setup).await;
        println!("\n{name}, per-user share {per_user}:");
        for line in &lines {
            println!("  {line}");
        }
        let mut times = Vec::new();
        for _ in 0..3 {
            let plan = explain(&mut admin, old, limit, per_user, setup).await;
            if let Some(t) = plan.iter().find_map(|l| {
                l.strip_prefix("Execution Time: ")
                    .and_then(|v| v.trim_end_matches(" ms").parse::<f64>().ok())
            }) {
                times.push(t);
            }
        }
        println!("  three more runs: {times:?} ms");
    }
}

#[tokio::main]
async fn main() {
    let parts = std::env::var("FAIRNESS_PARTS").unwrap_or_else(|_| "drain,explain".into());
    if parts.contains("drain") {
        let x_tasks = env_number("FAIRNESS_X_TASKS", 100_000) as i64;
        let window = Duration::from_secs(env_number("FAIRNESS_WINDOW_SECS", 90));
        println!(
            "fairness: X {x_tasks} tasks due at the start, Y {SMALL_TASKS} arriving at once at {} s, Z {SMALL_TASKS} \
             one every {} ms from {} s; quota {QUOTA} calls at once, 1 s ± 20 % each; {} s window\n",
            Y_AT.as_secs(),
            Z_EVERY.as_millis(),
            Z_FROM.as_secs(),
            window.as_secs()
        );
        let ours = run(
            "fair claim (this commit)",
            built_binary("release", "scheduler"),
            x_tasks,
            window,
        )
        .await;
        report(&ours);
        if let Ok(baseline) = std::env::var("FAIRNESS_BASELINE_BIN") {
            let old = run(&format!("baseline ({baseline})"), baseline.into(), x_tasks, window).await;
            report(&old);
        }
    }
    if parts.contains("explain") {
        plans(env_number("FAIRNESS_EXPLAIN_ROWS", 1_000_000) as i64).await;
    }
}
