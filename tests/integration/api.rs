//! The frontend's routes besides chat (`api` function): agents, conversation history, tasks
//! with the approval step, token usage. Requests are built from the sample events in `events/`.

use std::time::Duration;

use api::{Api, Settings as ApiSettings};
use integration_tests::harness::{harness, json_of, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::ChatModel;
use integration_tests::scheduling::{invoke, local_scheduler, schedule_event};
use lambda_http::Body;
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use uuid::Uuid;

use crate::helpers::PoolOptions;

struct ApiHarness {
    chat: Harness,
    api: Api,
}

/// A chat harness (database, public agent, Supabase Auth stand-in) and the API function on the
/// same database.
async fn api_harness() -> ApiHarness {
    let chat = harness(ChatModel::new(Duration::ZERO)).await;
    let api = Api {
        live: shared::live::Publisher::off(),
        db: chat.db.pool(&PoolOptions {
            app: "api".into(),
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&chat.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings: ApiSettings::default(),
        metrics: quiet_metrics("api"),
    };
    ApiHarness { chat, api }
}

/// A request from `events/<event>`: `method path?query`, an optional body and headers.
struct Call<'a> {
    event: &'a str,
    method: &'a str,
    path: String,
    query: Vec<(&'a str, String)>,
    body: Option<String>,
    headers: Vec<(&'a str, &'a str)>,
    user: Option<&'a str>,
}

fn event_file(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn call<'a>(event: &'a str, method: &'a str, path: impl Into<String>) -> Call<'a> {
    Call {
        event,
        method,
        path: path.into(),
        query: Vec::new(),
        body: None,
        headers: Vec::new(),
        user: Some(USER),
    }
}

impl<'a> Call<'a> {
    fn query(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
    fn body(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string());
        self
    }
    fn raw_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn user(mut self, user: Option<&'a str>) -> Self {
        self.user = user;
        self
    }
}

impl ApiHarness {
    async fn send(&self, c: Call<'_>) -> (u16, Value, lambda_http::Response<Body>) {
        let mut event = event_file(c.event);
        event["rawPath"] = c.path.clone().into();
        event["requestContext"]["http"]["path"] = c.path.clone().into();
        event["requestContext"]["http"]["method"] = c.method.into();
        let headers = event["headers"].as_object_mut().unwrap();
        headers.remove("authorization");
        headers.remove("idempotency-key");
        if let Some(user) = c.user {
            headers.insert(
                "authorization".into(),
                format!("Bearer {}", self.chat.token(user)).into(),
            );
        }
        if let Some(body) = c.body {
            headers.insert("content-type".into(), "application/json".into());
            event["body"] = body.into();
        }
        for (k, v) in c.headers {
            event["headers"][k] = v.into();
        }
        if c.query.is_empty() {
            event.as_object_mut().unwrap().remove("queryStringParameters");
            event["rawQueryString"] = "".into();
        } else {
            event["rawQueryString"] = c
                .query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
                .into();
            event["queryStringParameters"] = c.query.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        }
        let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
        let response = api::handle(&self.api, request).await.unwrap();
        (response.status().as_u16(), json_of(&response), response)
    }

    async fn get(&self, event: &str, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send(call(event, "GET", path)).await;
        (s, v)
    }

    /// `POST /api/tasks/{id}/{action}` as the caller, from `events/api-task-{action}.json`.
    async fn decide(&self, id: &str, action: &str) -> (u16, Value) {
        let event = format!("api-task-{action}.json");
        self.send(call(&event, "POST", format!("/api/tasks/{id}/{action}")))
            .await
            .into_pair()
    }

    async fn create_task(&self, body: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .send(call("api-tasks-create.json", "POST", "/api/tasks").body(body))
            .await;
        (s, v)
    }

    fn agent(&self) -> String {
        self.chat.agent.to_string()
    }

    async fn sql(&self) -> tokio_postgres::Client {
        self.chat.db.direct().await
    }

    /// The number a `SELECT count(*) …` gives.
    async fn count(&self, sql: &str) -> i64 {
        self.sql().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

#[tokio::test]
async fn agents_lists_the_public_and_own_agents_never_instructions_nor_another_owners_private_ones() {
    let h = api_harness().await;
    let sql = h.sql().await;
    sql.batch_execute(&format!(
        "INSERT INTO agents (name, instructions, visibility, owner_id, description) VALUES
           ('mine', 'my secret prompt', 'private', '{USER}', 'my own'),
           ('theirs', 'their secret prompt', 'private', '{OTHER_USER}', 'not yours')"
    ))
    .await
    .unwrap();
    let (status, body) = h.get("api-agents.json", "/api/agents").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper", "mine"]);
    let text = body.to_string();
    assert!(
        !text.contains("secret prompt") && !text.contains("instructions"),
        "{text}"
    );
    assert_eq!(body["agents"][1]["owned"], true);
    assert_eq!(body["agents"][0]["visibility"], "public");
}

#[tokio::test]
async fn conversations_come_newest_activity_first_by_agent_in_pages_and_messages_oldest_to_newest() {
    let h = api_harness().await;
    let (_, first) = h.chat.send("first conversation", None).await;
    let first_id = first["conversationId"].as_str().unwrap().to_string();
    let (_, second) = h.chat.send("second conversation", None).await;
    let second_id = second["conversationId"].as_str().unwrap().to_string();
    // New activity in the first one puts it back on top.
    for i in 0..3 {
        let (s, _) = h.chat.send(&format!("more {i}"), Some(&first_id)).await;
        assert_eq!(s, 200);
    }
    let (status, page) = h
        .send(call("api-conversations.json", "GET", "/api/conversations").query("limit", "1"))
        .await
        .into_pair();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["conversations"][0]["id"], first_id.as_str());
    assert_eq!(page["conversations"][0]["agentName"], "helper");
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let (_, rest) = h
        .send(
            call("api-conversations.json", "GET", "/api/conversations")
                .query("limit", "1")
                .query("before", next),
        )
        .await
        .into_pair();
    assert_eq!(rest["conversations"][0]["id"], second_id.as_str());
    assert_eq!(rest["next"], Value::Null);
    let (_, by_agent) = h
        .send(call("api-conversations.json", "GET", "/api/conversations").query("agentId", h.agent()))
        .await
        .into_pair();
    assert_eq!(by_agent["conversations"].as_array().unwrap().len(), 2);
    let (_, none) = h
        .send(call("api-conversations.json", "GET", "/api/conversations").query("agentId", Uuid::new_v4().to_string()))
        .await
        .into_pair();
    assert_eq!(none["conversations"], json!([]));

    // 8 messages in the first conversation: pages of 3, oldest to newest inside a page, `next`
    // going back in time, every message exactly once.
    let path = format!("/api/conversations/{first_id}/messages");
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let mut c = call("api-messages.json", "GET", path.clone()).query("limit", "3");
        if let Some(b) = &before {
            c = c.query("before", b.clone());
        }
        let (status, window) = h.send(c).await.into_pair();
        assert_eq!(status, 200, "{window}");
        let contents: Vec<String> = window["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect();
        seen.splice(0..0, contents);
        match window["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "first conversation",
            "reply to: first conversation",
            "more 0",
            "reply to: more 0",
            "more 1",
            "reply to: more 1",
            "more 2",
            "reply to: more 2"
        ]
    );
}

#[tokio::test]
async fn a_conversations_messages_carry_the_agents_tool_calls_and_their_results() {
    let h = api_harness().await;
    let (_, chat) = h.chat.send("refund order A-1", None).await;
    let conversation = chat["conversationId"].as_str().unwrap().to_string();
    // A tool-calling step and its result, as the agent loop stores them, after the turn.
    h.sql()
        .await
        .execute(
            &format!(
                "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, tool_call_id, created_at)
                 VALUES ($1::text::uuid, '{USER}', 'assistant', '',
                         '[{{\"id\": \"call_1\", \"name\": \"refund\", \"arguments\": {{\"order\": \"A-1\"}}}}]',
                         NULL, now() + interval '1 second'),
                        ($1::text::uuid, '{USER}', 'tool', '{{\"refunded\": true}}', NULL, 'call_1',
                         now() + interval '2 seconds')"
            ),
            &[&conversation],
        )
        .await
        .unwrap();
    let (status, window) = h
        .get(
            "api-messages.json",
            &format!("/api/conversations/{conversation}/messages"),
        )
        .await;
    assert_eq!(status, 200, "{window}");
    let messages = window["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "assistant", "tool"], "{window}");
    // Plain messages carry neither field; the step its calls; the result its call's id.
    for plain in &messages[..2] {
        assert!(
            plain.get("toolCalls").is_none() && plain.get("toolCallId").is_none(),
            "{plain}"
        );
    }
    assert_eq!(
        messages[2]["toolCalls"],
        json!([{"id": "call_1", "name": "refund", "arguments": {"order": "A-1"}}])
    );
    assert!(messages[2].get("toolCallId").is_none(), "{}", messages[2]);
    assert_eq!(messages[3]["toolCallId"], "call_1");
    assert_eq!(messages[3]["content"], "{\"refunded\": true}");
    assert!(messages[3].get("toolCalls").is_none(), "{}", messages[3]);
}

/// `(status, body)` of a sent call.
trait IntoPair {
    fn into_pair(self) -> (u16, Value);
}

impl IntoPair for (u16, Value, lambda_http::Response<Body>) {
    fn into_pair(self) -> (u16, Value) {
        (self.0, self.1)
    }
}

#[tokio::test]
async fn another_users_conversation_or_task_is_a_404_like_a_missing_one() {
    let h = api_harness().await;
    let (_, chat) = h.chat.send("mine only", None).await;
    let conversation = chat["conversationId"].as_str().unwrap().to_string();
    let (_, task) = h.create_task(&json!({"agentId": h.agent(), "prompt": "mine"})).await;
    let task = task["id"].as_str().unwrap().to_string();
    let routes = [
        (
            "api-messages.json",
            "GET",
            format!("/api/conversations/{conversation}/messages"),
        ),
        ("api-task.json", "GET", format!("/api/tasks/{task}")),
        ("api-task-approve.json", "POST", format!("/api/tasks/{task}/approve")),
        ("api-task-reject.json", "POST", format!("/api/tasks/{task}/reject")),
        ("api-task-cancel.json", "POST", format!("/api/tasks/{task}/cancel")),
    ];
    for (event, method, path) in &routes {
        let (status, body) = h
            .send(call(event, method, path.clone()).user(Some(OTHER_USER)))
            .await
            .into_pair();
        assert_eq!(status, 404, "{method} {path}: {body}");
        let missing = path
            .replace(&conversation, &Uuid::new_v4().to_string())
            .replace(&task, &Uuid::new_v4().to_string());
        let (missing_status, missing_body) = h.send(call(event, method, missing)).await.into_pair();
        assert_eq!(
            (missing_status, &missing_body["error"]["message"]),
            (404, &body["error"]["message"])
        );
    }
    let (_, theirs) = h
        .send(call("api-tasks-list.json", "GET", "/api/tasks").user(Some(OTHER_USER)))
        .await
        .into_pair();
    assert_eq!(theirs["tasks"], json!([]));
    let sql = h.sql().await;
    let untouched: String = sql
        .query_one("SELECT approval_status FROM agent_tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, "pending");
}

#[tokio::test]
async fn a_task_is_created_awaiting_approval_approved_run_by_the_scheduler_and_its_result_shown() {
    let h = api_harness().await;
    let (status, created) = h
        .create_task(&json!({"agentId": h.agent(), "prompt": "  count the tickets  ", "maxAttempts": 2}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["approvalStatus"], "pending");
    assert_eq!(created["prompt"], "count the tickets");
    assert_eq!(created["maxAttempts"], 2);
    let id = created["id"].as_str().unwrap().to_string();

    // Not approved: the scheduler leaves it alone.
    let scheduler = local_scheduler(&h.chat.db);
    let summary = invoke(&scheduler, schedule_event(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(summary.claimed, 0);

    let (status, approved) = h.decide(&id, "approve").await;
    assert_eq!(
        (status, approved["approvalStatus"].as_str()),
        (200, Some("approved")),
        "{approved}"
    );
    let (status, again) = h.decide(&id, "approve").await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]["message"].as_str().unwrap().contains("already approved"),
        "{again}"
    );

    let summary = invoke(&scheduler, schedule_event(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(summary.completed, 1);
    let (status, done) = h.get("api-task.json", &format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["attempts"], 1);
    assert!(done["result"].as_str().unwrap().contains("count the tickets"), "{done}");
    let (_, list) = h
        .send(call("api-tasks-list.json", "GET", "/api/tasks").query("status", "completed"))
        .await
        .into_pair();
    assert_eq!(list["tasks"][0]["id"], id.as_str());
}

#[tokio::test]
async fn task_bodies_are_validated_with_statuses_and_messages_that_name_the_field() {
    let h = api_harness().await;
    let agent = h.agent();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"prompt": "x"}), 422, "agentId is required"),
        (
            json!({"agentId": "not-a-uuid", "prompt": "x"}),
            422,
            "agentId must be a UUID",
        ),
        (json!({"agentId": agent}), 422, "prompt is required"),
        (
            json!({"agentId": agent, "prompt": "   "}),
            422,
            "prompt must not be empty",
        ),
        (json!({"agentId": agent, "prompt": 42}), 422, "prompt must be a string"),
        (
            json!({"agentId": agent, "prompt": "x".repeat(8001)}),
            413,
            "prompt is 8001 characters",
        ),
        (json!({"agentId": agent, "prompt": "a\u{0}b"}), 422, "NUL"),
        (
            json!({"agentId": agent, "prompt": "x", "priority": 1}),
            422,
            "unknown field `priority`",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "cron": "every day"}),
            422,
            "cron is not a valid cron expression",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "cron": "0 9 * * *", "timeZone": "Mars/Olympus"}),
            422,
            "timeZone is not a known IANA time zone",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "timeZone": "Europe/Paris"}),
            422,
            "timeZone applies to a cron schedule",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "scheduledFor": "tomorrow"}),
            422,
            "scheduledFor must be an RFC 3339 time",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "scheduledFor": "2999-01-01T00:00:00Z"}),
            422,
            "scheduledFor must be within 366 days",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "scheduledFor": "2001-01-01T00:00:00Z"}),
            422,
            "more than a day in the past",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "maxAttempts": 0}),
            422,
            "maxAttempts must be a whole number from 1 to 10",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "maxAttempts": 11}),
            422,
            "maxAttempts must be a whole number",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "maxAttempts": "3"}),
            422,
            "maxAttempts must be a number",
        ),
        (
            json!({"agentId": agent, "prompt": "x", "approved": "yes"}),
            422,
            "approved must be true or false",
        ),
        (json!(["agentId"]), 422, "the body must be a JSON object"),
        (
            json!({"agentId": Uuid::new_v4().to_string(), "prompt": "x"}),
            404,
            "agent not found",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = h.create_task(&body).await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let raw = [
        ("{\"agentId\": ", "application/json", 400),
        ("agentId=1", "application/x-www-form-urlencoded", 415),
    ];
    for (body, content_type, status) in raw {
        let (got, answer) = h
            .send(
                call("api-tasks-create.json", "POST", "/api/tasks")
                    .raw_body(body)
                    .header("content-type", content_type),
            )
            .await
            .into_pair();
        assert_eq!(got, status, "{body}: {answer}");
    }
    let huge = format!("{{\"agentId\": \"{agent}\", \"prompt\": \"{}\"}}", "x".repeat(70_000));
    let (got, _) = h
        .send(call("api-tasks-create.json", "POST", "/api/tasks").raw_body(huge))
        .await
        .into_pair();
    assert_eq!(got, 413);
    let (got, _) = h
        .send(
            call("api-tasks-create.json", "POST", "/api/tasks")
                .body(&json!({"agentId": agent, "prompt": "x"}))
                .user(None),
        )
        .await
        .into_pair();
    assert_eq!(got, 401);
    let count: i64 = h.count("SELECT count(*) FROM agent_tasks").await;
    assert_eq!(count, 0, "nothing was written by a refused request");
}

#[tokio::test]
async fn a_recurring_task_is_due_at_its_next_slot_and_says_when_the_one_after_is() {
    let h = api_harness().await;
    let (status, task) = h
        .create_task(&json!({"agentId": h.agent(), "prompt": "weekday report", "cron": "0 9 * * 1-5", "timeZone": "Europe/Paris", "approved": true}))
        .await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["approvalStatus"], "approved");
    let due = chrono::DateTime::parse_from_rfc3339(task["scheduledFor"].as_str().unwrap()).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(task["nextOccurrenceAt"].as_str().unwrap()).unwrap();
    assert!(due > chrono::Utc::now() && next > due, "{task}");
    assert_eq!(task["seriesId"], task["id"]);
    let (_, at) = h
        .create_task(&json!({"agentId": h.agent(), "prompt": "once", "scheduledFor": "2026-12-24T18:00:00+01:00"}))
        .await;
    assert_eq!(at["scheduledFor"], "2026-12-24T17:00:00.000Z");
    assert_eq!(at["nextOccurrenceAt"], Value::Null);
}

#[tokio::test]
async fn an_idempotency_key_creates_one_task_and_another_request_with_it_is_a_422() {
    let h = api_harness().await;
    let body = json!({"agentId": h.agent(), "prompt": "only once"});
    let send = |body: Value| {
        let h = &h;
        async move {
            h.send(
                call("api-tasks-create.json", "POST", "/api/tasks")
                    .body(&body)
                    .header("idempotency-key", "key-1"),
            )
            .await
        }
    };
    let (first, a, _) = send(body.clone()).await;
    let (second, b, replay) = send(body.clone()).await;
    assert_eq!((first, second), (201, 201));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(
        replay.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let (other, answer, _) = send(json!({"agentId": h.agent(), "prompt": "something else"})).await;
    assert_eq!(other, 422, "{answer}");
    // Requests racing with one new key make one task.
    let racing = futures_util::future::join_all((0..6).map(|_| async {
        h.send(
            call("api-tasks-create.json", "POST", "/api/tasks")
                .body(&json!({"agentId": h.agent(), "prompt": "raced"}))
                .header("idempotency-key", "key-2"),
        )
        .await
        .0
    }))
    .await;
    assert!(racing.iter().all(|s| *s == 201), "{racing:?}");
    let count: i64 = h.count("SELECT count(*) FROM agent_tasks").await;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn the_task_list_filters_by_status_and_approval_and_pages_with_a_cursor() {
    let h = api_harness().await;
    for i in 0..5 {
        let (s, _) = h
            .create_task(&json!({"agentId": h.agent(), "prompt": format!("task {i}"), "approved": i % 2 == 0}))
            .await;
        assert_eq!(s, 201);
    }
    let list = |query: Vec<(&'static str, String)>| {
        let h = &h;
        async move {
            let mut c = call("api-tasks-list.json", "GET", "/api/tasks");
            for (k, v) in query {
                c = c.query(k, v);
            }
            h.send(c).await.into_pair()
        }
    };
    let (_, approved) = list(vec![("approval", "approved".into())]).await;
    let prompts: Vec<&str> = approved["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["task 4", "task 2", "task 0"]);
    let (_, pending) = list(vec![("approval", "pending".into()), ("status", "pending".into())]).await;
    assert_eq!(pending["tasks"].as_array().unwrap().len(), 2);
    let (_, first) = list(vec![("limit", "2".into())]).await;
    let (_, second) = list(vec![
        ("limit", "2".into()),
        ("before", first["next"].as_str().unwrap().into()),
    ])
    .await;
    let (_, third) = list(vec![
        ("limit", "2".into()),
        ("before", second["next"].as_str().unwrap().into()),
    ])
    .await;
    let all: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|p| {
            p["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["prompt"].as_str().unwrap())
        })
        .collect();
    assert_eq!(all, ["task 4", "task 3", "task 2", "task 1", "task 0"]);
    assert_eq!(third["next"], Value::Null);
    for (query, says) in [
        (vec![("status", "done".to_string())], "status must be one of"),
        (vec![("approval", "maybe".to_string())], "approval must be one of"),
        (
            vec![("limit", "0".to_string())],
            "limit must be a whole number from 1 to 100",
        ),
        (vec![("limit", "101".to_string())], "limit must be"),
        (vec![("limit", "ten".to_string())], "limit must be"),
        (
            vec![("before", "garbage".to_string())],
            "before must be the `next` cursor",
        ),
        (vec![("sort", "asc".to_string())], "unknown query parameter `sort`"),
    ] {
        let (status, body) = list(query).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
    }
}

#[tokio::test]
async fn each_read_route_is_one_statement() {
    let h = api_harness().await;
    let (_, chat) = h.chat.send("hello", None).await;
    let conversation = chat["conversationId"].as_str().unwrap().to_string();
    let (_, task) = h.create_task(&json!({"agentId": h.agent(), "prompt": "x"})).await;
    let task = task["id"].as_str().unwrap().to_string();
    for (event, path) in [
        ("api-agents.json", "/api/agents".to_string()),
        ("api-conversations.json", "/api/conversations".to_string()),
        (
            "api-messages.json",
            format!("/api/conversations/{conversation}/messages"),
        ),
        ("api-tasks-list.json", "/api/tasks".to_string()),
        ("api-task.json", format!("/api/tasks/{task}")),
        ("api-usage.json", "/api/usage".to_string()),
    ] {
        let before = h.api.db.statements_sent();
        let (status, body) = h.get(event, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(h.api.db.statements_sent() - before, 1, "{path}");
    }
}

#[tokio::test]
async fn approve_and_cancel_against_a_running_claim_are_409_naming_the_state_and_change_nothing() {
    let h = api_harness().await;
    let (_, task) = h
        .create_task(&json!({"agentId": h.agent(), "prompt": "long job", "approved": true}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    // The scheduler claims it (a lease, status running), as a run in progress would.
    let sql = h.sql().await;
    sql.execute(
        "UPDATE agent_tasks SET status = 'running', lease_owner = 'run-1', lease_expires_at = now() + interval '5 minutes',
                attempts = attempts + 1",
        &[],
    )
    .await
    .unwrap();
    for action in ["cancel", "reject", "approve"] {
        let (status, body) = h.decide(&id, action).await;
        assert_eq!(status, 409, "{action}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("it is running"), "{action}: {message}");
    }
    let row = sql
        .query_one("SELECT status, approval_status, lease_owner FROM agent_tasks", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2)
        ),
        ("running".into(), "approved".into(), Some("run-1".into()))
    );

    // A cancel racing real claims: either the cancel wins (the task never runs) or the claim
    // wins (409, the run goes on); never both, never neither.
    for round in 0..20 {
        let (_, task) = h
            .create_task(&json!({"agentId": h.agent(), "prompt": format!("race {round}"), "approved": true}))
            .await;
        let id = task["id"].as_str().unwrap().to_string();
        let claim = async {
            let conn = h.chat.db.default_pool();
            let c = conn.conn().await.unwrap();
            scheduler::tasks::claim(&c.sql(), "racer", 60.0, scheduler::tasks::ClaimPolicy::up_to(1000))
                .await
                .unwrap()
                .tasks
                .len()
        };
        let cancel = h.decide(&id, "cancel");
        let (claimed, (status, _)) = tokio::join!(claim, cancel);
        let state: String = sql
            .query_one(
                "SELECT status FROM agent_tasks WHERE id = $1",
                &[&Uuid::parse_str(&id).unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        match status {
            200 => assert_eq!((state.as_str(), claimed), ("cancelled", 0), "round {round}"),
            409 => assert_eq!((state.as_str(), claimed), ("running", 1), "round {round}"),
            other => panic!("round {round}: {other}"),
        }
        sql.execute("UPDATE agent_tasks SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL WHERE status = 'running' AND lease_owner = 'racer'", &[]).await.unwrap();
    }
}

#[tokio::test]
async fn cancelling_a_recurring_task_cancels_its_series_and_rejecting_one_asks_again_next_time() {
    let h = api_harness().await;
    let (_, daily) = h
        .create_task(&json!({"agentId": h.agent(), "prompt": "daily", "cron": "0 6 * * *", "scheduledFor": chrono::Utc::now().to_rfc3339()}))
        .await;
    let id = daily["id"].as_str().unwrap().to_string();
    let (status, rejected) = h.decide(&id, "reject").await;
    assert_eq!(
        (status, rejected["approvalStatus"].as_str()),
        (200, Some("rejected")),
        "{rejected}"
    );
    let (_, pending) = h
        .send(
            call("api-tasks-list.json", "GET", "/api/tasks")
                .query("status", "pending")
                .query("approval", "pending"),
        )
        .await
        .into_pair();
    let next = pending["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prompt"] == "daily" && t["id"] != id.as_str())
        .expect("the next occurrence asks again")
        .clone();
    assert_eq!(next["seriesId"], id.as_str());
    let next_id = next["id"].as_str().unwrap();
    let (status, cancelled) = h.decide(next_id, "cancel").await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let live: i64 = h
        .count("SELECT count(*) FROM agent_tasks WHERE status = 'pending'")
        .await;
    assert_eq!(live, 0, "the series is over: no occurrence left pending");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_missing_tokens_are_answered_cleanly() {
    let h = api_harness().await;
    let cases = [
        ("api-agents.json", "GET", "/api/nothing", Some(USER), 404),
        ("api-agents.json", "DELETE", "/api/agents", Some(USER), 405),
        ("api-agents.json", "GET", "/api/agents/x", Some(USER), 405),
        ("api-agents.json", "POST", "/api/agents/x/tools", Some(USER), 405),
        ("api-task.json", "DELETE", "/api/tasks/x", Some(USER), 405),
        ("api-task.json", "GET", "/api/tasks/not-a-uuid", Some(USER), 404),
        ("api-task.json", "GET", "/api/tasks/../../etc/passwd", Some(USER), 404),
        ("api-agents.json", "GET", "/api/agents", None, 401),
        ("api-agents.json", "GET", "/api/agents/", Some(USER), 200),
    ];
    for (event, method, path, user, status) in cases {
        let (got, body) = h.send(call(event, method, path).user(user)).await.into_pair();
        assert_eq!(got, status, "{method} {path}: {body}");
        if status != 200 {
            assert!(body["error"]["code"].is_string(), "{body}");
        }
    }
}

#[tokio::test]
async fn a_cron_that_fires_every_second_or_more_often_than_the_minimum_interval_is_a_422_naming_cron() {
    let mut h = api_harness().await;
    let agent = h.agent();
    for cron in ["* * * * * *", "*/10 * * * * *", "0 0 9 * * *"] {
        let (status, body) = h
            .create_task(&json!({"agentId": agent, "prompt": "x", "cron": cron}))
            .await;
        assert_eq!(status, 422, "{cron}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("cron must have 5 fields"), "{cron}: {message}");
    }
    h.api.settings.min_interval = Duration::from_secs(300);
    let (status, body) = h
        .create_task(&json!({"agentId": agent, "prompt": "x", "cron": "*/1 * * * *"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "cron runs every 60 s at times; the shortest interval allowed is 300 s"
    );
    let (status, body) = h
        .create_task(&json!({"agentId": agent, "prompt": "x", "cron": "*/5 * * * *"}))
        .await;
    assert_eq!(status, 201, "five minutes apart is allowed: {body}");
    assert_eq!(
        h.count("SELECT count(*) FROM agent_tasks").await,
        1,
        "only that one stored"
    );
}

#[tokio::test]
async fn twenty_parallel_creations_stop_at_the_active_task_cap_with_a_429_and_store_nothing_more() {
    let mut h = api_harness().await;
    h.api.settings.max_active_tasks = 5;
    h.api.settings.task_rate_limit = 1000;
    // Twenty requests at once arrive at twenty instances, each with its own connection.
    h.api.db = h.chat.db.pool(&PoolOptions {
        app: "api".into(),
        max_size: 20,
        // The twenty queue on the user's lock one after another: bounds that a loaded machine
        // cannot reach, so that only the cap decides (this test is not about timeouts).
        wait: Duration::from_secs(30),
        statement: Duration::from_secs(30),
        ..PoolOptions::default()
    });
    let body = json!({"agentId": h.agent(), "prompt": "flood", "approved": true});
    let answers = futures_util::future::join_all((0..20).map(|_| h.create_task(&body))).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 429).map(|(_, b)| b).collect();
    assert_eq!(created, 5, "{answers:?}");
    assert_eq!(refused.len(), 15, "{answers:?}");
    assert!(
        refused.iter().all(|b| b["error"]["code"] == "too_many_active_tasks"),
        "{refused:?}"
    );
    assert_eq!(h.count("SELECT count(*) FROM agent_tasks").await, 5);

    // Another user is not affected; a finished task frees a slot.
    let (status, _, _) = h
        .send(
            call("api-tasks-create.json", "POST", "/api/tasks")
                .body(&body)
                .user(Some(OTHER_USER)),
        )
        .await;
    assert_eq!(status, 201);
    h.sql()
        .await
        .execute(
            &format!("UPDATE agent_tasks SET status = 'completed' WHERE id = (SELECT id FROM agent_tasks WHERE user_id = '{USER}' LIMIT 1)"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(h.create_task(&body).await.0, 201);
    assert_eq!(h.create_task(&body).await.0, 429);
}

#[tokio::test]
async fn task_creation_is_rate_limited_per_user_with_retry_after_and_replays_are_free() {
    let mut h = api_harness().await;
    h.api.settings.task_rate_limit = 3;
    let agent = h.agent();
    for i in 0..3 {
        let (status, body) = h
            .create_task(&json!({"agentId": agent, "prompt": format!("t{i}")}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body, response) = h
        .send(call("api-tasks-create.json", "POST", "/api/tasks").body(&json!({"agentId": agent, "prompt": "t3"})))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&retry),
        "a slot frees within the 60 s window: {retry}"
    );
    assert_eq!(h.count("SELECT count(*) FROM agent_tasks").await, 3, "nothing stored");

    // A request replayed with its Idempotency-Key is answered from what it created, limit or not.
    h.api.settings.task_rate_limit = 4;
    let keyed = json!({"agentId": agent, "prompt": "keyed"});
    let send_keyed = || {
        h.send(
            call("api-tasks-create.json", "POST", "/api/tasks")
                .body(&keyed)
                .header("idempotency-key", "k-1"),
        )
    };
    assert_eq!(send_keyed().await.0, 201);
    let (status, _, replay) = send_keyed().await;
    assert_eq!(status, 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}

/// `GET /api/usage` as `user`, with `days` when given (from `events/api-usage.json`).
async fn usage(h: &ApiHarness, user: &str, days: Option<&str>) -> (u16, Value) {
    let mut c = call("api-usage.json", "GET", "/api/usage").user(Some(user));
    if let Some(days) = days {
        c = c.query("days", days);
    }
    h.send(c).await.into_pair()
}

/// Usage rows of both users on today, yesterday, two and seven UTC days ago, on two agents; the
/// caller's own agent is created here. Returns (the second agent, the dates from today back).
async fn seed_usage(h: &ApiHarness) -> (String, Vec<String>) {
    let sql = h.sql().await;
    let second: Uuid = sql
        .query_one(
            &format!(
                "INSERT INTO agents (name, instructions, visibility, owner_id) VALUES ('mine', 'x', 'private', '{USER}')
                 RETURNING id"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (a, b) = (h.agent(), second.to_string());
    sql.batch_execute(&format!(
        "WITH t AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d)
         INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
         SELECT t.d - v.ago, v.u::uuid, v.a::uuid, v.m, v.i, v.o, v.c FROM t, (VALUES
             (0, '{USER}', '{a}', 'model-a', 100, 50, 2),
             (0, '{USER}', '{b}', 'model-b', 10, 5, 1),
             (1, '{USER}', '{a}', 'model-a', 7, 3, 1),
             (2, '{USER}', '{b}', 'model-b', 20, 20, 4),
             (7, '{USER}', '{a}', 'model-a', 1000, 1000, 10),
             (0, '{OTHER_USER}', '{a}', 'model-a', 900, 90, 9),
             (1, '{OTHER_USER}', '{a}', 'model-a', 800, 80, 8)
         ) AS v(ago, u, a, m, i, o, c)"
    ))
    .await
    .unwrap();
    let dates: Vec<String> = sql
        .query_one(
            "SELECT array_agg(((now() AT TIME ZONE 'UTC')::date - ago)::text ORDER BY ago) FROM generate_series(0, 7) ago",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (b, dates)
}

/// `(date, agentId, model, inputTokens, outputTokens, calls)` of each listed day.
fn usage_rows(body: &Value) -> Vec<(String, String, String, i64, i64, i64)> {
    body["days"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["agentId"].as_str().unwrap().to_string(),
                d["model"].as_str().unwrap().to_string(),
                d["inputTokens"].as_i64().unwrap(),
                d["outputTokens"].as_i64().unwrap(),
                d["calls"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_lists_the_callers_rows_of_the_last_n_utc_days_by_day_and_agent_newest_first_and_only_theirs() {
    let h = api_harness().await;
    let (b, d) = seed_usage(&h).await;
    let a = h.agent();
    let row = |day: usize, agent: &str, model: &str, i: i64, o: i64, c: i64| {
        (d[day].clone(), agent.to_string(), model.to_string(), i, o, c)
    };
    // Within a day, by agent id.
    let today = if a < b {
        vec![row(0, &a, "model-a", 100, 50, 2), row(0, &b, "model-b", 10, 5, 1)]
    } else {
        vec![row(0, &b, "model-b", 10, 5, 1), row(0, &a, "model-a", 100, 50, 2)]
    };

    let (status, two) = usage(&h, USER, Some("2")).await;
    assert_eq!(status, 200, "{two}");
    let mut expected = today.clone();
    expected.push(row(1, &a, "model-a", 7, 3, 1));
    assert_eq!(usage_rows(&two), expected, "today and yesterday: {two}");

    let (status, week) = usage(&h, USER, None).await;
    assert_eq!(status, 200, "{week}");
    expected.push(row(2, &b, "model-b", 20, 20, 4));
    assert_eq!(
        usage_rows(&week),
        expected,
        "7 days by default: seven days ago is not among them"
    );

    let (_, one) = usage(&h, USER, Some("1")).await;
    assert_eq!(usage_rows(&one), today);
    let (_, ninety) = usage(&h, USER, Some("90")).await;
    expected.push(row(7, &a, "model-a", 1000, 1000, 10));
    assert_eq!(usage_rows(&ninety), expected);
    assert!(!ninety.to_string().contains("900"), "another user's row: {ninety}");
    assert_eq!(
        ninety["budget"]["usedTokens"], 165,
        "today's input and output: {ninety}"
    );

    // The other user sees only theirs; a user without usage sees none, and nothing used.
    let (status, other) = usage(&h, OTHER_USER, Some("90")).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(
        usage_rows(&other),
        vec![row(0, &a, "model-a", 900, 90, 9), row(1, &a, "model-a", 800, 80, 8)]
    );
    assert_eq!(other["budget"]["usedTokens"], 990);
    let stranger = "3e2d1c0b-a987-4654-b321-0fedcba98765";
    let (status, none) = usage(&h, stranger, Some("90")).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["days"], json!([]));
    assert_eq!(none["budget"]["usedTokens"], 0);
}

#[tokio::test]
async fn the_usage_budget_gives_the_remaining_tokens_never_negative_and_nulls_when_unlimited() {
    let mut h = api_harness().await;
    seed_usage(&h).await;
    let reset = shared::usage::next_reset(chrono::Utc::now());

    h.api.settings.daily_tokens = 1000;
    let (status, body) = usage(&h, USER, Some("1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["budget"],
        json!({"dailyTokens": 1000, "usedTokens": 165, "remainingTokens": 835, "resetsAt": body["budget"]["resetsAt"]})
    );
    let resets = chrono::DateTime::parse_from_rfc3339(body["budget"]["resetsAt"].as_str().unwrap()).unwrap();
    assert_eq!(resets, reset, "the next 00:00 UTC");

    h.api.settings.daily_tokens = 100;
    let (_, over) = usage(&h, USER, Some("1")).await;
    assert_eq!(
        (&over["budget"]["usedTokens"], &over["budget"]["remainingTokens"]),
        (&json!(165), &json!(0)),
        "spent past the budget: none left, not a negative count: {over}"
    );

    h.api.settings.daily_tokens = 0;
    let (_, unlimited) = usage(&h, USER, Some("1")).await;
    let budget = &unlimited["budget"];
    assert_eq!(
        (
            &budget["dailyTokens"],
            &budget["remainingTokens"],
            &budget["usedTokens"]
        ),
        (&Value::Null, &Value::Null, &json!(165)),
        "{unlimited}"
    );
    assert!(budget["resetsAt"].is_string(), "{unlimited}");
}

#[tokio::test]
async fn usage_days_outside_1_to_90_not_a_number_or_an_unknown_parameter_is_a_422_naming_it() {
    let h = api_harness().await;
    for (query, says) in [
        (vec![("days", "0")], "days must be a whole number from 1 to 90"),
        (vec![("days", "91")], "days must be a whole number from 1 to 90"),
        (vec![("days", "x")], "days must be a whole number from 1 to 90"),
        (vec![("days", "-1")], "days must be"),
        (vec![("days", "7"), ("days", "8")], "days is given more than once"),
        (vec![("from", "2026-01-01")], "unknown query parameter `from`"),
    ] {
        let mut c = call("api-usage.json", "GET", "/api/usage");
        for &(k, v) in &query {
            c = c.query(k, v);
        }
        let (status, body) = h.send(c).await.into_pair();
        assert_eq!(status, 422, "{query:?}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query:?}: {message}");
    }
    for (method, user, status) in [
        ("GET", None, 401),
        ("POST", Some(USER), 405),
        ("DELETE", Some(USER), 405),
    ] {
        let (got, body) = h
            .send(call("api-usage.json", method, "/api/usage").user(user))
            .await
            .into_pair();
        assert_eq!(got, status, "{method}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn a_chat_reply_shows_in_the_callers_usage_of_today_and_in_no_one_elses() {
    let h = api_harness().await;
    let (status, reply) = h.chat.send("count me", None).await;
    assert_eq!(status, 200, "{reply}");
    let (_, mine) = usage(&h, USER, Some("1")).await;
    let days = mine["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{mine}");
    assert_eq!((&days[0]["agentId"], &days[0]["calls"]), (&json!(h.agent()), &json!(1)));
    let (_, theirs) = usage(&h, OTHER_USER, Some("1")).await;
    assert_eq!(theirs["days"], json!([]), "{theirs}");
}
