//! pgbouncer: the shared one's admin console, and private pgbouncers a test may stop, pause or
//! restart without disturbing other tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::database::{urls, with_db, with_port, TestDb};
use crate::process::{pgbouncer_binary, port_of, service_user};
use crate::wait::{eventually, free_port};

/// The shared pgbouncer's admin console.
pub async fn bouncer_admin() -> Client {
    let (pooled, _) = urls();
    admin_at(&pooled).await
}

/// The admin console of the pgbouncer at `pooled_url`'s address, as the admin user (the
/// superuser of `DIRECT_URL`; the functions' role is not a pgbouncer admin).
async fn admin_at(pooled_url: &str) -> Client {
    let (_, direct) = urls();
    let admin = url::Url::parse(&direct).expect("valid DIRECT_URL");
    let mut u = url::Url::parse(&with_db(pooled_url, "pgbouncer")).expect("valid url");
    u.set_username(admin.username()).expect("user settable");
    u.set_password(admin.password()).expect("password settable");
    let url = u.to_string();
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

/// The shared pgbouncer's clients of `db` whose `application_name` is `app`.
pub async fn pooler_clients(db: &TestDb, app: &str) -> usize {
    let admin = bouncer_admin().await;
    admin_show(&admin, "CLIENTS")
        .await
        .iter()
        .filter(|c| c.get("database").map(String::as_str) == Some(db.name.as_str()))
        .filter(|c| c.get("application_name").map(String::as_str) == Some(app))
        .count()
}

/// Runs an admin command (`PAUSE`, `RESUME`, …) on a pgbouncer console.
pub async fn admin_command(admin: &Client, command: &str) {
    admin.simple_query(command).await.expect("pgbouncer admin command");
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
        Self::build(pg_port, pool_size, max_clients, None).await
    }

    /// Clients must use TLS (`client_tls_sslmode = require`), with the self-signed certificate
    /// of `tests/fixtures/tls-server-cert.pem` (localhost, 127.0.0.1).
    pub async fn with_tls(pool_size: usize) -> PrivateBouncer {
        Self::with_tls_certificate(
            pool_size,
            include_str!("../fixtures/tls-server-cert.pem"),
            include_str!("../fixtures/tls-server-key.pem"),
        )
        .await
    }

    /// Clients must use TLS, and the bouncer presents this certificate (chain) and key, as PEM.
    pub async fn with_tls_certificate(pool_size: usize, cert_pem: &str, key_pem: &str) -> PrivateBouncer {
        let (_, direct) = urls();
        Self::build(port_of(&direct), pool_size, 500, Some((cert_pem, key_pem))).await
    }

    async fn build(pg_port: u16, pool_size: usize, max_clients: usize, tls: Option<(&str, &str)>) -> PrivateBouncer {
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
        let config = if let Some((cert_pem, key_pem)) = tls {
            std::fs::write(dir.join("key.pem"), key_pem).expect("key");
            std::fs::write(dir.join("cert.pem"), cert_pem).expect("cert");
            format!(
                "{config}client_tls_sslmode = require\nclient_tls_key_file = {dir}/key.pem\nclient_tls_cert_file = {dir}/cert.pem\n",
                dir = dir.display()
            )
        } else {
            config
        };
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("write ini");
        std::fs::write(dir.join("userlist.txt"), userlist()).expect("write userlist");
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

/// The users a private bouncer admits: the superuser of `DIRECT_URL` and the functions' role of
/// `DATABASE_URL`, with their passwords.
fn userlist() -> String {
    let (pooled, direct) = urls();
    [direct, pooled]
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .map(|u| {
            let user = percent_decode(u.username());
            let password = percent_decode(u.password().unwrap_or_default());
            format!("\"{user}\" \"{password}\"\n")
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Drop for PrivateBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
