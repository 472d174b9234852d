//! Test databases: a fresh migrated database per test, dropped when the test ends, reachable
//! through the shared pgbouncer and directly; pool settings for it.

use std::time::Duration;

use shared::config::Env;
use shared::db::{Db, DbSettings, PoolDefaults};
use tokio_postgres::{Client, NoTls};

/// `DATABASE_URL` (pooler) and `DIRECT_URL` as `scripts/test` exports them.
pub fn urls() -> (String, String) {
    let pooled = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run scripts/test, or eval \"$(scripts/stack env)\" first");
    let direct = std::env::var("DIRECT_URL").unwrap_or_else(|_| pooled.clone());
    (pooled, direct)
}

/// `MONITOR_DATABASE_URL` (the health function's role `agent_monitor`, through the pooler) as
/// `scripts/stack env` exports it; `DATABASE_URL` when unset.
pub fn monitor_url() -> String {
    std::env::var("MONITOR_DATABASE_URL").unwrap_or_else(|_| urls().0)
}

fn settings_from(url: &str, var: &str, app: &str, extra: &[(&str, String)]) -> DbSettings {
    let env = extra
        .iter()
        .fold(Env::default().with(var, url), |env, (k, v)| env.with(k, v));
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
    /// `DB_CONNECTION_MODE`: `release` (the product's default) or `warm`.
    pub mode: &'static str,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            app: "it".into(),
            max_size: 1,
            wait: Duration::from_secs(2),
            statement: Duration::from_secs(5),
            connect: Duration::from_secs(3),
            mode: "release",
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
        shared::db::migrate::run(&db.direct_settings())
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

    /// Through the shared pgbouncer as the health function's role (`agent_monitor`).
    pub fn monitor_settings(&self, opts: &PoolOptions) -> DbSettings {
        settings_for(&with_db(&monitor_url(), &self.name), opts)
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

impl Drop for TestDb {
    /// Drops the database (and ends its sessions) once the test is done with it. A blocking
    /// drop on a thread of its own: `Drop` cannot await, and a test's runtime may be ending.
    fn drop(&mut self) {
        let (name, direct) = (self.name.clone(), self.direct_url.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let url = with_db(&direct, "postgres");
                let (client, conn) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                tokio::spawn(conn);
                client
                    .simple_query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("test database {} was not dropped", self.name);
        }
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
            ("DB_CONNECTION_MODE", opts.mode.to_string()),
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

pub async fn connect_direct(direct_url: &str, db: &str) -> Client {
    let url = with_db(direct_url, db);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("direct connection");
    tokio::spawn(conn);
    client
}

/// Seeds `n` due, approved tasks of `agent` (`task 1 … task n`, an hour overdue, a millisecond
/// apart), then vacuums and analyzes the table: the backlog the benchmarks drain.
pub async fn seed_due_tasks(client: &Client, agent: uuid::Uuid, n: i64) {
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             SELECT $1, 'task ' || i, 'approved', now() - interval '1 hour' + i * interval '1 millisecond'
               FROM generate_series(1, $2::int8) AS i",
            &[&agent, &n],
        )
        .await
        .expect("seed tasks");
    client
        .batch_execute("VACUUM ANALYZE agent_tasks")
        .await
        .expect("vacuum");
}

/// Whether one statement runs through the product's pool built from `settings`; else the error
/// with its causes (what a TLS or authentication refusal says is in the causes).
pub async fn runs_a_statement(settings: &DbSettings) -> Result<(), String> {
    let chain = |e: shared::db::DbError| shared::telemetry::Chain(&e).to_string();
    let pool = Db::new(settings).map_err(|e| e.to_string())?;
    let conn = pool.conn().await.map_err(chain)?;
    conn.sql().simple("SELECT 1").await.map_err(chain)?;
    Ok(())
}
