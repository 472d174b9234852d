//! Live updates (issue 23): the `live` function binary behind the local WebSocket gateway (the
//! real runtime loop, the real Postgres through the real pgbouncer), and the publishers (api,
//! chat, scheduler) pushing through the gateway's Management API after commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use integration_tests::fakes;
use integration_tests::harness::{harness, json_of, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::live_gateway::{Invoker, LiveGateway};
use integration_tests::models::ChatModel;
use integration_tests::scheduling::{invoke, scheduler_on, test_config};
use lambda_http::Body;
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use shared::live::{LiveSettings, Publisher};
use shared::metrics::{Metrics, Sink};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::helpers::{eventually, pooler_clients, PoolOptions, RuntimeApi, TestDb};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any one expected thing may take.
const BOUND: Duration = Duration::from_secs(10);

/// The live function binary, the gateway in front of it, and the other functions in process
/// (their publishers pointing at the gateway).
struct Live {
    h: Harness,
    gateway: LiveGateway,
    api: api::Api,
    metrics: Arc<std::sync::Mutex<Vec<u8>>>,
    _runtime: Arc<RuntimeApi>,
    _function: tokio::process::Child,
}

/// A publisher with static credentials (the gateway checks no signature) at `endpoint`.
fn publisher(endpoint: &str, push: Duration, all: Duration, metrics: Option<Metrics>) -> Publisher {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    Publisher::from_client(
        aws_sdk_apigatewaymanagement::Client::from_conf(config),
        LiveSettings {
            endpoint: Some(endpoint.to_string()),
            push_timeout: push,
            publish_timeout: all,
            concurrency: 16,
        },
        metrics,
    )
}

fn live_process(runtime: &RuntimeApi, db: &TestDb, auth_url: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut all = vec![
        ("DATABASE_URL", db.pooled_url.as_str()),
        ("SUPABASE_URL", auth_url),
        ("SUPABASE_JWT_SECRET", SECRET),
    ];
    all.extend_from_slice(env);
    runtime.spawn_function("live", &all)
}

async fn start_with(env: &[(&str, &str)]) -> Live {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let runtime = Arc::new(RuntimeApi::start().await);
    let function = live_process(&runtime, &h.db, &h.auth.url(), env);
    let gateway = LiveGateway::start(([127, 0, 0, 1], 0).into(), Invoker::Runtime(runtime.clone()))
        .await
        .expect("the gateway listens");
    let buffer: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let metrics = Metrics::new(&shared::config::Env::default(), "api").with_sink(Sink::Buffer(buffer.clone()));
    let api = api_instance(
        &h,
        publisher(
            &gateway.endpoint(),
            Duration::from_secs(2),
            Duration::from_secs(3),
            Some(metrics.clone()),
        ),
        metrics,
    );
    Live {
        h,
        gateway,
        api,
        metrics: buffer,
        _runtime: runtime,
        _function: function,
    }
}

async fn start() -> Live {
    start_with(&[]).await
}

fn api_instance(h: &Harness, live: Publisher, metrics: Metrics) -> api::Api {
    api::Api {
        live,
        db: h.db.pool(&PoolOptions {
            app: "api".into(),
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&h.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings: api::Settings::default(),
        metrics,
    }
}

/// An HTTP API request to the api function as `user`.
async fn api_call(
    api: &api::Api,
    h: &Harness,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut event: Value = serde_json::from_str(include_str!("../../events/api-tasks-create.json")).unwrap();
    event["rawPath"] = path.into();
    event["rawQueryString"] = "".into();
    event["requestContext"]["http"]["path"] = path.into();
    event["requestContext"]["http"]["method"] = method.into();
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("idempotency-key");
    headers.insert("authorization".into(), format!("Bearer {}", h.token(user)).into());
    if let Some(object) = event.as_object_mut() {
        object.remove("queryStringParameters");
    }
    match body {
        Some(b) => {
            event["headers"]["content-type"] = "application/json".into();
            event["body"] = b.to_string().into();
        }
        None => {
            if let Some(object) = event.as_object_mut() {
                object.remove("body");
            }
        }
    }
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
    let response = api::handle(api, request).await.unwrap();
    (response.status().as_u16(), json_of(&response))
}

async fn create_task(l: &Live, user: &str, approved: bool) -> (u16, Value) {
    let body = json!({"agentId": l.h.agent, "prompt": "live", "approved": approved});
    api_call(&l.api, &l.h, user, "POST", "/api/tasks", Some(body)).await
}

/// Opens a socket as the browser does: `Sec-WebSocket-Protocol: agent-live.v1, <token>`.
async fn open(url: &str, protocols: Option<&str>) -> Result<Socket, u16> {
    let mut request = url.into_client_request().expect("a request");
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("agent-live.v1"),
                "the selected subprotocol"
            );
            Ok(socket)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("the handshake failed otherwise: {e}"),
    }
}

async fn open_as(l: &Live, user: &str) -> Socket {
    open(
        &l.gateway.ws_url(),
        Some(&format!("agent-live.v1, {}", l.h.token(user))),
    )
    .await
    .expect("the connection is accepted")
}

/// The next text frame as JSON (a close frame or the end as `None`), within [`BOUND`].
async fn next_event(socket: &mut Socket) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(BOUND, socket.next())
            .await
            .expect("a frame within the bound");
        match frame {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Everything queued for the socket before a ping, then the pong: the events it got.
async fn drain(socket: &mut Socket) -> Vec<Value> {
    socket
        .send(Message::Text(r#"{"action":"ping"}"#.into()))
        .await
        .expect("ping sent");
    let mut events = Vec::new();
    loop {
        match next_event(socket).await {
            Some(v) if v["type"] == "pong" => return events,
            Some(v) => events.push(v),
            None => panic!("closed while waiting for the pong; got {events:?}"),
        }
    }
}

async fn rows(db: &TestDb, user: &str) -> i64 {
    let user = Uuid::parse_str(user).unwrap();
    db.direct()
        .await
        .query_one("SELECT count(*) FROM live_connections WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_token_or_with_it_in_the_query_string_is_refused() {
    let l = start().await;
    let url = l.gateway.ws_url();
    let now = chrono::Utc::now().timestamp();
    let mut expired = fakes::claims(&l.h.issuer, USER);
    expired["exp"] = (now - 3600).into();
    let expired = fakes::hs256(SECRET, &expired);
    let forged = fakes::hs256(
        "another-secret-of-at-least-32-characters!!",
        &fakes::claims(&l.h.issuer, USER),
    );
    let good = l.h.token(USER);

    assert_eq!(open(&url, None).await.err(), Some(400), "no subprotocol, no token");
    assert_eq!(open(&url, Some("agent-live.v1")).await.err(), Some(401), "no token");
    assert_eq!(
        open(&url, Some(&format!("agent-live.v1, {expired}"))).await.err(),
        Some(401),
        "an expired token"
    );
    assert_eq!(
        open(&url, Some(&format!("agent-live.v1, {forged}"))).await.err(),
        Some(401),
        "a forged token"
    );
    assert_eq!(
        open(&format!("{url}/?access_token={good}"), Some("agent-live.v1"))
            .await
            .err(),
        Some(400),
        "the token in the query string"
    );
    assert_eq!(
        open(&format!("{url}/?token={good}"), Some(&format!("agent-live.v1, {good}")))
            .await
            .err(),
        Some(400),
        "the token in the query string, even with a good one in the header"
    );
    assert_eq!(rows(&l.h.db, USER).await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_connection_of_one_user_is_refused_and_a_disconnect_deletes_the_row() {
    let l = start().await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(open_as(&l, USER).await);
    }
    assert_eq!(rows(&l.h.db, USER).await, 10);
    let eleventh = open(
        &l.gateway.ws_url(),
        Some(&format!("agent-live.v1, {}", l.h.token(USER))),
    )
    .await;
    assert_eq!(eleventh.err(), Some(429), "past LIVE_MAX_CONNECTIONS_PER_USER");
    // Another user is not limited by this one.
    let _other = open_as(&l, OTHER_USER).await;

    let mut first = sockets.remove(0);
    first.close(None).await.expect("closed");
    let deleted = eventually(BOUND, || async { rows(&l.h.db, USER).await == 9 }).await;
    assert!(deleted, "the $disconnect deleted the row");
    let again = open_as(&l, USER).await;
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_task_and_message_events_reach_their_connections_and_never_another_users() {
    let l = start().await;
    let mut a = open_as(&l, USER).await;
    let mut a2 = open_as(&l, USER).await;
    let mut b = open_as(&l, OTHER_USER).await;

    // Tasks: created, approved, rejected, cancelled.
    let (status, task) = create_task(&l, USER, false).await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let (status, _) = api_call(&l.api, &l.h, USER, "POST", &format!("/api/tasks/{id}/approve"), None).await;
    assert_eq!(status, 200);
    let (status, second) = create_task(&l, USER, false).await;
    assert_eq!(status, 201);
    let second = second["id"].as_str().unwrap().to_string();
    let (status, _) = api_call(&l.api, &l.h, USER, "POST", &format!("/api/tasks/{second}/reject"), None).await;
    assert_eq!(status, 200);
    let (status, _) = api_call(&l.api, &l.h, USER, "POST", &format!("/api/tasks/{id}/cancel"), None).await;
    assert_eq!(status, 200);

    // A message and its reply through chat.
    let chat = chat::Chat {
        live: publisher(
            &l.gateway.endpoint(),
            Duration::from_secs(2),
            Duration::from_secs(3),
            None,
        ),
        db: l.h.db.pool(&PoolOptions {
            app: "chat".into(),
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&l.h.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        model: ChatModel::new(Duration::ZERO),
        settings: chat::Settings::default(),
        metrics: quiet_metrics("chat"),
    };
    let mut event: Value = serde_json::from_str(include_str!("../../events/chat.json")).unwrap();
    event["headers"]["authorization"] = format!("Bearer {}", l.h.token(USER)).into();
    event["headers"].as_object_mut().unwrap().remove("idempotency-key");
    event["body"] = l.h.body("hello live", None).into();
    let response = chat::handle(&chat, lambda_http::request::from_str(&event.to_string()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        _ => Value::Null,
    };

    for socket in [&mut a, &mut a2] {
        let events = drain(socket).await;
        let tasks: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["type"] == "task.updated")
            .map(|e| {
                (
                    e["taskId"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            tasks,
            vec![
                (id.clone(), "pending".to_string()),
                (id.clone(), "pending".to_string()),
                (second.clone(), "pending".to_string()),
                (second.clone(), "pending".to_string()),
                (id.clone(), "cancelled".to_string()),
            ],
            "{events:?}"
        );
        // The user's message and the reply are pushed concurrently (one change, two events):
        // their order on a connection is not part of the contract.
        let mut messages: Vec<&Value> = events.iter().filter(|e| e["type"] == "message.created").collect();
        messages.sort_by_key(|e| e["role"] != "user");
        assert_eq!(messages.len(), 2, "{events:?}");
        assert_eq!(messages[0]["role"], "user", "{events:?}");
        assert_eq!(messages[0]["conversationId"], reply["conversationId"]);
        assert_eq!(messages[1]["role"], "assistant", "{events:?}");
        assert_eq!(messages[1]["messageId"], reply["message"]["id"]);
        assert_eq!(messages[1]["conversationId"], reply["conversationId"]);
        for e in &events {
            assert!(
                e.get("content").is_none() && e.get("prompt").is_none(),
                "ids and status only: {e}"
            );
        }
    }
    assert_eq!(
        drain(&mut b).await,
        Vec::<Value>::new(),
        "user B heard nothing of user A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_pushes_each_finished_task_to_its_owner_only() {
    let l = start().await;
    let mut a = open_as(&l, USER).await;
    let mut b = open_as(&l, OTHER_USER).await;
    let (status, task) = create_task(&l, USER, true).await;
    assert_eq!(status, 201);
    let id = task["id"].as_str().unwrap().to_string();
    let scheduler = scheduler_on(&l.h.db, ChatModel::new(Duration::ZERO), test_config()).with_live(publisher(
        &l.gateway.endpoint(),
        Duration::from_secs(2),
        Duration::from_secs(3),
        None,
    ));
    let summary = invoke(&scheduler, json!({}), Duration::from_secs(20))
        .await
        .expect("the run");
    assert_eq!(summary.completed, 1);
    let events = drain(&mut a).await;
    let event = events
        .iter()
        .find(|e| e["type"] == "task.updated" && e["taskId"] == id.as_str() && e["status"] == "completed")
        .unwrap_or_else(|| panic!("{events:?}"));
    // `at` is when the run was recorded: the task's updated_at, from the same statement.
    let updated_at: chrono::DateTime<chrono::Utc> =
        l.h.db
            .direct()
            .await
            .query_one(
                "SELECT updated_at FROM agent_tasks WHERE id = $1",
                &[&Uuid::parse_str(&id).unwrap()],
            )
            .await
            .unwrap()
            .get(0);
    let at: chrono::DateTime<chrono::Utc> = event["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, updated_at, "{event}");
    assert_eq!(drain(&mut b).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_410_deletes_the_connection_and_the_request_still_succeeds() {
    let l = start().await;
    let user = Uuid::parse_str(USER).unwrap();
    l.h.db
        .direct()
        .await
        .execute(
            "INSERT INTO live_connections (connection_id, user_id, expires_at) VALUES ('gone=', $1, now() + interval '1 hour')",
            &[&user],
        )
        .await
        .unwrap();
    let (status, task) = create_task(&l, USER, false).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(rows(&l.h.db, USER).await, 0, "the 410 deleted the row");
    assert!(l.gateway.stats().gone.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let metrics = String::from_utf8_lossy(&l.metrics.lock().unwrap()).into_owned();
    assert!(!metrics.contains("LivePushFailed"), "a 410 is not a failure: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gateway_down_a_request_succeeds_within_the_stated_bound() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    // A gateway that accepts connections and never answers (the worst case: a refused port
    // fails at once).
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    let buffer: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let metrics = Metrics::new(&shared::config::Env::default(), "api").with_sink(Sink::Buffer(buffer.clone()));
    // Each push may wait an hour: only the overall bound (LIVE_PUBLISH_TIMEOUT_MS) can end
    // them, so the request coming back at all shows that bound is what ends it (no wall-clock
    // upper limit asserted: the test machine's load does not decide the outcome).
    let bound = Duration::from_millis(500);
    let api = api_instance(
        &h,
        publisher(&endpoint, Duration::from_secs(3600), bound, Some(metrics.clone())),
        metrics,
    );
    let user = Uuid::parse_str(USER).unwrap();
    h.db.direct()
        .await
        .execute(
            "INSERT INTO live_connections (connection_id, user_id, expires_at)
             SELECT 'c' || i || '=', $1, now() + interval '1 hour' FROM generate_series(1, 5) i",
            &[&user],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let body = json!({"agentId": h.agent, "prompt": "gateway down"});
    let (status, task) = tokio::time::timeout(
        Duration::from_secs(120),
        api_call(&api, &h, USER, "POST", "/api/tasks", Some(body)),
    )
    .await
    .expect("the request came back although no push ever answers: the overall bound ended them");
    assert_eq!(status, 201, "{task}");
    assert!(started.elapsed() >= bound, "the pushes were tried until the bound");
    let metrics = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    assert!(metrics.contains("\"LivePushFailed\":5"), "{metrics}");
    assert_eq!(rows(&h.db, USER).await, 5, "a failed push deletes nothing");
    drop(blackhole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_token_expired_receives_nothing_and_is_closed() {
    let l = start().await;
    let mut expiring = open_as(&l, USER).await;
    let mut fresh = open_as(&l, USER).await;
    // The first connection's token expires (its row says when).
    let rows_changed =
        l.h.db
            .direct()
            .await
            .execute(
                "UPDATE live_connections SET expires_at = now() - interval '1 second'
              WHERE connection_id = (SELECT connection_id FROM live_connections ORDER BY connected_at LIMIT 1)",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(rows_changed, 1);
    let (status, _) = create_task(&l, USER, false).await;
    assert_eq!(status, 201);
    assert_eq!(next_event(&mut expiring).await, None, "no event: closed");
    let events = drain(&mut fresh).await;
    assert_eq!(events.len(), 1, "the other connection got the event: {events:?}");
    let gone = eventually(BOUND, || async { rows(&l.h.db, USER).await == 1 }).await;
    assert!(gone, "the closed connection's row is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_connections_hold_no_pooler_client() {
    let l = start_with(&[("LIVE_MAX_CONNECTIONS_PER_USER", "1000")]).await;
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(open_as(&l, USER).await);
    }
    assert_eq!(rows(&l.h.db, USER).await, 200);
    let clients = pooler_clients(&l.h.db, "live").await;
    assert_eq!(
        clients, 0,
        "the live function gave its pooler client back after each event"
    );
    assert_eq!(l.gateway.open_connections(), 200);
    // Still alive: a ping is answered.
    assert_eq!(drain(&mut sockets[199]).await, Vec::<Value>::new());
}
