use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{admin_show, bouncer_admin, eventually, function_binary, RuntimeApi, TestDb};

async fn clients_of(db: &TestDb, app: &str) -> usize {
    let admin = bouncer_admin().await;
    admin_show(&admin, "CLIENTS")
        .await
        .iter()
        .filter(|c| c.get("database").map(String::as_str) == Some(db.name.as_str()))
        .filter(|c| c.get("application_name").map(String::as_str) == Some(app))
        .count()
}

#[tokio::test]
async fn sigterm_closes_the_functions_pooled_connection() {
    let db = TestDb::new().await;
    let runtime = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(function_binary("health"))
        .envs(runtime.function_env("health"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the health binary");

    // The init phase warms the pool: the pooler lists the instance as a client.
    let became = eventually(Duration::from_secs(10), || async {
        clients_of(&db, "health").await > 0
    })
    .await;
    assert!(became, "the health instance never connected");
    let connected = clients_of(&db, "health").await;
    assert_eq!(connected, 1, "the warm pool holds exactly one connection");
    assert!(
        runtime
            .registered_extensions()
            .iter()
            .any(|e| e.contains("\"events\":[]")),
        "the graceful-shutdown extension registered: {:?}",
        runtime.registered_extensions()
    );

    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the function exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert_eq!(clients_of(&db, "health").await, 0, "the pooled connection is closed");
}
