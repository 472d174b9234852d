//! A Supabase project's Data API, reproduced: the roles `anon` and `authenticated` with
//! Supabase's default privileges set up *before* migrating, then every query made the way
//! PostgREST makes it (`SET LOCAL ROLE` and the verified claims in `request.jwt.claims`, inside
//! one transaction). And the functions' least-privilege role.

use tokio_postgres::Client;

use crate::helpers::TestDb;

const ALICE: &str = "11111111-1111-4111-8111-111111111111";
const BOB: &str = "22222222-2222-4222-8222-222222222222";

/// A fresh database prepared as Supabase prepares one, then migrated.
async fn supabase_like() -> (TestDb, Client) {
    let db = TestDb::empty().await;
    let admin = db.direct().await;
    admin
        .batch_execute(
            "DO $$
             DECLARE r text;
             BEGIN
               FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                   BEGIN
                     EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                   END;
                 END IF;
               END LOOP;
             END $$;
             GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;",
        )
        .await
        .expect("Supabase's roles and default privileges");
    shared::db::migrate::run(&db.direct_settings())
        .await
        .expect("migrations apply");
    seed(&admin).await;
    (db, admin)
}

/// Alice and Bob each with a private agent, a conversation, messages and a task; one public agent.
async fn seed(admin: &Client) {
    admin
        .batch_execute(&format!(
            "INSERT INTO agents (id, name, description, instructions, visibility, owner_id) VALUES
               ('00000000-0000-4000-8000-00000000000a', 'public helper', 'for everyone', 'PUBLIC-PROMPT', 'public', NULL),
               ('00000000-0000-4000-8000-00000000000b', 'alice agent', 'hers', 'ALICE-PROMPT', 'private', '{ALICE}'),
               ('00000000-0000-4000-8000-00000000000c', 'bob agent', 'his', 'BOB-PROMPT', 'private', '{BOB}'),
               ('00000000-0000-4000-8000-00000000000d', 'operator agent', 'internal', 'OPERATOR-PROMPT', 'private', NULL);
             INSERT INTO conversations (id, user_id, agent_id) VALUES
               ('00000000-0000-4000-8000-0000000000a1', '{ALICE}', '00000000-0000-4000-8000-00000000000a'),
               ('00000000-0000-4000-8000-0000000000b1', '{BOB}', '00000000-0000-4000-8000-00000000000a');
             INSERT INTO messages (conversation_id, user_id, role, content) VALUES
               ('00000000-0000-4000-8000-0000000000a1', '{ALICE}', 'user', 'alice asks'),
               ('00000000-0000-4000-8000-0000000000a1', '{ALICE}', 'assistant', 'alice is answered'),
               ('00000000-0000-4000-8000-0000000000b1', '{BOB}', 'user', 'bob asks');
             INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for) VALUES
               ('00000000-0000-4000-8000-00000000000a', '{ALICE}', 'alice task', 'pending', now()),
               ('00000000-0000-4000-8000-00000000000a', '{BOB}', 'bob task', 'pending', now());"
        ))
        .await
        .expect("seed");
}

/// What PostgREST does for one request: a transaction, the role, the claims, the statement.
async fn as_data_api(admin: &Client, role: &str, sub: Option<&str>, sql: &str) -> Result<Vec<String>, String> {
    let claims = match sub {
        Some(s) => format!(r#"{{"sub":"{s}","role":"{role}","aud":"authenticated"}}"#),
        None => format!(r#"{{"role":"{role}"}}"#),
    };
    admin.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
    let result = async {
        admin
            .batch_execute(&format!("SET LOCAL ROLE {role}"))
            .await
            .map_err(|e| e.to_string())?;
        admin
            .execute("SELECT set_config('request.jwt.claims', $1, true)", &[&claims])
            .await
            .map_err(|e| e.to_string())?;
        let messages = admin.simple_query(sql).await.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| format!("{}: {}", d.code().code(), d.message()))
        })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .collect())
    }
    .await;
    admin.batch_execute("ROLLBACK").await.map_err(|e| e.to_string())?;
    result
}

fn denied(result: &Result<Vec<String>, String>) -> bool {
    matches!(result, Err(e) if e.starts_with("42501"))
}

const TABLES: [&str; 8] = [
    "agents",
    "agent_tools",
    "agent_tool_sources",
    "conversations",
    "messages",
    "agent_tasks",
    "chat_usage",
    "usage_daily",
];

#[tokio::test]
async fn anon_reads_and_writes_nothing_through_the_data_api() {
    let (_db, admin) = supabase_like().await;
    for table in TABLES.iter().chain(&["refinery_schema_history"]) {
        let read = as_data_api(&admin, "anon", None, &format!("SELECT count(*)::text FROM {table}")).await;
        assert!(denied(&read), "anon reads {table}: {read:?}");
        let delete = as_data_api(&admin, "anon", None, &format!("DELETE FROM {table}")).await;
        assert!(denied(&delete), "anon deletes from {table}: {delete:?}");
    }
    let rewrite = as_data_api(&admin, "anon", None, "UPDATE agents SET instructions = 'pwned'").await;
    assert!(denied(&rewrite), "{rewrite:?}");
    let spend = as_data_api(
        &admin,
        "anon",
        None,
        "INSERT INTO agent_tasks (agent_id, prompt, approval_status) \
         VALUES ('00000000-0000-4000-8000-00000000000a', 'spend', 'approved')",
    )
    .await;
    assert!(denied(&spend), "{spend:?}");
}

#[tokio::test]
async fn a_signed_in_user_reads_exactly_their_own_rows_and_the_agents_they_may_use() {
    let (_db, admin) = supabase_like().await;
    let alice = |sql: &'static str| as_data_api(&admin, "authenticated", Some(ALICE), sql);
    assert_eq!(
        alice("SELECT content FROM messages ORDER BY created_at").await.unwrap(),
        vec!["alice asks", "alice is answered"]
    );
    assert_eq!(
        alice("SELECT id::text FROM conversations").await.unwrap(),
        vec!["00000000-0000-4000-8000-0000000000a1"]
    );
    assert_eq!(
        alice("SELECT prompt FROM agent_tasks").await.unwrap(),
        vec!["alice task"]
    );
    assert_eq!(
        alice("SELECT name FROM agents ORDER BY name").await.unwrap(),
        vec!["alice agent", "public helper"],
        "public agents and her own, not Bob's or the operator's private ones"
    );
    // Bob's rows, even asked for by id, are simply not there.
    assert_eq!(
        alice("SELECT count(*)::text FROM messages WHERE conversation_id = '00000000-0000-4000-8000-0000000000b1'")
            .await
            .unwrap(),
        vec!["0"]
    );
    // Without claims (or with another user's), nothing of Alice's.
    let nobody = as_data_api(&admin, "authenticated", None, "SELECT count(*)::text FROM messages").await;
    assert_eq!(nobody.unwrap(), vec!["0"]);
    let bob = as_data_api(&admin, "authenticated", Some(BOB), "SELECT content FROM messages").await;
    assert_eq!(bob.unwrap(), vec!["bob asks"]);
}

#[tokio::test]
async fn a_signed_in_user_reads_exactly_their_own_usage_rows_anon_none_and_nobody_writes_them() {
    let (_db, admin) = supabase_like().await;
    admin
        .batch_execute(&format!(
            "INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls) VALUES
               (current_date, '{ALICE}', '00000000-0000-4000-8000-00000000000a', 'alice-model', 10, 5, 1),
               (current_date - 1, '{ALICE}', '00000000-0000-4000-8000-00000000000b', 'alice-model', 20, 6, 2),
               (current_date, '{BOB}', '00000000-0000-4000-8000-00000000000a', 'bob-model', 30, 7, 3)"
        ))
        .await
        .unwrap();
    let rows = "SELECT user_id::text || ' ' || model || ' ' || input_tokens || '/' || output_tokens || '/' || calls \
                FROM usage_daily ORDER BY day DESC";
    let read = |role: &'static str, sub: Option<&'static str>| as_data_api(&admin, role, sub, rows);
    assert_eq!(
        read("authenticated", Some(ALICE)).await.unwrap(),
        vec![
            format!("{ALICE} alice-model 10/5/1"),
            format!("{ALICE} alice-model 20/6/2")
        ]
    );
    assert_eq!(
        read("authenticated", Some(BOB)).await.unwrap(),
        vec![format!("{BOB} bob-model 30/7/3")]
    );
    // Bob's row asked for by his id: not there for Alice; without claims, nothing at all.
    let bobs = as_data_api(
        &admin,
        "authenticated",
        Some(ALICE),
        &format!("SELECT count(*)::text FROM usage_daily WHERE user_id = '{BOB}'"),
    )
    .await;
    assert_eq!(bobs.unwrap(), vec!["0"]);
    assert_eq!(read("authenticated", None).await.unwrap(), Vec::<String>::new());
    let anon = read("anon", None).await;
    assert!(denied(&anon), "anon reads usage: {anon:?}");
    for role in ["authenticated", "anon"] {
        for sql in [
            format!(
                "INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls) \
                 VALUES (current_date + 1, '{ALICE}', '00000000-0000-4000-8000-00000000000a', 'forged', 0, 0, 0)"
            ),
            "UPDATE usage_daily SET input_tokens = 0, output_tokens = 0".to_string(),
            "DELETE FROM usage_daily".to_string(),
        ] {
            let result = as_data_api(&admin, role, Some(ALICE), &sql).await;
            assert!(denied(&result), "{role}: {sql}: {result:?}");
        }
    }
    let untouched: i64 = admin
        .query_one(
            "SELECT sum(input_tokens + output_tokens + calls)::int8 FROM usage_daily",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, 15 + 1 + 26 + 2 + 37 + 3);
}

#[tokio::test]
async fn no_signed_in_user_reads_an_agents_instructions() {
    let (_db, admin) = supabase_like().await;
    for sql in [
        "SELECT instructions FROM agents",
        "SELECT * FROM agents",
        "SELECT count(*)::text FROM agents WHERE instructions LIKE 'ALICE%'",
    ] {
        let read = as_data_api(&admin, "authenticated", Some(ALICE), sql).await;
        assert!(denied(&read), "{sql}: {read:?}");
    }
    let listed = as_data_api(
        &admin,
        "authenticated",
        Some(ALICE),
        "SELECT id::text || ' ' || name || ' ' || description || ' ' || visibility FROM agents ORDER BY name",
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|l| !l.contains("PROMPT")), "{listed:?}");
}

#[tokio::test]
async fn a_signed_in_user_cannot_insert_update_or_delete_anything() {
    let (_db, admin) = supabase_like().await;
    let writes = [
        format!(
            "INSERT INTO messages (conversation_id, user_id, role, content) \
             VALUES ('00000000-0000-4000-8000-0000000000a1', '{ALICE}', 'assistant', 'forged')"
        ),
        "UPDATE messages SET content = 'edited'".to_string(),
        "DELETE FROM messages".to_string(),
        "UPDATE agent_tasks SET approval_status = 'approved'".to_string(),
        format!(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status) \
             VALUES ('00000000-0000-4000-8000-00000000000a', '{ALICE}', 'spend', 'approved')"
        ),
        "UPDATE agents SET instructions = 'pwned'".to_string(),
        format!("INSERT INTO agents (name, visibility, owner_id) VALUES ('mine', 'public', '{ALICE}')"),
        "DELETE FROM conversations".to_string(),
        format!("INSERT INTO chat_usage (user_id, window_start, window_count) VALUES ('{ALICE}', now(), 0)"),
    ];
    for sql in &writes {
        let result = as_data_api(&admin, "authenticated", Some(ALICE), sql).await;
        assert!(denied(&result), "{sql}: {result:?}");
    }
    let untouched = admin
        .query_one(
            "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM agent_tasks WHERE approval_status = 'approved')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(untouched, 3, "three messages, no approved task");
}

#[tokio::test]
async fn every_table_the_backend_creates_has_row_level_security_and_no_grant_to_anon() {
    let (_db, admin) = supabase_like().await;
    let rows = admin
        .query(
            "SELECT c.relname::text, c.relrowsecurity,
                    has_table_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        rows.len() > TABLES.len(),
        "the tables and the migration history were found"
    );
    for row in rows {
        let (table, rls, anon): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(rls, "{table} has row level security off");
        assert!(!anon, "anon holds a privilege on {table}");
    }
}

#[tokio::test]
async fn only_the_functions_role_may_run_the_schedulers_claim_function_and_the_data_api_cannot_reach_it() {
    let (_db, admin) = supabase_like().await;
    let can = |role: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT has_schema_privilege($1, 'agent_private', 'USAGE')
                         OR has_function_privilege($1, 'agent_private.lone_claim(text, float8, int8, text, uuid, int8)', 'EXECUTE')",
                    &[&role],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(can("agent_backend").await);
    for role in ["anon", "authenticated", "agent_monitor"] {
        assert!(!can(role).await, "{role} may reach agent_private.lone_claim");
    }
    let called = as_data_api(
        &admin,
        "authenticated",
        Some(&uuid::Uuid::new_v4().to_string()),
        "SELECT count(*)::text FROM agent_private.lone_claim('x', 60, 10, 'e', '00000000-0000-0000-0000-000000000000', 0)",
    )
    .await;
    assert!(denied(&called), "a signed-in user claimed tasks: {called:?}");
}

#[tokio::test]
async fn the_functions_role_has_exactly_what_the_functions_need() {
    let (_db, admin) = supabase_like().await;
    let can = |table: &str, privilege: &str| {
        let admin = &admin;
        let sql = format!("SELECT has_table_privilege('agent_backend', '{table}', '{privilege}')");
        async move { admin.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0) }
    };
    let column = |column: &str, privilege: &str| {
        let admin = &admin;
        let sql = format!("SELECT has_column_privilege('agent_backend', 'agents', '{column}', '{privilege}')");
        async move { admin.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0) }
    };
    assert!(can("agents", "SELECT").await);
    // The API creates and edits a user's agents: their own fields, never who owns them nor
    // whether they are public once made; and it deletes none.
    for field in ["name", "description", "instructions", "model", "daily_token_budget"] {
        for privilege in ["INSERT", "UPDATE"] {
            assert!(
                column(field, privilege).await,
                "agent_backend may not {privilege} agents.{field}"
            );
        }
    }
    for field in ["owner_id", "visibility"] {
        assert!(
            column(field, "INSERT").await,
            "agent_backend may not set agents.{field} on creation"
        );
        assert!(
            !column(field, "UPDATE").await,
            "agent_backend may UPDATE agents.{field}"
        );
    }
    for field in ["id", "created_at"] {
        assert!(
            !column(field, "UPDATE").await,
            "agent_backend may UPDATE agents.{field}"
        );
    }
    for privilege in ["DELETE", "TRUNCATE"] {
        assert!(!can("agents", privilege).await, "agent_backend may {privilege} agents");
    }
    // An agent's tools are replaced as a set: the functions' role deletes them too.
    for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        assert!(
            can("agent_tools", privilege).await,
            "agent_backend may not {privilege} agent_tools"
        );
    }
    assert!(
        !can("agent_tools", "TRUNCATE").await,
        "agent_backend may TRUNCATE agent_tools"
    );
    for table in ["conversations", "messages", "agent_tasks", "chat_usage"] {
        for privilege in ["SELECT", "INSERT", "UPDATE"] {
            assert!(can(table, privilege).await, "agent_backend may not {privilege} {table}");
        }
        for privilege in ["DELETE", "TRUNCATE"] {
            assert!(!can(table, privilege).await, "agent_backend may {privilege} {table}");
        }
    }
    assert!(!can("refinery_schema_history", "SELECT").await);
    let settings: Vec<String> = admin
        .query_one(
            "SELECT coalesce(array_agg(s ORDER BY s), '{}') FROM pg_db_role_setting d
               JOIN pg_roles r ON r.oid = d.setrole, unnest(d.setconfig) s
              WHERE r.rolname = 'agent_backend' AND d.setdatabase = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        settings.iter().any(|s| s.starts_with("statement_timeout="))
            && settings
                .iter()
                .any(|s| s.starts_with("idle_in_transaction_session_timeout=")),
        "{settings:?}"
    );
}

#[tokio::test]
async fn the_functions_connect_as_the_least_privilege_role_through_the_pooler() {
    let db = TestDb::new().await;
    let pool = db.default_pool();
    let conn = pool.conn().await.unwrap();
    let who = conn
        .sql()
        .simple("SELECT current_user::text, current_setting('statement_timeout')")
        .await
        .unwrap();
    let row = who.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            Some((r.get(0).unwrap_or("").to_string(), r.get(1).unwrap_or("").to_string()))
        }
        _ => None,
    });
    assert_eq!(row, Some(("agent_backend".to_string(), "10s".to_string())));
    let err = conn
        .sql()
        .simple("UPDATE agents SET visibility = 'public'")
        .await
        .unwrap_err();
    let chain = shared::telemetry::Chain(&err).to_string();
    assert!(chain.contains("permission denied"), "{chain}");
}

#[tokio::test]
async fn a_table_created_after_migrating_is_closed_to_the_data_api_despite_supabase_default_privileges() {
    let (_db, admin) = supabase_like().await;
    admin
        .batch_execute(
            "CREATE TABLE later_feature (id int PRIMARY KEY, secret text);
             INSERT INTO later_feature VALUES (1, 'not for the Data API');
             CREATE SEQUENCE later_seq;
             CREATE FUNCTION later_rpc() RETURNS text LANGUAGE sql AS $$ SELECT 'called' $$;",
        )
        .await
        .unwrap();
    for role in ["anon", "authenticated"] {
        let read = as_data_api(&admin, role, Some(ALICE), "SELECT secret FROM later_feature").await;
        assert!(denied(&read), "{role} reads a new table: {read:?}");
        let write = as_data_api(&admin, role, Some(ALICE), "INSERT INTO later_feature VALUES (2, 'x')").await;
        assert!(denied(&write), "{role} writes a new table: {write:?}");
        let next = as_data_api(&admin, role, Some(ALICE), "SELECT nextval('later_seq')::text").await;
        assert!(denied(&next), "{role} uses a new sequence: {next:?}");
        let rpc = as_data_api(&admin, role, Some(ALICE), "SELECT later_rpc()").await;
        assert!(denied(&rpc), "{role} calls a new function: {rpc:?}");
    }
}

#[tokio::test]
async fn the_data_api_does_not_tell_a_user_who_owns_an_agent() {
    let (_db, admin) = supabase_like().await;
    let owners = as_data_api(
        &admin,
        "authenticated",
        Some(ALICE),
        "SELECT owner_id::text FROM agents",
    )
    .await;
    assert!(denied(&owners), "owner ids readable: {owners:?}");
    // The agents themselves stay readable, without the column.
    let names = as_data_api(
        &admin,
        "authenticated",
        Some(ALICE),
        "SELECT name FROM agents ORDER BY name",
    )
    .await;
    assert_eq!(names.unwrap(), vec!["alice agent", "public helper"]);
}

/// Roles are cluster-wide and every test migrates its own database, so role memberships are
/// checked on a cluster of this test's own, migrated once.
#[tokio::test]
async fn only_the_monitor_role_reads_every_session_and_migrate_never_sends_a_password() {
    let cluster = crate::helpers::PrivateCluster::start(20, 3);
    let admin = cluster.connect().await;
    admin
        .batch_execute("ALTER SYSTEM SET log_statement = 'all'")
        .await
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let logging = crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        let fresh = cluster.connect().await;
        let row = fresh.query_one("SHOW log_statement", &[]).await.unwrap();
        row.get::<_, String>(0) == "all"
    })
    .await;
    assert!(logging, "the server logs every statement");
    let settings = crate::helpers::settings_for(&cluster.url("postgres"), &crate::helpers::PoolOptions::default());
    let (functions, monitor) = ("functions-pw-Zq81", "monitor-pw-Kx27");
    shared::db::migrate::run_with(
        &settings,
        shared::db::migrate::Passwords {
            functions: Some(functions),
            monitor: Some(monitor),
        },
    )
    .await
    .expect("migrations apply");
    let member = |role: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one("SELECT pg_has_role($1, 'pg_read_all_stats', 'MEMBER')", &[&role])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(
        !member("agent_backend").await,
        "the public functions' role reads every session"
    );
    assert!(
        member("agent_monitor").await,
        "the health role cannot read every session"
    );
    // Both roles log in with their passwords; the server's statement log never saw them.
    for (role, password) in [("agent_backend", functions), ("agent_monitor", monitor)] {
        let url = format!("postgres://{role}:{password}@127.0.0.1:{}/postgres", cluster.port);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{role} logs in: {e}"));
        tokio::spawn(conn);
        let stored: String = admin
            .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&role])
            .await
            .unwrap()
            .get(0);
        assert!(stored.starts_with("SCRAM-SHA-256$"), "{role}: {stored}");
        drop(client);
    }
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(log.contains("ALTER ROLE agent_backend"), "the statement log is on");
    assert!(
        !log.contains(functions) && !log.contains(monitor),
        "a password reached the server's log"
    );
}

#[tokio::test]
async fn no_data_api_role_reads_or_writes_an_agents_tools() {
    let (_db, admin) = supabase_like().await;
    admin
        .batch_execute(
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url) VALUES
               ('00000000-0000-4000-8000-00000000000b', 'lookup', 'ALICE-TOOL', '{\"type\": \"object\"}',
                'https://tools.example.com/lookup')",
        )
        .await
        .unwrap();
    for (role, sub) in [
        ("anon", None),
        ("authenticated", Some(ALICE)),
        ("authenticated", Some(BOB)),
    ] {
        for sql in [
            "SELECT description FROM agent_tools".to_string(),
            "SELECT count(*)::text FROM agent_tools".to_string(),
            "UPDATE agent_tools SET url = 'https://evil.example.com/'".to_string(),
            "DELETE FROM agent_tools".to_string(),
            "INSERT INTO agent_tools (agent_id, name, description, parameters, url) VALUES \
             ('00000000-0000-4000-8000-00000000000b', 'forged', 'x', '{}', 'https://evil.example.com/')"
                .to_string(),
        ] {
            let result = as_data_api(&admin, role, sub, &sql).await;
            assert!(denied(&result), "{role} {sub:?}: {sql}: {result:?}");
        }
    }
    let untouched: String = admin
        .query_one("SELECT string_agg(name || ' ' || url, ',') FROM agent_tools", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, "lookup https://tools.example.com/lookup");
}

#[tokio::test]
async fn no_data_api_role_reads_or_writes_an_agents_tool_sources_nor_their_sealed_headers() {
    let (_db, admin) = supabase_like().await;
    admin
        .batch_execute(
            "INSERT INTO agent_tool_sources (agent_id, name, url, auth_header) VALUES
               ('00000000-0000-4000-8000-00000000000b', 'github', 'https://mcp.example.com/mcp', '\\x01aabbcc')",
        )
        .await
        .unwrap();
    for (role, sub) in [
        ("anon", None),
        ("authenticated", Some(ALICE)),
        ("authenticated", Some(BOB)),
    ] {
        for sql in [
            "SELECT encode(auth_header, 'hex') FROM agent_tool_sources",
            "SELECT url FROM agent_tool_sources",
            "SELECT count(*)::text FROM agent_tool_sources",
            "UPDATE agent_tool_sources SET url = 'https://evil.example.com/'",
            "UPDATE agent_tool_sources SET auth_header = NULL",
            "DELETE FROM agent_tool_sources",
            "INSERT INTO agent_tool_sources (agent_id, name, url) VALUES \
             ('00000000-0000-4000-8000-00000000000b', 'forged', 'https://evil.example.com/')",
        ] {
            let result = as_data_api(&admin, role, sub, sql).await;
            assert!(denied(&result), "{role} {sub:?}: {sql}: {result:?}");
        }
    }
    let untouched: String = admin
        .query_one(
            "SELECT string_agg(name || ' ' || url || ' ' || encode(auth_header, 'hex'), ',') FROM agent_tool_sources",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, "github https://mcp.example.com/mcp 01aabbcc");
}

#[tokio::test]
async fn the_functions_role_creates_only_private_owned_agents_and_never_moves_or_publishes_one() {
    let (_db, admin) = supabase_like().await;
    let backend = |sql: String| {
        let admin = &admin;
        async move { as_data_api(admin, "agent_backend", None, &sql).await }
    };
    let made = backend(format!(
        "INSERT INTO agents (name, owner_id, visibility) VALUES ('mine', '{ALICE}', 'private') RETURNING name"
    ))
    .await;
    assert_eq!(made.unwrap(), vec!["mine"]);
    for sql in [
        format!("INSERT INTO agents (name, owner_id, visibility) VALUES ('x', '{ALICE}', 'public')"),
        "INSERT INTO agents (name, visibility) VALUES ('x', 'private')".to_string(),
    ] {
        // A row-level security refusal is 42501 too.
        let refused = backend(sql.clone()).await;
        assert!(denied(&refused), "{sql}: {refused:?}");
    }
    for sql in [
        format!("UPDATE agents SET owner_id = '{BOB}'"),
        "UPDATE agents SET visibility = 'public'".to_string(),
        "DELETE FROM agents".to_string(),
    ] {
        let refused = backend(sql.clone()).await;
        assert!(denied(&refused), "{sql}: {refused:?}");
    }
    // The operator's agents (no owner) are not the API's to edit: the statement finds no row.
    let edited =
        backend("UPDATE agents SET instructions = 'pwned' WHERE owner_id IS NULL RETURNING name".to_string()).await;
    assert_eq!(edited.unwrap(), Vec::<String>::new());
    let owned = backend(format!(
        "UPDATE agents SET description = 'edited' WHERE owner_id = '{ALICE}' RETURNING name"
    ))
    .await;
    assert_eq!(owned.unwrap(), vec!["alice agent"]);
}
