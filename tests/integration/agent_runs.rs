//! Agents that act, run by the scheduler (issue 22): a task of an agent with tools runs model →
//! tool calls → results → model to an answer, every step stored as it completes; a run cut by
//! SIGKILL resumes without calling again a tool whose result is stored; the step limit ends a
//! model that calls tools forever; refused or failed calls are results the model sees; no pooler
//! client is held while a tool works.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer, PLAIN_USAGE};
use integration_tests::helpers::{eventually, RuntimeApi, TestDb};
use integration_tests::models::openai_model_at;
use integration_tests::scheduling::{
    invoke, schedule_event, scheduled_invocation, scheduler_on, scheduler_process, seed_agent, seed_tasks, test_config,
};
use scheduler::Settings as SchedulerSettings;

const SECRET: &str = "tool-signing-secret-for-tests";

/// The tests' scheduler settings with tools callable on loopback, signed with [`SECRET`].
fn tool_settings() -> SchedulerSettings {
    let mut settings = test_config();
    settings.runs.policy.allow_loopback = true;
    settings.runs.secret = Some(Arc::from(SECRET.as_bytes()));
    settings
}

/// A scheduler on `db` whose model is the OpenAI-compatible side of `model`, under `settings`.
fn tool_scheduler(db: &TestDb, model: &ToolModel, settings: SchedulerSettings) -> scheduler::Scheduler {
    scheduler_on(
        db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        settings,
    )
}

/// Gives `agent` the tool `name` at `url`.
async fn add_tool(client: &Client, agent: Uuid, name: &str, url: &str, timeout_ms: i32) {
    client
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, timeout_ms)
             VALUES ($1, $2, 'a tool of the tests', '{\"type\": \"object\"}', $3, $4)",
            &[&agent, &name, &url, &timeout_ms],
        )
        .await
        .unwrap();
}

/// The run's stored steps: (step, role, calls' ids or the result's call id, content).
async fn steps(client: &Client) -> Vec<(i32, String, Vec<String>, String)> {
    client
        .query(
            "SELECT step, role, tool_calls, tool_call_id, content FROM messages
              WHERE run_id IS NOT NULL ORDER BY step, role = 'tool', tool_call_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let calls: Option<Value> = r.get("tool_calls");
            let ids = match (calls, r.get::<_, Option<String>>("tool_call_id")) {
                (Some(calls), _) => calls
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_string())
                    .collect(),
                (None, Some(id)) => vec![id],
                (None, None) => vec![],
            };
            (r.get("step"), r.get("role"), ids, r.get("content"))
        })
        .collect()
}

async fn run_of(client: &Client) -> (Uuid, String) {
    let row = client
        .query_one("SELECT id, status FROM agent_runs", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn task_row(client: &Client) -> tokio_postgres::Row {
    client
        .query_one(
            "SELECT status, result, last_error, attempts, input_tokens, output_tokens FROM agent_tasks",
            &[],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_task_runs_its_agents_tools_over_three_steps_with_parallel_calls_and_stores_every_step() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    add_tool(&client, agent, "weather", &tool.url, 5000).await;
    add_tool(&client, agent, "compare", &tool.url, 5000).await;
    seed_tasks(&client, agent, 1, "compare the weather", "", "").await;
    let model = ToolModel::start(ToolScript::three_steps()).await;
    let s = tool_scheduler(&db, &model, tool_settings());

    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    let task = task_row(&client).await;
    assert_eq!(task.get::<_, String>("status"), "completed");
    assert_eq!(task.get::<_, String>("result"), "Oslo is warmer.");
    let (input, output) = PLAIN_USAGE;
    assert_eq!(
        (
            task.get::<_, Option<i32>>("input_tokens"),
            task.get::<_, Option<i32>>("output_tokens")
        ),
        (Some(3 * input as i32), Some(3 * output as i32)),
        "usage sums over the three steps"
    );
    let (run, status) = run_of(&client).await;
    assert_eq!(status, "completed");
    let stored: Vec<(i32, String, Vec<String>)> = steps(&client)
        .await
        .into_iter()
        .map(|(step, role, ids, _)| (step, role, ids))
        .collect();
    let s =
        |step: i32, role: &str, ids: &[&str]| (step, role.to_string(), ids.iter().map(ToString::to_string).collect());
    assert_eq!(
        stored,
        vec![
            s(1, "assistant", &["call_0_0", "call_0_1"]),
            s(1, "tool", &["call_0_0"]),
            s(1, "tool", &["call_0_1"]),
            s(2, "assistant", &["call_1_0"]),
            s(2, "tool", &["call_1_0"]),
            s(3, "assistant", &[]),
        ]
    );

    // Each call signed over its exact body, keyed by run, step and call.
    let hits = tool.hits();
    assert_eq!(hits.len(), 3);
    let mut keys: Vec<String> = hits
        .iter()
        .map(|h| {
            assert_eq!(
                h.header("x-agent-signature"),
                Some(shared::agent::tool_call::signature(SECRET.as_bytes(), &h.body).as_str())
            );
            let body: Value = serde_json::from_slice(&h.body).unwrap();
            assert_eq!(body["runId"], json!(run));
            assert_eq!(body["agentId"], json!(agent));
            h.header("idempotency-key").unwrap().to_string()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{run}:1:call_0_0"),
            format!("{run}:1:call_0_1"),
            format!("{run}:2:call_1_0")
        ]
    );
    // The model saw each result in the step after its call.
    let last = model.requests().pop().unwrap();
    assert_eq!(
        last["messages"].as_array().unwrap().len(),
        7,
        "system, prompt, 2 steps, 3 results"
    );
}

#[tokio::test]
async fn a_model_that_calls_tools_forever_stops_at_the_step_limit_and_the_task_says_so() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    add_tool(&client, agent, "again", &tool.url, 5000).await;
    seed_tasks(&client, agent, 1, "loop", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![Step::Call(vec![("again", json!({}))])],
        latency: Duration::ZERO,
    })
    .await;
    let mut settings = tool_settings();
    settings.runs.max_steps = 3;
    let s = tool_scheduler(&db, &model, settings);
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.failed, 1, "{summary:?}");
    let task = task_row(&client).await;
    assert_eq!(task.get::<_, String>("status"), "failed");
    let error: String = task.get("last_error");
    assert!(error.starts_with("step_limit:"), "{error}");
    assert_eq!(run_of(&client).await.1, "step_limit");
    assert_eq!(model.requests().len(), 3, "three model calls, no fourth");
    assert_eq!(tool.hits().len(), 3);
}

#[tokio::test]
async fn refused_cut_and_failed_tool_calls_are_errors_the_model_sees_and_the_run_ends_normally() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let echo = ToolServer::start(ToolMode::Echo).await;
    let redirect = ToolServer::start(ToolMode::Redirect("http://169.254.169.254/latest/meta-data".into())).await;
    let huge = ToolServer::start(ToolMode::Huge(10 * 1024 * 1024)).await;
    let hang = ToolServer::start(ToolMode::Hang).await;
    let port = echo
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/tool")
        .to_string();
    // (case, tool url, loopback allowed, allowed hosts, what the error says)
    let cases: Vec<(&str, String, bool, Vec<String>, &str)> = vec![
        (
            "loopback without the dev flag",
            echo.url.clone(),
            false,
            vec![],
            "loopback",
        ),
        (
            "the metadata address",
            "https://169.254.169.254/latest/meta-data".into(),
            true,
            vec![],
            "169.254.169.254",
        ),
        (
            "a host outside the allow-list",
            echo.url.clone(),
            true,
            vec!["tools.example.com".into()],
            "not on the allowed list",
        ),
        ("a redirect", redirect.url.clone(), true, vec![], "redirect"),
        ("a 10 MiB answer", huge.url.clone(), true, vec![], "larger than"),
        ("a tool that hangs", hang.url.clone(), true, vec![], "did not answer"),
        (
            "localhost by name without the dev flag",
            format!("http://localhost:{port}/tool"),
            false,
            vec![],
            "loopback",
        ),
    ];
    let model = ToolModel::start(ToolScript {
        steps: vec![Step::Call(vec![("probe", json!({}))]), Step::Answer("handled")],
        latency: Duration::ZERO,
    })
    .await;
    for (case, url, loopback, hosts, says) in cases {
        client.execute("DELETE FROM agent_tasks", &[]).await.unwrap();
        let agent = seed_agent(&client).await;
        add_tool(&client, agent, "probe", &url, 500).await;
        seed_tasks(&client, agent, 1, case, "", "").await;
        let mut settings = tool_settings();
        settings.runs.policy.allow_loopback = loopback;
        settings.runs.policy.allowed_hosts = hosts;
        settings.runs.policy.max_response_bytes = 1024 * 1024;
        let s = tool_scheduler(&db, &model, settings);
        let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(summary.completed, 1, "{case}: {summary:?}");
        let result: String = client
            .query_one(
                "SELECT m.content FROM messages m JOIN agent_runs r ON r.id = m.run_id
                  JOIN agent_tasks t ON t.id = r.task_id WHERE m.role = 'tool'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let result: Value = serde_json::from_str(&result).unwrap();
        let error = result["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: not an error: {result}"));
        assert!(error.contains(says), "{case}: {error}");
    }
    assert!(echo.hits().is_empty(), "a refused call is never sent");
}

#[tokio::test]
async fn a_run_killed_after_a_stored_result_resumes_without_calling_that_tool_again() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let fast = ToolServer::start(ToolMode::Echo).await;
    let slow = ToolServer::start(ToolMode::HangFirst).await;
    add_tool(&client, agent, "fast", &fast.url, 10_000).await;
    add_tool(&client, agent, "slow", &slow.url, 10_000).await;
    seed_tasks(&client, agent, 1, "both", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("fast", json!({"n": 1})), ("slow", json!({"n": 2}))]),
            Step::Answer("both done"),
        ],
        latency: Duration::ZERO,
    })
    .await;

    // The real binary: killed once the fast call's result is stored and the slow one is in flight.
    let runtime = RuntimeApi::start().await;
    let mut child = scheduler_process(
        &runtime,
        &db,
        &[
            ("MODEL_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", model.openai_url.as_str()),
            ("OPENAI_MODEL", "gpt-test"),
            ("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
            ("AGENT_TOOL_SIGNING_SECRET", SECRET),
        ],
    );
    let invocation = scheduled_invocation(&runtime, Duration::from_secs(3));
    let killer = async {
        let mid_step = eventually(Duration::from_secs(20), || async {
            let stored = steps(&client).await;
            stored.iter().any(|(_, role, _, _)| role == "tool") && slow.hits().len() == 1
        })
        .await;
        assert!(
            mid_step,
            "the fast result was never stored with the slow call in flight"
        );
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
    };
    tokio::select! {
        result = invocation => panic!("the invocation finished before the kill: {result:?}"),
        () = killer => {}
    }
    assert_eq!(run_of(&client).await.1, "running");

    // Once the lease expires, the next invocation rescues the task and resumes its run.
    let expired = eventually(Duration::from_secs(15), || async {
        client
            .query_one("SELECT count(*) FROM agent_tasks WHERE lease_expires_at > now()", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(expired, "the killed instance's lease expires");
    let s = tool_scheduler(&db, &model, tool_settings());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert_eq!(task_row(&client).await.get::<_, String>("result"), "both done");
    assert_eq!(fast.hits().len(), 1, "the stored result's tool is not called again");
    let slow_hits = slow.hits();
    assert_eq!(slow_hits.len(), 2, "the call in flight is made again");
    assert_eq!(
        slow_hits[0].header("idempotency-key"),
        slow_hits[1].header("idempotency-key"),
        "with the same key"
    );
    let results = steps(&client).await.into_iter().filter(|s| s.1 == "tool").count();
    assert_eq!(results, 2, "each result stored once");
}

#[tokio::test]
async fn no_pooler_client_or_transaction_is_held_while_a_tool_works() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let inspector = db.direct().await;
    let agent = seed_agent(&client).await;
    let slow = ToolServer::start(ToolMode::HangFirst).await;
    add_tool(&client, agent, "slow", &slow.url, 2000).await;
    seed_tasks(&client, agent, 1, "wait", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![Step::Call(vec![("slow", json!({}))]), Step::Answer("waited")],
        latency: Duration::ZERO,
    })
    .await;
    let s = tool_scheduler(&db, &model, tool_settings());
    let run = invoke(&s, schedule_event(), Duration::from_secs(30));
    let observe = async {
        let calling = eventually(Duration::from_secs(10), || async { slow.hits().len() == 1 }).await;
        assert!(calling, "the tool was called");
        (s.db.status(), db.server_sessions(&inspector).await)
    };
    let (summary, (pool, sessions)) = tokio::join!(run, observe);
    assert_eq!(summary.unwrap().completed, 1);
    assert_eq!(pool.available, pool.size, "every client back in the pool: {pool:?}");
    assert!(
        !sessions
            .iter()
            .any(|s| s.state.starts_with("idle in transaction") || s.state == "active"),
        "no open transaction or running statement during the tool call: {sessions:?}"
    );
    let result = steps(&client).await.into_iter().find(|s| s.1 == "tool").unwrap().3;
    assert!(result.contains("did not answer"), "{result}");
}
