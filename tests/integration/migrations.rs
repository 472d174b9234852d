use crate::helpers::TestDb;

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_reapply_as_a_no_op() {
    let db = TestDb::empty().await;
    let first = shared::db::migrate::run(&db.direct_settings())
        .await
        .expect("first run");
    assert!(!first.applied.is_empty(), "an empty database gets the schema");

    let second = shared::db::migrate::run(&db.direct_settings())
        .await
        .expect("second run");
    assert!(
        second.applied.is_empty(),
        "re-running applies nothing: {:?}",
        second.applied
    );

    let client = db.direct().await;
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for t in ["agent_tasks", "agents", "conversations", "messages"] {
        assert!(tables.contains(&t.to_string()), "{t} exists in {tables:?}");
    }
}

#[tokio::test]
async fn a_task_is_insertable_with_only_agent_prompt_approval_and_schedule() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent: uuid::Uuid = client
        .query_one("INSERT INTO agents (name) VALUES ('a') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let row = client
        .query_one(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for) \
             VALUES ($1, 'p', 'approved', now()) RETURNING status, attempts, max_attempts",
            &[&agent],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert!(row.get::<_, i32>(2) >= 1);
}

#[tokio::test]
async fn state_columns_reject_unknown_states() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent: uuid::Uuid = client
        .query_one("INSERT INTO agents (name) VALUES ('a') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    for (sql, state) in [
        (
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, status) VALUES ($1, 'p', 'approved', $2)",
            "done",
        ),
        (
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status) VALUES ($1, 'p', $2)",
            "maybe",
        ),
    ] {
        let err = client.execute(sql, &[&agent, &state]).await.unwrap_err();
        assert_eq!(
            err.code().map(tokio_postgres::error::SqlState::code),
            Some("23514"),
            "{state}: {err}"
        );
    }
}

#[tokio::test]
async fn a_recurring_occurrence_cannot_be_created_twice() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent: uuid::Uuid = client
        .query_one("INSERT INTO agents (name) VALUES ('a') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let series = uuid::Uuid::new_v4();
    let insert = "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for, series_id, cron) \
                  VALUES ($1, 'p', 'approved', '2030-01-01T00:00:00Z', $2, '0 * * * *') \
                  ON CONFLICT DO NOTHING";
    assert_eq!(client.execute(insert, &[&agent, &series]).await.unwrap(), 1);
    assert_eq!(client.execute(insert, &[&agent, &series]).await.unwrap(), 0);
}
