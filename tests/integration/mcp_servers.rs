//! The real MCP servers the tests run (issue 27) work: raw JSON-RPC over Streamable HTTP against
//! server-everything and tests/mcp/server.py (initialize, `tools/list` following `nextCursor`,
//! `tools/call`, session expiry, `list_changed` on the GET stream, bearer auth, a server going
//! down), each listening on 127.0.0.1 only.

use std::time::Duration;

use integration_tests::mcp_servers::{listening_addresses, Everything, PyMcp, PyMcpOptions};
use serde_json::{json, Value};

const ACCEPT: &str = "application/json, text/event-stream";
const LIMIT: Duration = Duration::from_secs(20);

/// The JSON-RPC messages of an answer: a JSON body (one message or a batch), or an SSE stream's
/// `data:` events (empty priming events skipped).
fn messages(content_type: &str, body: &str) -> Vec<Value> {
    if content_type.starts_with("application/json") {
        return match serde_json::from_str(body).expect("JSON body") {
            Value::Array(batch) => batch,
            one => vec![one],
        };
    }
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type}"
    );
    sse_events(body)
        .iter()
        .filter(|data| !data.trim().is_empty())
        .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
        .collect()
}

/// The `data` of each complete SSE event in `text` (multi-line data joined by `\n`).
fn sse_events(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A client session spoken by hand.
struct Session {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    id: Option<String>,
    protocol: String,
    next: u64,
}

impl Session {
    fn new(url: &str, token: Option<&str>) -> Session {
        Session {
            http: reqwest::Client::new(),
            url: url.to_string(),
            token: token.map(str::to_string),
            id: None,
            protocol: String::new(),
            next: 1,
        }
    }

    /// initialize, then `notifications/initialized`.
    async fn open(url: &str, token: Option<&str>) -> Session {
        let mut session = Session::new(url, token);
        let response = session
            .post(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "integration-tests", "version": "1"}
                }
            }))
            .await;
        assert_eq!(response.status(), 200, "initialize");
        session.id = Some(
            response
                .headers()
                .get("mcp-session-id")
                .expect("Mcp-Session-Id on the initialize answer")
                .to_str()
                .expect("ascii")
                .to_string(),
        );
        let answer = Self::answer(response, 0).await;
        let result = &answer["result"];
        session.protocol = result["protocolVersion"].as_str().expect("protocolVersion").to_string();
        assert!(
            ["2025-03-26", "2025-06-18", "2025-11-25"].contains(&session.protocol.as_str()),
            "negotiated {}",
            session.protocol
        );
        assert!(result["capabilities"]["tools"].is_object(), "{result}");
        let initialized = session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(initialized.status(), 202, "notifications/initialized");
        session
    }

    fn headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut request = request.timeout(LIMIT);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        if !self.protocol.is_empty() {
            request = request.header("mcp-protocol-version", &self.protocol);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        self.headers(self.http.post(&self.url))
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body.to_string())
            .send()
            .await
            .expect("the MCP server answers")
    }

    /// The response to request `id` among the answer's messages.
    async fn answer(response: reqwest::Response, id: u64) -> Value {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response.text().await.expect("body");
        messages(&content_type, &body)
            .into_iter()
            .find(|m| m["id"] == json!(id) && (m.get("result").is_some() || m.get("error").is_some()))
            .unwrap_or_else(|| panic!("no response to {id} in {body}"))
    }

    /// A request: its HTTP status and, on 200, the JSON-RPC response.
    async fn try_request(&mut self, method: &str, params: Value) -> (u16, Value) {
        let id = self.next;
        self.next += 1;
        let response = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let status = response.status().as_u16();
        if status != 200 {
            return (status, Value::Null);
        }
        (status, Self::answer(response, id).await)
    }

    /// A request's result (panics on an error).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let (status, answer) = self.try_request(method, params).await;
        assert_eq!(status, 200, "{method}");
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Every tool, following `nextCursor`; and how many pages that took.
    async fn list_tools(&mut self) -> (Vec<Value>, usize) {
        let (mut tools, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await;
            pages += 1;
            tools.extend(page["tools"].as_array().expect("tools").iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return (tools, pages),
            }
            assert!(pages < 50, "tools/list does not end");
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

fn tool<'a>(tools: &'a [Value], name: &str) -> &'a Value {
    tools
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name} in {tools:?}"))
}

fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect()
}

#[tokio::test]
async fn mcp_servers_everything_lists_and_calls_tools_on_loopback_only() {
    let server = Everything::start().await;
    assert_eq!(listening_addresses(server.port), ["127.0.0.1"], "{}", server.log());

    let mut session = Session::open(&server.url, None).await;
    let (tools, _) = session.list_tools().await;
    let echo = tool(&tools, "echo");
    assert_eq!(echo["annotations"]["readOnlyHint"], true);
    assert_eq!(echo["annotations"]["destructiveHint"], false);
    let gzip = tool(&tools, "gzip-file-as-resource");
    assert_eq!(gzip["annotations"]["readOnlyHint"], false);
    assert_eq!(gzip["annotations"]["openWorldHint"], true);

    let echoed = session.call("echo", json!({"message": "hi there"})).await;
    assert_eq!(text_of(&echoed), "Echo: hi there");
    let sum = session.call("get-sum", json!({"a": 2, "b": 3})).await;
    assert!(text_of(&sum).contains('5'), "{sum}");
    let structured = session
        .call("get-structured-content", json!({"location": "New York"}))
        .await;
    assert!(structured["structuredContent"].is_object(), "{structured}");

    // server-everything answers an unknown session id 400 (not the spec's 404).
    let mut stranger = Session::new(&server.url, None);
    stranger.id = Some("not-a-session".into());
    let (status, _) = stranger.try_request("tools/list", json!({})).await;
    assert!((400..500).contains(&status), "unknown session: {status}");
}

#[tokio::test]
async fn mcp_servers_python_pages_tools_calls_them_and_records_the_calls() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    assert_eq!(listening_addresses(server.port), ["127.0.0.1"], "{}", server.log());

    let mut session = Session::open(&server.url, None).await;
    let (tools, pages) = session.list_tools().await;
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "lookup_order",
            "refund_order",
            "slow_refund",
            "flaky",
            "idempotent_update",
            "slow_lookup"
        ]
    );
    assert_eq!(pages, 3, "pages of 2");
    assert_eq!(tool(&tools, "slow_lookup")["annotations"]["readOnlyHint"], true);
    assert_eq!(tool(&tools, "lookup_order")["annotations"]["readOnlyHint"], true);
    assert!(tool(&tools, "refund_order").get("annotations").is_none());
    assert_eq!(tool(&tools, "slow_refund")["annotations"]["destructiveHint"], true);
    let update = &tool(&tools, "idempotent_update")["annotations"];
    assert_eq!(
        (update["idempotentHint"].clone(), update["readOnlyHint"].clone()),
        (json!(true), json!(false))
    );

    let looked = session.call("lookup_order", json!({"order_id": "A-1"})).await;
    assert_eq!(looked["structuredContent"], json!({"order": "A-1", "status": "paid"}));
    assert!(text_of(&looked).contains("A-1"));
    let refunded = session
        .call("refund_order", json!({"order_id": "A-1", "amount": 5}))
        .await;
    assert_ne!(refunded["isError"], true, "{refunded}");
    let slow = session.call("slow_lookup", json!({"q": "run-1", "delay_ms": 0})).await;
    assert_eq!(slow["structuredContent"], json!({"q": "run-1", "answer": "found"}));
    let flaky = session.call("flaky", json!({})).await;
    assert_eq!(flaky["isError"], true, "{flaky}");
    let (_, unknown) = session
        .try_request("tools/call", json!({"name": "no_such_tool", "arguments": {}}))
        .await;
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");

    let calls = server.calls();
    let initialize = calls
        .iter()
        .find(|c| c.method.as_deref() == Some("initialize"))
        .expect("initialize recorded");
    assert_eq!(initialize.session, None);
    assert!(calls
        .iter()
        .any(|c| c.event == "tool_finished" && c.tool.as_deref() == Some("slow_lookup")));
    let refunds = server.tool_runs("refund_order");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].arguments, Some(json!({"order_id": "A-1", "amount": 5})));
    assert_eq!(refunds[0].session, session.id);
    let posted = calls
        .iter()
        .find(|c| c.event == "rpc" && c.tool.as_deref() == Some("refund_order"))
        .expect("the tools/call recorded");
    assert_eq!(posted.protocol_version.as_deref(), Some(session.protocol.as_str()));
}

#[tokio::test]
async fn mcp_servers_python_expired_session_answers_404() {
    let server = PyMcp::start(PyMcpOptions {
        page_size: Some(10),
        ..Default::default()
    })
    .await;
    let mut session = Session::open(&server.url, None).await;
    let (tools, pages) = session.list_tools().await;
    assert_eq!((tools.len(), pages), (6, 1));

    assert_eq!(server.expire_sessions().await, 1);
    let (status, _) = session.try_request("tools/list", json!({})).await;
    assert_eq!(status, 404, "an expired session");

    let mut again = Session::open(&server.url, None).await;
    assert_ne!(again.id, session.id);
    let result = again.call("lookup_order", json!({"order_id": "B"})).await;
    assert_eq!(result["structuredContent"]["order"], "B");
}

#[tokio::test]
async fn mcp_servers_python_sends_list_changed_on_the_get_stream() {
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let mut session = Session::open(&server.url, None).await;
    let (before, _) = session.list_tools().await;
    assert!(before.iter().all(|t| t["name"] != "late_tool"));

    let mut stream = session
        .headers(session.http.get(&session.url))
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status(), 200);
    let sid = session.id.clone();
    assert!(
        server
            .wait_for_call(LIMIT, |c| c.event == "http"
                && c.raw["http"] == "GET"
                && c.session == sid)
            .await,
        "the GET stream reached the server"
    );

    let notified = server.add_tool().await;
    assert_eq!(notified, [session.id.clone().unwrap()]);
    let mut seen = String::new();
    let got = tokio::time::timeout(LIMIT, async {
        loop {
            let chunk = stream.chunk().await.expect("stream").expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if sse_events(&seen)
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .any(|m| m["method"] == "notifications/tools/list_changed")
            {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no list_changed on the GET stream: {seen}");

    let (after, _) = session.list_tools().await;
    assert_eq!(after.len(), 7);
    assert_eq!(tool(&after, "late_tool")["annotations"]["readOnlyHint"], true);
    let late = session.call("late_tool", json!({})).await;
    assert_eq!(late["isError"], false);
}

#[tokio::test]
async fn mcp_servers_python_requires_the_bearer_token_it_was_given() {
    let token = "mcp-test-token";
    let server = PyMcp::start(PyMcpOptions {
        token: Some(token.into()),
        ..Default::default()
    })
    .await;

    let (status, _) = Session::new(&server.url, None)
        .try_request("initialize", json!({}))
        .await;
    assert_eq!(status, 401, "no token");
    let (status, _) = Session::new(&server.url, Some("wrong"))
        .try_request("initialize", json!({}))
        .await;
    assert_eq!(status, 401, "a wrong token");

    let mut session = Session::open(&server.url, Some(token)).await;
    session.call("refund_order", json!({"order_id": "C"})).await;
    let calls = server.calls();
    assert_eq!(calls.iter().filter(|c| c.unauthorized).count(), 2);
    let call = calls
        .iter()
        .find(|c| c.event == "rpc" && c.tool.as_deref() == Some("refund_order"))
        .expect("recorded");
    assert_eq!(call.authorization.as_deref(), Some("Bearer mcp-test-token"));
    assert!(!call.unauthorized);
}

#[tokio::test]
async fn mcp_servers_python_goes_down_mid_call_and_comes_back_without_its_sessions() {
    let mut server = PyMcp::start(PyMcpOptions::default()).await;
    let mut session = Session::open(&server.url, None).await;
    let old_id = session.id.clone();

    let slow = {
        let body = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
            "params": {"name": "slow_refund", "arguments": {"order_id": "D", "seconds": 60}}});
        let request = session
            .headers(session.http.post(&session.url))
            .timeout(Duration::from_secs(90))
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body.to_string());
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) => response.text().await.map(|_| ()),
                Err(e) => Err(e),
            }
        })
    };
    assert!(
        server.wait_for_call(LIMIT, |c| c.ran("slow_refund")).await,
        "slow_refund started"
    );
    let first_pid = server.tool_runs("slow_refund")[0].pid;

    server.stop();
    assert!(!server.running());
    let cut = tokio::time::timeout(LIMIT, slow)
        .await
        .expect("the call ends")
        .expect("task");
    assert!(cut.is_err(), "the in-flight call fails when the server dies");
    assert!(server.calls().iter().all(|c| c.event != "tool_finished"));
    assert!(reqwest::Client::new().post(&server.url).send().await.is_err(), "down");

    server.restart().await;
    assert!(server.running());
    let (status, _) = session.try_request("tools/list", json!({})).await;
    assert_eq!(status, 404, "the old session is gone");
    let mut fresh = Session::open(&server.url, None).await;
    assert_ne!(fresh.id, old_id);
    fresh.call("refund_order", json!({"order_id": "D"})).await;
    let refund = &server.tool_runs("refund_order")[0];
    assert_ne!(refund.pid, first_pid, "a new process");
}
