//! Approval of actions (issue 22, point 5) for scheduled tasks: a run paused on a call to a tool
//! that requires approval is shown by `GET /api/runs/{id}`, approved or rejected call by call
//! through the `api` function (the last decision resumes the run and its task), and made (or
//! answered with the rejection) by the next scheduler invocation; a run nobody decides on
//! expires. The scheduler and the API run in process on one database.

use std::sync::Arc;
use std::time::Duration;

use api::{Api, Settings as ApiSettings};
use serde_json::{json, Value};
use shared::agent::run::REJECTED;
use shared::auth::{AuthConfig, Authenticator};
use tokio_postgres::Client;
use uuid::Uuid;

use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer};
use integration_tests::harness::{harness, json_of, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::{openai_model_at, ChatModel};
use integration_tests::scheduling::{invoke, schedule_event, scheduler_on, test_config};
use scheduler::{Scheduler, Settings as SchedulerSettings, Summary};

use crate::helpers::PoolOptions;

const SIGNING: &str = "tool-signing-secret-for-tests";

/// A task of `USER`'s paused on calls to `refund` (a tool that requires approval), with the
/// API, the scheduler, the model and the tool that serve it.
struct Paused {
    h: Harness,
    api: Api,
    scheduler: Scheduler,
    model: ToolModel,
    tool: ToolServer,
    client: Client,
    run: Uuid,
    task: Uuid,
}

fn event_file(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// Starts a task whose model first calls `refund` once per arguments in `calls`, then answers
/// `answer`; runs the scheduler once, which pauses it.
async fn paused(calls: Vec<Value>, answer: &'static str) -> Paused {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let client = h.db.direct().await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    client
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, timeout_ms, requires_approval)
             VALUES ($1, 'refund', 'refunds an order', '{\"type\": \"object\"}', $2, 5000, true)",
            &[&h.agent, &tool.url],
        )
        .await
        .unwrap();
    let user = Uuid::parse_str(USER).unwrap();
    let task: Uuid = client
        .query_one(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             VALUES ($1, $2, 'refund the late orders', 'approved', now() - interval '1 minute') RETURNING id",
            &[&h.agent, &user],
        )
        .await
        .unwrap()
        .get(0);
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(calls.into_iter().map(|a| ("refund", a)).collect()),
            Step::Answer(answer),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let mut settings: SchedulerSettings = test_config();
    settings.runs.policy.allow_loopback = true;
    settings.runs.secret = Some(Arc::from(SIGNING.as_bytes()));
    let scheduler = scheduler_on(
        &h.db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        settings,
    );
    let api = Api {
        live: shared::live::Publisher::off(),
        // Room for two requests at once (the concurrent decisions).
        db: h.db.pool(&PoolOptions {
            app: "api".into(),
            max_size: 4,
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&h.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings: ApiSettings::default(),
        metrics: quiet_metrics("api"),
    };
    let p = Paused {
        h,
        api,
        scheduler,
        model,
        tool,
        client,
        run: Uuid::nil(),
        task,
    };
    let summary = p.invoke().await;
    assert_eq!(summary.awaiting_approval, 1, "{summary:?}");
    let run: Uuid = p
        .client
        .query_one("SELECT id FROM agent_runs", &[])
        .await
        .unwrap()
        .get(0);
    Paused { run, ..p }
}

impl Paused {
    async fn invoke(&self) -> Summary {
        invoke(&self.scheduler, schedule_event(), Duration::from_secs(30))
            .await
            .unwrap()
    }

    /// `method path` as `user` from `events/<event>` (with `body`, raw, when given).
    async fn send_as(&self, event: &str, method: &str, path: &str, body: Option<&str>, user: &str) -> (u16, Value) {
        let mut event = event_file(event);
        event["rawPath"] = path.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["http"]["method"] = method.into();
        let headers = event["headers"].as_object_mut().unwrap();
        headers.insert("authorization".into(), format!("Bearer {}", self.h.token(user)).into());
        match body {
            Some(body) => {
                headers.insert("content-type".into(), "application/json".into());
                event["body"] = body.into();
            }
            None => {
                event.as_object_mut().unwrap().remove("body");
            }
        }
        let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
        let response = api::handle(&self.api, request).await.unwrap();
        (response.status().as_u16(), json_of(&response))
    }

    async fn get(&self, run: &str, user: &str) -> (u16, Value) {
        self.send_as("api-run.json", "GET", &format!("/api/runs/{run}"), None, user)
            .await
    }

    /// `verdict` (`approve`, `reject`) on `call` of `run` as `user`.
    async fn decide(&self, run: &str, call: &str, verdict: &str, user: &str) -> (u16, Value) {
        let event = format!("api-run-tool-call-{verdict}.json");
        let path = format!("/api/runs/{run}/tool-calls/{call}/{verdict}");
        self.send_as(&event, "POST", &path, None, user).await
    }

    async fn mine(&self, call: &str, verdict: &str) -> (u16, Value) {
        self.decide(&self.run.to_string(), call, verdict, USER).await
    }

    /// (run status, task status, task last_error, task result, decisions)
    async fn state(&self) -> (String, String, Option<String>, Option<String>, i64) {
        let row = self
            .client
            .query_one(
                "SELECT r.status AS run, t.status AS task, t.last_error, t.result,
                        (SELECT count(*) FROM agent_run_decisions) AS decisions
                   FROM agent_runs r JOIN agent_tasks t ON t.id = r.task_id",
                &[],
            )
            .await
            .unwrap();
        (
            row.get("run"),
            row.get("task"),
            row.get("last_error"),
            row.get("result"),
            row.get("decisions"),
        )
    }

    /// The stored result of `call`.
    async fn result_of(&self, call: &str) -> Option<String> {
        self.client
            .query_opt(
                "SELECT content FROM messages WHERE run_id = $1 AND role = 'tool' AND tool_call_id = $2",
                &[&self.run, &call],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }
}

fn awaiting_ids(view: &Value) -> Vec<&str> {
    view["awaiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["toolCallId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_approved_call_is_made_exactly_once_by_the_next_invocation_and_the_task_completes_with_the_answer() {
    let p = paused(vec![json!({"order": 7})], "Order 7 refunded.").await;
    let (status, view) = p.get(&p.run.to_string(), USER).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], json!(p.run));
    assert_eq!(view["taskId"], json!(p.task));
    assert_eq!(view["agentId"], json!(p.h.agent));
    assert_eq!(view["conversationId"], Value::Null);
    assert_eq!(view["status"], "awaiting_approval");
    assert!(view["pausedUntil"].is_string(), "{view}");
    assert_eq!(
        view["awaiting"],
        json!([{"toolCallId": "call_0_0", "name": "refund", "arguments": {"order": 7}, "reason": "awaiting_approval"}])
    );
    let steps = view["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{view}");
    assert_eq!(
        (&steps[0]["step"], &steps[0]["role"], &steps[0]["toolCalls"][0]["id"]),
        (&json!(1), &json!("assistant"), &json!("call_0_0"))
    );
    assert!(p.tool.hits().is_empty(), "nothing is called before the approval");
    assert_eq!(p.state().await.1, "awaiting_approval");

    let (status, view) = p.mine("call_0_0", "approve").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "running");
    assert_eq!(view["pausedUntil"], Value::Null);
    assert!(awaiting_ids(&view).is_empty(), "{view}");
    let (run, task, ..) = p.state().await;
    assert_eq!((run.as_str(), task.as_str()), ("running", "pending"));

    let summary = p.invoke().await;
    assert_eq!((summary.completed, summary.expired), (1, 0), "{summary:?}");
    assert_eq!(p.tool.hits().len(), 1, "the approved call is made once");
    let body: Value = serde_json::from_slice(&p.tool.hits()[0].body).unwrap();
    assert_eq!(body["arguments"], json!({"order": 7}));
    let (run, task, error, result, decisions) = p.state().await;
    assert_eq!(
        (run.as_str(), task.as_str(), error, result.as_deref(), decisions),
        ("completed", "completed", None, Some("Order 7 refunded."), 1)
    );
    let (_, view) = p.get(&p.run.to_string(), USER).await;
    let shape: Vec<(i64, &str, Option<&str>)> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_i64().unwrap(),
                s["role"].as_str().unwrap(),
                s["toolCallId"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, "assistant", None),
            (1, "tool", Some("call_0_0")),
            (2, "assistant", None)
        ]
    );
    assert_eq!(view["steps"][2]["content"], "Order 7 refunded.");

    // Nothing is due any more: another invocation makes no call.
    let summary = p.invoke().await;
    assert_eq!(summary.claimed, 0, "{summary:?}");
    assert_eq!(p.tool.hits().len(), 1);
    let (status, body) = p.mine("call_0_0", "approve").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["message"], "the tool call was already approved");
}

#[tokio::test]
async fn a_rejected_call_is_never_made_and_the_model_reads_the_rejection_as_its_result() {
    let p = paused(vec![json!({"order": 7}), json!({"order": 8})], "Refunded 7, not 8.").await;
    let (_, view) = p.get(&p.run.to_string(), USER).await;
    assert_eq!(awaiting_ids(&view), vec!["call_0_0", "call_0_1"]);

    // One of two decided: the run still waits, for the other only.
    let (status, view) = p.mine("call_0_0", "approve").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(awaiting_ids(&view), vec!["call_0_1"]);
    assert_eq!(p.state().await.1, "awaiting_approval");
    assert_eq!(p.invoke().await.claimed, 0, "a task still waiting is not claimed");

    let (status, view) = p.mine("call_0_1", "reject").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "running");
    let (status, body) = p.mine("call_0_1", "approve").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["message"], "the tool call was already rejected");

    let summary = p.invoke().await;
    assert_eq!(summary.completed, 1, "{summary:?}");
    let hits = p.tool.hits();
    assert_eq!(hits.len(), 1, "only the approved call is made");
    let body: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(body["toolCallId"], "call_0_0");
    assert_eq!(p.result_of("call_0_1").await.as_deref(), Some(REJECTED));
    let last = p.model.requests().pop().unwrap();
    let seen: Vec<&Value> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool" && m["tool_call_id"] == "call_0_1")
        .collect();
    assert_eq!(seen.len(), 1, "{last}");
    assert_eq!(seen[0]["content"], REJECTED);
    let (run, task, _, result, decisions) = p.state().await;
    assert_eq!(
        (run.as_str(), task.as_str(), result.as_deref(), decisions),
        ("completed", "completed", Some("Refunded 7, not 8."), 2)
    );
}

#[tokio::test]
async fn another_users_run_a_malformed_id_or_an_unknown_call_is_a_404_and_changes_nothing() {
    let p = paused(vec![json!({"order": 7})], "done").await;
    let run = p.run.to_string();
    let missing = Uuid::new_v4().to_string();
    let (status, theirs) = p.get(&run, OTHER_USER).await;
    assert_eq!(status, 404, "{theirs}");
    let (status, absent) = p.get(&missing, USER).await;
    assert_eq!(
        (status, &absent["error"]["message"]),
        (404, &theirs["error"]["message"])
    );
    for verdict in ["approve", "reject"] {
        let (status, theirs) = p.decide(&run, "call_0_0", verdict, OTHER_USER).await;
        assert_eq!(status, 404, "{theirs}");
        let (status, absent) = p.decide(&missing, "call_0_0", verdict, USER).await;
        assert_eq!(
            (status, &absent["error"]["message"]),
            (404, &theirs["error"]["message"])
        );
        let (status, body) = p.decide("not-a-run", "call_0_0", verdict, USER).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = p.decide(&run, "call_9_9", verdict, USER).await;
        assert_eq!(
            (status, &body["error"]["message"]),
            (404, &json!("tool call not found"))
        );
    }
    let (status, body) = p.get("not-a-run", USER).await;
    assert_eq!(status, 404, "{body}");

    // Hostile input: none answers 500, none decides anything.
    let long = "c".repeat(5000);
    let path = |call: &str| format!("/api/runs/{run}/tool-calls/{call}/approve");
    let cases: Vec<(String, Option<&str>)> = vec![
        (path(&long), None),
        (path("%00"), None),
        (path("call_0_0'%3B--"), None),
        (path("ca%2Fll"), None),
        (format!("/api/runs/{run}/tool-calls//approve"), None),
        (
            format!("/api/runs/{run}/tool-calls/call_9_9/approve"),
            Some("{\"decision\":\"approved\"}"),
        ),
        (format!("/api/runs/{run}/tool-calls/call_9_9/approve"), Some("not json")),
        (format!("/api/runs/{run}/tool-calls/call_9_9/approve?force=true"), None),
        (format!("/api/runs/{run}/tool-calls/call_0_0/delete"), None),
        (format!("/api/runs/{run}/tool-calls"), None),
    ];
    for (path, body) in &cases {
        let (status, answer) = p
            .send_as("api-run-tool-call-approve.json", "POST", path, *body, USER)
            .await;
        assert!((400..500).contains(&status), "POST {path}: {status} {answer}");
    }
    let (status, answer) = p
        .send_as("api-run.json", "DELETE", &format!("/api/runs/{run}"), None, USER)
        .await;
    assert_eq!(status, 405, "{answer}");
    let (status, answer) = p
        .send_as(
            "api-run.json",
            "GET",
            &format!("/api/runs/{run}/tool-calls/call_0_0/approve"),
            None,
            USER,
        )
        .await;
    assert_eq!(status, 405, "{answer}");

    let (run_status, task, _, _, decisions) = p.state().await;
    assert_eq!(
        (run_status.as_str(), task.as_str(), decisions),
        ("awaiting_approval", "awaiting_approval", 0)
    );
    let (status, view) = p.get(&run, USER).await;
    assert_eq!((status, awaiting_ids(&view)), (200, vec!["call_0_0"]));
    assert!(p.tool.hits().is_empty());
}

#[tokio::test]
async fn a_run_nobody_decides_on_expires_at_the_next_invocation_and_its_task_fails_saying_why() {
    let p = paused(vec![json!({"order": 7})], "done").await;
    // Not yet past its time: the next invocation leaves it paused.
    assert_eq!(p.invoke().await.expired, 0);
    assert_eq!(p.state().await.0, "awaiting_approval");
    p.client
        .execute("UPDATE agent_runs SET paused_until = now() - interval '1 minute'", &[])
        .await
        .unwrap();
    let summary = p.invoke().await;
    assert_eq!(
        (summary.expired, summary.failed, summary.claimed),
        (1, 1, 0),
        "{summary:?}"
    );
    let (run, task, error, result, _) = p.state().await;
    let expected = "approval_expired: no decision within AGENT_APPROVAL_TTL_HOURS";
    assert_eq!(
        (run.as_str(), task.as_str(), error.as_deref(), result),
        ("expired", "failed", Some(expected), None)
    );
    let (_, view) = p.get(&p.run.to_string(), USER).await;
    assert_eq!(
        (&view["status"], &view["lastError"]),
        (&json!("expired"), &json!(expected))
    );
    let (status, body) = p.mine("call_0_0", "approve").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["message"], "the run is expired");
    assert_eq!(p.invoke().await.expired, 0, "expired once");
    assert!(p.tool.hits().is_empty());
}

#[tokio::test]
async fn a_run_is_read_in_one_statement() {
    let p = paused(vec![json!({"order": 7})], "done").await;
    let before = p.api.db.statements_sent();
    let (status, view) = p.get(&p.run.to_string(), USER).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(p.api.db.statements_sent() - before, 1);
}

#[tokio::test]
async fn concurrent_approve_and_reject_of_one_call_let_exactly_one_win() {
    let p = paused(vec![json!({"order": 7})], "done").await;
    let ((a, approved), (r, rejected)) = tokio::join!(p.mine("call_0_0", "approve"), p.mine("call_0_0", "reject"));
    let mut statuses = [a, r];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{approved} {rejected}");
    let (run, task, _, _, decisions) = p.state().await;
    assert_eq!((run.as_str(), task.as_str(), decisions), ("running", "pending", 1));
}

#[tokio::test]
async fn concurrent_decisions_on_the_last_two_waiting_calls_resume_the_run() {
    let p = paused(vec![json!({"order": 7}), json!({"order": 8})], "done").await;
    let ((a, first), (b, second)) = tokio::join!(p.mine("call_0_0", "approve"), p.mine("call_0_1", "reject"));
    assert_eq!((a, b), (200, 200), "{first} {second}");
    let (run, task, _, _, decisions) = p.state().await;
    assert_eq!(
        (run.as_str(), task.as_str(), decisions),
        ("running", "pending", 2),
        "the second decision saw the first"
    );
}

#[tokio::test]
async fn a_chat_turn_paused_for_approval_resumes_in_the_scheduler_once_approved_and_its_answer_lands_in_the_conversation(
) {
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("refund", json!({"order": "A-1"}))]),
            Step::Answer("Refunded A-1."),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let mut chat_settings = chat::Settings::default();
    chat_settings.runs.policy.allow_loopback = true;
    chat_settings.runs.secret = Some(Arc::from(SIGNING.as_bytes()));
    let h = integration_tests::harness::harness_with(
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        chat_settings,
        None,
        false,
    )
    .await;
    let client = h.db.direct().await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    client
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, requires_approval)
             VALUES ($1, 'refund', 'refunds an order', '{\"type\": \"object\"}', $2, true)",
            &[&h.agent, &tool.url],
        )
        .await
        .unwrap();
    let (status, paused) = h.send("refund order A-1", None).await;
    assert_eq!(status, 202, "{paused}");
    let run = paused["runId"].as_str().unwrap().to_string();
    let call = paused["toolCalls"][0]["id"].as_str().unwrap().to_string();

    let mut settings: SchedulerSettings = test_config();
    settings.runs.policy.allow_loopback = true;
    settings.runs.secret = Some(Arc::from(SIGNING.as_bytes()));
    let p = Paused {
        api: Api {
            live: shared::live::Publisher::off(),
            db: h.db.pool(&PoolOptions {
                app: "api".into(),
                ..PoolOptions::default()
            }),
            auth: Authenticator::new(AuthConfig::new(&h.auth.url(), Some(SECRET.into())))
                .expect("an HTTP client with its timeouts"),
            settings: ApiSettings::default(),
            metrics: quiet_metrics("api"),
        },
        scheduler: scheduler_on(
            &h.db,
            Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
            settings,
        ),
        run: run.parse().unwrap(),
        task: Uuid::nil(),
        client,
        tool,
        model,
        h,
    };
    // Nothing runs before the decision.
    assert_eq!(p.invoke().await.completed, 0);
    let (status, view) = p.mine(&call, "approve").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "running");

    let summary = p.invoke().await;
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert_eq!(p.tool.hits().len(), 1, "the approved call is made once");
    let conversation: Vec<(String, String)> = p
        .client
        .query(
            "SELECT m.role, m.content FROM messages m JOIN agent_runs r ON r.conversation_id = m.conversation_id
              WHERE r.id = $1 ORDER BY m.created_at, m.id",
            &[&p.run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let roles: Vec<&str> = conversation.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(
        conversation[3].1, "Refunded A-1.",
        "the answer lands in the conversation"
    );
    let status: String = p
        .client
        .query_one("SELECT status FROM agent_runs WHERE id = $1", &[&p.run])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "completed");
    // The model was given the conversation (the user's message first), then the call and its result.
    let last = p.model.requests().pop().unwrap();
    let sent: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["system", "user", "assistant", "tool"]);
    assert_eq!(last["messages"][1]["content"], "refund order A-1");
}
