//! The function binaries under the real local emulator: `cargo lambda watch` serving them and
//! `cargo lambda invoke --data-file events/…` invoking them.

use std::time::Duration;

use integration_tests::cargo_lambda::Watch;
use serde_json::Value;

use crate::helpers::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_binary_runs_under_cargo_lambda_watch_and_invoke() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    client
        .batch_execute(
            "INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'public');
             INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             SELECT '00000000-0000-4000-8000-000000000001', 'job ' || i, 'approved', now()
               FROM generate_series(1, 5) i;",
        )
        .await
        .unwrap();
    let watch = Watch::start(&db, &[]).await;

    // The first invoke also waits for cargo to start the function.
    let (ok, stdout, stderr) = watch
        .invoke("scheduler", &["--data-file", "events/schedule.json"])
        .await;
    assert!(ok, "invoke failed: {stdout} {stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("the summary is JSON");
    assert_eq!(summary["claimed"], 5, "{summary}");
    assert_eq!(summary["completed"], 5, "{summary}");
    assert_eq!(summary["remainingDue"], 0, "{summary}");
    for field in ["failed", "retried", "rescued", "durationMs"] {
        assert!(summary[field].is_u64(), "{field} in {summary}");
    }

    let (ok, stdout, stderr) = watch
        .invoke("scheduler", &["--data-ascii", r#"{"maxTasks": "ten"}"#])
        .await;
    assert!(!ok, "a malformed payload is an error");
    let shown = format!("{stdout}{stderr}");
    assert!(
        shown.contains("BadPayload") || shown.contains("invalid scheduler payload"),
        "{shown}"
    );

    let completed: i64 = client
        .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(completed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_binary_serves_both_routes_under_cargo_lambda_watch() {
    let db = TestDb::new().await;
    // events/health-connections.json carries `x-api-key: local-admin-key`.
    let watch = Watch::start(&db, &[("HEALTH_API_KEY", "local-admin-key")]).await;

    let (ok, stdout, stderr) = watch.invoke("health", &["--data-file", "events/health.json"]).await;
    assert!(ok, "invoke failed: {stdout} {stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).expect("an API Gateway response");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "ok");

    let (ok, stdout, stderr) = watch
        .invoke("health", &["--data-file", "events/health-connections.json"])
        .await;
    assert!(ok, "invoke failed: {stdout} {stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert!(body["active"].as_i64().unwrap() >= 1, "{body}");
    assert!(["ok", "warning", "critical"].contains(&body["level"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_binary_serves_the_contract_on_its_function_url_with_a_signed_token() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    client
        .batch_execute("INSERT INTO agents (id, name, instructions, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'demo', 'Be brief.', 'public')")
        .await
        .unwrap();
    let secret = "watch-test-jwt-secret-with-at-least-32-chars";
    let supabase = "https://project-ref.supabase.co";
    let watch = Watch::start(
        &db,
        &[
            ("SUPABASE_URL", supabase),
            ("SUPABASE_JWT_SECRET", secret),
            ("AUTH_TRUST_API_GATEWAY", "true"),
        ],
    )
    .await;
    let token = integration_tests::fakes::hs256(
        secret,
        &integration_tests::fakes::claims(&format!("{supabase}/auth/v1"), "5b1c7a2e-8f6d-4c3b-9a1e-2d4f6b8c0e13"),
    );
    let url = format!("http://127.0.0.1:{}/lambda-url/chat/api/agents/chat", watch.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let body = serde_json::json!({"agentId": "00000000-0000-4000-8000-000000000001", "message": "hello over the function URL"});

    let response = http
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("the function URL answers");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let reply: Value = response.json().await.unwrap();
    let conversation = reply["conversationId"].as_str().expect("a conversationId").to_string();
    assert_eq!(reply["message"]["role"], "assistant");

    let mut follow_up = body.clone();
    follow_up["conversationId"] = conversation.clone().into();
    let reply: Value = http
        .post(&url)
        .bearer_auth(&token)
        .json(&follow_up)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["conversationId"], conversation.as_str());

    let unauthorized = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let unknown_field = http
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"agentId": "00000000-0000-4000-8000-000000000001", "message": "x", "context": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_field.status().as_u16(), 422);
    let refusal: Value = unknown_field.json().await.unwrap();
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `context`")),
        "the 422 names the field: {refusal}"
    );

    // The sample events through `cargo lambda invoke`: the JWT-authorizer one as it is, the
    // bearer-token one with a real token in place of its placeholder.
    let (ok, stdout, stderr) = watch
        .invoke("chat", &["--data-file", "events/chat-jwt-authorizer.json"])
        .await;
    assert!(ok, "{stdout} {stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");

    let event = integration_tests::fakes::chat_event(&token);
    let file = std::env::temp_dir().join(format!("chat-event-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, event.to_string()).unwrap();
    let (ok, stdout, stderr) = watch.invoke("chat", &["--data-file", file.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{stdout} {stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"]["role"], "assistant");

    // Unchanged, its placeholder token is refused.
    let (ok, stdout, _) = watch.invoke("chat", &["--data-file", "events/chat.json"]).await;
    assert!(ok);
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(response["statusCode"], 401, "{response}");
}
