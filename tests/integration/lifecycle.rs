use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{eventually, function_binary, pooler_clients, RuntimeApi, TestDb};

#[tokio::test]
async fn sigterm_closes_the_functions_pooled_connection() {
    let db = TestDb::new().await;
    let runtime = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(function_binary("health"))
        .envs(runtime.function_env("health"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("DB_CONNECTION_MODE", "warm")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the health binary");

    // The init phase warms the pool: the pooler lists the instance as a client.
    let became = eventually(Duration::from_secs(10), || async {
        pooler_clients(&db, "health").await > 0
    })
    .await;
    assert!(became, "the health instance never connected");
    let connected = pooler_clients(&db, "health").await;
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
    assert_eq!(
        pooler_clients(&db, "health").await,
        0,
        "the pooled connection is closed"
    );
}

#[tokio::test]
async fn a_missing_or_malformed_setting_stops_the_function_at_start_up_naming_it() {
    let runtime = RuntimeApi::start().await;
    for (function, env, named) in [
        ("health", vec![], "DATABASE_URL"),
        (
            "health",
            vec![("DATABASE_URL", "postgres://u:hunter2@h/db?connection_limit=lots")],
            "connection_limit",
        ),
        (
            "chat",
            vec![("DATABASE_URL", "postgres://u:hunter2@h/db")],
            "SUPABASE_URL",
        ),
        (
            "scheduler",
            vec![
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
                ("SCHEDULER_BATCH_SIZE", "0"),
            ],
            "SCHEDULER_BATCH_SIZE",
        ),
        (
            "health",
            vec![
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
                ("SHUTDOWN_GRACE_MS", "soon"),
            ],
            "SHUTDOWN_GRACE_MS",
        ),
        (
            "chat",
            vec![
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
                ("SUPABASE_URL", "https://example.supabase.co"),
                ("LOG_FORMAT", "xml"),
            ],
            "LOG_FORMAT",
        ),
        (
            "scheduler",
            vec![
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
                ("MODEL_PROVIDER", "oracle"),
            ],
            "MODEL_PROVIDER",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(function_binary(function))
                .envs(runtime.function_env(function))
                .env_remove("DATABASE_URL")
                .envs(env)
                .output(),
        )
        .await
        .expect("exits at once")
        .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{function} started without a valid configuration"
        );
        assert!(stderr.contains(named), "{function}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{function} printed the password: {stderr}");
    }
}
