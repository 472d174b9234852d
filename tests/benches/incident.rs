//! `incident`: the original outage, replayed. A private Postgres with a small `max_connections`,
//! a pgbouncer in transaction mode with a small server pool (like a Supabase pooler), and at the
//! same time: a burst of chat traffic from many simulated Lambda instances (each its own pool of
//! 1), health polling of `/api/health/connections`, and scheduler instances draining a backlog.
//!
//! Run 1 uses the template's budget (chat 40 x 1 + health 2 x 1 + scheduler 2 x 2 against a
//! pooler admitting 200 clients). Run 2 breaks it: 300 chat instances against a pooler admitting
//! 100; the product must answer 503 + Retry-After fast instead of hanging, then recover once the
//! burst ends. Prints status counts, latencies, peak server connections and requests past bound.
//!
//! Run: `scripts/bench incident` (INCIDENT_SECONDS=8).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat::{Chat, Settings as ChatSettings};
use health::{Health, Settings as HealthSettings, Thresholds};
use integration_tests::fakes;
use integration_tests::helpers::{deadline_in, settings_for, PoolOptions, PrivateBouncer, PrivateCluster};
use lambda_http::Body;
use scheduler::{Scheduler, Settings as SchedulerSettings};
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use shared::db::Db;
use shared::metrics::{Metrics, Sink};
use shared::model::LocalModel;

const SECRET: &str = "incident-jwt-secret-with-at-least-32-characters";
const SUPABASE: &str = "https://incident.supabase.co";
const AGENT: &str = "00000000-0000-4000-8000-000000000001";
/// Longest a request may take by its bounds: pool wait 2 s + connect 3 s + statement 5 s, twice
/// for chat's two round trips, plus the model.
const BOUND: Duration = Duration::from_secs(21);

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<(&'static str, u16), usize>,
    latencies: Vec<f64>,
    past_bound: usize,
    retry_after_missing: usize,
}

fn quiet(function: &str) -> Metrics {
    Metrics::new(&shared::config::Env::default(), function).with_sink(Sink::Buffer(Default::default()))
}

fn settings(url: &str, app: &str, max: usize) -> shared::db::DbSettings {
    settings_for(
        url,
        &PoolOptions {
            app: app.into(),
            max_size: max,
            ..PoolOptions::default()
        },
    )
}

struct Scenario {
    name: &'static str,
    chat_instances: usize,
    pooler_clients: usize,
}

async fn run(cluster: &PrivateCluster, scenario: &Scenario, seconds: u64) {
    let bouncer = PrivateBouncer::configured(cluster.port, 10, scenario.pooler_clients).await;
    let url = format!("postgres://postgres:postgres@127.0.0.1:{}/agents", bouncer.port);
    let (admin, conn) = tokio_postgres::connect(&cluster.url("agents"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(
            "TRUNCATE agent_tasks, messages, conversations;
             INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             SELECT '00000000-0000-4000-8000-000000000001', 'backlog ' || i, 'approved', now() - interval '1 hour'
               FROM generate_series(1, 20000) i;",
        )
        .await
        .unwrap();
    admin.batch_execute("VACUUM ANALYZE agent_tasks").await.unwrap();
    drop(admin);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let monitor = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let (inspector, conn) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(row) = inspector
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = 'agents'",
                        &[],
                    )
                    .await
                {
                    peak.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let record = |tally: &Arc<Mutex<Tally>>, kind: &'static str, status: u16, took: Duration, retry_after: bool| {
        let mut t = tally.lock().unwrap();
        *t.statuses.entry((kind, status)).or_default() += 1;
        t.latencies.push(took.as_secs_f64() * 1e3);
        if took > BOUND {
            t.past_bound += 1;
        }
        if status == 503 && !retry_after {
            t.retry_after_missing += 1;
        }
    };

    // The chat burst.
    for i in 0..scenario.chat_instances {
        let (url, tally) = (url.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let chat = Chat {
                live: shared::live::Publisher::off(),
                db: Db::new(&settings(&url, "chat", 1)).unwrap(),
                auth: Authenticator::new(AuthConfig::new(SUPABASE, Some(SECRET.into())))
                    .expect("an HTTP client with its timeouts"),
                model: Arc::new(LocalModel {
                    latency: Duration::from_millis(50),
                }),
                settings: ChatSettings {
                    rate_limit: 1_000_000,
                    ..ChatSettings::default()
                },
                metrics: quiet("chat"),
            };
            let token = fakes::hs256(
                SECRET,
                &fakes::claims(&format!("{SUPABASE}/auth/v1"), &uuid::Uuid::new_v4().to_string()),
            );
            let template = fakes::chat_event(&token);
            let mut n = 0;
            while Instant::now() < until {
                let mut event = template.clone();
                event["body"] = json!({"agentId": AGENT, "message": format!("instance {i} message {n}")})
                    .to_string()
                    .into();
                let started = Instant::now();
                let response = chat::handle(&chat, lambda_http::request::from_str(&event.to_string()).unwrap())
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                record(
                    &tally,
                    "chat",
                    status,
                    started.elapsed(),
                    response.headers().contains_key("retry-after"),
                );
                if status != 200 {
                    // A client honouring Retry-After would wait longer; a short pause keeps the burst on.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                n += 1;
            }
        }));
    }
    // Health polling.
    for _ in 0..2 {
        let (url, tally) = (url.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let health = Health {
                db: Db::new(&settings(&url, "health", 1)).unwrap(),
                settings: HealthSettings::new(
                    Some("incident-key".into()),
                    Thresholds {
                        warning_percent: 80.0,
                        critical_percent: 95.0,
                    },
                    Duration::from_millis(1500),
                ),
                metrics: quiet("health"),
            };
            let mut event: Value = serde_json::from_str(include_str!("../../events/health-connections.json")).unwrap();
            event["headers"]["x-api-key"] = "incident-key".into();
            let mut worst = String::from("ok");
            while Instant::now() < until {
                let started = Instant::now();
                let response = health::handle(&health, lambda_http::request::from_str(&event.to_string()).unwrap())
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                if let Body::Text(t) = response.body() {
                    if let Ok(v) = serde_json::from_str::<Value>(t) {
                        if let Some(level) = v["level"].as_str() {
                            if level == "critical" || (level == "warning" && worst == "ok") {
                                worst = level.to_string();
                            }
                        }
                    }
                }
                record(
                    &tally,
                    "health",
                    status,
                    started.elapsed(),
                    response.headers().contains_key("retry-after"),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!("  health: worst level reported: {worst}");
        }));
    }
    // Scheduler instances over the backlog.
    let scheduled = Arc::new(AtomicI64::new(0));
    for _ in 0..2 {
        let (url, tally, scheduled) = (url.clone(), tally.clone(), scheduled.clone());
        tasks.push(tokio::spawn(async move {
            let s = Scheduler::new(
                Db::new(&settings(&url, "scheduler", 2)).unwrap(),
                Arc::new(LocalModel::default()),
                // A run shorter than Lambda's: keep claiming until 1 s before the deadline.
                SchedulerSettings {
                    safety_margin: Duration::from_secs(1),
                    ..SchedulerSettings::default()
                },
                quiet("scheduler"),
            );
            while Instant::now() < until {
                let mut context = lambda_runtime::Context::default();
                context.request_id = uuid::Uuid::new_v4().to_string();
                context.deadline =
                    deadline_in(until.saturating_duration_since(Instant::now()) + Duration::from_secs(1));
                let started = Instant::now();
                let result = scheduler::handle(&s, lambda_runtime::LambdaEvent::new(json!({}), context)).await;
                let (status, completed) = match &result {
                    Ok(summary) => (200, summary.completed as i64),
                    Err(_) => (503, 0),
                };
                scheduled.fetch_add(completed, Ordering::Relaxed);
                record(&tally, "scheduler", status, started.elapsed(), true);
                if completed == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    monitor.await.unwrap();

    // Recovery: once the burst is over, a handful of instances are served normally.
    let mut recovered = 0;
    for _ in 0..10 {
        let chat = Chat {
            live: shared::live::Publisher::off(),
            db: Db::new(&settings(&url, "chat", 1)).unwrap(),
            auth: Authenticator::new(AuthConfig::new(SUPABASE, Some(SECRET.into())))
                .expect("an HTTP client with its timeouts"),
            model: Arc::new(LocalModel::default()),
            settings: ChatSettings::default(),
            metrics: quiet("chat"),
        };
        let token = fakes::hs256(
            SECRET,
            &fakes::claims(&format!("{SUPABASE}/auth/v1"), &uuid::Uuid::new_v4().to_string()),
        );
        let event = fakes::chat_event(&token);
        let response = chat::handle(&chat, lambda_http::request::from_str(&event.to_string()).unwrap())
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            recovered += 1;
        }
    }

    let mut t = tally.lock().unwrap();
    t.latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| t.latencies[((t.latencies.len() as f64 - 1.0) * p).round() as usize];
    let total: usize = t.statuses.values().sum();
    let five_xx: usize = t.statuses.iter().filter(|((_, s), _)| *s >= 500).map(|(_, n)| n).sum();
    println!(
        "\n### {} ({} chat instances, pooler admits {} clients, server pool 10, max_connections 30)\n",
        scenario.name, scenario.chat_instances, scenario.pooler_clients
    );
    println!("| calls | seconds | p50 ms | p99 ms | max ms | 5xx | past bound | 503 without Retry-After | peak server conns | tasks completed | recovered after |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {elapsed:.1} | {:.1} | {:.1} | {:.1} | {five_xx} | {} | {} | {} | {} | {recovered}/10 |",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        t.past_bound,
        t.retry_after_missing,
        peak.load(Ordering::Relaxed),
        scheduled.load(Ordering::Relaxed)
    );
    println!("\nstatus counts: {:?}", t.statuses);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = std::env::var("INCIDENT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let cluster = PrivateCluster::start(30, 3);
    cluster
        .connect()
        .await
        .batch_execute("CREATE DATABASE agents")
        .await
        .unwrap();
    let mut direct = settings_for(&cluster.url("agents"), &PoolOptions::default());
    direct.application_name = "migrate".into();
    shared::db::migrate::run(&direct).await.unwrap();
    let (admin, conn) = tokio_postgres::connect(&cluster.url("agents"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute("INSERT INTO agents (id, name, instructions, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'Be brief.', 'public')")
        .await
        .unwrap();
    drop(admin);
    println!("incident: {seconds} s of chat burst + health polling + scheduler backlog (20,000 tasks)");
    for scenario in [
        Scenario {
            name: "template budget",
            chat_instances: 40,
            pooler_clients: 200,
        },
        Scenario {
            name: "broken budget",
            chat_instances: 300,
            pooler_clients: 100,
        },
    ] {
        run(&cluster, &scenario, seconds).await;
    }
}
