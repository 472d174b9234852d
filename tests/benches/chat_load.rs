//! `chat-load`: many simulated Lambda instances (each its own pool of 1, its own user) sending
//! chat messages through a pgbouncer in transaction mode with a server pool of 10, with the local
//! model at a fixed latency. Prints requests/s, server-side latency excluding the model (p50,
//! p99, max), status counts and the peak server connections.
//!
//! Run: `scripts/bench chat_load` (CHAT_INSTANCES=200, CHAT_REQUESTS=20 per instance,
//! CHAT_MODEL_MS=50, CHAT_SERVER_POOL=10, CHAT_THINK_MS=0 between one instance's requests).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use integration_tests::bench::{chat_instance, token};
use integration_tests::fakes;
use integration_tests::helpers::{settings_for, PoolOptions, PrivateBouncer, TestDb};
use integration_tests::stats::percentile;
use lambda_http::Body;
use serde_json::{json, Value};
use shared::db::Db;
use shared::model::{AgentModel, LocalModel, ModelError, ModelRequest};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The local model, timed: the handler's time minus the model's is the server-side latency.
struct TimedModel {
    inner: LocalModel,
    last: Mutex<Duration>,
}

#[async_trait]
impl AgentModel for TimedModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        let started = Instant::now();
        let reply = self.inner.generate(request).await;
        *self.last.lock().unwrap() = started.elapsed();
        reply
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances = env_number("CHAT_INSTANCES", 200) as usize;
    let per_instance = env_number("CHAT_REQUESTS", 20) as usize;
    let model_ms = env_number("CHAT_MODEL_MS", 50);
    let server_pool = env_number("CHAT_SERVER_POOL", 10) as usize;
    // Pause between one instance's requests (a user reading the reply); 0 = back to back.
    let think_ms = env_number("CHAT_THINK_MS", 0);

    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::start(server_pool).await;
    let admin = db.direct().await;
    let agent: uuid::Uuid = admin
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('bench', 'Be brief.', 'public') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "chat-load: {instances} instances x {per_instance} messages, pool of 1 each, pgbouncer server pool {server_pool}, \
         local model {model_ms} ms, think time {think_ms} ms, database {}",
        db.name
    );

    // Peak server connections on this database, sampled every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let monitor = {
        let (stop, peak, name) = (stop.clone(), peak.clone(), db.name.clone());
        let inspector = db.direct().await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(row) = inspector
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'
                            AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await
                {
                    peak.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // CHAT_CONNECTION_MODE: release (the default, a connect per round trip) or warm.
    let mode: &'static str = if std::env::var("CHAT_CONNECTION_MODE").is_ok_and(|m| m == "warm") {
        "warm"
    } else {
        "release"
    };
    println!("connection mode: {mode}");
    let settings = settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "chat".into(),
            mode,
            ..PoolOptions::default()
        },
    );
    // Every instance warms its pool (the Lambda init phase) before the clock starts.
    let barrier = Arc::new(tokio::sync::Barrier::new(instances + 1));
    let mut tasks = Vec::new();
    for i in 0..instances {
        let settings = settings.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let model = Arc::new(TimedModel {
                inner: LocalModel {
                    latency: Duration::from_millis(model_ms),
                },
                last: Mutex::new(Duration::ZERO),
            });
            let chat = chat_instance(Db::new(&settings).unwrap(), model.clone());
            chat.db.warm().await;
            barrier.wait().await;
            // Instances start spread over one think time, as independent users would.
            if think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..think_ms))).await;
            }
            let user = uuid::Uuid::new_v4().to_string();
            let template = fakes::chat_event(&token(&user));
            let mut conversation: Option<String> = None;
            let mut results = Vec::with_capacity(per_instance);
            for n in 0..per_instance {
                let mut body = json!({"agentId": agent, "message": format!("instance {i} message {n}")});
                if let Some(c) = &conversation {
                    body["conversationId"] = c.clone().into();
                }
                let mut event = template.clone();
                event["body"] = body.to_string().into();
                let request = lambda_http::request::from_str(&event.to_string()).unwrap();
                *model.last.lock().unwrap() = Duration::ZERO;
                let t = Instant::now();
                let response = chat::handle(&chat, request).await.unwrap();
                let total = t.elapsed();
                let server = total.saturating_sub(*model.last.lock().unwrap());
                let status = response.status().as_u16();
                if status == 200 && conversation.is_none() {
                    if let Body::Text(text) = response.body() {
                        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                        conversation = v["conversationId"].as_str().map(String::from);
                    }
                }
                results.push((status, server.as_secs_f64() * 1e3));
                if think_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(think_ms)).await;
                }
            }
            results
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for t in tasks {
        for (status, ms) in t.await.unwrap() {
            *statuses.entry(status).or_default() += 1;
            if status == 200 {
                latencies.push(ms);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    monitor.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let total: usize = statuses.values().sum();
    let server_errors: usize = statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum();
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .unwrap()
        .get(0);

    println!();
    println!("| requests | seconds | requests/s | p50 ms | p99 ms | max ms | 5xx | statuses | peak server conns | message rows |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {elapsed:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {server_errors} | {statuses:?} | {} | {rows} |",
        total as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        peak.load(Ordering::Relaxed),
    );
    println!("(latency: the handler's time minus the model's: auth, validation, both database round trips)");
}
