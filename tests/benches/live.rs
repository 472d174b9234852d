//! `live`: live updates at the scale of 1,000 open tabs (issue 23). The release `live` binary
//! behind the local WebSocket gateway (`tests/src/live_gateway.rs`, API Gateway's contract: every
//! `$connect` invoked on the function through a local Lambda Runtime API), `LIVE_BENCH_USERS`
//! users (default 100) with `LIVE_BENCH_TABS` sockets each (default 10, the per-user limit): 1,000
//! connections. Then `LIVE_BENCH_TASKS` due tasks (default 10,000, spread evenly over the users)
//! drained by the release `scheduler` binary through its own Runtime API, with the template's
//! settings (pool of 2, run bounds) and the live defaults (`LIVE_PUSH_CONCURRENCY` 32,
//! `LIVE_PUSH_TIMEOUT_MS` 1000, `LIVE_PUBLISH_TIMEOUT_MS` 2000), pushing each recorded task's
//! `task.updated` to its owner's sockets through the gateway's Management API. The model is the
//! OpenAI-compatible stand-in answering each call after `LIVE_BENCH_MODEL_MS` (default 1000 ms)
//! ± 20 %, as real calls vary (no quota in the way); `LIVE_BENCH_MODEL=local` uses the local
//! model instead, which answers after exactly that time: tasks claimed together then finish and
//! are recorded together, the burstiest case.
//!
//! Prints: p50/p99/max commit → event received (from the event's `at`, the recording
//! statement's `now()`, to the frame read by the client: the statement's own execution is
//! included, so it is an upper bound on commit → received), events expected and received,
//! pushes failed (`LivePushFailed` from the scheduler's metrics lines), peak server connections
//! (Postgres backends of the database), sockets open at the gateway, and the requests/s the same
//! tabs would make polling `GET /api/tasks` every 2 s against the events/s measured.
//!
//! Run: `scripts/bench live` (it builds the release binaries).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use integration_tests::bench::{token, SECRET, SUPABASE};
use integration_tests::fakes::{FakeServer, Quota};
use integration_tests::helpers::{
    built_binary, cpu_seconds, deadline_in, watch_connections, InvokeResult, RuntimeApi, TestDb,
};
use integration_tests::live_gateway::{Invoker, LiveGateway};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Lambda's invocation timeout in the template.
const INVOCATION: Duration = Duration::from_secs(300);
/// The polling the live socket replaced: every open tab asked for its tasks this often.
const POLL_EVERY: Duration = Duration::from_secs(2);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the clients saw.
#[derive(Default)]
struct Received {
    events: AtomicU64,
    other_frames: AtomicU64,
    closed: AtomicUsize,
    /// Commit → received, ms.
    latencies: Mutex<Vec<f64>>,
    last: Mutex<Option<Instant>>,
    /// The refetches web/app.js's rule makes of these arrivals: done, and still to come.
    refetches: AtomicU64,
    refetches_pending: AtomicU64,
    /// Events by their `at`: one `at` per recording statement.
    by_record: Mutex<std::collections::HashMap<String, u64>>,
}

/// web/app.js's rule: a refetch 150 ms after an event, then at most one every 2 s while events
/// keep coming.
const REFETCH_AFTER: Duration = Duration::from_millis(150);
const REFETCH_EVERY: Duration = Duration::from_secs(2);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users = env_number("LIVE_BENCH_USERS", 100);
    let tabs = env_number("LIVE_BENCH_TABS", 10);
    let tasks = env_number("LIVE_BENCH_TASKS", 10_000);
    let model_ms = env_number("LIVE_BENCH_MODEL_MS", 1000);
    let jitterless = std::env::var("LIVE_BENCH_MODEL").is_ok_and(|m| m == "local");
    let sockets = users * tabs;
    println!(
        "live: {sockets} WebSocket connections ({users} users × {tabs}), {tasks} tasks through the scheduler, model {model_ms} ms{}",
        if jitterless { " exactly (local model)" } else { " ± 20 % (OpenAI-compatible stand-in)" }
    );

    let db = TestDb::new().await;
    let user_ids: Vec<uuid::Uuid> = (0..users).map(|_| uuid::Uuid::new_v4()).collect();

    // The live function and the gateway in front of it.
    let live_runtime = Arc::new(RuntimeApi::start().await);
    let live_function = tokio::process::Command::new(built_binary("release", "live"))
        .envs(live_runtime.function_env("live"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("SUPABASE_URL", SUPABASE)
        .env("SUPABASE_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the release live binary (cargo build --release --bins)");
    let gateway = Arc::new(
        LiveGateway::start(([127, 0, 0, 1], 0).into(), Invoker::Runtime(live_runtime.clone()))
            .await
            .expect("the gateway listens"),
    );

    // The tabs: `tabs` sockets per user, opened as the browser does, 50 handshakes at a time.
    let received = Arc::new(Received::default());
    let opening = Instant::now();
    let url = gateway.ws_url();
    let opened: Vec<bool> =
        futures_util::stream::iter(user_ids.iter().flat_map(|u| std::iter::repeat_n(*u, tabs as usize)))
            .map(|user| {
                let (url, received) = (url.clone(), received.clone());
                async move {
                    let mut request = url.as_str().into_client_request().expect("a request");
                    let protocols = format!("agent-live.v1, {}", token(&user.to_string()));
                    request
                        .headers_mut()
                        .insert("sec-websocket-protocol", protocols.parse().expect("a header value"));
                    let Ok((socket, _)) = tokio_tungstenite::connect_async(request).await else {
                        return false;
                    };
                    tokio::spawn(read(socket, received));
                    true
                }
            })
            .buffer_unordered(50)
            .collect()
            .await;
    let open_seconds = opening.elapsed().as_secs_f64();
    let refused = opened.iter().filter(|ok| !**ok).count();
    let rows: i64 = db
        .direct()
        .await
        .query_one("SELECT count(*) FROM live_connections", &[])
        .await
        .expect("count")
        .get(0);
    println!(
        "  opened {} of {sockets} in {open_seconds:.1} s ({:.0} $connect/s through one live instance), {refused} refused; {rows} rows in live_connections; {} open at the gateway",
        sockets as usize - refused,
        (sockets as usize - refused) as f64 / open_seconds,
        gateway.open_connections()
    );

    // The pushes alone: one change fanned out to every connection, from this process, through
    // the SDK client the functions use, at a few concurrencies (message.created hints, not
    // counted as task events).
    let connection_ids: Vec<String> = db
        .direct()
        .await
        .query("SELECT connection_id FROM live_connections", &[])
        .await
        .expect("connection ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for concurrency in [1, 32, 128] {
        let publisher = calibration_publisher(&gateway.endpoint(), concurrency);
        let delivery = shared::live::Delivery {
            event: shared::live::LiveEvent::message(uuid::Uuid::nil(), uuid::Uuid::nil(), "user", chrono::Utc::now()),
            to: shared::live::Connections {
                open: connection_ids.clone(),
                expired: Vec::new(),
            },
        };
        let pool = db.pool(&integration_tests::helpers::PoolOptions::default());
        let started = Instant::now();
        let published = publisher.publish(&pool, &[delivery]).await;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "  pushes alone, concurrency {concurrency}: {} sent, {} failed in {:.0} ms ({:.0} pushes/s, {:.2} ms each)",
            published.sent,
            published.failed,
            seconds * 1000.0,
            published.sent as f64 / seconds,
            seconds * 1000.0 * concurrency as f64 / published.sent.max(1) as f64
        );
    }

    // The tasks, spread evenly over the users, all due.
    let admin = db.direct().await;
    let agent: uuid::Uuid = admin
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('worker', 'Be brief.', 'public') RETURNING id",
            &[],
        )
        .await
        .expect("agent")
        .get(0);
    admin
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, ($2::uuid[])[1 + i % array_length($2::uuid[], 1)], 'task ' || i, 'approved',
                    now() - interval '1 hour' + i * interval '1 millisecond'
               FROM generate_series(1, $3::int8) AS i",
            &[&agent, &user_ids, &(tasks as i64)],
        )
        .await
        .expect("seed tasks");
    admin.batch_execute("VACUUM ANALYZE agent_tasks").await.expect("vacuum");
    let expected: i64 = admin
        .query_one(
            "SELECT count(*) FROM agent_tasks t JOIN live_connections c ON c.user_id = t.user_id",
            &[],
        )
        .await
        .expect("expected events")
        .get(0);

    // The scheduler, release, through its own Runtime API; its metrics lines read for
    // LivePushFailed.
    let provider = FakeServer::openai().await;
    provider.stop_recording();
    provider.set_quota(Quota {
        concurrent: 100_000,
        latency: Duration::from_millis(model_ms),
        jitter: 0.2,
    });
    let runtime = RuntimeApi::start().await;
    let mut scheduler = tokio::process::Command::new(built_binary("release", "scheduler"));
    if jitterless {
        scheduler
            .env("MODEL_PROVIDER", "local")
            .env("LOCAL_MODEL_LATENCY_MS", model_ms.to_string());
    } else {
        scheduler
            .env("MODEL_PROVIDER", "openai")
            .env("OPENAI_BASE_URL", format!("{}/v1", provider.url()))
            .env("OPENAI_MODEL", "stand-in")
            .env("MODEL_TIMEOUT_MS", "60000");
    }
    let mut child = scheduler
        .envs(runtime.function_env("scheduler"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("DB_POOL_MAX_SIZE", "2")
        .env("DB_STATEMENT_TIMEOUT_MS", "10000")
        .env("SCHEDULER_MAX_RUN_MS", "280000")
        .env("SCHEDULER_SAFETY_MARGIN_MS", "20000")
        .env("SCHEDULER_TASK_TIMEOUT_MS", "60000")
        // LIVE_BENCH_LIVE=off: the same run with live updates off (the scheduler's own pace).
        .env(
            "LIVE_ENDPOINT",
            if std::env::var("LIVE_BENCH_LIVE").is_ok_and(|v| v == "off") {
                String::new()
            } else {
                gateway.endpoint()
            },
        )
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the release scheduler (cargo build --release --bins)");
    let push_failed = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().expect("stdout");
    let failed = push_failed.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(doc) = serde_json::from_str::<Value>(&line) {
                if let Some(n) = doc["LivePushFailed"].as_f64() {
                    failed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    });
    // Sockets open at the gateway, every 100 ms: the fewest and the most during the run.
    let (fewest_open, most_open) = (Arc::new(AtomicUsize::new(usize::MAX)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (gateway, fewest, most) = (gateway.clone(), fewest_open.clone(), most_open.clone());
        tokio::spawn(async move {
            loop {
                let open = gateway.open_connections();
                fewest.fetch_min(open, Ordering::Relaxed);
                most.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (stop, monitor) = watch_connections(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // CPU used during the run, by process: this one (the gateway and the 1,000 clients), the
    // scheduler (its pushes included), the live function.
    let pids = (
        std::process::id(),
        child.id().unwrap_or(0),
        live_function.id().unwrap_or(0),
    );
    let cpu_before = (cpu_seconds(pids.0), cpu_seconds(pids.1), cpu_seconds(pids.2));

    let event: Value = serde_json::from_str(include_str!("../../events/schedule.json")).expect("events/schedule.json");
    let started = Instant::now();
    let mut invocations = 0;
    let mut completed = 0i64;
    loop {
        let result = runtime.invoke(&event, deadline_in(INVOCATION)).await;
        invocations += 1;
        match result {
            InvokeResult::Response(summary) => {
                completed += summary["completed"].as_i64().unwrap_or(0);
                println!("  invocation {invocations}: {summary}");
            }
            InvokeResult::Error(e) => panic!("the scheduler failed: {e}"),
        }
        if completed >= tasks as i64 || invocations >= 10 {
            break;
        }
    }
    let drained = started.elapsed().as_secs_f64();
    let cpu_drained = (cpu_seconds(pids.0), cpu_seconds(pids.1), cpu_seconds(pids.2));
    // Every event sent is in flight or read within a few seconds of the last record.
    let settled = integration_tests::helpers::eventually(Duration::from_secs(30), || async {
        received.events.load(Ordering::Relaxed) >= expected as u64
    })
    .await;
    sampler.abort();
    stop.store(true, Ordering::Relaxed);
    let peak_connections = monitor.await.unwrap_or(0);
    // The last metrics line is written as the invocation ends.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let events = received.events.load(Ordering::Relaxed);
    let mut latencies = received.latencies.lock().expect("latencies").clone();
    latencies.sort_by(f64::total_cmp);
    let last = received.last.lock().expect("last").unwrap_or_else(Instant::now);
    let event_seconds = last.saturating_duration_since(started).as_secs_f64();
    let stats = gateway.stats();
    let polling = sockets as f64 / POLL_EVERY.as_secs_f64();
    println!();
    println!(
        "  tasks completed: {completed} in {drained:.1} s ({:.0} tasks/s), {invocations} invocation(s)",
        completed as f64 / drained
    );
    println!(
        "  events: {events} received of {expected} expected ({}), {} other frames, {} sockets closed by the server",
        if settled {
            "all"
        } else {
            "NOT all within 30 s of the last record"
        },
        received.other_frames.load(Ordering::Relaxed),
        received.closed.load(Ordering::Relaxed)
    );
    println!(
        "  commit → event received (ms): p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );
    let mut per_record: Vec<f64> = received
        .by_record
        .lock()
        .expect("records")
        .values()
        .map(|events| *events as f64 / tabs as f64)
        .collect();
    per_record.sort_by(f64::total_cmp);
    println!(
        "  records (recording statements): {}, tasks each p50 {:.0}, p99 {:.0}, max {:.0}: each record's pushes go out together",
        per_record.len(),
        percentile(&per_record, 50.0),
        percentile(&per_record, 99.0),
        percentile(&per_record, 100.0)
    );
    println!(
        "  pushes: {} PostToConnection at the gateway, {} answered 410, {} failed (LivePushFailed)",
        stats.posts.load(Ordering::Relaxed),
        stats.gone.load(Ordering::Relaxed),
        push_failed.load(Ordering::Relaxed)
    );
    println!(
        "  connections: {}–{} WebSocket connections open at the gateway during the run; peak Postgres server connections of the database {peak_connections} (the live function's and the scheduler's, through pgbouncer)",
        fewest_open.load(Ordering::Relaxed),
        most_open.load(Ordering::Relaxed)
    );
    println!(
        "  requests: polling every {} s, {sockets} tabs would send {polling:.0} GET /api/tasks/s, busy or idle; live sent {:.0} events/s while {tasks} tasks finished ({event_seconds:.1} s) and 0/s idle",
        POLL_EVERY.as_secs(),
        events as f64 / event_seconds.max(f64::EPSILON)
    );
    println!(
        "  CPU seconds while the scheduler ran ({drained:.1} s on {} cores): scheduler {:.1}, gateway and clients {:.1}, live function {:.1}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_drained.1 - cpu_before.1,
        cpu_drained.0 - cpu_before.0,
        cpu_drained.2 - cpu_before.2
    );
    let refetches = received.refetches.load(Ordering::Relaxed) + received.refetches_pending.load(Ordering::Relaxed);
    println!(
        "  the web client's refetches of these arrivals (150 ms after an event, then at most one per 2 s per tab): {refetches} GET /api/tasks, {:.0}/s over the {event_seconds:.1} s",
        refetches as f64 / event_seconds.max(f64::EPSILON)
    );
    let _ = child.kill().await;
}

/// A publisher as the functions build it (the SDK over hyper and rustls, no retries), with static
/// credentials (the gateway checks no signature) and a generous bound.
fn calibration_publisher(endpoint: &str, concurrency: usize) -> shared::live::Publisher {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "AKIDBENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    shared::live::Publisher::from_client(
        aws_sdk_apigatewaymanagement::Client::from_conf(config),
        shared::live::LiveSettings {
            endpoint: Some(endpoint.to_string()),
            push_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            concurrency,
        },
        None,
    )
}

/// Reads one socket's frames until it closes: each `task.updated` counted and its
/// commit → received latency recorded.
async fn read<S>(mut socket: tokio_tungstenite::WebSocketStream<S>, received: Arc<Received>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The tab's refetch timer: when the pending one fires, and when the last one did.
    let (mut pending, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(frame) = socket.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let now = chrono::Utc::now();
                let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let at = event["at"]
                    .as_str()
                    .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
                match (event["type"].as_str(), at) {
                    (Some("task.updated"), Some(at)) => {
                        if let Some(key) = event["at"].as_str() {
                            *received
                                .by_record
                                .lock()
                                .expect("records")
                                .entry(key.to_string())
                                .or_default() += 1;
                        }
                        let ms = (now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                        received.latencies.lock().expect("latencies").push(ms);
                        received.events.fetch_add(1, Ordering::Relaxed);
                        let arrived = Instant::now();
                        *received.last.lock().expect("last") = Some(arrived);
                        if let Some(fires) = pending.filter(|fires| *fires <= arrived) {
                            received.refetches.fetch_add(1, Ordering::Relaxed);
                            received.refetches_pending.fetch_sub(1, Ordering::Relaxed);
                            last = Some(fires);
                            pending = None;
                        }
                        if pending.is_none() {
                            let soonest = arrived + REFETCH_AFTER;
                            pending = Some(last.map_or(soonest, |l| soonest.max(l + REFETCH_EVERY)));
                            received.refetches_pending.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        received.other_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    received.closed.fetch_add(1, Ordering::Relaxed);
}
