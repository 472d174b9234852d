use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use health::{Health, Settings as HealthSettings, Thresholds};
use integration_tests::harness::json_of;
use lambda_http::{Body, Response};
use serde_json::Value;
use shared::db::{Db, DbSettings};
use shared::metrics::{Metrics, Sink};

use crate::helpers::{admin_command, settings_for, PoolOptions, PrivateBouncer, PrivateCluster, TestDb};

const KEY: &str = "test-admin-key-0123456789";

/// A health instance on `settings`; its pooler probe connects with the same settings.
fn health_with(settings: &DbSettings, warning: f64, critical: f64) -> (Health, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let health = Health {
        db: Db::new(settings).unwrap(),
        settings: HealthSettings::new(
            Some(KEY.into()),
            Thresholds {
                warning_percent: warning,
                critical_percent: critical,
            },
            Duration::from_millis(1000),
        ),
        metrics: Metrics::new(&shared::config::Env::default(), "health").with_sink(Sink::Buffer(buffer.clone())),
    };
    (health, buffer)
}

fn health(settings: &DbSettings) -> Health {
    health_with(settings, 80.0, 95.0).0
}

/// An API Gateway v2 request built from `events/health.json`.
fn request(method: &str, path: &str, api_key: Option<&str>) -> lambda_http::Request {
    let mut event: Value = serde_json::from_str(include_str!("../../events/health.json")).unwrap();
    event["rawPath"] = path.into();
    event["routeKey"] = format!("{method} {path}").into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    if let Some(key) = api_key {
        event["headers"]["x-api-key"] = key.into();
    }
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

async fn call(h: &Health, method: &str, path: &str, key: Option<&str>) -> (u16, Value, Response<Body>) {
    let response = health::handle(h, request(method, path, key)).await.unwrap();
    (response.status().as_u16(), json_of(&response), response)
}

fn group<'a>(report: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    report[kind].as_array()?.iter().find(|g| g["name"] == name)
}

fn count(report: &Value, kind: &str, name: &str, field: &str) -> i64 {
    group(report, kind, name).map_or(0, |g| g[field].as_i64().unwrap_or(0))
}

#[tokio::test]
async fn health_answers_ok_when_the_database_answers() {
    let db = TestDb::new().await;
    let h = health(&db.settings(&PoolOptions::default()));
    let (status, body, response) = call(&h, "GET", "/api/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_404_and_405() {
    let db = TestDb::new().await;
    let h = health(&db.settings(&PoolOptions::default()));
    assert_eq!(call(&h, "GET", "/api/health/nope", Some(KEY)).await.0, 404);
    assert_eq!(call(&h, "GET", "/api/other", None).await.0, 404);
    let (status, body, _) = call(&h, "POST", "/api/health", None).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_connections_route_wants_the_admin_key_and_says_nothing_else() {
    let db = TestDb::new().await;
    let h = health(&db.settings(&PoolOptions::default()));
    let (status, body, _) = call(&h, "GET", "/api/health/connections", None).await;
    assert_eq!(status, 401);
    assert!(body.get("active").is_none());
    let (status, body, _) = call(&h, "GET", "/api/health/connections", Some("wrong")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["message"], "forbidden");
    let (status, body, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    for field in [
        "active",
        "idle",
        "idleInTransaction",
        "waiting",
        "limit",
        "usagePercent",
        "level",
        "latencyMs",
    ] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    assert_eq!(body["pool"]["maxSize"], 1);
}

#[tokio::test]
async fn opened_connections_raise_the_figures_by_as_many() {
    let db = TestDb::new().await;
    // As the health function's own role, which reads every session (agent_monitor).
    let h = health(&db.monitor_settings(&PoolOptions::default()));
    let (_, before, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    let base = count(&before, "byDatabase", &db.name, "connections");

    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(db.direct().await);
    }
    let (_, after, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(
        count(&after, "byDatabase", &db.name, "connections"),
        base + 3,
        "{after}"
    );
    assert!(after["active"].as_i64().unwrap() >= 3);

    // A session left inside a transaction is counted as such.
    extra[0].batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (_, report, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(
        count(&report, "byDatabase", &db.name, "idleInTransaction"),
        1,
        "{report}"
    );
    assert!(report["idleInTransaction"].as_i64().unwrap() >= 1);
}

#[tokio::test]
async fn levels_go_from_ok_to_warning_to_critical_as_connections_fill_the_limit() {
    // max_connections 12, 2 reserved: a limit of 10.
    let cluster = PrivateCluster::start(12, 2);
    let settings = settings_for(&cluster.url("postgres"), &PoolOptions::default());
    let (h, _) = health_with(&settings, 50.0, 80.0);

    let (_, report, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(report["limit"], 10, "{report}");
    assert_eq!(report["active"], 1, "only the health instance: {report}");
    assert_eq!(report["level"], "ok");

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(cluster.connect().await);
    }
    let (_, report, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(report["usagePercent"], 50.0, "{report}");
    assert_eq!(report["level"], "warning");

    for _ in 0..3 {
        held.push(cluster.connect().await);
    }
    let (_, report, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(report["usagePercent"], 80.0, "{report}");
    assert_eq!(report["level"], "critical");
}

#[tokio::test]
async fn health_is_503_within_its_bound_while_the_pooler_is_paused_or_down() {
    let db = TestDb::new().await;
    let mut bouncer = PrivateBouncer::start(2).await;
    let settings = settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            connect: Duration::from_millis(500),
            ..PoolOptions::default()
        },
    );
    let h = health(&settings);
    assert_eq!(call(&h, "GET", "/api/health", None).await.0, 200);

    let admin = bouncer.admin().await;
    admin_command(&admin, "PAUSE").await;
    let started = Instant::now();
    let (status, body, response) = call(&h, "GET", "/api/health", None).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(response.headers().contains_key("retry-after"));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?} with a 1 s bound");
    admin_command(&admin, "RESUME").await;
    assert_eq!(
        call(&h, "GET", "/api/health", None).await.0,
        200,
        "healthy again after RESUME"
    );

    bouncer.stop();
    let started = Instant::now();
    assert_eq!(call(&h, "GET", "/api/health", None).await.0, 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    bouncer.restart().await;
    let back = crate::helpers::eventually(Duration::from_secs(5), || async {
        call(&h, "GET", "/api/health", None).await.0 == 200
    })
    .await;
    assert!(back, "healthy again after the pooler returned");
}

const UNITS: &[&str] = &["Count", "Milliseconds", "Percent"];

/// Checks one line against the EMF specification: `_aws.Timestamp` (ms), `CloudWatchMetrics`
/// directives with a namespace, dimension sets naming root members, metric definitions whose
/// names are numeric root members with a valid unit. Returns the metric names.
fn check_emf(line: &str) -> Vec<String> {
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let aws = &doc["_aws"];
    assert!(
        aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000,
        "Timestamp in ms: {line}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics array");
    assert!(!directives.is_empty());
    let mut names = Vec::new();
    for d in directives {
        let ns = d["Namespace"].as_str().expect("Namespace");
        assert!(!ns.is_empty() && ns.len() <= 255);
        for set in d["Dimensions"].as_array().expect("Dimensions") {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30);
            for dim in set {
                let key = dim.as_str().expect("dimension names are strings");
                assert!(doc[key].is_string(), "dimension {key} is a string member: {line}");
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics");
        assert!(metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().expect("Name");
            assert!(doc[name].is_number(), "metric {name} has a numeric value: {line}");
            let unit = m["Unit"].as_str().expect("Unit");
            assert!(UNITS.contains(&unit), "unit {unit}");
            assert!(
                include_str!("../../shared/src/metrics.rs").contains(&format!("`{name}`")),
                "{name} is documented in shared/src/metrics.rs"
            );
            names.push(name.to_string());
        }
    }
    names
}

#[tokio::test]
async fn metrics_lines_are_valid_emf_with_the_documented_names() {
    let db = TestDb::new().await;
    let (h, buffer) = health_with(&db.settings(&PoolOptions::default()), 80.0, 95.0);
    call(&h, "GET", "/api/health", None).await;
    call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per request: {text}");
    let first = check_emf(lines[0]);
    assert!(first.contains(&"PoolWaitMs".to_string()) && first.contains(&"PoolTimeouts".to_string()));
    assert!(first.contains(&"StatementTimeouts".to_string()) && first.contains(&"DbErrors".to_string()));
    let second = check_emf(lines[1]);
    assert!(second.contains(&"ConnectionUsagePercent".to_string()), "{second:?}");
    let doc: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(doc["Function"], "health");
    assert_eq!(doc["PoolCheckouts"], 1.0);
}

#[tokio::test]
async fn each_scheduler_run_emits_one_valid_emf_line_with_connection_usage() {
    let db = TestDb::new().await;
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let scheduler = scheduler::Scheduler::new(
        db.pool(&PoolOptions {
            max_size: 2,
            ..PoolOptions::default()
        }),
        Arc::new(shared::model::LocalModel::default()),
        scheduler::Settings::default(),
        Metrics::new(&shared::config::Env::default(), "scheduler").with_sink(Sink::Buffer(buffer.clone())),
    );
    let mut context = lambda_runtime::Context::default();
    context.deadline = crate::helpers::deadline_in(Duration::from_secs(30));
    let event = lambda_runtime::LambdaEvent::new(serde_json::json!({}), context);
    scheduler::handle(&scheduler, event).await.unwrap();
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let names = check_emf(lines[0]);
    for expected in [
        "TasksCompleted",
        "SchedulerRunFailed",
        "ConnectionUsagePercent",
        "PoolWaitMs",
    ] {
        assert!(names.contains(&expected.to_string()), "{expected} in {names:?}");
    }
    let doc: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(doc["Function"], "scheduler", "the same dimension as every function");
}

#[tokio::test]
async fn a_pooler_at_its_client_limit_is_critical_naming_the_pooler_and_ok_once_clients_leave() {
    let db = TestDb::new().await;
    let pg_port = url::Url::parse(&db.direct_url).unwrap().port().unwrap_or(5432);
    let bouncer = PrivateBouncer::configured(pg_port, 2, 4).await;
    let settings = crate::helpers::settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "health".into(),
            ..PoolOptions::default()
        },
    );
    // High thresholds: the shared server's own usage must not decide the level here.
    let (h, _) = health_with(&settings, 99.0, 100.0);
    let (status, body, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(
        (status, body["pooler"]["probe"]["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );

    // Other clients take every client slot of the pooler.
    let mut others = Vec::new();
    for _ in 0..10 {
        match tokio_postgres::connect(&bouncer.url(&db), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.unwrap();
                others.push(client);
            }
            Err(_) => break,
        }
    }
    assert!(others.len() < 10, "the pooler's client limit was reached");
    let (status, body, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["level"], "critical", "{body}");
    assert_eq!(body["pooler"]["probe"]["status"], "refused", "{body}");
    assert!(body["reason"].as_str().unwrap_or("").contains("pooler"), "{body}");

    drop(others);
    let ok = crate::helpers::eventually(Duration::from_secs(10), || async {
        let (_, body, _) = call(&h, "GET", "/api/health/connections", Some(KEY)).await;
        body["level"] == "ok" && body["pooler"]["probe"]["status"] == "ok"
    })
    .await;
    assert!(ok, "ok again once the other clients left");
}
