//! Tools from MCP servers (issue 27), against real servers no one here wrote: the reference
//! server `@modelcontextprotocol/server-everything` and a server built on the official Python
//! SDK (`tests/mcp/server.py`), both on loopback, spoken to by the real client
//! (`shared::agent::mcp`, over `rmcp`'s Streamable HTTP transport) and by the scheduler's runs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared::agent::mcp::{Approval, Mcp, McpError, Source};
use shared::agent::run::SKIPPED;
use shared::agent::sealed::SealKey;
use shared::agent::ToolPolicy;
use tokio_postgres::Client;
use uuid::Uuid;

use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer};
use integration_tests::helpers::{eventually, RuntimeApi, TestDb};
use integration_tests::mcp_servers::{Everything, PyMcp, PyMcpOptions};
use integration_tests::models::openai_model_at;
use integration_tests::scheduling::{
    invoke, schedule_event, scheduled_invocation, scheduler_on, scheduler_process, seed_agent, seed_tasks, test_config,
};
use scheduler::Settings as SchedulerSettings;

/// The key MCP auth headers are sealed with in these tests (64 hex digits).
const KEY: &str = "4d43502d6b65792d666f722d7468652d74657374732d6f6e6c792d3332627974";

fn policy(allow_loopback: bool) -> Arc<ToolPolicy> {
    Arc::new(ToolPolicy {
        allow_loopback,
        allowed_hosts: Vec::new(),
        max_response_bytes: 64 * 1024,
    })
}

fn client(ttl: Duration) -> Mcp {
    Mcp::new(policy(true), ttl).expect("an MCP client")
}

fn source(url: &str) -> Source {
    Source {
        id: Uuid::new_v4(),
        name: "orders".into(),
        url: url.into(),
        auth_header: None,
        allowed_tools: None,
        approval: Approval::Destructive,
        timeout: Duration::from_secs(10),
    }
}

fn names(tools: &[shared::agent::mcp::McpTool]) -> Vec<&str> {
    tools.iter().map(|t| t.exposed.as_str()).collect()
}

#[tokio::test]
async fn the_python_servers_tools_are_listed_across_pages_with_their_hints_and_namespaced() {
    let server = PyMcp::start(PyMcpOptions {
        page_size: Some(2),
        ..PyMcpOptions::default()
    })
    .await;
    let mcp = client(Duration::from_secs(300));
    let orders = source(&server.url);
    let tools = mcp.tools(&orders).await.expect("listed");
    assert_eq!(
        names(&tools),
        [
            "orders__lookup_order",
            "orders__refund_order",
            "orders__slow_refund",
            "orders__flaky",
            "orders__idempotent_update",
            "orders__slow_lookup"
        ],
        "every page of six tools at two a page"
    );
    let lookup = &tools[0];
    assert!(lookup.hints.read_only && !Approval::Destructive.requires(lookup.hints));
    assert!(
        Approval::Destructive.requires(tools[1].hints),
        "no annotations: destructive"
    );
    assert!(tools[4].hints.idempotent && !tools[4].hints.read_only);
    assert_eq!(lookup.input_schema["type"], "object");
    let lists = server
        .calls()
        .iter()
        .filter(|c| c.method.as_deref() == Some("tools/list"))
        .count();
    assert_eq!(lists, 3, "pages followed by nextCursor");
    // Cached for the instance: a second run lists nothing.
    mcp.tools(&orders).await.expect("cached");
    let initializes = server
        .calls()
        .iter()
        .filter(|c| c.method.as_deref() == Some("initialize"))
        .count();
    assert_eq!(initializes, 1);
    let lists_after = server
        .calls()
        .iter()
        .filter(|c| c.method.as_deref() == Some("tools/list"))
        .count();
    assert_eq!(lists_after, 3, "the list is kept for AGENT_MCP_TOOLS_TTL_SECS");
}

#[tokio::test]
async fn calls_give_structured_content_text_or_an_error_and_reuse_the_session() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let mcp = client(Duration::from_secs(300));
    let orders = source(&server.url);
    let timeout = Duration::from_secs(5);
    let found = mcp
        .call(&orders, "lookup_order", &json!({"order_id": "A-1"}), timeout)
        .await
        .expect("a result");
    assert_eq!(found["status"], "paid", "{found}");
    let updated = mcp
        .call(
            &orders,
            "idempotent_update",
            &json!({"key": "k", "value": "v"}),
            timeout,
        )
        .await
        .expect("a result");
    assert!(updated.as_str().is_some_and(|t| t.contains('k')), "{updated}");
    let failed = mcp.call(&orders, "flaky", &json!({}), timeout).await.unwrap_err();
    assert!(matches!(failed, McpError::Tool(_)), "{failed:?}");
    assert!(failed.as_result()["error"]
        .as_str()
        .unwrap()
        .contains("reported an error"));
    let sessions: std::collections::BTreeSet<String> = server
        .calls()
        .iter()
        .filter(|c| c.method.as_deref() == Some("tools/call"))
        .filter_map(|c| c.session.clone())
        .collect();
    assert_eq!(sessions.len(), 1, "one Mcp-Session-Id while warm: {sessions:?}");
}

#[tokio::test]
async fn a_forgotten_session_is_replaced_by_a_new_one_and_the_call_goes_through() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let mcp = client(Duration::from_secs(300));
    let orders = source(&server.url);
    let timeout = Duration::from_secs(5);
    mcp.call(&orders, "lookup_order", &json!({"order_id": "1"}), timeout)
        .await
        .expect("first call");
    assert_eq!(server.expire_sessions().await, 1);
    let again = mcp
        .call(&orders, "lookup_order", &json!({"order_id": "2"}), timeout)
        .await
        .expect("the call after the 404 goes through a new session");
    assert_eq!(again["order"], "2", "{again}");
    let calls = server.calls();
    let initializes = calls
        .iter()
        .filter(|c| c.method.as_deref() == Some("initialize"))
        .count();
    assert_eq!(initializes, 2, "a new session after the 404");
    let sessions: std::collections::BTreeSet<String> = calls
        .iter()
        .filter(|c| c.ran("lookup_order") || c.method.as_deref() == Some("tools/call"))
        .filter_map(|c| c.session.clone())
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
}

#[tokio::test]
async fn a_list_changed_notification_lists_the_tools_again_before_the_ttl() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let mcp = client(Duration::from_secs(3600));
    let orders = source(&server.url);
    let before = mcp.tools(&orders).await.expect("listed");
    assert!(!names(&before).contains(&"orders__late_tool"));
    // The session's GET stream must be open for the notification to reach it.
    let listening = eventually(Duration::from_secs(10), || async {
        server.calls().iter().any(|c| c.event == "http")
    })
    .await;
    assert!(listening, "the client opened its notification stream");
    assert!(!server.add_tool().await.is_empty(), "a session was notified");
    let listed = eventually(Duration::from_secs(10), || async {
        mcp.tools(&orders)
            .await
            .is_ok_and(|tools| names(&tools).contains(&"orders__late_tool"))
    })
    .await;
    assert!(listed, "late_tool listed after notifications/tools/list_changed");
}

#[tokio::test]
async fn a_server_that_went_down_is_a_tool_error_and_a_new_session_follows_its_return() {
    let mut server = PyMcp::start(PyMcpOptions::default()).await;
    let mcp = client(Duration::from_secs(300));
    let orders = source(&server.url);
    let timeout = Duration::from_secs(5);
    mcp.tools(&orders).await.expect("listed");
    server.stop();
    let down = mcp
        .call(&orders, "lookup_order", &json!({"order_id": "1"}), timeout)
        .await
        .unwrap_err();
    assert!(down.as_result()["error"].is_string(), "{down:?}");
    server.restart().await;
    let back = mcp
        .call(&orders, "lookup_order", &json!({"order_id": "1"}), timeout)
        .await
        .expect("a new session once the server is back");
    assert_eq!(back["status"], "paid");
}

#[tokio::test]
async fn the_auth_header_is_sent_on_every_request_and_a_wrong_one_is_an_error() {
    let server = PyMcp::start(PyMcpOptions {
        token: Some("mcp-token-1".into()),
        ..PyMcpOptions::default()
    })
    .await;
    let mcp = client(Duration::from_secs(300));
    let mut orders = source(&server.url);
    orders.auth_header = Some("Bearer mcp-token-1".into());
    mcp.call(
        &orders,
        "lookup_order",
        &json!({"order_id": "1"}),
        Duration::from_secs(5),
    )
    .await
    .expect("authorised");
    let calls = server.calls();
    assert!(calls
        .iter()
        .filter(|c| c.event == "rpc")
        .all(|c| c.authorization.as_deref() == Some("Bearer mcp-token-1") && !c.unauthorized));
    let mut wrong = source(&server.url);
    wrong.auth_header = Some("Bearer nope".into());
    let refused = mcp.tools(&wrong).await.unwrap_err();
    assert!(matches!(refused, McpError::Connect(_)), "{refused:?}");
}

#[tokio::test]
async fn server_everything_is_listed_and_called_with_text_structured_and_image_results() {
    let server = Everything::start().await;
    let mcp = client(Duration::from_secs(300));
    let mut everything = source(&server.url);
    everything.name = "everything".into();
    let tools = mcp.tools(&everything).await.expect("listed");
    let listed = names(&tools);
    for name in ["everything__echo", "everything__get-sum", "everything__get-tiny-image"] {
        assert!(listed.contains(&name), "{name} in {listed:?}");
    }
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert!(echo.hints.read_only);
    let timeout = Duration::from_secs(10);
    let echoed = mcp
        .call(&everything, "echo", &json!({"message": "hi"}), timeout)
        .await
        .expect("echo");
    assert!(echoed.as_str().is_some_and(|t| t.contains("hi")), "{echoed}");
    let sum = mcp
        .call(&everything, "get-sum", &json!({"a": 2, "b": 3}), timeout)
        .await
        .expect("sum");
    assert!(sum.to_string().contains('5'), "{sum}");
    let image = mcp
        .call(&everything, "get-tiny-image", &json!({}), timeout)
        .await
        .expect("image");
    assert!(
        image.as_str().is_some_and(|t| t.contains("[image image/png")),
        "{image}"
    );
}

#[tokio::test]
async fn mcp_urls_obey_the_outbound_rules() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let strict = Mcp::new(policy(false), Duration::from_secs(60)).unwrap();
    let refused = strict.tools(&source(&server.url)).await.unwrap_err();
    assert!(
        refused.to_string().contains("refused"),
        "loopback without the dev flag: {refused}"
    );
    let dev = client(Duration::from_secs(60));
    for (url, says) in [
        ("https://169.254.169.254/mcp", "metadata"),
        ("https://[fd00:ec2::254]/mcp", "metadata"),
        ("https://10.1.2.3/mcp", "private"),
    ] {
        let refused = dev.tools(&source(url)).await.unwrap_err();
        assert!(refused.to_string().contains(says), "{url}: {refused}");
    }
    let redirect = ToolServer::start(ToolMode::Redirect(server.url.clone())).await;
    let redirected = dev.tools(&source(&redirect.url)).await.unwrap_err();
    assert!(matches!(redirected, McpError::Connect(_)), "{redirected:?}");
    assert!(
        !server.calls().iter().any(|c| c.event == "rpc"),
        "the redirect's target is never called"
    );
    let mut listed_only = source(&server.url);
    listed_only.allowed_tools = Some(vec!["lookup_order".into()]);
    let tools = dev.tools(&listed_only).await.expect("listed");
    assert_eq!(
        names(&tools),
        ["orders__lookup_order"],
        "allowed_tools keeps only those"
    );
}

// --- runs ---------------------------------------------------------------------------------

/// The tests' scheduler settings with MCP servers on loopback and sealed auth headers.
fn mcp_settings() -> SchedulerSettings {
    let mut settings = test_config();
    settings.runs.policy.allow_loopback = true;
    settings.runs.seal_key = Some(Arc::new(SealKey::from_hex(KEY).unwrap()));
    settings
}

/// Gives `agent` the MCP source `name` at `url` under `approval`, its auth header sealed.
async fn add_source(client: &Client, agent: Uuid, name: &str, url: &str, approval: &str, auth: Option<&str>) {
    let sealed = auth.map(|a| SealKey::from_hex(KEY).unwrap().seal(agent, a).unwrap());
    client
        .execute(
            "INSERT INTO agent_tool_sources (agent_id, name, url, approval, auth_header, timeout_ms)
             VALUES ($1, $2, $3, $4, $5, 10000)",
            &[&agent, &name, &url, &approval, &sealed],
        )
        .await
        .unwrap();
}

async fn task_state(client: &Client) -> (String, Option<String>) {
    let row = client
        .query_one("SELECT status, result FROM agent_tasks", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn waiting(client: &Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT tool_call_id, state FROM agent_run_calls WHERE state <> 'started' ORDER BY tool_call_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Decides call `call` as the runs API does (its statement is tested in `approvals`): the
/// decision, and the run and task resumed when none waits.
async fn decide(client: &Client, call: &str, decision: &str) {
    client
        .batch_execute(&format!(
            "INSERT INTO agent_run_decisions (run_id, tool_call_id, decision) SELECT id, '{call}', '{decision}' FROM agent_runs;
             UPDATE agent_runs SET status = 'running', paused_until = NULL;
             UPDATE agent_tasks SET status = 'pending', scheduled_for = now();"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_run_calls_the_read_only_mcp_tool_at_once_and_pauses_on_the_destructive_one_until_approved() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let server = PyMcp::start(PyMcpOptions {
        token: Some("run-token".into()),
        ..PyMcpOptions::default()
    })
    .await;
    add_source(
        &client,
        agent,
        "shop",
        &server.url,
        "destructive",
        Some("Bearer run-token"),
    )
    .await;
    seed_tasks(&client, agent, 1, "refund order 7 if it is paid", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![
                ("shop__lookup_order", json!({"order_id": "7"})),
                ("shop__refund_order", json!({"order_id": "7"})),
            ]),
            Step::Answer("Order 7 refunded."),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        mcp_settings(),
    );

    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.awaiting_approval, 1, "{summary:?}");
    assert_eq!(task_state(&client).await.0, "awaiting_approval");
    assert_eq!(server.tool_runs("lookup_order").len(), 1, "read-only: made at once");
    assert!(server.tool_runs("refund_order").is_empty(), "destructive: waits");
    assert_eq!(
        waiting(&client).await,
        [("call_0_1".to_string(), "awaiting_approval".to_string())]
    );
    let offered: Vec<String> = model.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(offered.contains(&"shop__refund_order".to_string()), "{offered:?}");

    decide(&client, "call_0_1", "approved").await;
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert_eq!(
        task_state(&client).await,
        ("completed".into(), Some("Order 7 refunded.".into()))
    );
    let refunds = server.tool_runs("refund_order");
    assert_eq!(refunds.len(), 1, "the approved call is made once");
    assert_eq!(refunds[0].arguments, Some(json!({"order_id": "7"})));
    assert!(server
        .calls()
        .iter()
        .filter(|c| c.event == "rpc")
        .all(|c| c.authorization.as_deref() == Some("Bearer run-token")));
}

#[tokio::test]
async fn an_mcp_tool_error_and_an_unknown_tool_are_results_the_model_sees_and_the_run_ends_normally() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    add_source(&client, agent, "shop", &server.url, "never", None).await;
    seed_tasks(&client, agent, 1, "try", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("shop__flaky", json!({})), ("shop__nothing", json!({}))]),
            Step::Answer("It failed."),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        mcp_settings(),
    );
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    let results: Vec<String> = client
        .query(
            "SELECT content FROM messages WHERE role = 'tool' ORDER BY tool_call_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let flaky: Value = serde_json::from_str(&results[0]).unwrap();
    assert!(
        flaky["error"].as_str().unwrap().contains("reported an error"),
        "{flaky}"
    );
    let unknown: Value = serde_json::from_str(&results[1]).unwrap();
    assert!(
        unknown["error"].as_str().unwrap().contains("no tool named"),
        "{unknown}"
    );
}

#[tokio::test]
async fn a_crash_while_a_destructive_mcp_call_is_in_flight_pauses_the_run_with_an_unknown_outcome_without_repeating_it()
{
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    add_source(&client, agent, "shop", &server.url, "never", None).await;
    seed_tasks(&client, agent, 1, "refund slowly", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("shop__slow_refund", json!({"order_id": "9", "seconds": 20}))]),
            Step::Answer("Skipped the refund."),
        ],
        latency: Duration::ZERO,
    })
    .await;

    // The real binary, killed while slow_refund runs on the server.
    let runtime = RuntimeApi::start().await;
    let mut child = scheduler_process(
        &runtime,
        &db,
        &[
            ("MODEL_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", model.openai_url.as_str()),
            ("OPENAI_MODEL", "gpt-test"),
            ("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
            ("AGENT_MCP_ENCRYPTION_KEY", KEY),
        ],
    );
    let invocation = scheduled_invocation(&runtime, Duration::from_secs(3));
    let killer = async {
        let in_flight = server
            .wait_for_call(Duration::from_secs(30), |c| c.ran("slow_refund"))
            .await;
        assert!(in_flight, "slow_refund never started:\n{}", server.log());
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
    };
    tokio::select! {
        result = invocation => panic!("the invocation finished before the kill: {result:?}"),
        () = killer => {}
    }
    let started: String = client
        .query_one("SELECT state FROM agent_run_calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, "started", "marked before it was sent");

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
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        mcp_settings(),
    );
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.awaiting_approval, 1, "{summary:?}");
    assert_eq!(
        waiting(&client).await,
        [("call_0_0".to_string(), "outcome_unknown".to_string())]
    );
    assert_eq!(server.tool_runs("slow_refund").len(), 1, "not repeated after the crash");

    // A person skips it: the model is told, the run ends, the call is still not repeated.
    decide(&client, "call_0_0", "rejected").await;
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert_eq!(task_state(&client).await.1.as_deref(), Some("Skipped the refund."));
    let result: String = client
        .query_one("SELECT content FROM messages WHERE role = 'tool'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(result, SKIPPED);
    assert_eq!(server.tool_runs("slow_refund").len(), 1);
}

#[tokio::test]
async fn a_crash_while_an_idempotent_mcp_call_is_in_flight_makes_it_again() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    add_source(&client, agent, "shop", &server.url, "never", None).await;
    seed_tasks(&client, agent, 1, "update", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("shop__idempotent_update", json!({"key": "a", "value": "b"}))]),
            Step::Answer("Updated."),
        ],
        latency: Duration::ZERO,
    })
    .await;
    // As a crash leaves it: the step stored, the call without a result and not marked (an
    // idempotent call is never marked started).
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        mcp_settings(),
    );
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    let marks: i64 = client
        .query_one("SELECT count(*) FROM agent_run_calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        marks, 0,
        "an idempotent call needs no mark: it is made again after a crash"
    );
    client
        .batch_execute(
            "DELETE FROM messages WHERE role = 'tool' OR (role = 'assistant' AND tool_calls IS NULL);
             UPDATE agent_runs SET status = 'running';
             UPDATE agent_tasks SET status = 'pending', scheduled_for = now(), result = NULL",
        )
        .await
        .unwrap();
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert_eq!(server.tool_runs("idempotent_update").len(), 2, "made again");
}

#[tokio::test]
async fn no_pooler_client_or_transaction_is_held_while_an_mcp_server_works() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let inspector = db.direct().await;
    let agent = seed_agent(&client).await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    add_source(&client, agent, "shop", &server.url, "never", None).await;
    seed_tasks(&client, agent, 1, "refund slowly", "", "").await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("shop__slow_refund", json!({"order_id": "3", "seconds": 2}))]),
            Step::Answer("Refunded."),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let s = scheduler_on(
        &db,
        Arc::new(openai_model_at(&model.openai_url, Duration::from_secs(5))),
        mcp_settings(),
    );
    let run = invoke(&s, schedule_event(), Duration::from_secs(30));
    let observe = async {
        let calling = server
            .wait_for_call(Duration::from_secs(10), |c| c.ran("slow_refund"))
            .await;
        assert!(calling, "the MCP tool was called");
        (s.db.status(), db.server_sessions(&inspector).await)
    };
    let (summary, (pool, sessions)) = tokio::join!(run, observe);
    assert_eq!(summary.unwrap().completed, 1);
    assert_eq!(pool.available, pool.size, "every client back in the pool: {pool:?}");
    assert!(
        !sessions
            .iter()
            .any(|s| s.state.starts_with("idle in transaction") || s.state == "active"),
        "no open transaction or running statement during the MCP call: {sessions:?}"
    );
}
