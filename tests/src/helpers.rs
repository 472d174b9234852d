//! Test helpers: a fresh migrated database per test, pools on it through the shared pgbouncer,
//! private pgbouncers a test may stop, pause or restart, and a local Lambda Runtime API that
//! drives the real function binaries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::config::{DbSettings, Env, PoolDefaults};
use shared::db::Db;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// `DATABASE_URL` (pooler) and `DIRECT_URL` as `scripts/test` exports them.
pub fn urls() -> (String, String) {
    let pooled = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run scripts/test, or eval \"$(scripts/stack env)\" first");
    let direct = std::env::var("DIRECT_URL").unwrap_or_else(|_| pooled.clone());
    (pooled, direct)
}

fn settings_from(url: &str, var: &str, app: &str, extra: &[(&str, String)]) -> DbSettings {
    let mut map: HashMap<String, String> = extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    map.insert(var.to_string(), url.to_string());
    let env = Env(move |k: &str| map.get(k).cloned());
    if var == "DIRECT_URL" {
        DbSettings::direct(&env, app).expect("DIRECT_URL is valid")
    } else {
        DbSettings::for_function(&env, app, PoolDefaults { max_size: 1 }).expect("DATABASE_URL is valid")
    }
}

/// Pool options a test may change.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub app: String,
    pub max_size: usize,
    pub wait: Duration,
    pub statement: Duration,
    pub connect: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            app: "it".into(),
            max_size: 1,
            wait: Duration::from_secs(2),
            statement: Duration::from_secs(5),
            connect: Duration::from_secs(3),
        }
    }
}

/// A fresh database, migrated, reachable through the shared pgbouncer and directly.
pub struct TestDb {
    pub name: String,
    pub pooled_url: String,
    pub direct_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        shared::migrate::run(&db.direct_settings())
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh database without the schema.
    pub async fn empty() -> TestDb {
        let (pooled, direct) = urls();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect_direct(&direct, "postgres").await;
        admin
            .simple_query(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            pooled_url: with_db(&pooled, &name),
            direct_url: with_db(&direct, &name),
            name,
        }
    }

    pub fn direct_settings(&self) -> DbSettings {
        settings_from(&self.direct_url, "DIRECT_URL", "it-direct", &[])
    }

    pub fn settings(&self, opts: &PoolOptions) -> DbSettings {
        settings_for(&self.pooled_url, opts)
    }

    /// A pool through the shared pgbouncer.
    pub fn pool(&self, opts: &PoolOptions) -> Db {
        Db::new(&self.settings(opts)).expect("pool builds")
    }

    /// A pool through the shared pgbouncer with default options.
    pub fn default_pool(&self) -> Db {
        self.pool(&PoolOptions::default())
    }

    /// A plain session connection straight to Postgres (for inspection, not through the pooler).
    pub async fn direct(&self) -> Client {
        connect_direct(&self.direct_url, &self.name).await
    }

    /// Server connections of this database in `pg_stat_activity`, other than the inspector's.
    pub async fn server_sessions(&self, inspector: &Client) -> Vec<Session> {
        let rows = inspector
            .query(
                "SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(query, '') \
                 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("pg_stat_activity");
        rows.iter()
            .map(|r| Session {
                application_name: r.get(0),
                state: r.get(1),
                query: r.get(2),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub application_name: String,
    pub state: String,
    pub query: String,
}

pub fn settings_for(pooled_url: &str, opts: &PoolOptions) -> DbSettings {
    settings_from(
        pooled_url,
        "DATABASE_URL",
        &opts.app,
        &[
            ("DB_POOL_MAX_SIZE", opts.max_size.to_string()),
            ("DB_POOL_TIMEOUT_MS", opts.wait.as_millis().to_string()),
            ("DB_STATEMENT_TIMEOUT_MS", opts.statement.as_millis().to_string()),
            ("DB_CONNECT_TIMEOUT_MS", opts.connect.as_millis().to_string()),
        ],
    )
}

pub fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("valid url");
    u.set_path(db);
    u.to_string()
}

pub fn with_port(url: &str, port: u16) -> String {
    let mut u = url::Url::parse(url).expect("valid url");
    u.set_port(Some(port)).expect("port settable");
    u.to_string()
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url).expect("valid url").port().unwrap_or(5432)
}

pub async fn connect_direct(direct_url: &str, db: &str) -> Client {
    let url = with_db(direct_url, db);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("direct connection");
    tokio::spawn(conn);
    client
}

/// The shared pgbouncer's admin console.
pub async fn bouncer_admin() -> Client {
    let (pooled, _) = urls();
    admin_at(&pooled).await
}

async fn admin_at(pooled_url: &str) -> Client {
    let url = with_db(pooled_url, "pgbouncer");
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("pgbouncer admin console");
    tokio::spawn(conn);
    client
}

/// Rows of a pgbouncer `SHOW …` command as column-name maps.
pub async fn admin_show(admin: &Client, what: &str) -> Vec<HashMap<String, String>> {
    let messages = admin.simple_query(&format!("SHOW {what}")).await.expect("SHOW");
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).unwrap_or_default().to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// uid/gid to run servers as: `postgres` when we are root (pgbouncer refuses root).
fn service_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

fn pgbouncer_binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("pgbouncer is installed (scripts/stack up installs it)")
}

/// A pgbouncer of the test's own (transaction mode, in front of the shared Postgres), which the
/// test may stop, restart or pause without disturbing other tests.
pub struct PrivateBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateBouncer {
    pub async fn start(pool_size: usize) -> PrivateBouncer {
        let (_, direct) = urls();
        Self::in_front_of(port_of(&direct), pool_size).await
    }

    /// A bouncer in front of the Postgres on `pg_port` (e.g. a [`PrivateCluster`]).
    pub async fn in_front_of(pg_port: u16, pool_size: usize) -> PrivateBouncer {
        Self::configured(pg_port, pool_size, 500).await
    }

    /// With its own client limit (`max_client_conn`).
    pub async fn configured(pg_port: u16, pool_size: usize, max_clients: usize) -> PrivateBouncer {
        Self::build(pg_port, pool_size, max_clients, false).await
    }

    /// Clients must use TLS (`client_tls_sslmode = require`), with the self-signed certificate
    /// of `tests/fixtures/tls-server-cert.pem` (localhost, 127.0.0.1).
    pub async fn with_tls(pool_size: usize) -> PrivateBouncer {
        let (_, direct) = urls();
        Self::build(port_of(&direct), pool_size, 500, true).await
    }

    async fn build(pg_port: u16, pool_size: usize, max_clients: usize, tls: bool) -> PrivateBouncer {
        let dir = std::env::temp_dir().join(format!("bouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("bouncer dir");
        let port = free_port();
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\n\
             admin_users = postgres\npool_mode = transaction\ndefault_pool_size = {pool_size}\n\
             max_client_conn = {max_clients}\nserver_idle_timeout = 10\nignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.display()
        );
        let config = if tls {
            std::fs::write(dir.join("key.pem"), include_str!("../fixtures/tls-server-key.pem")).expect("key");
            std::fs::write(dir.join("cert.pem"), include_str!("../fixtures/tls-server-cert.pem")).expect("cert");
            format!(
                "{config}client_tls_sslmode = require\nclient_tls_key_file = {dir}/key.pem\nclient_tls_cert_file = {dir}/cert.pem\n",
                dir = dir.display()
            )
        } else {
            config
        };
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("write ini");
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"postgres\"\n").expect("write userlist");
        if let Some((uid, gid)) = service_user() {
            for f in ["", "pgbouncer.ini", "userlist.txt", "key.pem", "cert.pem"] {
                if dir.join(f).exists() {
                    std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).expect("chown");
                }
            }
        }
        let mut b = PrivateBouncer { port, dir, child: None };
        b.restart().await;
        b
    }

    /// `DATABASE_URL` of `db` through this bouncer.
    pub fn url(&self, db: &TestDb) -> String {
        with_port(&db.pooled_url, self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub async fn restart(&mut self) {
        use std::os::unix::process::CommandExt;
        assert!(self.child.is_none(), "bouncer already running");
        let mut cmd = std::process::Command::new(pgbouncer_binary());
        cmd.arg(self.dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = service_user() {
            cmd.gid(gid).uid(uid);
        }
        self.child = Some(cmd.spawn().expect("spawn pgbouncer"));
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "private pgbouncer did not start; see {}", self.dir.display());
    }

    /// Kills the bouncer: every client connection breaks at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn admin(&self) -> Client {
        let (pooled, _) = urls();
        admin_at(&with_port(&pooled, self.port)).await
    }
}

impl Drop for PrivateBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The workspace's `target/debug/<name>` binary (`scripts/test` builds them first).
pub fn function_binary(name: &str) -> PathBuf {
    built_binary("debug", name)
}

/// `target/<profile>/<name>`.
pub fn built_binary(profile: &str, name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: build the functions first (cargo build [--release] --workspace --bins)",
        path.display()
    );
    path
}

/// A local Lambda Runtime API (the real wire format: /runtime/invocation/next, /response,
/// /error, and the Extensions API register/next) serving one function process.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
}

#[derive(Default)]
struct RuntimeState {
    queue: Mutex<std::collections::VecDeque<(String, String, u64)>>,
    queued: tokio::sync::Notify,
    results: Mutex<HashMap<String, tokio::sync::oneshot::Sender<InvokeResult>>>,
    extensions: Mutex<Vec<String>>,
}

/// What the function answered to one invocation.
#[derive(Debug)]
pub enum InvokeResult {
    Response(serde_json::Value),
    Error(serde_json::Value),
}

/// An HTTP/1 server on a free loopback port answering every request with `handler`.
pub async fn serve_http<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = HyperResponse> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let state = Arc::new(RuntimeState::default());
        let server_state = state.clone();
        let addr = serve_http(move |req| runtime_route(server_state.clone(), req)).await;
        RuntimeApi { addr, state }
    }

    /// Queues an event with the given deadline (ms since the epoch) and waits for the answer.
    pub async fn invoke(&self, event: &serde_json::Value, deadline_ms: u64) -> InvokeResult {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.state.results.lock().expect("lock").insert(id.clone(), tx);
        self.state
            .queue
            .lock()
            .expect("lock")
            .push_back((id, event.to_string(), deadline_ms));
        self.state.queued.notify_one();
        rx.await.expect("the function answered")
    }

    pub fn registered_extensions(&self) -> Vec<String> {
        self.state.extensions.lock().expect("lock").clone()
    }

    /// Environment for a function process talking to this API.
    pub fn function_env(&self, name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

pub type HyperResponse = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

fn reply(status: u16, headers: &[(&str, String)], body: String) -> HyperResponse {
    let mut builder = hyper::Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    builder
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .expect("response builds")
}

async fn runtime_route(state: Arc<RuntimeState>, req: hyper::Request<hyper::body::Incoming>) -> HyperResponse {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method.as_str(), path.as_str()) {
        ("POST", "/2020-01-01/extension/register") => {
            state
                .extensions
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&body).into());
            reply(
                200,
                &[("Lambda-Extension-Identifier", uuid::Uuid::new_v4().to_string())],
                r#"{"functionName":"test","functionVersion":"$LATEST","handler":"bootstrap"}"#.into(),
            )
        }
        // Extensions that subscribe to no events wait here until shutdown.
        ("GET", "/2020-01-01/extension/event/next") => std::future::pending().await,
        ("GET", "/2018-06-01/runtime/invocation/next") => loop {
            let next = state.queue.lock().expect("lock").pop_front();
            if let Some((id, payload, deadline)) = next {
                return reply(
                    200,
                    &[
                        ("Lambda-Runtime-Aws-Request-Id", id),
                        ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                        (
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:000000000000:function:test".into(),
                        ),
                        (
                            "Lambda-Runtime-Trace-Id",
                            "Root=1-00000000-000000000000000000000000".into(),
                        ),
                        ("Content-Type", "application/json".into()),
                    ],
                    payload,
                );
            }
            state.queued.notified().await;
        },
        ("POST", p) if p.starts_with("/2018-06-01/runtime/invocation/") => {
            let mut parts = p.trim_start_matches("/2018-06-01/runtime/invocation/").split('/');
            let id = parts.next().unwrap_or_default().to_string();
            let kind = parts.next().unwrap_or_default();
            let value: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
            let result = if kind == "response" {
                InvokeResult::Response(value)
            } else {
                InvokeResult::Error(value)
            };
            if let Some(tx) = state.results.lock().expect("lock").remove(&id) {
                let _ = tx.send(result);
            }
            reply(202, &[], r#"{"status":"OK"}"#.into())
        }
        ("POST", "/2018-06-01/runtime/init/error") => reply(202, &[], r#"{"status":"OK"}"#.into()),
        _ => reply(404, &[], String::new()),
    }
}

/// Milliseconds since the epoch, `after` from now.
pub fn deadline_in(after: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    (now + after).as_millis() as u64
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/stack up installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb")
}

/// A private PostgreSQL cluster of the test's own (trust auth on loopback), for tests that need
/// their own `max_connections` or must stop the server.
pub struct PrivateCluster {
    pub port: u16,
    dir: PathBuf,
}

impl PrivateCluster {
    pub async fn start(max_connections: u32, reserved: u32) -> PrivateCluster {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let user = service_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        }
        let bin = pg_bindir();
        let run = |program: &str, args: &[&str]| {
            let mut cmd = std::process::Command::new(bin.join(program));
            cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
            if let Some((uid, gid)) = user {
                cmd.gid(gid).uid(uid);
            }
            let status = cmd.status().expect("run a PostgreSQL tool");
            assert!(status.success(), "{program} {args:?} failed");
        };
        let data = dir.join("data");
        let data_s = data.display().to_string();
        run(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections={max_connections} \
             -c superuser_reserved_connections={reserved} -c fsync=off -c shared_buffers=16MB",
            dir.display()
        );
        let log = dir.join("postgres.log").display().to_string();
        run(
            "pg_ctl",
            &["-D", &data_s, "-l", &log, "-o", &options, "-w", "-t", "60", "start"],
        );
        PrivateCluster { port, dir }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn connect(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .expect("private cluster connection");
        tokio::spawn(conn);
        client
    }

    /// Restarts the server abruptly (`-m immediate`: every session is cut, as in a crash).
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "restart"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(pg_bindir().join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = service_user() {
            cmd.gid(gid).uid(uid);
        }
        let _ = cmd.status();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs an admin command (`PAUSE`, `RESUME`, …) on a pgbouncer console.
pub async fn admin_command(admin: &Client, command: &str) {
    admin.simple_query(command).await.expect("pgbouncer admin command");
}
