//! `drain`: N due no-op tasks (local model) drained through pgbouncer by the real scheduler
//! handler with a pool of 2, against two references on the same data shape in the same run:
//! the SQL floor (one set-based UPDATE per 1000 rows over one connection) and the original
//! backend's algorithm (take 50, then one UPDATE per task, a transaction each).
//!
//! Run: `scripts/bench drain` (N from DRAIN_TASKS, default 100000; the original algorithm runs
//! on the first ORIGINAL_TASKS, default 10000, of the same table: its rate is what is compared).
//!
//! `DRAIN_BASELINE_BIN`: a release `scheduler` binary of an earlier commit (e.g. the strict
//! due-order claim of 08e3ef3, before the fair claim of issue 21). The same N tasks are then also
//! drained by that binary and by this commit's (`target/release/scheduler`), each through a local
//! Lambda Runtime API with a pool of 2 and the local model, alternately, `DRAIN_AB_ROUNDS`
//! (default 3) times each, and the ratio of their best rates printed (`DRAIN_AB_ONLY=1`: only
//! that comparison).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::helpers::{
    built_binary, deadline_in, watch_connections, InvokeResult, PoolOptions, RuntimeApi, TestDb,
};
use lambda_runtime::{Context, LambdaEvent};
use scheduler::{Scheduler, Settings as SchedulerSettings};
use shared::db::Type;
use shared::model::LocalModel;
use tokio_postgres::{Client, NoTls};

fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn admin_client(db: &TestDb) -> Client {
    let url = format!("{}?application_name=bench-admin", db.direct_url);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("direct connection");
    tokio::spawn(conn);
    client
}

/// Empties the table and seeds `n` due, approved tasks, then vacuums so every run starts alike.
async fn reseed(client: &Client, agent: uuid::Uuid, n: i64) {
    client.batch_execute("TRUNCATE agent_tasks").await.unwrap();
    integration_tests::helpers::seed_due_tasks(client, agent, n).await;
    client.batch_execute("CHECKPOINT").await.unwrap();
}

struct Figure {
    name: &'static str,
    tasks: i64,
    seconds: f64,
    statements: Option<f64>,
    peak: Option<i64>,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.seconds
    }
}

async fn ours(db: &TestDb, admin: &Client, agent: uuid::Uuid, n: i64, batch: i64) -> Figure {
    reseed(admin, agent, n).await;
    let pool = db.pool(&PoolOptions {
        app: "scheduler".into(),
        max_size: 2,
        statement: Duration::from_secs(30),
        ..PoolOptions::default()
    });
    let scheduler = Scheduler::new(
        pool.clone(),
        Arc::new(LocalModel::default()),
        SchedulerSettings {
            batch_size: batch,
            ..SchedulerSettings::default()
        },
        quiet_metrics(),
    );
    let event: serde_json::Value = serde_json::from_str(include_str!("../../events/schedule.json")).unwrap();
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    context.deadline = integration_tests::helpers::deadline_in(Duration::from_secs(900));

    let (stop, monitor) = watch_connections(db);
    let before = pool.statements_sent();
    let started = Instant::now();
    let summary = scheduler::handle(&scheduler, LambdaEvent::new(event, context))
        .await
        .expect("the drain invocation succeeds");
    let seconds = started.elapsed().as_secs_f64();
    let statements = pool.statements_sent() - before;
    stop.store(true, Ordering::Relaxed);
    let peak = monitor.await.unwrap();
    let completed: i64 = admin
        .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(completed, n, "every task completed ({summary:?})");
    assert_eq!(summary.completed as i64, n);
    Figure {
        name: if batch == SchedulerSettings::default().batch_size {
            "scheduler (defaults: pipeline, 4..500 in flight)"
        } else {
            "scheduler (SCHEDULER_BATCH_SIZE=250)"
        },
        tasks: n,
        seconds,
        statements: Some(statements as f64 / n as f64),
        peak: Some(peak),
    }
}

async fn pooled_client(db: &TestDb, app: &str) -> Client {
    let url = format!("{}?application_name={app}", db.pooled_url);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("pooled connection");
    tokio::spawn(conn);
    client
}

/// The floor as the issue states it (`id IN (subquery)`), and the same statement in the
/// `id = ANY(ARRAY(subquery))` form the scheduler uses (no sequential scan per batch).
async fn sql_floor(db: &TestDb, admin: &Client, agent: uuid::Uuid, n: i64, any_form: bool) -> Figure {
    reseed(admin, agent, n).await;
    let client = pooled_client(db, "floor").await;
    let started = Instant::now();
    let mut done = 0i64;
    let mut statements = 0;
    loop {
        let sql = if any_form {
            "UPDATE agent_tasks SET status = 'completed'
              WHERE id = ANY(ARRAY(SELECT id FROM agent_tasks
                                    WHERE status = 'pending' AND approval_status = 'approved'
                                      AND scheduled_for <= now()
                                    ORDER BY scheduled_for LIMIT 1000
                                    FOR UPDATE SKIP LOCKED))"
        } else {
            "UPDATE agent_tasks SET status = 'completed'
              WHERE id IN (SELECT id FROM agent_tasks
                            WHERE status = 'pending' AND approval_status = 'approved'
                              AND scheduled_for <= now()
                            ORDER BY scheduled_for LIMIT 1000
                            FOR UPDATE SKIP LOCKED)"
        };
        let updated = client.execute_typed(sql, &[]).await.unwrap();
        statements += 1;
        if updated == 0 {
            break;
        }
        done += updated as i64;
    }
    Figure {
        name: if any_form {
            "SQL floor, ANY(ARRAY()) form"
        } else {
            "SQL floor (1 UPDATE / 1000)"
        },
        tasks: done,
        seconds: started.elapsed().as_secs_f64(),
        statements: Some(statements as f64 / done as f64),
        peak: Some(1),
    }
}

async fn original(db: &TestDb, admin: &Client, agent: uuid::Uuid, n: i64, limit: i64) -> Figure {
    reseed(admin, agent, n).await;
    let mut client = pooled_client(db, "original").await;
    let started = Instant::now();
    let mut done = 0i64;
    let mut statements = 0i64;
    while done < limit {
        // findMany({ where: due, take: 50 })
        let rows = client
            .query_typed(
                "SELECT id, prompt FROM agent_tasks
                  WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                  ORDER BY scheduled_for LIMIT 50",
                &[],
            )
            .await
            .unwrap();
        statements += 1;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let id: uuid::Uuid = row.get(0);
            // prisma.agentTask.update(...) in its own transaction
            let tx = client.transaction().await.unwrap();
            tx.execute_typed(
                "UPDATE agent_tasks SET status = 'completed', result = 'ok', updated_at = now() WHERE id = $1",
                &[(&id, Type::UUID)],
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            statements += 3;
            done += 1;
        }
    }
    Figure {
        name: "original (50, then 1 UPDATE/task)",
        tasks: done,
        seconds: started.elapsed().as_secs_f64(),
        statements: Some(statements as f64 / done as f64),
        peak: Some(1),
    }
}

/// One drain by a release `scheduler` binary through a local Runtime API (pool of 2, local model).
async fn binary_drain(
    db: &TestDb,
    admin: &Client,
    agent: uuid::Uuid,
    n: i64,
    name: &'static str,
    binary: &std::path::Path,
) -> Figure {
    reseed(admin, agent, n).await;
    let runtime = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(binary)
        .envs(runtime.function_env("scheduler"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("DB_POOL_MAX_SIZE", "2")
        .env("DB_STATEMENT_TIMEOUT_MS", "30000")
        .env("MODEL_PROVIDER", "local")
        .env("SCHEDULER_MAX_RUN_MS", "600000")
        .env("SCHEDULER_SELF_INVOKE", "false")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    let event: serde_json::Value = serde_json::from_str(include_str!("../../events/schedule.json")).unwrap();
    // The first invocation waits for the process to start and ask for it: started counts from
    // the request the runtime hands over, so a second, empty invocation is not needed.
    let (stop, monitor) = watch_connections(db);
    let started = Instant::now();
    let result = runtime.invoke(&event, deadline_in(Duration::from_secs(900))).await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = monitor.await.unwrap();
    let _ = child.kill().await;
    if let InvokeResult::Error(e) = result {
        panic!("{name}: the drain invocation failed: {e}");
    }
    let completed: i64 = admin
        .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(completed, n, "{name}: every task completed");
    Figure {
        name,
        tasks: n,
        seconds,
        statements: None,
        peak: Some(peak),
    }
}

/// This commit's scheduler binary against a baseline binary, alternately on the same data.
async fn before_and_after(db: &TestDb, admin: &Client, agent: uuid::Uuid, n: i64, baseline: &str) {
    let rounds = env_number("DRAIN_AB_ROUNDS", 3);
    let ours_bin = built_binary("release", "scheduler");
    let baseline_bin = std::path::PathBuf::from(baseline);
    println!();
    println!("before and after, {n} tasks each, {rounds} rounds alternating (process start included):");
    let (mut best_ours, mut best_base) = (0f64, 0f64);
    for round in 1..=rounds {
        let base = binary_drain(db, admin, agent, n, "baseline binary", &baseline_bin).await;
        let ours = binary_drain(db, admin, agent, n, "this commit's binary", &ours_bin).await;
        println!(
            "  round {round}: baseline {:.2} s ({:.0} tasks/s, peak {} conns), this commit {:.2} s ({:.0} tasks/s, peak {} conns)",
            base.seconds,
            base.rate(),
            base.peak.unwrap_or(0),
            ours.seconds,
            ours.rate(),
            ours.peak.unwrap_or(0)
        );
        best_base = best_base.max(base.rate());
        best_ours = best_ours.max(ours.rate());
    }
    println!(
        "  best of {rounds}: baseline ({baseline}) {best_base:.0} tasks/s, this commit {best_ours:.0} tasks/s: ratio {:.3}",
        best_ours / best_base
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_number("DRAIN_TASKS", 100_000);
    let original_n = env_number("ORIGINAL_TASKS", 10_000).min(n);
    let db = TestDb::new().await;
    let admin = admin_client(&db).await;
    let agent: uuid::Uuid = admin
        .query_one("INSERT INTO agents (name) VALUES ('bench') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);

    println!(
        "drain: {n} due no-op tasks through pgbouncer (transaction mode), database {}",
        db.name
    );
    let baseline = std::env::var("DRAIN_BASELINE_BIN").ok();
    if let (Some(baseline), Ok(_)) = (&baseline, std::env::var("DRAIN_AB_ONLY")) {
        before_and_after(&db, &admin, agent, n, baseline).await;
        return;
    }
    let floor = sql_floor(&db, &admin, agent, n, false).await;
    let default_batch = ours(&db, &admin, agent, n, SchedulerSettings::default().batch_size).await;
    let small_batch = ours(&db, &admin, agent, n, 250).await;
    let floor2 = sql_floor(&db, &admin, agent, n, false).await;
    let floor_any = sql_floor(&db, &admin, agent, n, true).await;
    let orig = original(&db, &admin, agent, n, original_n).await;
    // The reference is the floor as specified, averaged over a run before and after ours.
    let floor_rate = (floor.rate() + floor2.rate()) / 2.0;

    println!();
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>10} | {:>14} | {:>10} | {:>9} |",
        "run", "tasks", "seconds", "tasks/s", "statements/task", "peak conns", "x floor"
    );
    println!(
        "|{:-<40}|{:->10}|{:->10}|{:->12}|{:->16}|{:->12}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for f in [&floor, &floor2, &floor_any, &default_batch, &small_batch, &orig] {
        println!(
            "| {:<38} | {:>8} | {:>8.2} | {:>10.0} | {:>15.4} | {:>10} | {:>9.2} |",
            f.name,
            f.tasks,
            f.seconds,
            f.rate(),
            f.statements.unwrap_or(f64::NAN),
            f.peak.map(|p| p.to_string()).unwrap_or_default(),
            f.rate() / floor_rate
        );
    }
    println!();
    println!(
        "scheduler (defaults) vs original algorithm: {:.1}x; vs the ANY-form floor: {:.2}x",
        default_batch.rate() / orig.rate(),
        default_batch.rate() / floor_any.rate()
    );
    if let Some(baseline) = baseline {
        before_and_after(&db, &admin, agent, n, &baseline).await;
    }
}

/// EMF lines kept in memory instead of cluttering the output.
fn quiet_metrics() -> shared::metrics::Metrics {
    shared::metrics::Metrics::new(&shared::config::Env::default(), "scheduler")
        .with_sink(shared::metrics::Sink::Buffer(Default::default()))
}
