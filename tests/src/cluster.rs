//! Private PostgreSQL clusters, for tests that need their own `max_connections` or must stop
//! the server.

use std::path::PathBuf;
use std::process::Stdio;

use tokio_postgres::{Client, NoTls};

use crate::process::service_user;
use crate::wait::free_port;

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
    pub fn start(max_connections: u32, reserved: u32) -> PrivateCluster {
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

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
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
