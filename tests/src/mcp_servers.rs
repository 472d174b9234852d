//! Real MCP servers over Streamable HTTP (issue 27), each on a free loopback port, killed on
//! drop. Neither was written here; scripts/tools installs both (tests/mcp):
//! - [`Everything`]: `@modelcontextprotocol/server-everything` (npm, pinned in
//!   tests/mcp/package-lock.json), `node --import ./loopback.mjs …/dist/index.js streamableHttp`
//!   with `PORT`; the preload makes its listen() bind 127.0.0.1 only.
//! - [`PyMcp`]: tests/mcp/server.py on the official Python SDK (`mcp`, pinned in scripts/tools)
//!   in `.venv`: tools with each kind of annotation, a paginated `tools/list`, `list_changed`,
//!   session expiry, optional bearer auth, and a record of what it received ([`RecordedCall`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::wait::{eventually, eventually_blocking, free_port};

/// How long a server may take to answer after it is started (the Python SDK's imports alone
/// take seconds on a loaded 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(60);

/// The workspace's root.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// tests/mcp: the servers' files and node_modules.
pub fn mcp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

/// A fresh folder for one server's log (and record).
fn scratch(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A child process, killed (SIGKILL: a server that goes down, not one that shuts down) and
/// reaped on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn spawn(mut command: Command, log: PathBuf, what: &str) -> Server {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts ({e}); scripts/tools installs it"));
        Server { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds, failing early (with the server's log) if the process ends.
    async fn wait_ready<F, Fut>(&mut self, what: &str, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut exited = None;
        let child = &mut self.child;
        let up = eventually(START_LIMIT, || {
            let status = child.try_wait().expect("try_wait");
            exited = status;
            let check = status.is_none().then(&mut ready);
            async move {
                match check {
                    Some(check) => check.await,
                    None => true,
                }
            }
        })
        .await;
        if let Some(status) = exited {
            panic!("{what} exited ({status}) before answering:\n{}", self.log());
        }
        assert!(up, "{what} did not answer within {START_LIMIT:?}:\n{}", self.log());
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn tcp_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// `@modelcontextprotocol/server-everything` in Streamable HTTP mode on 127.0.0.1.
pub struct Everything {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    server: Server,
}

impl Drop for Everything {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Everything {
    pub async fn start() -> Everything {
        let mcp = mcp_dir();
        let entry = mcp.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        assert!(
            entry.exists(),
            "{} is missing: run scripts/tools (npm ci --prefix tests/mcp)",
            entry.display()
        );
        let port = free_port();
        let mut command = Command::new("node");
        command
            .current_dir(&mcp)
            .arg("--import")
            .arg("./loopback.mjs")
            .arg(&entry)
            .arg("streamableHttp")
            .env("PORT", port.to_string());
        let dir = scratch("everything");
        let mut server = Server::spawn(command, dir.join("server.log"), "node (server-everything)");
        server.wait_ready("server-everything", || tcp_open(port)).await;
        Everything {
            url: format!("http://127.0.0.1:{port}/mcp"),
            port,
            dir,
            server,
        }
    }

    /// What the server printed (its stdout and stderr).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// How [`PyMcp`] starts.
#[derive(Debug, Clone, Default)]
pub struct PyMcpOptions {
    /// When set, a request to /mcp without `Authorization: Bearer <token>` answers 401.
    pub token: Option<String>,
    /// Tools per `tools/list` page (the server's default: 2).
    pub page_size: Option<usize>,
}

/// One line of [`PyMcp`]'s record. `event` is one of:
/// - `rpc`: a JSON-RPC request or notification POSTed to /mcp (`method`; `tool` and `arguments`
///   for `tools/call`), recorded on arrival, before the auth check (`unauthorized` when it failed);
/// - `http`: a request to /mcp without a body (the GET stream, DELETE);
/// - `reply`: a JSON-RPC response the client POSTed;
/// - `tool`: a tool the server ran (started), `tool_finished`: `slow_refund` done sleeping;
/// - `list_changed` (`raw["sessions"]` notified), `sessions_expired` (`raw["sessions"]`).
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub event: String,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub arguments: Option<Value>,
    /// The `Mcp-Session-Id` header (for `tool`: of the request that ran it).
    pub session: Option<String>,
    pub authorization: Option<String>,
    pub protocol_version: Option<String>,
    pub unauthorized: bool,
    /// The server process's id (a restart changes it).
    pub pid: u32,
    /// The whole line.
    pub raw: Value,
}

impl RecordedCall {
    fn parse(line: &str) -> Option<RecordedCall> {
        let raw: Value = serde_json::from_str(line).ok()?;
        let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
        Some(RecordedCall {
            event: text("event")?,
            method: text("method"),
            tool: text("tool"),
            arguments: raw.get("arguments").filter(|v| !v.is_null()).cloned(),
            session: text("session"),
            authorization: text("authorization"),
            protocol_version: text("protocol_version"),
            unauthorized: raw.get("unauthorized").and_then(Value::as_bool).unwrap_or(false),
            pid: raw.get("pid").and_then(Value::as_u64).unwrap_or(0) as u32,
            raw,
        })
    }

    /// A tool the server ran (started running) by this name.
    pub fn ran(&self, tool: &str) -> bool {
        self.event == "tool" && self.tool.as_deref() == Some(tool)
    }
}

/// tests/mcp/server.py on 127.0.0.1 (see its docstring for the tools and routes).
pub struct PyMcp {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    pub port: u16,
    pub options: PyMcpOptions,
    record: PathBuf,
    dir: PathBuf,
    server: Option<Server>,
}

impl PyMcp {
    pub async fn start(options: PyMcpOptions) -> PyMcp {
        let dir = scratch("py");
        let port = free_port();
        let mut server = PyMcp {
            url: format!("http://127.0.0.1:{port}/mcp"),
            port,
            options,
            record: dir.join("record.jsonl"),
            dir,
            server: None,
        };
        server.restart().await;
        server
    }

    fn admin(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}/admin/{route}", self.port)
    }

    /// Starts the server again on the same port and record (after [`PyMcp::stop`]): a new
    /// process that knows none of the old sessions. Stops a running one first.
    pub async fn restart(&mut self) {
        self.stop();
        let python = workspace().join(".venv/bin/python");
        assert!(python.exists(), "{} is missing: run scripts/tools", python.display());
        let mut command = Command::new(python);
        command
            .arg(mcp_dir().join("server.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--record")
            .arg(&self.record);
        if let Some(token) = &self.options.token {
            command.arg("--token").arg(token);
        }
        if let Some(size) = self.options.page_size {
            command.arg("--page-size").arg(size.to_string());
        }
        let mut server = Server::spawn(command, self.dir.join("server.log"), ".venv/bin/python");
        let ready = self.admin("ready");
        let client = reqwest::Client::new();
        server
            .wait_ready("tests/mcp/server.py", || {
                let request = client.get(&ready).timeout(Duration::from_secs(2)).send();
                async move { request.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await;
        self.server = Some(server);
    }

    /// Kills the server (SIGKILL: down, as after a crash); [`PyMcp::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    /// The server process's id (`None` when stopped), to read its CPU time and memory.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.child.id())
    }

    /// Whether the process runs (not stopped, not exited).
    pub fn running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| s.child.try_wait().ok().flatten().is_none())
    }

    /// Everything recorded so far, in order (across restarts).
    pub fn calls(&self) -> Vec<RecordedCall> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(RecordedCall::parse)
            .collect()
    }

    /// The tools the server ran with this name, in order.
    pub fn tool_runs(&self, tool: &str) -> Vec<RecordedCall> {
        self.calls().into_iter().filter(|c| c.ran(tool)).collect()
    }

    /// Waits (bounded) until some recorded call matches `matches`; returns whether one did.
    pub async fn wait_for_call(&self, limit: Duration, matches: impl Fn(&RecordedCall) -> bool) -> bool {
        eventually(limit, || {
            let found = self.calls().iter().any(&matches);
            async move { found }
        })
        .await
    }

    /// [`PyMcp::wait_for_call`] from a context that cannot await.
    pub fn wait_for_call_blocking(&self, limit: Duration, matches: impl Fn(&RecordedCall) -> bool) -> bool {
        eventually_blocking(limit, || self.calls().iter().any(&matches))
    }

    /// Forgets every session: a request with an old `Mcp-Session-Id` then answers 404. Returns
    /// how many were expired.
    pub async fn expire_sessions(&self) -> u64 {
        let answer = self.post_admin("expire-sessions").await;
        answer["expired"].as_u64().expect("expired count")
    }

    /// Adds `late_tool` and sends `notifications/tools/list_changed` to every session (on its
    /// GET stream). Returns the session ids notified.
    pub async fn add_tool(&self) -> Vec<String> {
        let answer = self.post_admin("add-tool").await;
        answer["notified"]
            .as_array()
            .expect("notified sessions")
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    }

    async fn post_admin(&self, route: &str) -> Value {
        let response = reqwest::Client::new()
            .post(self.admin(route))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /admin/{route}: {e}"));
        assert!(
            response.status().is_success(),
            "POST /admin/{route}: {}",
            response.status()
        );
        response.json().await.expect("admin answer is JSON")
    }

    /// What the server printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The record file (JSON lines).
    pub fn record_path(&self) -> &Path {
        &self.record
    }
}

impl Drop for PyMcp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6),
/// e.g. `["127.0.0.1"]`, to check a server binds loopback only.
pub fn listening_addresses(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st …; st 0A is LISTEN.
            let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) else {
                continue;
            };
            let Some((addr, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            found.push(proc_address(addr, v6));
        }
    }
    found
}

/// /proc/net's hex address (each 32-bit word in host byte order) as text.
fn proc_address(hex: &str, v6: bool) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let octets: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
        std::net::Ipv6Addr::from(octets).to_string()
    } else {
        let octets: [u8; 4] = bytes.try_into().unwrap_or([0; 4]);
        std::net::Ipv4Addr::from(octets).to_string()
    }
}
