use std::time::{Duration, Instant};

use shared::db::{Db, DbError, Type};

use crate::helpers::{eventually, runs_a_statement, PoolOptions, PrivateBouncer, TestDb};

/// An agent, inserted by the owner (the functions' role only reads agents).
async fn seed_agent(db: &TestDb) -> uuid::Uuid {
    db.direct()
        .await
        .query_one("INSERT INTO agents (name) VALUES ('worker') RETURNING id", &[])
        .await
        .unwrap()
        .get(0)
}

/// A task, inserted through the pool (as the functions' role).
async fn insert_task(db: &Db, agent: uuid::Uuid, prompt: &str, max_attempts: i32) -> Result<uuid::Uuid, DbError> {
    let conn = db.conn().await?;
    let row = conn
        .sql()
        .query_one(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for, max_attempts)
             VALUES ($1, $2, 'pending', now(), $3) RETURNING id",
            &[(&agent, Type::UUID), (&prompt, Type::TEXT), (&max_attempts, Type::INT4)],
        )
        .await?;
    Ok(row.get(0))
}

/// One unit of mixed work: insert, read back, update in a transaction, count.
async fn mixed_work(db: &Db, agent: uuid::Uuid, worker: usize, round: usize) -> Result<(), DbError> {
    let prompt = format!("task-{worker}-{round}");
    let id = insert_task(db, agent, &prompt, 3).await?;
    {
        let conn = db.conn().await?;
        let row = conn
            .sql()
            .query_one("SELECT prompt FROM agent_tasks WHERE id = $1", &[(&id, Type::UUID)])
            .await?;
        assert_eq!(row.get::<_, String>(0), prompt);
    }
    let mut conn = db.conn().await?;
    let tx = conn.transaction().await?;
    tx.sql()
        .execute(
            "UPDATE agent_tasks SET result = $2, updated_at = now() WHERE id = $1",
            &[(&id, Type::UUID), (&"updated", Type::TEXT)],
        )
        .await?;
    let n: i64 = tx
        .sql()
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE id = $1 AND result = 'updated'",
            &[(&id, Type::UUID)],
        )
        .await?
        .get(0);
    assert_eq!(n, 1);
    tx.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_tasks_on_eight_pools_through_pgbouncer_see_no_errors() {
    let db = TestDb::new().await;
    let agent = seed_agent(&db).await;
    let pools: Vec<Db> = (0..8)
        .map(|i| {
            db.pool(&PoolOptions {
                app: format!("hammer-{i}"),
                max_size: 2,
                wait: Duration::from_secs(10),
                ..PoolOptions::default()
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let pool = pools[worker % pools.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for round in 0..25 {
                if let Err(e) = mixed_work(&pool, agent, worker, round).await {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.expect("task did not panic"));
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );

    let client = db.direct().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM agent_tasks WHERE result = 'updated'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 32 * 25);
}

#[tokio::test]
async fn a_statement_past_its_bound_is_cancelled_on_the_server() {
    let db = TestDb::new().await;
    let pool = db.pool(&PoolOptions {
        app: "sleeper".into(),
        statement: Duration::from_secs(1),
        ..PoolOptions::default()
    });
    let started = Instant::now();
    let err = {
        let conn = pool.conn().await.expect("checkout");
        // A statement that outlasts its 1 s bound on purpose: the bound is what is tested.
        conn.sql().simple("SELECT pg_sleep(10)").await.unwrap_err()
    };
    let elapsed = started.elapsed();
    assert!(matches!(err, DbError::StatementTimeout(_)), "{err:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "returned after {elapsed:?}, not well before 10 s"
    );

    let inspector = db.direct().await;
    let gone = eventually(Duration::from_secs(3), || async {
        !db.server_sessions(&inspector)
            .await
            .iter()
            .any(|s| s.state == "active" && s.query.contains("pg_sleep"))
    })
    .await;
    assert!(gone, "the sleeping query is still running on the server");

    // The pool serves again (the timed-out connection was discarded, not reused).
    pool.conn().await.unwrap().sql().simple("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_parameterised_statement_past_its_bound_is_cancelled_too() {
    let db = TestDb::new().await;
    let pool = db.pool(&PoolOptions {
        statement: Duration::from_millis(300),
        ..PoolOptions::default()
    });
    let conn = pool.conn().await.unwrap();
    // A statement that outlasts its 300 ms bound on purpose: the bound is what is tested.
    let err = conn
        .sql()
        .query("SELECT pg_sleep($1)", &[(&5.0f64, Type::FLOAT8)])
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::StatementTimeout(_)), "{err:?}");
}

#[tokio::test]
async fn a_second_checkout_gets_the_pool_timeout_error_after_the_wait() {
    let db = TestDb::new().await;
    let wait = Duration::from_millis(300);
    let pool = db.pool(&PoolOptions {
        max_size: 1,
        wait,
        ..PoolOptions::default()
    });
    let held = pool.conn().await.expect("first checkout");
    let started = Instant::now();
    let err = pool.conn().await.err().expect("second checkout must fail");
    let elapsed = started.elapsed();
    assert!(matches!(err, DbError::PoolTimeout(_)), "{err:?}");
    assert!(elapsed >= wait, "gave up before the wait ({elapsed:?})");
    assert!(
        elapsed < Duration::from_secs(3),
        "waited {elapsed:?}: that is a hang, not a bound"
    );
    drop(held);
    pool.conn().await.expect("free again after the holder returns it");
}

#[tokio::test]
async fn the_database_going_away_is_unreachable_and_the_same_pool_recovers() {
    let db = TestDb::new().await;
    let mut bouncer = PrivateBouncer::start(2).await;
    let settings = crate::helpers::settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            connect: Duration::from_millis(500),
            ..PoolOptions::default()
        },
    );
    let pool = Db::new(&settings).unwrap();
    pool.conn().await.unwrap().sql().simple("SELECT 1").await.unwrap();

    bouncer.stop();
    let err = async {
        let conn = pool.conn().await?;
        conn.sql().simple("SELECT 1").await?;
        Ok::<_, DbError>(())
    }
    .await
    .unwrap_err();
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
    // Nothing to reconnect to yet: still unreachable, not a hang.
    let err = pool.conn().await.err().expect("no server to connect to");
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");

    bouncer.restart().await;
    let recovered = eventually(Duration::from_secs(5), || async {
        match pool.conn().await {
            Ok(conn) => conn.sql().simple("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(recovered, "the pool did not serve again after the pooler returned");
}

#[tokio::test]
async fn a_violated_check_constraint_is_a_constraint_error_with_its_sqlstate() {
    let db = TestDb::new().await;
    let agent = seed_agent(&db).await;
    let pool = db.default_pool();
    let err = insert_task(&pool, agent, "x", 0).await.unwrap_err();
    assert!(
        matches!(&err, DbError::Constraint { code, .. } if code == "23514"),
        "{err:?}"
    );
    assert_eq!(err.kind(), shared::db::DbErrorKind::Constraint);
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_a_committed_one_persists() {
    let db = TestDb::new().await;
    let agent = seed_agent(&db).await;
    let pool = db.default_pool();
    let insert = "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
                  VALUES ($1, $2, 'pending', now())";
    {
        let mut conn = pool.conn().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        tx.sql()
            .execute(insert, &[(&agent, Type::UUID), (&"rolled back", Type::TEXT)])
            .await
            .unwrap();
    }
    {
        let mut conn = pool.conn().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        tx.sql()
            .execute(insert, &[(&agent, Type::UUID), (&"kept", Type::TEXT)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let client = db.direct().await;
    let names: Vec<String> = client
        .query("SELECT prompt FROM agent_tasks ORDER BY prompt", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, vec!["kept".to_string()]);
    let idle_in_tx = db
        .server_sessions(&client)
        .await
        .into_iter()
        .filter(|s| s.state.starts_with("idle in transaction"))
        .count();
    assert_eq!(idle_in_tx, 0, "no session is left idle in transaction");
}

#[tokio::test]
async fn connection_errors_never_contain_the_password() {
    let db = TestDb::new().await;
    let secret = "hunter2-do-not-log";
    let mut url = url::Url::parse(&db.pooled_url).unwrap();
    url.set_password(Some(secret)).unwrap();
    let settings = crate::helpers::settings_for(url.as_str(), &PoolOptions::default());
    assert!(!format!("{settings:?} {settings}").contains(secret));
    let pool = Db::new(&settings).unwrap();
    let err = pool.conn().await.err().expect("wrong password is refused");
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");

    // Nothing listening: same rule.
    let mut url = url::Url::parse(&db.pooled_url).unwrap();
    url.set_password(Some(secret)).unwrap();
    url.set_port(Some(crate::helpers::free_port())).unwrap();
    let pool = Db::new(&crate::helpers::settings_for(url.as_str(), &PoolOptions::default())).unwrap();
    let err = pool.conn().await.err().expect("nothing listens there");
    assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret));
}

#[tokio::test]
async fn a_connection_terminated_server_side_is_replaced() {
    let db = TestDb::new().await;
    // Direct pool (no pooler in between) so the server kill reaches our client socket.
    let settings = crate::helpers::settings_for(&db.direct_url, &PoolOptions::default());
    let pool = Db::new(&settings).unwrap();
    pool.conn().await.unwrap().sql().simple("SELECT 1").await.unwrap();
    let inspector = db.direct().await;
    inspector
        .simple_query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'it'",
            db.name
        ))
        .await
        .unwrap();
    let served = eventually(Duration::from_secs(3), || async {
        match pool.conn().await {
            Ok(conn) => conn.sql().simple("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(served, "the pool did not replace the terminated connection");
}

#[tokio::test]
async fn cancelling_through_pgbouncer_leaves_the_pooler_running() {
    // pgbouncer 1.18 crashes when a cancel client hangs up before its cancel is forwarded;
    // our cancel waits for the pooler to close the cancel connection.
    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::start(2).await;
    let settings = crate::helpers::settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            statement: Duration::from_millis(200),
            ..PoolOptions::default()
        },
    );
    let pool = Db::new(&settings).unwrap();
    for _ in 0..5 {
        let conn = pool.conn().await.unwrap();
        // A statement that outlasts its 200 ms bound on purpose: each one is cancelled.
        let err = conn.sql().simple("SELECT pg_sleep(3)").await.unwrap_err();
        assert!(matches!(err, DbError::StatementTimeout(_)), "{err:?}");
    }
    let admin = bouncer.admin().await;
    assert!(!crate::helpers::admin_show(&admin, "VERSION").await.is_empty());
    pool.conn().await.unwrap().sql().simple("SELECT 1").await.unwrap();
}

/// Settings for `db` through a TLS-only pgbouncer with this `sslmode` (and root certificate).
fn tls_settings(bouncer: &PrivateBouncer, db: &TestDb, sslmode: &str, root: Option<&str>) -> shared::db::DbSettings {
    let mut url = url::Url::parse(&bouncer.url(db)).unwrap();
    url.query_pairs_mut().append_pair("sslmode", sslmode);
    if let Some(root) = root {
        url.query_pairs_mut().append_pair("sslrootcert", root);
    }
    crate::helpers::settings_for(
        url.as_str(),
        &PoolOptions {
            connect: Duration::from_secs(2),
            ..PoolOptions::default()
        },
    )
}

#[tokio::test]
async fn tls_follows_sslmode_through_a_tls_only_pooler() {
    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::with_tls(2).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls-server-cert.pem");
    let works = |settings: shared::db::DbSettings| async move { runs_a_statement(&settings).await };
    // Encrypted without verification (libpq's prefer/require), and verified against the root.
    for (mode, root) in [
        ("prefer", None),
        ("require", None),
        ("verify-full", Some(root)),
        ("verify-ca", Some(root)),
    ] {
        works(tls_settings(&bouncer, &db, mode, root))
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
    }
    // Plain TCP is refused by this pooler; an unknown issuer is refused by us.
    let plain = works(tls_settings(&bouncer, &db, "disable", None)).await;
    assert!(plain.is_err(), "sslmode=disable reached a TLS-only pooler");
    // verify-full without a root is refused at init (libpq), before any connection is tried.
    let mut unverified = url::Url::parse(&bouncer.url(&db)).unwrap();
    unverified.query_pairs_mut().append_pair("sslmode", "verify-full");
    let unverified = shared::db::DbSettings::for_function(
        &shared::config::Env::default().with("DATABASE_URL", unverified.as_str()),
        "test",
        shared::db::PoolDefaults { max_size: 1 },
    );
    assert!(
        unverified.is_err(),
        "a self-signed certificate passed verify-full without its root"
    );

    // The pooler's own view (its console, over TLS too, as its admin): our connection is encrypted.
    let mut console_url = url::Url::parse(&bouncer.url(&db)).unwrap();
    let owner = url::Url::parse(&db.direct_url).unwrap();
    console_url.set_username(owner.username()).unwrap();
    console_url.set_password(owner.password()).unwrap();
    console_url.set_path("pgbouncer");
    console_url.query_pairs_mut().append_pair("sslmode", "require");
    let console = Db::new(&crate::helpers::settings_for(
        console_url.as_str(),
        &PoolOptions::default(),
    ))
    .unwrap();
    let conn = console.conn().await.unwrap();
    let rows = conn.sql().simple("SHOW CLIENTS").await.unwrap();
    let tls: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.try_get("tls").ok().flatten().map(String::from),
            _ => None,
        })
        .collect();
    assert!(
        tls.iter().any(|t| t.starts_with("TLSv1.")),
        "our connection is encrypted: {tls:?}"
    );
}
