//! pooler_ceiling: many chat instances against a pooler that admits few clients, in each
//! connection mode, in the same run.
//!
//! `CEILING_INSTANCES` (2000) simulated Lambda instances of `chat`, each with its own pool of
//! one, each a user who sends a message, reads the reply for `CEILING_THINK_MS` (19000), and
//! sends the next, for `CEILING_SECONDS` (60). A private pgbouncer with `max_client_conn =
//! CEILING_MAX_CLIENTS` (200) and a server pool of 10; the model answers in 1 s ± 20 %. One
//! health instance polls `/api/health/connections` every 250 ms. Printed per mode: messages/s
//! answered 200, 5xx other than 503, the 503 share, p99 server-side time (the handler's time
//! minus the model's), connects per message, peak clients at the pooler, and how often health
//! said `critical` while the pooler's client list was full (it refuses new clients) and while it
//! was not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat::{Chat, Settings as ChatSettings};
use health::{Health, Settings as HealthSettings, Thresholds};
use integration_tests::bench::{token, SECRET, SUPABASE};
use integration_tests::fakes;
use integration_tests::helpers::{settings_for, PoolOptions, PrivateBouncer, TestDb};
use integration_tests::stats::percentile;
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use shared::config::Env;
use shared::db::Db;
use shared::metrics::{Metrics, Sink};
use shared::model::{AgentModel, ModelError, ModelRequest};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A model that thinks 1 s ± 20 %, and remembers how long the last call took per task.
struct JitterModel;

tokio::task_local! {
    static MODEL_TIME: std::cell::Cell<Duration>;
}

#[async_trait]
impl AgentModel for JitterModel {
    async fn generate(&self, _request: &ModelRequest) -> Result<String, ModelError> {
        let think = Duration::from_millis(800 + fastrand::u64(0..400));
        tokio::time::sleep(think).await;
        let _ = MODEL_TIME.try_with(|t| t.set(think));
        Ok("a considered answer".into())
    }
}

struct Outcome {
    mode: &'static str,
    seconds: f64,
    statuses: BTreeMap<u16, usize>,
    latencies: Vec<f64>,
    connects: u64,
    peak_clients: usize,
    critical_refusing: (usize, usize),
    critical_quiet: (usize, usize),
}

async fn run(mode: &'static str, instances: usize, seconds: u64, think_ms: u64, max_clients: usize) -> Outcome {
    let db = TestDb::new().await;
    let admin = db.direct().await;
    let agent: uuid::Uuid = admin
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('bench', 'Be brief.', 'public') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let pg_port = url::Url::parse(&db.direct_url).unwrap().port().unwrap_or(5432);
    let bouncer = PrivateBouncer::configured(pg_port, 10, max_clients).await;
    let settings = settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "chat".into(),
            mode,
            ..PoolOptions::default()
        },
    );
    let auth =
        Authenticator::new(AuthConfig::new(SUPABASE, Some(SECRET.into()))).expect("an HTTP client with its timeouts");
    let model: Arc<dyn AgentModel> = Arc::new(JitterModel);
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let mut tasks = Vec::new();
    for i in 0..instances {
        let (settings, auth, model, connects) = (settings.clone(), auth.clone(), model.clone(), connects.clone());
        tasks.push(tokio::spawn(async move {
            let chat = Chat {
                live: shared::live::Publisher::off(),
                db: Db::new(&settings).unwrap(),
                auth,
                model,
                settings: ChatSettings {
                    rate_limit: 1_000_000,
                    ..ChatSettings::default()
                },
                metrics: Metrics::new(&Env::default(), "chat").with_sink(Sink::Buffer(Arc::default())),
            };
            // Instances come up spread over one think time (their init warms a warm pool).
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..think_ms.max(1)))).await;
            chat.db.warm().await;
            let user = uuid::Uuid::new_v4().to_string();
            let token = token(&user);
            let template = fakes::chat_event(&token);
            let mut results = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let mut event = template.clone();
                event["body"] = json!({"agentId": agent, "message": format!("instance {i} message {n}")})
                    .to_string()
                    .into();
                n += 1;
                let request = lambda_http::request::from_str(&event.to_string()).unwrap();
                let t = Instant::now();
                let (response, model_time) = MODEL_TIME
                    .scope(std::cell::Cell::new(Duration::ZERO), async {
                        let r = chat::handle(&chat, request).await.unwrap();
                        (r, MODEL_TIME.with(std::cell::Cell::get))
                    })
                    .await;
                let server = t.elapsed().saturating_sub(model_time);
                let status = response.status().as_u16();
                results.push((status, server.as_secs_f64() * 1e3));
                tokio::time::sleep(Duration::from_millis(think_ms)).await;
            }
            connects.fetch_add(chat.db.connects(), Ordering::Relaxed);
            results
        }));
    }

    // Health, polling; and the pooler's client count, sampled from its console.
    let health = Health {
        db: Db::new(&settings_for(
            &bouncer.url(&db),
            &PoolOptions {
                app: "health".into(),
                ..PoolOptions::default()
            },
        ))
        .unwrap(),
        settings: HealthSettings::new(
            Some("ceiling-key".into()),
            Thresholds {
                warning_percent: 80.0,
                critical_percent: 95.0,
            },
            Duration::from_millis(1500),
        ),
        metrics: Metrics::new(&Env::default(), "health").with_sink(Sink::Buffer(Arc::default())),
    };
    // (health said critical, clients at the pooler) per poll.
    let samples: Arc<Mutex<Vec<(bool, usize)>>> = Arc::default();
    let peak = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, samples, peak) = (stop.clone(), samples.clone(), peak.clone());
        let console = bouncer.admin().await;
        tokio::spawn(async move {
            let mut event: Value = serde_json::from_str(include_str!("../../events/health-connections.json")).unwrap();
            event["headers"]["x-api-key"] = "ceiling-key".into();
            while !stop.load(Ordering::Relaxed) {
                let request = lambda_http::request::from_str(&event.to_string()).unwrap();
                let response = health::handle(&health, request).await.unwrap();
                let critical = match response.body() {
                    lambda_http::Body::Text(t) => {
                        serde_json::from_str::<Value>(t).is_ok_and(|v| v["level"] == "critical")
                    }
                    _ => false,
                };
                if let Ok(rows) = console.simple_query("SHOW CLIENTS").await {
                    let clients = rows
                        .iter()
                        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                        .count();
                    peak.fetch_max(clients, Ordering::Relaxed);
                    samples.lock().unwrap().push((critical, clients));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

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
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    latencies.sort_by(f64::total_cmp);

    // Health's answer at each poll, against the pooler's own truth at that moment: it refuses
    // new clients when its client list is full (the console's own connection is one of them).
    let (mut critical_refusing, mut critical_quiet) = ((0, 0), (0, 0));
    for (critical, clients) in samples.lock().unwrap().iter() {
        let bucket = if *clients + 1 >= max_clients {
            &mut critical_refusing
        } else {
            &mut critical_quiet
        };
        bucket.1 += 1;
        if *critical {
            bucket.0 += 1;
        }
    }
    Outcome {
        mode,
        seconds,
        statuses,
        latencies,
        connects: connects.load(Ordering::Relaxed),
        peak_clients: peak.load(Ordering::Relaxed),
        critical_refusing,
        critical_quiet,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances = env_number("CEILING_INSTANCES", 2000) as usize;
    let seconds = env_number("CEILING_SECONDS", 60);
    let think_ms = env_number("CEILING_THINK_MS", 19_000);
    let max_clients = env_number("CEILING_MAX_CLIENTS", 200) as usize;
    println!(
        "pooler-ceiling: {instances} chat instances, pgbouncer max_client_conn {max_clients}, server pool 10, \
         model 1 s ± 20 %, think {think_ms} ms, {seconds} s per mode"
    );
    let mut outcomes = Vec::new();
    for mode in ["warm", "release"] {
        outcomes.push(run(mode, instances, seconds, think_ms, max_clients).await);
    }
    println!();
    println!("| mode | messages/s (200) | 5xx other than 503 | 503 share | p99 server ms | connects/message | peak pooler clients | health critical while refusing | health critical while not |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let total: usize = o.statuses.values().sum();
        let ok = o.statuses.get(&200).copied().unwrap_or(0);
        let unavailable = o.statuses.get(&503).copied().unwrap_or(0);
        let other_5xx: usize = o
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 500 && **s != 503)
            .map(|(_, n)| n)
            .sum();
        println!(
            "| {} | {:.1} | {} | {:.1} % | {:.2} | {:.2} | {} | {}/{} | {}/{} |",
            o.mode,
            ok as f64 / o.seconds,
            other_5xx,
            unavailable as f64 * 100.0 / total.max(1) as f64,
            percentile(&o.latencies, 0.99),
            o.connects as f64 / total.max(1) as f64,
            o.peak_clients,
            o.critical_refusing.0,
            o.critical_refusing.1,
            o.critical_quiet.0,
            o.critical_quiet.1,
        );
    }
    if let [warm, release] = &outcomes[..] {
        let rate = |o: &Outcome| o.statuses.get(&200).copied().unwrap_or(0) as f64 / o.seconds;
        println!();
        println!(
            "release vs warm, messages/s answered: {:.1}x",
            rate(release) / rate(warm).max(1e-9)
        );
    }
}
