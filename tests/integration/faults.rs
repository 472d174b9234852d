//! Faults on loopback, each bounded in time: the pooler restarted or stalled, Postgres
//! restarted, a server connection killed, SIGTERM during a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat::Settings as ChatSettings;
use integration_tests::harness::{harness_with, quiet_metrics, USER};
use integration_tests::models::ChatModel;
use integration_tests::scheduling::{invoke, status_counts};
use scheduler::{Scheduler, Settings as SchedulerSettings};
use serde_json::json;
use shared::db::Db;
use shared::model::LocalModel;

use crate::helpers::{
    admin_command, deadline_in, eventually, pooler_clients, settings_for, PoolOptions, PrivateBouncer, PrivateCluster,
    RuntimeApi, TestDb,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_restart_during_traffic_fails_fast_with_503_and_traffic_resumes() {
    let mut bouncer = PrivateBouncer::start(4).await;
    let config = ChatSettings {
        rate_limit: 1_000_000,
        ..ChatSettings::default()
    };
    let h = harness_with(ChatModel::new(Duration::from_millis(20)), config, Some(&bouncer), false).await;
    assert_eq!(h.send("before", None).await.0, 200);

    // What the traffic has had so far: answers, and the 503s among them.
    let (answered, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let traffic = async {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let started = Instant::now();
            let (status, _) = h.send("during", None).await;
            seen.push((status, started.elapsed()));
            answered.fetch_add(1, Ordering::SeqCst);
            if status == 503 {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            // Pacing: steady traffic, not a busy loop on the test machine's cores.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    };
    let fault = async {
        // The pooler goes once traffic is flowing, and comes back once requests have met its
        // absence (the assertions below say whether they did).
        eventually(Duration::from_secs(2), || async {
            answered.load(Ordering::SeqCst) >= 3
        })
        .await;
        bouncer.stop();
        eventually(Duration::from_secs(2), || async { refused.load(Ordering::SeqCst) >= 3 }).await;
        bouncer.restart().await;
    };
    let (seen, ()) = tokio::join!(traffic, fault);
    let mut by_status = std::collections::BTreeMap::new();
    for (s, _) in &seen {
        *by_status.entry(*s).or_insert(0) += 1;
    }
    assert!(by_status.contains_key(&503), "the outage was seen: {by_status:?}");
    assert_eq!(
        by_status.keys().copied().collect::<Vec<_>>(),
        vec![200, 503],
        "failures are 503, never 500 or a validation error"
    );
    let slowest = seen.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "every request ended fast ({slowest:?})"
    );
    assert_eq!(
        seen.last().unwrap().0,
        200,
        "traffic resumed without restarting the function"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_a_scheduler_run_loses_no_task() {
    let cluster = PrivateCluster::start(40, 3);
    cluster
        .connect()
        .await
        .batch_execute("CREATE DATABASE agents")
        .await
        .unwrap();
    let direct = cluster.url("agents");
    let mut direct_settings = settings_for(&direct, &PoolOptions::default());
    direct_settings.application_name = "migrate".into();
    shared::db::migrate::run(&direct_settings).await.unwrap();
    let (inspector, conn) = tokio_postgres::connect(&direct, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    inspector
        .batch_execute(
            "INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'public');
             INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             SELECT '00000000-0000-4000-8000-000000000001', 'job ' || i, 'approved', now() - interval '1 minute'
               FROM generate_series(1, 300) i;",
        )
        .await
        .unwrap();
    drop(inspector);

    let bouncer = PrivateBouncer::in_front_of(cluster.port, 4).await;
    let pooled = format!("postgres://postgres:postgres@127.0.0.1:{}/agents", bouncer.port);
    // The interrupted run fails fast (connect bound 500 ms); the one after it is not in a hurry.
    let scheduler = |latency_ms: u64, connect_ms: u64| {
        Scheduler::new(
            Db::new(&settings_for(
                &pooled,
                &PoolOptions {
                    app: "scheduler".into(),
                    max_size: 2,
                    connect: Duration::from_millis(connect_ms),
                    ..PoolOptions::default()
                },
            ))
            .unwrap(),
            Arc::new(LocalModel {
                latency: Duration::from_millis(latency_ms),
            }),
            SchedulerSettings {
                min_concurrency: 4,
                max_concurrency: 4,
                batch_size: 20,
                safety_margin: Duration::from_millis(300),
                lease_grace: Duration::from_millis(200),
                ..SchedulerSettings::default()
            },
            quiet_metrics("scheduler"),
        )
    };
    let first = scheduler(50, 500);
    let run = invoke(&first, json!({}), Duration::from_secs(3));
    let (watch, conn) = tokio_postgres::connect(&direct, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let crash = async {
        // Mid-run: some tasks completed, others still to go.
        let midway = eventually(Duration::from_secs(10), || async {
            watch
                .query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) > 0)
        })
        .await;
        assert!(midway, "the first run got going");
        cluster.restart();
    };
    let (result, ()) = tokio::join!(run, crash);
    // The interrupted run either failed cleanly or finished what it could.
    if let Ok(summary) = &result {
        assert!(summary.completed < 300, "{summary:?}");
    }

    // Once the leases (3 s deadline + 0.2 s grace) expire, a later run rescues and completes all.
    let (check, conn) = tokio_postgres::connect(&direct, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let expired = eventually(Duration::from_secs(15), || async { no_live_lease(&check).await }).await;
    assert!(expired, "the interrupted run's leases expire");
    let second = scheduler(0, 3000);
    // An invocation may still meet the restart's aftermath: a bounded number of them, each
    // after the leases a failed one may have left have expired.
    let mut summary = None;
    let mut errors = Vec::new();
    for _ in 0..10 {
        match invoke(&second, json!({}), Duration::from_secs(5)).await {
            Ok(s) => {
                summary = Some(s);
                break;
            }
            Err(e) => errors.push(e.to_string()),
        }
        let free = eventually(Duration::from_secs(15), || async { no_live_lease(&check).await }).await;
        assert!(free, "the failed invocation's leases expire");
    }
    let summary = summary.unwrap_or_else(|| panic!("an invocation succeeds after the restart: {errors:?}"));
    assert_eq!(summary.remaining_due, 0, "{summary:?}");
    let counts = status_counts(&check).await;
    assert_eq!(
        counts,
        [("completed".to_string(), 300)].into(),
        "none lost, none left running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pooler_ends_every_request_within_its_bound_and_leaves_no_open_transaction() {
    let bouncer = PrivateBouncer::start(4).await;
    let h = harness_with(
        ChatModel::new(Duration::ZERO),
        ChatSettings::default(),
        Some(&bouncer),
        false,
    )
    .await;
    assert_eq!(h.send("warm", None).await.0, 200);
    let admin = bouncer.admin().await;
    admin_command(&admin, "PAUSE").await;
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let (status, _) = h.send(&format!("stalled {i}"), None).await;
        outcomes.push((status, started.elapsed()));
    }
    admin_command(&admin, "RESUME").await;
    for (status, elapsed) in &outcomes {
        assert!(*status == 503 || *status == 504, "{outcomes:?}");
        assert!(*elapsed < Duration::from_secs(3), "{outcomes:?}");
    }
    let inspector = h.db.direct().await;
    let clean = eventually(Duration::from_secs(3), || async {
        !h.db
            .server_sessions(&inspector)
            .await
            .iter()
            .any(|s| s.state.starts_with("idle in transaction"))
    })
    .await;
    assert!(clean, "no session left idle in transaction");
    assert_eq!(h.send("after", None).await.0, 200);
}

#[tokio::test]
async fn a_server_connection_killed_while_pooled_does_not_fail_the_next_request() {
    let mut h = harness_with(ChatModel::new(Duration::ZERO), ChatSettings::default(), None, false).await;
    // Warm mode: a connection stays pooled between requests (release mode keeps none to kill).
    h.chat.db = h.db.pool(&PoolOptions {
        app: "chat".into(),
        mode: "warm",
        ..PoolOptions::default()
    });
    assert_eq!(h.send("first", None).await.0, 200);
    let inspector = h.db.direct().await;
    let killed: i64 = inspector
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend') t",
            &[&h.db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "a pooled server connection was killed");
    let gone = eventually(Duration::from_secs(5), || async {
        h.db.server_sessions(&inspector)
            .await
            .iter()
            .all(|s| s.application_name != "chat")
    })
    .await;
    assert!(gone, "the killed server connection is gone");
    let (status, body) = h.send("second", None).await;
    assert_eq!(status, 200, "the next request succeeds: {body}");
}

#[tokio::test]
async fn sigterm_during_a_request_lets_it_finish_then_closes_the_pool() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    client
        .batch_execute(
            "INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'public')",
        )
        .await
        .unwrap();
    let secret = "sigterm-test-jwt-secret-with-32-characters";
    let supabase = "https://sigterm.supabase.co";
    let runtime = RuntimeApi::start().await;
    let mut child = runtime.spawn_function(
        "chat",
        &[
            ("DATABASE_URL", db.pooled_url.as_str()),
            ("SUPABASE_URL", supabase),
            ("SUPABASE_JWT_SECRET", secret),
            ("LOCAL_MODEL_LATENCY_MS", "800"),
            ("SHUTDOWN_GRACE_MS", "5000"),
        ],
    );
    let token = integration_tests::fakes::hs256(
        secret,
        &integration_tests::fakes::claims(&format!("{supabase}/auth/v1"), USER),
    );
    let event = integration_tests::fakes::chat_event(&token);

    let invocation = runtime.invoke(&event, deadline_in(Duration::from_secs(30)));
    let terminate = async {
        // Wait until the user's message is stored: the model is now thinking.
        let mid_request = eventually(Duration::from_secs(10), || async {
            client
                .query_one("SELECT count(*) FROM messages", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(mid_request, "the request never started");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    };
    let (result, ()) = tokio::join!(invocation, terminate);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the function exits")
        .unwrap();
    assert!(status.success());
    match result {
        crate::helpers::InvokeResult::Response(v) => assert_eq!(v["statusCode"], 200, "{v}"),
        other => panic!("{other:?}"),
    }
    let roles: Vec<String> = client
        .query("SELECT role FROM messages ORDER BY created_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(roles, vec!["user", "assistant"], "nothing half-written");
    assert_eq!(pooler_clients(&db, "chat").await, 0, "the pool was closed");
}

/// No task is running under a lease that has not expired yet.
async fn no_live_lease(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE status = 'running' AND lease_expires_at >= now()",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, i64>(0) == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_stalling_mid_run_loses_nothing_finished_and_leaves_nothing_claimed() {
    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::start(4).await;
    let sql = db.direct().await;
    sql.batch_execute(
        "INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'public');
         INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
         SELECT '00000000-0000-4000-8000-000000000001', 'job ' || i, 'approved', now() - interval '1 minute'
           FROM generate_series(1, 60) i;",
    )
    .await
    .unwrap();
    let s = Scheduler::new(
        Db::new(&settings_for(
            &bouncer.url(&db),
            &PoolOptions {
                app: "scheduler".into(),
                max_size: 2,
                statement: Duration::from_millis(400),
                wait: Duration::from_millis(300),
                ..PoolOptions::default()
            },
        ))
        .unwrap(),
        Arc::new(LocalModel {
            latency: Duration::from_millis(200),
        }),
        SchedulerSettings {
            min_concurrency: 4,
            max_concurrency: 4,
            safety_margin: Duration::from_millis(300),
            lease_grace: Duration::from_millis(200),
            ..SchedulerSettings::default()
        },
        quiet_metrics("scheduler"),
    );
    let run = invoke(&s, json!({}), Duration::from_secs(30));
    let admin = bouncer.admin().await;
    let stall = async {
        let going = eventually(Duration::from_secs(10), || async {
            sql.query_one("SELECT count(*) FROM agent_tasks WHERE status = 'completed'", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) > 0)
        })
        .await;
        assert!(going, "the run got going");
        // Statements time out while the pooler holds them: a claim or a record fails.
        admin_command(&admin, "PAUSE").await;
        // A sleep, not a condition: the stall has to outlast the 400 ms statement bound.
        tokio::time::sleep(Duration::from_millis(700)).await;
        admin_command(&admin, "RESUME").await;
    };
    let (result, ()) = tokio::join!(run, stall);
    let counts = status_counts(&sql).await;
    // Whether the run ended with the failure or got through it, every task is recorded:
    // completed, or handed back pending with no attempt spent; none left claimed.
    assert_eq!(counts.get("running"), None, "{counts:?} ({result:?})");
    assert_eq!(counts.values().sum::<i64>(), 60);
    let spent: i64 = sql
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE status = 'pending' AND attempts <> 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(spent, 0, "a task handed back unstarted kept no attempt");
    if let Ok(summary) = &result {
        assert_eq!(summary.completed as i64, counts.get("completed").copied().unwrap_or(0));
    }
}
