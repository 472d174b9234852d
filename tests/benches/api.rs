//! `api`: the frontend's list routes over a realistic history: 10,000 conversations, 1,000,000
//! messages and 100,000 tasks of 1,000 users. The real `api` handler, each simulated Lambda
//! instance with its own pool of 1, through a pgbouncer in transaction mode with a server pool of
//! 10. Prints per route the server-side time (the handler's, auth included) p50/p99 uncontended
//! (one instance) and with `API_INSTANCES` (200) instances pausing `API_THINK_MS` (1000) after
//! each request (about 200 requests/s); statements per request; peak server connections; and each route's plan
//! (`EXPLAIN (ANALYZE, BUFFERS)` of the same statement, same parameters).
//!
//! Run: `scripts/bench api` (`API_INSTANCES`, `API_REQUESTS`: passes over the 5 routes per
//! instance (5), `API_THINK_MS`, `API_CONNECTION_MODE=release|warm`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api::{Api, Settings as ApiSettings};
use integration_tests::bench::{token, SECRET, SUPABASE};
use integration_tests::helpers::{settings_for, watch_connections, PoolOptions, PrivateBouncer, TestDb};
use integration_tests::stats::percentile;
use lambda_http::Body;
use serde_json::Value;
use shared::auth::{AuthConfig, Authenticator};
use shared::db::Db;
use shared::metrics::{Metrics, Sink};

const USERS: i64 = 1000;
const ROUTES: [&str; 5] = ["agents", "conversations", "messages", "tasks", "task"];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn seed(db: &TestDb) -> Vec<String> {
    let admin = db.direct().await;
    let started = Instant::now();
    admin
        .batch_execute(&format!(
            "INSERT INTO agents (id, name, description, visibility) VALUES
               ('00000000-0000-4000-8000-000000000001', 'Helper', 'Answers questions', 'public'),
               ('00000000-0000-4000-8000-000000000002', 'Reporter', 'Writes reports', 'public');
             INSERT INTO conversations (id, user_id, agent_id, created_at, updated_at)
             SELECT md5('conversation' || c)::uuid, md5('user' || (c % {USERS}))::uuid,
                    CASE WHEN c % 2 = 0 THEN '00000000-0000-4000-8000-000000000001'::uuid
                         ELSE '00000000-0000-4000-8000-000000000002'::uuid END,
                    now() - interval '60 days' + c * interval '5 minutes',
                    now() - interval '30 days' + c * interval '2 minutes'
               FROM generate_series(0, 9999) c;
             INSERT INTO messages (conversation_id, user_id, role, content, created_at)
             SELECT md5('conversation' || (m % 10000))::uuid, md5('user' || ((m % 10000) % {USERS}))::uuid,
                    CASE WHEN (m / 10000) % 2 = 0 THEN 'user' ELSE 'assistant' END,
                    'message ' || m || ': ' || repeat('lorem ipsum ', 20),
                    now() - interval '30 days' + m * interval '2 seconds'
               FROM generate_series(0, 999999) m;
             INSERT INTO agent_tasks (agent_id, user_id, prompt, status, approval_status, scheduled_for, result,
                                      attempts, created_at)
             SELECT '00000000-0000-4000-8000-000000000001', md5('user' || (t % {USERS}))::uuid,
                    'task ' || t || ': ' || repeat('do something useful ', 5),
                    CASE t % 4 WHEN 0 THEN 'completed' WHEN 1 THEN 'failed' ELSE 'pending' END,
                    CASE t % 3 WHEN 0 THEN 'pending' ELSE 'approved' END,
                    now() + (t % 100) * interval '1 hour',
                    CASE WHEN t % 4 = 0 THEN repeat('result ', 200) END,
                    CASE WHEN t % 4 IN (0, 1) THEN 1 ELSE 0 END,
                    now() - interval '90 days' + t * interval '1 minute'
               FROM generate_series(0, 99999) t;"
        ))
        .await
        .expect("seed");
    admin
        .batch_execute("VACUUM ANALYZE agents, conversations, messages, agent_tasks")
        .await
        .expect("vacuum");
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    admin
        .query(
            &format!("SELECT md5('user' || i)::uuid::text FROM generate_series(0, {USERS} - 1) i ORDER BY i"),
            &[],
        )
        .await
        .expect("user ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// One simulated instance's pass over the routes as `user`: (route, status, ms, statements).
async fn visit(api: &Api, template: &Value, token: &str) -> Vec<(&'static str, u16, f64, u64)> {
    let mut out = Vec::new();
    let mut conversation = None;
    let mut task = None;
    for route in ROUTES {
        let (path, query) = match route {
            "agents" => ("/api/agents".to_string(), Vec::new()),
            "conversations" => ("/api/conversations".to_string(), vec![("limit", "20".to_string())]),
            "messages" => match &conversation {
                Some(c) => (
                    format!("/api/conversations/{c}/messages"),
                    vec![("limit", "50".to_string())],
                ),
                None => continue,
            },
            "tasks" => ("/api/tasks".to_string(), vec![("limit", "20".to_string())]),
            _ => match &task {
                Some(t) => (format!("/api/tasks/{t}"), Vec::new()),
                None => continue,
            },
        };
        let mut event = template.clone();
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["http"]["method"] = "GET".into();
        event["headers"]["authorization"] = format!("Bearer {token}").into();
        event["rawQueryString"] = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
            .into();
        event["queryStringParameters"] = query
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(v.clone())))
            .collect();
        let request = lambda_http::request::from_str(&event.to_string()).expect("event");
        let before = api.db.statements_sent();
        let t = Instant::now();
        let response = api::handle(api, request).await.expect("infallible");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let statements = api.db.statements_sent() - before;
        let status = response.status().as_u16();
        if let Body::Text(text) = response.body() {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            match route {
                "conversations" => conversation = v["conversations"][0]["id"].as_str().map(str::to_string),
                "tasks" => task = v["tasks"][0]["id"].as_str().map(str::to_string),
                _ => {}
            }
        }
        out.push((route, status, ms, statements));
    }
    out
}

fn new_api(settings: &shared::db::DbSettings) -> Api {
    Api {
        live: shared::live::Publisher::off(),
        db: Db::new(settings).expect("pool"),
        auth: Authenticator::new(AuthConfig::new(SUPABASE, Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings: ApiSettings::default(),
        metrics: Metrics::new(&shared::config::Env::default(), "api").with_sink(Sink::Buffer(Default::default())),
    }
}

fn report(title: &str, results: &[(&'static str, u16, f64, u64)], seconds: f64) {
    let mut by_route: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut statements = 0;
    for (route, status, ms, n) in results {
        *statuses.entry(*status).or_default() += 1;
        statements += n;
        if *status == 200 {
            by_route.entry(route).or_default().push(*ms);
        }
    }
    println!(
        "\n{title}: {} requests in {seconds:.1} s ({:.0}/s), statuses {statuses:?}, {:.2} statements per request",
        results.len(),
        results.len() as f64 / seconds,
        statements as f64 / results.len() as f64
    );
    println!("| route | requests | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (route, mut ms) in by_route {
        ms.sort_by(f64::total_cmp);
        println!(
            "| {route} | {} | {:.2} | {:.2} | {:.2} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
}

async fn explain(db: &TestDb, user: &str, conversation: &str, task: &str) {
    let admin = db.direct().await;
    let statements = [
        (
            "agents",
            "(uuid, int8)",
            api::agents::USABLE.to_string(),
            format!("('{user}', 500)"),
        ),
        (
            "conversations",
            "(uuid, uuid, timestamptz, uuid, int8)",
            api::conversations::PAGE.to_string(),
            format!("('{user}', NULL, NULL, NULL, 21)"),
        ),
        (
            "messages",
            "(uuid, uuid, timestamptz, uuid, int8)",
            api::conversations::MESSAGES.to_string(),
            format!("('{conversation}', '{user}', NULL, NULL, 51)"),
        ),
        (
            "tasks",
            "(uuid, text, text, timestamptz, uuid, int8, int4)",
            api::tasks::page_sql(),
            format!("('{user}', NULL, NULL, NULL, NULL, 21, 280)"),
        ),
        (
            "task",
            "(uuid, uuid)",
            api::tasks::one_sql(),
            format!("('{task}', '{user}')"),
        ),
    ];
    for (name, types, sql, args) in statements {
        admin
            .batch_execute(&format!("PREPARE q_{name} {types} AS {sql}"))
            .await
            .expect("prepare");
        let rows = admin
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q_{name} {args}"),
                &[],
            )
            .await
            .expect("explain");
        println!("\nEXPLAIN {name}:");
        for r in rows {
            println!("    {}", r.get::<_, String>(0));
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances = env_number("API_INSTANCES", 200) as usize;
    let passes = env_number("API_REQUESTS", 5) as usize;
    let think_ms = env_number("API_THINK_MS", 1000);
    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::start(10).await;
    println!(
        "api: {instances} instances, pool of 1 each, pgbouncer server pool 10, database {}",
        db.name
    );
    let users = seed(&db).await;
    // API_CONNECTION_MODE: release (the product's default: a connect per request) or warm.
    let mode: &'static str = if std::env::var("API_CONNECTION_MODE").is_ok_and(|m| m == "warm") {
        "warm"
    } else {
        "release"
    };
    println!("connection mode: {mode}");
    let settings = settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "api".into(),
            mode,
            ..PoolOptions::default()
        },
    );
    let template: Value = serde_json::from_str(include_str!("../../events/api-agents.json")).expect("event");

    // Uncontended: one warm instance, one request at a time.
    let one = new_api(&settings);
    one.db.warm().await;
    let started = Instant::now();
    let mut results = Vec::new();
    for i in 0..200 {
        results.extend(visit(&one, &template, &token(&users[i % users.len()])).await);
    }
    report("uncontended (1 instance)", &results, started.elapsed().as_secs_f64());

    // 200 instances, each a user reading its pages with a pause between passes.
    let (stop, monitor) = watch_connections(&db);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(instances + 1));
    let mut tasks = Vec::new();
    for i in 0..instances {
        let (settings, barrier, template) = (settings.clone(), barrier.clone(), template.clone());
        let user = users[i % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            let api = new_api(&settings);
            api.db.warm().await;
            barrier.wait().await;
            if think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..think_ms))).await;
            }
            let token = token(&user);
            let mut out = Vec::new();
            for _ in 0..passes {
                for r in visit(&api, &template, &token).await {
                    out.push(r);
                    if think_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(think_ms)).await;
                    }
                }
            }
            out
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("instance"));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = monitor.await.unwrap_or(0);
    report(
        &format!("{instances} instances, {think_ms} ms between requests"),
        &results,
        seconds,
    );
    println!("peak server connections: {peak}");

    // The plans, for the first user's first conversation and task.
    let admin = db.direct().await;
    let conversation: String = admin
        .query_one(
            "SELECT id::text FROM conversations WHERE user_id = $1::text::uuid ORDER BY updated_at DESC LIMIT 1",
            &[&users[0]],
        )
        .await
        .expect("a conversation")
        .get(0);
    let task: String = admin
        .query_one(
            "SELECT id::text FROM agent_tasks WHERE user_id = $1::text::uuid ORDER BY created_at DESC LIMIT 1",
            &[&users[0]],
        )
        .await
        .expect("a task")
        .get(0);
    explain(&db, &users[0], &conversation, &task).await;
}
