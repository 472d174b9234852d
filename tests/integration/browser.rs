//! The reference web client (web/) in a real browser: headless Chromium driven over the DevTools
//! protocol against `scripts/dev` itself (its stack settings, seeded agent, `cargo lambda watch`
//! serving the functions, the client on its own origin, replies streamed through `chat-stream`). What the original frontend's checklist
//! asked, read from the browser's own network events; and, with the tool-calling model stand-in
//! behind `scripts/dev`, a tool call that waits for approval: its buttons, shown live and after a
//! reload, and Approve calling the approve route. Screenshots of a failure go to
//! `target/browser-failures/`.

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::browser::{Browser, Page};
use integration_tests::cargo_lambda::{self, path_with_venv, workspace};
use integration_tests::fakes::{Step, ToolMode, ToolModel, ToolScript, ToolServer};
use serde_json::{json, Value};

use crate::helpers::{eventually, eventually_blocking, free_port, TestDb};

/// `scripts/dev` on free ports against a fresh database, in its own process group (it starts
/// `cargo lambda watch`, the functions and a static file server): the whole group is stopped
/// when dropped.
struct Dev {
    port: u16,
    web_port: u16,
    log: String,
    child: std::process::Child,
}

impl Dev {
    /// `scripts/dev`, its output in `target/<log>`.
    fn start(db: &TestDb, log: &str) -> Dev {
        Self::start_with(db, log, &[])
    }

    /// `scripts/dev` with these variables set too (the functions under its watch see them).
    fn start_with(db: &TestDb, log: &str, vars: &[(&str, &str)]) -> Dev {
        let port = free_port();
        let web_port = std::iter::repeat_with(free_port)
            .find(|p| *p != port)
            .expect("a second free port");
        let ws_port = std::iter::repeat_with(free_port)
            .find(|p| *p != port && *p != web_port)
            .expect("a third free port");
        let log_name = log.to_string();
        let log = std::fs::File::create(workspace().join("target").join(log)).expect("log file");
        let child = std::process::Command::new(workspace().join("scripts/dev"))
            .current_dir(workspace())
            .env("PATH", path_with_venv())
            .env("DATABASE_URL", &db.pooled_url)
            .env("DIRECT_URL", &db.direct_url)
            .env("DEV_PORT", port.to_string())
            .env("DEV_WEB_PORT", web_port.to_string())
            // Live updates: the local WebSocket gateway on a free port too.
            .env("DEV_WS_PORT", ws_port.to_string())
            // The local model takes a second and streams word by word over it.
            .env("LOCAL_MODEL_LATENCY_MS", "1000")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("scripts/dev starts");
        Dev {
            port,
            web_port,
            log: log_name,
            child,
        }
    }

    /// Waits until the client's files are served and the functions answer (cargo lambda watch
    /// starts each function on its first request).
    async fn ready(&self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let config = format!("http://127.0.0.1:{}/config.json", self.web_port);
        let served = eventually(Duration::from_secs(240), || async {
            http.get(&config).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            served,
            "scripts/dev did not serve the web client (see target/{})",
            self.log
        );
        for path in ["/health/api/health", "/api/api/agents", "/chat/api/agents/chat"] {
            let url = self.functions(path);
            let answered = eventually(Duration::from_secs(240), || async {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() != 502 && r.status() != 504)
            })
            .await;
            assert!(answered, "{url} did not answer (see target/{})", self.log);
        }
    }

    fn functions(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url{path}", self.port)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let group = i32::try_from(self.child.id()).unwrap_or(0);
        if group > 0 {
            // SAFETY: signalling a process group this test created.
            unsafe {
                libc::killpg(group, libc::SIGTERM);
            }
            // Until the whole group has exited on SIGTERM (its leader reaped as it goes), bounded.
            let leader = &mut self.child;
            eventually_blocking(Duration::from_secs(3), || {
                let _ = leader.try_wait();
                // SAFETY: signal 0 sends nothing; it fails once no process of the group is left.
                unsafe { libc::killpg(group, 0) != 0 }
            });
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// `cargo lambda invoke scheduler` with the sample scheduled event, through `scripts/dev`'s watch.
async fn run_the_scheduler(dev: &Dev) -> Result<String, String> {
    let (ok, stdout, stderr) =
        cargo_lambda::invoke(dev.port, "scheduler", &["--data-file", "events/schedule.json"]).await;
    if ok {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

const READY: &str = "document.body.dataset.ready === 'true'";

/// The usage line's text once loaded (`null` before).
const USAGE_LINE: &str =
    "(() => { const u = document.getElementById('usage'); return u.dataset.loaded === 'true' ? u.textContent : null; })()";

/// Marks the current document, so waiting for `READY` waits for the next one (a reload returns
/// before the new document has loaded).
async fn mark_stale(page: &Page<'_>) -> Result<(), String> {
    page.eval("document.body.dataset.ready = 'stale', true")
        .await
        .map(|_| ())
}

/// `n` replies shown whole (a streamed one is marked done when its `done` event came).
fn assistant_replies(n: usize) -> String {
    format!("document.querySelectorAll('#messages li.assistant[data-done=true]').length === {n}")
}

/// Records the length of the reply being written each time the page changes it.
const WATCH_REPLY: &str = "window.replyLengths = []; new MutationObserver(() => { \
    const li = [...document.querySelectorAll('#messages li.assistant')].pop(); \
    if (li) window.replyLengths.push(li.textContent.length); \
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); true";

/// The names of the page's globals whose value holds a JWT (`eyJ…` header and payload).
const TOKEN_GLOBALS: &str = r"Object.getOwnPropertyNames(window).filter(k => {
    try { const v = window[k]; const text = typeof v === 'string' ? v : JSON.stringify(v) ?? '';
          return /eyJ[\w-]+\.eyJ/.test(text); }
    catch (e) { return false; } })";

async fn send_message(page: &Page<'_>, text: &str, replies_after: usize) -> Result<(), String> {
    // The page takes one message at a time: the box is enabled again once the previous reply's
    // stream has ended (a little after its `done` event marked it done).
    page.wait_for("!document.getElementById('message').disabled", Duration::from_secs(30))
        .await?;
    page.type_into("#message", text).await?;
    page.click("#send button").await?;
    page.wait_for(&assistant_replies(replies_after), Duration::from_secs(60))
        .await
}

/// The texts of the messages on the page, in order.
async fn shown_messages(page: &Page<'_>) -> Result<Vec<String>, String> {
    let v = page
        .eval("[...document.querySelectorAll('#messages li')].map(li => li.className + ': ' + li.textContent)")
        .await?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

async fn checklist(dev: &Dev, page: &Page<'_>) -> Result<(), String> {
    let web = format!("http://127.0.0.1:{}/", dev.web_port);
    page.navigate(&web).await?;
    page.wait_for(READY, Duration::from_secs(180)).await?;
    // It works under its own Content-Security-Policy (no inline script, calls only to the
    // backend), and the access token is in no global another script could read.
    let policy = page
        .eval("document.querySelector('meta[http-equiv=Content-Security-Policy]')?.content ?? ''")
        .await?;
    let policy = policy.as_str().unwrap_or_default();
    if !policy.contains("script-src 'self'") || !policy.contains("default-src 'none'") {
        return Err(format!("the page's Content-Security-Policy is {policy:?}"));
    }
    let exposed = page.eval(TOKEN_GLOBALS).await?;
    if exposed.as_array().is_none_or(|a| !a.is_empty()) {
        return Err(format!("globals holding an access token: {exposed}"));
    }
    // Today's usage line, read from GET /api/usage?days=1 at start.
    let usage = page.eval(USAGE_LINE).await?;
    if !usage
        .as_str()
        .is_some_and(|t| t.starts_with("Today: ") && t.contains("resets"))
    {
        return Err(format!("the usage line shows {usage}"));
    }

    // "Chat works after a hard refresh": send "Olá" after Ctrl-Shift-R.
    mark_stale(page).await?;
    page.hard_reload().await?;
    page.wait_for(READY, Duration::from_secs(60)).await?;
    page.eval(WATCH_REPLY).await?;
    send_message(page, "Olá", 1).await?;
    let shown = shown_messages(page).await?;
    if shown.len() != 2 || shown[0] != "user: Olá" || !shown[1].starts_with("assistant: ") {
        return Err(format!("after Olá the page shows {shown:?}"));
    }
    // The first words were on screen before the whole reply: the page showed it growing.
    let lengths = page.eval("window.replyLengths").await?;
    let lengths: Vec<u64> = lengths
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let last = lengths.last().copied().unwrap_or(0);
    if !lengths.iter().any(|n| *n > 0 && *n < last) {
        return Err(format!(
            "the reply was not shown as it was written: lengths {lengths:?}"
        ));
    }

    // "5 consecutive messages all 200 with the same conversationId".
    for i in 1..=5 {
        send_message(page, &format!("message {i}"), i + 1).await?;
    }
    let chats: Vec<_> = page
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && (r.url.ends_with("/api/agents/chat") || r.url.ends_with("/api/agents/chat/stream"))
        })
        .collect();
    if chats.len() != 6 {
        return Err(format!("6 chat requests expected, the browser sent {chats:?}"));
    }
    let bodies: Vec<Value> = chats
        .iter()
        .map(|r| serde_json::from_str(r.body.as_deref().unwrap_or("null")).unwrap_or(Value::Null))
        .collect();
    if let Some(bad) = chats.iter().find(|r| r.status != Some(200)) {
        return Err(format!("a chat request was not answered 200: {bad:?}"));
    }
    // "The payload has no `context` field and carries `conversationId` after the first message."
    if let Some(with_context) = bodies.iter().find(|b| b.get("context").is_some()) {
        return Err(format!("a request carried `context`: {with_context}"));
    }
    let conversation = bodies[1]["conversationId"]
        .as_str()
        .ok_or("the second message has no conversationId")?;
    if bodies[1..].iter().any(|b| b["conversationId"] != conversation) {
        return Err(format!("not one conversationId: {bodies:?}"));
    }
    let before_reload = shown_messages(page).await?;
    // The usage line is read again after each reply: two page loads and six replies.
    let usage_reads = || {
        page.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.url.ends_with("/api/usage?days=1") && r.status == Some(200))
            .count()
    };
    if !eventually(Duration::from_secs(15), || async { usage_reads() >= 8 }).await {
        return Err(format!("usage read {} times, not after each reply", usage_reads()));
    }

    // A reload shows the conversation again, read back from the API.
    mark_stale(page).await?;
    page.navigate(&web).await?;
    page.wait_for(READY, Duration::from_secs(60)).await?;
    page.wait_for(
        "document.querySelectorAll('#messages li').length === 12",
        Duration::from_secs(30),
    )
    .await?;
    let after_reload = shown_messages(page).await?;
    if after_reload != before_reload {
        return Err(format!("after a reload {after_reload:?}, before {before_reload:?}"));
    }

    // A task created and approved in the page, then a scheduler invocation: its result shown.
    page.type_into("#task-prompt", "Browser task").await?;
    page.click("#create-task button").await?;
    let item = "[...document.querySelectorAll('#task-list li')].find(li => li.querySelector('.task-prompt').textContent === 'Browser task')";
    page.wait_for(
        &format!("!!{item}?.querySelector('[data-action=approve]')"),
        Duration::from_secs(30),
    )
    .await?;
    page.eval(&format!("{item}.querySelector('[data-action=approve]').click(), true"))
        .await?;
    page.wait_for(
        &format!("{item}?.dataset.approval === 'approved'"),
        Duration::from_secs(30),
    )
    .await?;
    let summary = run_the_scheduler(dev).await?;
    page.wait_for(
        &format!("{item}?.dataset.status === 'completed' && !!{item}.querySelector('.task-result')"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("{e} (scheduler said {summary})"))?;
    Ok(())
}

/// One browser test at a time: each runs a whole `scripts/dev` (its `migrate` sets the cluster's
/// role passwords, which two at once race on) and a Chromium, too much for two cores at once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_chats_after_a_hard_reload_keeps_its_conversation_and_shows_an_approved_tasks_result() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let db = TestDb::new().await;
    let dev = Dev::start(&db, "browser-dev.log");
    dev.ready().await;

    let browser = Browser::launch().await.expect("headless chromium starts");
    let page = browser.new_page().await.expect("a page");
    if let Err(e) = checklist(&dev, &page).await {
        let dir = workspace().join("target/browser-failures");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join("web-client.png");
        let saved = page.screenshot(&shot).await;
        let requests = page.requests();
        let last: Vec<_> = requests.iter().rev().take(20).rev().collect();
        panic!(
            "{e}\nscreenshot: {} ({saved:?}); the page's last requests: {last:?}",
            shot.display()
        );
    }
}

// ---- tool calls: a call that waits for a person's approval ------------------------------------

/// The demo agent `scripts/dev` seeds.
const DEMO_AGENT: &str = "00000000-0000-4000-8000-000000000001";

/// The approve button of call `call_0_0` (the tool-calling stand-in's first call).
const APPROVE: &str =
    "document.querySelector('#messages .tool-call[data-call-id=call_0_0] .tool-approval button[data-action=approve]')";

async fn approval(dev: &Dev, page: &Page<'_>, tool: &ToolServer) -> Result<(), String> {
    let web = format!("http://127.0.0.1:{}/", dev.web_port);
    page.navigate(&web).await?;
    page.wait_for(READY, Duration::from_secs(180)).await?;
    page.type_into("#message", "refund order A-1").await?;
    page.click("#send button").await?;
    // The streamed tool_call is shown as its tool's name and arguments, with the buttons the
    // stream's awaiting_approval asked for.
    page.wait_for(&format!("!!{APPROVE}"), Duration::from_secs(60)).await?;
    let block = page
        .eval("(() => { const b = document.querySelector('#messages .tool-call[data-call-id=call_0_0]'); return [b.querySelector('.tool-name').textContent, b.querySelector('.tool-arguments').textContent]; })()")
        .await?;
    if block[0] != "refund" || !block[1].as_str().is_some_and(|a| a.contains("\"order\":\"A-1\"")) {
        return Err(format!("the call is shown as {block}"));
    }
    // A page loaded while the run is paused shows the call and its buttons again, read back
    // from the messages and the run.
    mark_stale(page).await?;
    page.navigate(&web).await?;
    page.wait_for(READY, Duration::from_secs(60)).await?;
    page.wait_for(&format!("!!{APPROVE}"), Duration::from_secs(30)).await?;
    if !tool.hits().is_empty() {
        return Err("the tool was called before anyone approved it".into());
    }
    page.eval(&format!("{APPROVE}.click(), true")).await?;
    page.wait_for(
        "document.querySelector('#messages .tool-approval[data-call-id=call_0_0]')?.dataset.decision === 'approved'",
        Duration::from_secs(30),
    )
    .await?;
    let approvals: Vec<_> = page
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.url.contains("/api/runs/") && r.url.ends_with("/tool-calls/call_0_0/approve")
        })
        .collect();
    if approvals.len() != 1 || approvals[0].status != Some(200) {
        return Err(format!("one approve request answered 200 expected: {approvals:?}"));
    }
    // The run's view was read after the decision (it says what the run does next).
    page.wait_for(
        "document.querySelector('#messages .tool-approval[data-call-id=call_0_0]')?.dataset.runStatus === 'running'",
        Duration::from_secs(10),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_waiting_for_approval_shows_its_buttons_and_approving_calls_the_approve_route() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let model = ToolModel::start(ToolScript {
        steps: vec![
            Step::Call(vec![("refund", json!({"order": "A-1", "amount": 30}))]),
            Step::Answer("refunded"),
        ],
        latency: Duration::ZERO,
    })
    .await;
    let tool = ToolServer::start(ToolMode::Echo).await;
    let db = TestDb::new().await;
    let dev = Dev::start_with(
        &db,
        "browser-tools-dev.log",
        &[
            ("MODEL_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", &model.openai_url),
            ("OPENAI_API_KEY", "browser-test"),
            ("OPENAI_MODEL", "tool-model"),
            ("AGENT_TOOL_SIGNING_SECRET", "browser-tool-signing-secret"),
            ("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
        ],
    );
    dev.ready().await;
    // The demo agent (seeded by then: the client's config is written after the seed) gets a
    // tool that needs approval.
    db.direct()
        .await
        .execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url, requires_approval)
             VALUES ($1::text::uuid, 'refund', 'Refunds an order', '{\"type\": \"object\"}', $2, true)",
            &[&DEMO_AGENT, &tool.url],
        )
        .await
        .expect("the tool");
    let browser = Browser::launch().await.expect("headless chromium starts");
    let page = browser.new_page().await.expect("a page");
    if let Err(e) = approval(&dev, &page, &tool).await {
        let dir = workspace().join("target/browser-failures");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join("web-client-tools.png");
        let saved = page.screenshot(&shot).await;
        let requests = page.requests();
        let last: Vec<_> = requests.iter().rev().take(20).rev().collect();
        panic!(
            "{e}\nscreenshot: {} ({saved:?}); the page's last requests: {last:?}",
            shot.display()
        );
    }
}

// ---- live updates: two pages of one user ------------------------------------------------------

/// One request the API received through a [`CountingProxy`].
#[derive(Debug, Clone)]
struct Received {
    page: &'static str,
    method: String,
    path: String,
    status: Option<u16>,
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<Received>>>;

/// A forwarding proxy in front of `scripts/dev`'s functions (`cargo lambda watch`) for one page's
/// API calls: every request is logged (which page, method, path and query, status once
/// answered) in arrival order, in a log shared by the pages' proxies, and forwarded as is.
async fn counting_proxy(page: &'static str, functions_port: u16, log: Log) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let addr = integration_tests::runtime::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (client, log) = (client.clone(), log.clone());
        async move {
            let method = req.method().clone();
            let path = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), ToString::to_string);
            let index = {
                let mut log = log.lock().unwrap();
                log.push(Received {
                    page,
                    method: method.to_string(),
                    path: path.clone(),
                    status: None,
                });
                log.len() - 1
            };
            let mut forward = client.request(method, format!("http://127.0.0.1:{functions_port}{path}"));
            for (name, value) in req.headers() {
                if !matches!(name.as_str(), "host" | "connection" | "content-length") {
                    forward = forward.header(name, value);
                }
            }
            let body = integration_tests::runtime::body_bytes(req.into_body()).await;
            let mut response = hyper::Response::builder();
            let answer = match forward.body(body).send().await {
                Ok(answer) => {
                    response = response.status(answer.status().as_u16());
                    for (name, value) in answer.headers() {
                        if !matches!(name.as_str(), "connection" | "content-length" | "transfer-encoding") {
                            response = response.header(name, value);
                        }
                    }
                    let status = answer.status().as_u16();
                    (status, answer.bytes().await.unwrap_or_default())
                }
                Err(e) => {
                    response = response.status(502);
                    (502, hyper::body::Bytes::from(e.to_string()))
                }
            };
            log.lock().unwrap()[index].status = Some(answer.0);
            response.body(http_body_util::Full::new(answer.1)).expect("a response")
        }
    })
    .await;
    addr.port()
}

/// A copy of the served client under `/<name>/` whose API calls go through `proxy_port`: the
/// same origin as the others (one user: the same token and storage), its own apiBase.
fn page_copy(dev: &Dev, name: &str, proxy_port: u16) -> String {
    let served = workspace().join(format!(".stack/web-{}", dev.web_port));
    let dir = served.join(name);
    std::fs::create_dir_all(&dir).expect("the page's directory");
    for file in ["app.js", "style.css"] {
        std::fs::copy(served.join(file), dir.join(file)).expect("a client file");
    }
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    // Its Content-Security-Policy lets it call the proxy.
    let index = std::fs::read_to_string(served.join("index.html"))
        .expect("index.html")
        .replacen("connect-src 'self'", &format!("connect-src 'self' {proxy}"), 1);
    std::fs::write(dir.join("index.html"), index).expect("index.html");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(served.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    config["apiBase"] = format!("{proxy}/lambda-url/api").into();
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
    format!("http://127.0.0.1:{}/{name}/", dev.web_port)
}

const LIVE_OPEN: &str = "document.body.dataset.live === 'open'";

/// Page 2's `GET /api/tasks` as the API received them.
fn task_reads(log: &Log, page: &str) -> Vec<Received> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.page == page && r.method == "GET" && r.path.starts_with("/lambda-url/api/api/tasks"))
        .cloned()
        .collect()
}

async fn two_pages(dev: &Dev, browser: &Browser, log: &Log) -> Result<(), String> {
    let first_url = page_copy(dev, "page1", counting_proxy("page 1", dev.port, log.clone()).await);
    let second_url = page_copy(dev, "page2", counting_proxy("page 2", dev.port, log.clone()).await);

    // Page 2 first: loaded, its socket open, and its reads done (the tasks at start, then once
    // more when the socket opened: events sent before it was open are lost). Nothing else reads
    // the tasks from then on but a live event.
    let second = browser.new_page().await?;
    second.navigate(&second_url).await?;
    second.wait_for(READY, Duration::from_secs(180)).await?;
    second.wait_for(LIVE_OPEN, Duration::from_secs(60)).await?;
    let settled = eventually(Duration::from_secs(30), || async {
        let reads = task_reads(log, "page 2");
        reads.len() >= 2 && reads.iter().all(|r| r.status.is_some())
    })
    .await;
    if !settled {
        return Err(format!("page 2 did not settle: {:?}", task_reads(log, "page 2")));
    }
    let before = task_reads(log, "page 2").len();
    let quiet_since = std::time::Instant::now();
    // No polling: page 2 asks for nothing for longer than the old 2 s interval. (Absence can
    // only be seen over a window: the condition below must stay false for all of it.)
    let polled = eventually(Duration::from_secs(3), || async {
        task_reads(log, "page 2").len() > before
    })
    .await;
    if polled {
        return Err(format!("page 2 polled: {:?}", task_reads(log, "page 2")));
    }

    // Page 1, the same user, creates a task.
    let first = browser.new_page().await?;
    first.navigate(&first_url).await?;
    first.wait_for(READY, Duration::from_secs(180)).await?;
    first.wait_for(LIVE_OPEN, Duration::from_secs(60)).await?;
    second.wait_for(LIVE_OPEN, Duration::from_secs(1)).await?;
    first.type_into("#task-prompt", "Made in page 1").await?;
    first.click("#create-task button").await?;
    let created = eventually(Duration::from_secs(30), || async {
        log.lock().unwrap().iter().any(|r| {
            r.page == "page 1" && r.method == "POST" && r.path == "/lambda-url/api/api/tasks" && r.status == Some(201)
        })
    })
    .await;
    if !created {
        return Err(format!(
            "page 1's POST /api/tasks was not answered 201: {:?}",
            log.lock().unwrap()
        ));
    }
    // ... and it appears in page 2, which did not reload.
    let item = "[...document.querySelectorAll('#task-list li')].some(li => li.querySelector('.task-prompt').textContent === 'Made in page 1')";
    second.wait_for(item, Duration::from_secs(30)).await?;
    let quiet = quiet_since.elapsed();

    // At the API: from page 2 settling until the task was shown there, page 2 read the tasks
    // once, after page 1's POST was answered: the refetch its live event asked for, no polling.
    let entries = log.lock().unwrap().clone();
    let post = entries
        .iter()
        .position(|r| r.page == "page 1" && r.method == "POST" && r.path == "/lambda-url/api/api/tasks")
        .ok_or("no POST /api/tasks from page 1")?;
    let reads: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, r)| r.page == "page 2" && r.method == "GET" && r.path.starts_with("/lambda-url/api/api/tasks"))
        .map(|(i, _)| i)
        .skip(before)
        .collect();
    if reads.len() != 1 || reads[0] < post {
        return Err(format!(
            "page 2 read the tasks {} time(s) over {quiet:?} (once, after page 1's POST, expected); \
             the API received: {entries:#?}",
            reads.len()
        ));
    }
    println!("page 2: one GET /api/tasks over {quiet:?}, after page 1's POST: the refetch its live event asked for");
    second.wait_for(LIVE_OPEN, Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_in_one_page_appears_in_another_of_the_same_user_without_polling() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let db = TestDb::new().await;
    let dev = Dev::start(&db, "browser-live-dev.log");
    dev.ready().await;
    let browser = Browser::launch().await.expect("headless chromium starts");
    let log: Log = Log::default();
    if let Err(e) = two_pages(&dev, &browser, &log).await {
        panic!("{e}");
    }
}

// ---- MCP servers: an owned agent's tool sources --------------------------------------------------

/// The dev token's user (scripts/dev seeds its tasks under it).
const DEV_USER: &str = "5b1c7a2e-8f6d-4c3b-9a1e-2d4f6b8c0e13";
/// An agent of the dev user's own (the demo agent is public: it has no sources to manage).
const OWN_AGENT: &str = "00000000-0000-4000-8000-0000000000aa";

async fn tool_sources(dev: &Dev, page: &Page<'_>, mcp_url: &str) -> Result<(), String> {
    page.navigate(&format!("http://127.0.0.1:{}/", dev.web_port)).await?;
    page.wait_for(READY, Duration::from_secs(180)).await?;
    page.eval(&format!(
        "(() => {{ const s = document.getElementById('agent'); s.value = '{OWN_AGENT}'; s.dispatchEvent(new Event('change')); return s.value; }})()"
    ))
    .await?;
    page.wait_for("!document.getElementById('sources').hidden", Duration::from_secs(30))
        .await?;
    page.type_into("#source-name", "shop").await?;
    page.type_into("#source-url", mcp_url).await?;
    page.click("#add-source button").await?;
    let item = "document.querySelector('#source-list li[data-source=shop]')";
    page.wait_for(&format!("!!{item}"), Duration::from_secs(30)).await?;
    page.eval(&format!("{item}.querySelector('button').click(), true"))
        .await?;
    let tool = |name: &str| format!("document.querySelector('#source-list li[data-source=shop] [data-tool={name}]')");
    page.wait_for(&format!("!!{}", tool("shop__refund_order")), Duration::from_secs(30))
        .await?;
    let shown = page
        .eval(&format!(
            "[{}.textContent, {}.textContent]",
            tool("shop__lookup_order"),
            tool("shop__refund_order")
        ))
        .await?;
    let (lookup, refund) = (shown[0].as_str().unwrap_or(""), shown[1].as_str().unwrap_or(""));
    if !(lookup.contains("runs at once") && lookup.contains("read-only") && refund.contains("needs approval")) {
        return Err(format!("the tools are shown as {shown}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_agents_mcp_server_is_added_in_the_page_and_its_tools_show_which_calls_need_approval() {
    use integration_tests::mcp_servers::{PyMcp, PyMcpOptions};
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = PyMcp::start(PyMcpOptions::default()).await;
    let db = TestDb::new().await;
    let dev = Dev::start_with(&db, "browser-mcp-dev.log", &[("AGENT_TOOL_ALLOW_LOOPBACK", "true")]);
    dev.ready().await;
    db.direct()
        .await
        .execute(
            "INSERT INTO agents (id, name, description, instructions, model, visibility, owner_id)
             VALUES ($1::text::uuid, 'My agent', 'An agent of my own', 'Be useful.', 'local', 'private', $2::text::uuid)",
            &[&OWN_AGENT, &DEV_USER],
        )
        .await
        .expect("the agent");
    let browser = Browser::launch().await.expect("headless chromium starts");
    let page = browser.new_page().await.expect("a page");
    if let Err(e) = tool_sources(&dev, &page, &server.url).await {
        let dir = workspace().join("target/browser-failures");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join("web-client-mcp.png");
        let saved = page.screenshot(&shot).await;
        let requests = page.requests();
        let last: Vec<_> = requests.iter().rev().take(20).rev().collect();
        panic!(
            "{e}\nscreenshot: {} ({saved:?}); the page's last requests: {last:?}",
            shot.display()
        );
    }
}
