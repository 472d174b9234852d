//! The scheduler function as the tests drive it: in process with short margins
//! ([`test_config`], [`scheduler_on`]) and invoked with a deadline ([`invoke`]), or as the real
//! binary under the local Runtime API ([`scheduler_process`], [`scheduled_invocation`]); and the
//! tasks it runs, seeded and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent};
use scheduler::{Scheduler, SchedulerError, Settings as SchedulerSettings, Summary};
use serde_json::Value;
use shared::model::SharedModel;
use tokio_postgres::Client;

use crate::harness::quiet_metrics;
use crate::helpers::{deadline_in, InvokeResult, PoolOptions, RuntimeApi, TestDb};

/// The default settings with margins short enough for a test: 300 ms of safety margin, 200 ms
/// of lease grace, retries from 100 ms up to 10 s.
pub fn test_config() -> SchedulerSettings {
    SchedulerSettings {
        safety_margin: Duration::from_millis(300),
        lease_grace: Duration::from_millis(200),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(10),
        ..SchedulerSettings::default()
    }
}

/// A scheduler instance on `db` (a pool of two through the shared pgbouncer) running tasks with
/// `model` under `settings`, its metrics kept quiet.
pub fn scheduler_on(db: &TestDb, model: SharedModel, settings: SchedulerSettings) -> Scheduler {
    Scheduler::new(
        db.pool(&PoolOptions {
            app: "scheduler".into(),
            max_size: 2,
            ..PoolOptions::default()
        }),
        model,
        settings,
        quiet_metrics("scheduler"),
    )
}

/// A scheduler on `db` with the local model and the tests' short margins.
pub fn local_scheduler(db: &TestDb) -> Scheduler {
    scheduler_on(db, Arc::new(shared::model::LocalModel::default()), test_config())
}

/// One invocation of `s` with `payload`, its deadline `budget` from now.
pub async fn invoke(s: &Scheduler, payload: Value, budget: Duration) -> Result<Summary, SchedulerError> {
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    context.deadline = deadline_in(budget);
    scheduler::handle(s, LambdaEvent::new(payload, context)).await
}

/// The real scheduler binary on `db`, driven through `runtime`, with short margins and `env`;
/// killed when dropped.
pub fn scheduler_process(runtime: &RuntimeApi, db: &TestDb, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut all = vec![
        ("DATABASE_URL", db.pooled_url.as_str()),
        ("SCHEDULER_SAFETY_MARGIN_MS", "300"),
        ("SCHEDULER_LEASE_GRACE_MS", "200"),
    ];
    all.extend_from_slice(env);
    runtime.spawn_function("scheduler", &all)
}

/// The scheduled event, invoked through `runtime` with a deadline `budget` from now.
pub async fn scheduled_invocation(runtime: &RuntimeApi, budget: Duration) -> InvokeResult {
    runtime.invoke(&schedule_event(), deadline_in(budget)).await
}

/// `events/schedule.json`: EventBridge's scheduled event.
pub fn schedule_event() -> Value {
    serde_json::from_str(include_str!("../../events/schedule.json")).unwrap()
}

/// An agent, `worker`, for tasks to run on.
pub async fn seed_agent(client: &Client) -> uuid::Uuid {
    client
        .query_one(
            "INSERT INTO agents (name, instructions) VALUES ('worker', 'do the task') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// `n` approved tasks due a minute ago, with prompts `<prefix>-1 … <prefix>-n`; `extra_columns`
/// (each with a leading comma) set to `extra_values`.
pub async fn seed_tasks(
    client: &Client,
    agent: uuid::Uuid,
    n: i32,
    prefix: &str,
    extra_columns: &str,
    extra_values: &str,
) {
    let sql = format!(
        "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for{extra_columns})
         SELECT $1, $2 || '-' || i, 'approved', now() - interval '1 minute'{extra_values}
           FROM generate_series(1, $3::int) AS i"
    );
    client.execute(&sql, &[&agent, &prefix, &n]).await.unwrap();
}

/// How many tasks are in each status.
pub async fn status_counts(client: &Client) -> HashMap<String, i64> {
    client
        .query("SELECT status, count(*) FROM agent_tasks GROUP BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
