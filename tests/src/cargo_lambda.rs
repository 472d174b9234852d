//! `cargo lambda`, the local emulator the developers use: `watch` serving every function of the
//! workspace ([`Watch`]) and `invoke` calling one of them ([`invoke`]), run from the workspace
//! with the project's `.venv/bin` first on PATH (scripts/test installs cargo-lambda there).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{eventually, free_port, TestDb};

/// The workspace's root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// PATH with the project's `.venv/bin` first.
pub fn path_with_venv() -> String {
    let venv = workspace().join(".venv/bin");
    format!("{}:{}", venv.display(), std::env::var("PATH").unwrap_or_default())
}

/// `cargo lambda invoke <function> <args…>` against the watch on `port`: (success, stdout,
/// stderr).
pub async fn invoke(port: u16, function: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("cargo")
        .args([
            "lambda",
            "invoke",
            function,
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .args(args)
        .current_dir(workspace())
        .env("PATH", path_with_venv())
        .output()
        .await
        .expect("cargo lambda invoke runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cargo lambda watch` on a free loopback port, serving every function of the workspace on a
/// database; stopped when dropped.
pub struct Watch {
    pub port: u16,
    child: tokio::process::Child,
}

impl Watch {
    /// Starts the watch on `db` with `extra_env`, once it listens.
    pub async fn start(db: &TestDb, extra_env: &[(&str, &str)]) -> Watch {
        let port = free_port();
        let child = tokio::process::Command::new("cargo")
            .args(["lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--ignore-changes")
            .current_dir(workspace())
            .env("PATH", path_with_venv())
            .env("DATABASE_URL", &db.pooled_url)
            .envs(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda watch starts (scripts/test installs cargo-lambda into .venv)");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up = eventually(Duration::from_secs(60), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "cargo lambda watch did not listen on {addr}");
        Watch { port, child }
    }

    /// `cargo lambda invoke <function> <args…>` against this watch: (success, stdout, stderr).
    pub async fn invoke(&self, function: &str, args: &[&str]) -> (bool, String, String) {
        invoke(self.port, function, args).await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
