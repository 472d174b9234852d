//! The scheduler: every due task run exactly once across racing instances, retries with growing
//! delays, deadlines and leases, recurring series, a dry run and manual payloads, instances
//! killed mid-batch, database outages, fairness between users and daily budgets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use integration_tests::harness::quiet_metrics;
use integration_tests::scheduling::{
    invoke, schedule_event, scheduled_invocation, scheduler_on, scheduler_process, seed_agent, seed_tasks,
    status_counts, test_config,
};
use lambda_runtime::Diagnostic;
use scheduler::{Scheduler, Settings as SchedulerSettings};
use serde_json::json;
use shared::model::{AgentModel, ModelError, ModelRequest};
use tokio_postgres::Client;

use crate::helpers::{eventually, PoolOptions, RuntimeApi, TestDb};

/// What the test model does with a prompt.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Succeed,
    Fail,
    Hang,
    /// The provider throttles and asks to come back in a minute.
    Throttle,
}

/// What a provider's error can say: nothing of it may reach a task's `lastError`.
const PROVIDER_DETAIL: &str = "User: arn:aws:iam::123456789012:role/agent-backend is not authorized (key sk-...Zx9q)";

/// A model that records every execution by prompt.
struct RecordingModel {
    runs: Mutex<HashMap<String, u32>>,
    behaviour: Behaviour,
    latency: Duration,
}

impl RecordingModel {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            runs: Mutex::new(HashMap::new()),
            behaviour,
            latency: Duration::ZERO,
        })
    }

    fn slow(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            runs: Mutex::new(HashMap::new()),
            behaviour: Behaviour::Succeed,
            latency,
        })
    }

    fn runs(&self) -> HashMap<String, u32> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl AgentModel for RecordingModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        *self.runs.lock().unwrap().entry(prompt.clone()).or_default() += 1;
        if !self.latency.is_zero() {
            // The model's working time: what keeps tasks running while a test acts on them.
            tokio::time::sleep(self.latency).await;
        }
        match self.behaviour {
            Behaviour::Succeed => Ok(format!("done: {prompt}")),
            Behaviour::Fail => Err(ModelError::Failed(PROVIDER_DETAIL.into())),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Throttle => Err(ModelError::Throttled {
                retry_after: Some(Duration::from_secs(60)),
            }),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_instances_run_each_of_ten_thousand_tasks_exactly_once() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 10_000, "t", "", "").await;
    let model = RecordingModel::new(Behaviour::Succeed);

    let mut instances = Vec::new();
    for _ in 0..4 {
        let s = scheduler_on(&db, model.clone(), test_config());
        instances.push(tokio::spawn(async move {
            invoke(&s, schedule_event(), Duration::from_secs(120)).await
        }));
    }
    let mut claimed = 0;
    for i in instances {
        let summary = i.await.unwrap().expect("invocation succeeds");
        claimed += summary.claimed;
        assert_eq!(summary.failed + summary.retried, 0);
    }
    assert_eq!(claimed, 10_000, "every task claimed once across the instances");

    let runs = model.runs();
    assert_eq!(runs.len(), 10_000, "every task ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "tasks run more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
    assert_eq!(status_counts(&client).await.get("completed"), Some(&10_000));
}

#[tokio::test]
async fn tasks_not_approved_or_not_due_or_cancelled_are_left_alone() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, status, scheduled_for) VALUES
               ($1, 'awaiting approval', 'pending', 'pending', now() - interval '1 hour'),
               ($1, 'rejected', 'rejected', 'pending', now() - interval '1 hour'),
               ($1, 'cancelled', 'approved', 'cancelled', now() - interval '1 hour'),
               ($1, 'future', 'approved', 'pending', now() + interval '1 hour'),
               ($1, 'due', 'approved', 'pending', now() - interval '1 hour')",
            &[&agent],
        )
        .await
        .unwrap();
    let model = RecordingModel::new(Behaviour::Succeed);
    let s = scheduler_on(&db, model.clone(), test_config());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.claimed, 1);
    assert_eq!(summary.completed, 1);
    assert_eq!(
        model.runs().keys().cloned().collect::<Vec<_>>(),
        vec!["due".to_string()]
    );

    let rows = client
        .query("SELECT prompt, status FROM agent_tasks ORDER BY prompt", &[])
        .await
        .unwrap();
    let states: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(states["awaiting approval"], "pending");
    assert_eq!(states["rejected"], "pending");
    assert_eq!(states["cancelled"], "cancelled");
    assert_eq!(states["future"], "pending");
    assert_eq!(states["due"], "completed");
}

#[tokio::test]
async fn a_failing_model_is_retried_with_growing_delays_then_failed() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 1, "flaky", ", max_attempts", ", 3").await;
    let model = RecordingModel::new(Behaviour::Fail);
    let s = scheduler_on(&db, model.clone(), test_config());

    let mut delays = Vec::new();
    for attempt in 1..=3 {
        // Wait until the retry is due, then invoke.
        let due = eventually(Duration::from_secs(10), || async {
            client
                .query_one(
                    "SELECT count(*) FROM agent_tasks WHERE status = 'pending' AND scheduled_for <= now()",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(due, "attempt {attempt} never became due");
        let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(summary.claimed, 1, "attempt {attempt}");
        let row = client
            .query_one(
                "SELECT status, attempts, last_error, extract(epoch FROM scheduled_for - updated_at)::float8
                   FROM agent_tasks",
                &[],
            )
            .await
            .unwrap();
        let (status, attempts, last_error, delay): (String, i32, Option<String>, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(attempts, attempt);
        // The provider's text (account id, role ARN, masked key) is logged, never stored.
        assert_eq!(
            last_error.as_deref(),
            Some("model_error: the model provider answered with an error (details in the function's log)")
        );
        if attempt < 3 {
            assert_eq!(status, "pending");
            assert_eq!(summary.retried, 1);
            delays.push(delay);
        } else {
            assert_eq!(status, "failed", "failed after max_attempts");
            assert_eq!(summary.failed, 1);
        }
    }
    // Equal jitter: retry 1 waits 50-100 ms, retry 2 waits 100-200 ms.
    assert!(delays[0] >= 0.05 && delays[0] <= 0.1, "{delays:?}");
    assert!(delays[1] >= 0.1 && delays[1] <= 0.2, "{delays:?}");
    assert!(delays[1] >= delays[0], "delays grow: {delays:?}");
    assert_eq!(model.runs()["flaky-1"], 3);
}

#[tokio::test]
async fn a_hanging_model_is_cut_by_the_task_timeout() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 3, "stuck", "", "").await;
    let s = scheduler_on(
        &db,
        RecordingModel::new(Behaviour::Hang),
        SchedulerSettings {
            task_timeout: Duration::from_millis(300),
            // Retried tasks come due again after the run, however long a loaded machine makes it.
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(120),
            ..test_config()
        },
    );
    // Uncut, the three would hang until the invocation's deadline and be handed back unrun:
    // retried, with a model_timeout each, is what only the cut gives.
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.retried, 3);
    let errors: Vec<String> = client
        .query("SELECT last_error FROM agent_tasks WHERE status = 'pending'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.starts_with("model_timeout:")), "{errors:?}");
}

#[tokio::test]
async fn a_short_deadline_stops_the_run_with_the_rest_still_pending() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 200, "slow", "", "").await;
    let s = scheduler_on(
        &db,
        RecordingModel::slow(Duration::from_millis(50)),
        SchedulerSettings {
            min_concurrency: 2,
            max_concurrency: 2,
            batch_size: 10,
            safety_margin: Duration::from_millis(500),
            ..test_config()
        },
    );
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let summary = invoke(&s, schedule_event(), budget).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < budget, "returned after the deadline ({elapsed:?})");
    assert!(summary.completed > 0, "{summary:?}");
    assert!(summary.remaining_due > 0, "{summary:?}");
    let counts = status_counts(&client).await;
    assert_eq!(counts.get("running"), None, "nothing left claimed: {counts:?}");
    assert_eq!(counts.get("completed").copied().unwrap_or(0) as u64, summary.completed);
    assert_eq!(
        counts.get("pending").copied().unwrap_or(0) as u64,
        summary.remaining_due
    );
    let over_counted: i64 = client
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE status = 'pending' AND attempts > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(over_counted, 0, "tasks never started keep their attempts");
}

#[tokio::test]
async fn a_recurring_task_gets_its_next_occurrence_once_even_when_two_instances_race() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let series = uuid::Uuid::new_v4();
    // A backlog: two missed occurrences of the same series, both due.
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for, cron, time_zone, series_id)
             VALUES ($1, 'daily-a', 'approved', now() - interval '2 days', '0 9 * * *', 'Europe/Paris', $2),
                    ($1, 'daily-b', 'approved', now() - interval '1 day', '0 9 * * *', 'Europe/Paris', $2)",
            &[&agent, &series],
        )
        .await
        .unwrap();
    let model = RecordingModel::slow(Duration::from_millis(100));
    let a = scheduler_on(&db, model.clone(), test_config());
    let b = scheduler_on(&db, model.clone(), test_config());
    let one = json!({"maxTasks": 1});
    let (ra, rb) = tokio::join!(
        invoke(&a, one.clone(), Duration::from_secs(30)),
        invoke(&b, one.clone(), Duration::from_secs(30))
    );
    assert_eq!(ra.unwrap().completed + rb.unwrap().completed, 2);

    let rows = client
        .query(
            "SELECT to_char(scheduled_for AT TIME ZONE 'Europe/Paris', 'HH24:MI'), scheduled_for > now(), series_id
               FROM agent_tasks WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one next occurrence, no burst for the backlog");
    assert_eq!(
        rows[0].get::<_, String>(0),
        "09:00",
        "09:00 Paris time, whatever the UTC offset"
    );
    assert!(rows[0].get::<_, bool>(1), "in the future");
    assert_eq!(rows[0].get::<_, Option<uuid::Uuid>>(2), Some(series));
}

#[tokio::test]
async fn a_dry_run_reports_what_is_due_and_changes_nothing() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 7, "due", "", "").await;
    let model = RecordingModel::new(Behaviour::Succeed);
    let s = scheduler_on(&db, model.clone(), test_config());
    let summary = invoke(&s, json!({"dryRun": true}), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(summary.remaining_due, 7);
    assert_eq!(summary.claimed, 0);
    assert!(model.runs().is_empty());
    assert_eq!(status_counts(&client).await.get("pending"), Some(&7));
}

#[tokio::test]
async fn max_tasks_caps_one_invocation() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 30, "capped", "", "").await;
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Succeed), test_config());
    let summary = invoke(&s, json!({"maxTasks": 12}), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(summary.claimed, 12);
    assert_eq!(summary.remaining_due, 18);
}

#[tokio::test]
async fn malformed_manual_payloads_get_a_clear_error_and_touch_nothing() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 3, "keep", "", "").await;
    let model = RecordingModel::new(Behaviour::Succeed);
    let s = scheduler_on(&db, model.clone(), test_config());
    for payload in [
        json!({"maxTasks": "ten"}),
        json!({"maxTasks": -3}),
        json!({"dryrun": true}),
        json!({"maxTasks": 5, "extra": {"nested": [1, 2, 3]}}),
        json!([{"maxTasks": 1}]),
        json!("DROP TABLE agent_tasks"),
        json!({"maxTasks": 1e300}),
    ] {
        let err = invoke(&s, payload.clone(), Duration::from_secs(30)).await.unwrap_err();
        let diagnostic = Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "BadPayload", "{payload}");
        assert!(
            diagnostic.error_message.contains("invalid scheduler payload"),
            "{payload}: {}",
            diagnostic.error_message
        );
    }
    assert!(model.runs().is_empty());
    assert_eq!(status_counts(&client).await.get("pending"), Some(&3));
}

#[tokio::test]
async fn an_instance_killed_mid_batch_loses_no_task() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 120, "crash", "", "").await;

    // A real scheduler process with slow local-model tasks, driven through the Runtime API.
    let runtime = RuntimeApi::start().await;
    let mut child = scheduler_process(
        &runtime,
        &db,
        &[
            ("LOCAL_MODEL_LATENCY_MS", "100"),
            ("SCHEDULER_CONCURRENCY", "4"),
            ("SCHEDULER_BATCH_SIZE", "20"),
        ],
    );
    let invocation = scheduled_invocation(&runtime, Duration::from_secs(3));
    let killer = async {
        let mid_batch = eventually(Duration::from_secs(10), || async {
            let counts = status_counts(&client).await;
            counts.get("completed").copied().unwrap_or(0) > 0 && counts.get("running").copied().unwrap_or(0) > 0
        })
        .await;
        assert!(mid_batch, "the scheduler never got mid-batch");
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
    };
    tokio::select! {
        result = invocation => panic!("the invocation finished before the kill: {result:?}"),
        () = killer => {}
    }
    let counts = status_counts(&client).await;
    assert!(
        counts.get("running").copied().unwrap_or(0) > 0,
        "the kill left tasks running: {counts:?}"
    );

    // Once the leases (3 s deadline + 0.2 s grace) expire, a later invocation rescues and completes all.
    let expired = eventually(Duration::from_secs(15), || async { live_leases(&client).await == 0 }).await;
    assert!(expired, "the killed instance's leases expire");
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Succeed), test_config());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(60)).await.unwrap();
    assert!(summary.rescued > 0, "{summary:?}");
    let counts = status_counts(&client).await;
    assert_eq!(counts.get("completed"), Some(&120), "{counts:?}");
    assert_eq!(counts.len(), 1, "none lost, none running: {counts:?}");
}

#[tokio::test]
async fn a_database_outage_fails_the_invocation_cleanly_and_the_next_one_catches_up() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 20, "outage", "", "").await;
    let mut bouncer = crate::helpers::PrivateBouncer::start(2).await;
    let settings = crate::helpers::settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "scheduler".into(),
            max_size: 2,
            connect: Duration::from_millis(500),
            ..PoolOptions::default()
        },
    );
    let s = Scheduler::new(
        shared::db::Db::new(&settings).unwrap(),
        RecordingModel::new(Behaviour::Succeed),
        test_config(),
        quiet_metrics("scheduler"),
    );
    bouncer.stop();
    let started = Instant::now();
    let err = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast, not at the deadline"
    );
    assert_eq!(Diagnostic::from(err).error_type, "DatabaseUnavailable");
    assert_eq!(
        status_counts(&client).await.get("pending"),
        Some(&20),
        "nothing claimed or lost"
    );

    bouncer.restart().await;
    let summary = invoke(&s, schedule_event(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.completed, 20);
}

/// Running tasks whose lease has not expired yet.
async fn live_leases(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE status = 'running' AND lease_expires_at >= now()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// One recurring task, due now, approved, with `max_attempts`; its series is itself.
async fn seed_series(client: &Client, agent: uuid::Uuid, prompt: &str, max_attempts: i32) -> uuid::Uuid {
    client
        .query_one(
            "WITH t AS (SELECT gen_random_uuid() AS id)
             INSERT INTO agent_tasks (id, agent_id, prompt, approval_status, scheduled_for, cron, time_zone,
                                      series_id, max_attempts)
             SELECT id, $1, $2, 'approved', date_trunc('minute', now()) - interval '1 minute', '0 * * * *',
                    'Europe/Paris', id, $3
               FROM t RETURNING id",
            &[&agent, &prompt, &max_attempts],
        )
        .await
        .unwrap()
        .get(0)
}

/// The series' occurrences after the first: (status, approval, series_failures, last_error).
async fn later_occurrences(client: &Client, series: uuid::Uuid) -> Vec<(String, String, i32, Option<String>)> {
    client
        .query(
            "SELECT status, approval_status, series_failures, last_error FROM agent_tasks
              WHERE series_id = $1 AND id <> $1 ORDER BY scheduled_for",
            &[&series],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn sigkill_on_the_last_attempt_of_a_recurring_occurrence_leaves_its_next_occurrence_exactly_once() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let series = seed_series(&client, agent, "daily report", 1).await;

    // A real scheduler process, killed while it runs the occurrence's only attempt.
    let runtime = RuntimeApi::start().await;
    let mut child = scheduler_process(&runtime, &db, &[("LOCAL_MODEL_LATENCY_MS", "30000")]);
    let invocation = scheduled_invocation(&runtime, Duration::from_secs(2));
    let killer = async {
        let running = eventually(Duration::from_secs(10), || async {
            status_counts(&client).await.get("running").copied() == Some(1)
        })
        .await;
        assert!(running, "the occurrence started");
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
    };
    tokio::select! {
        result = invocation => panic!("the invocation finished before the kill: {result:?}"),
        () = killer => {}
    }
    assert!(later_occurrences(&client, series).await.is_empty(), "no next one yet");

    let expired = eventually(Duration::from_secs(15), || async { live_leases(&client).await == 0 }).await;
    assert!(expired, "the killed instance's lease expires");
    // Two rescues (two invocations) in a row: the next occurrence is created once.
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Succeed), test_config());
    let first = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((first.rescued, first.failed), (1, 1), "{first:?}");
    let second = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(second.rescued, 0, "{second:?}");
    let status: String = client
        .query_one("SELECT status FROM agent_tasks WHERE id = $1", &[&series])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
    assert_eq!(
        later_occurrences(&client, series).await,
        vec![("pending".into(), "approved".into(), 1, None)],
        "the series goes on, once, remembering one failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_rescuers_and_a_late_finisher_racing_on_one_occurrence_make_one_next_occurrence() {
    use scheduler::series::{self, Ending, Scope};
    use scheduler::tasks::{self, Finished, Outcome};
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let series_id = seed_series(&client, agent, "hourly check", 1).await;
    let pools: Vec<_> = (0..3)
        .map(|_| {
            db.pool(&PoolOptions {
                app: "scheduler".into(),
                ..PoolOptions::default()
            })
        })
        .collect();
    // The late instance claims the occurrence with a short lease, then "hangs" past it.
    let claimed = {
        let conn = pools[0].conn().await.unwrap();
        tasks::claim(&conn.sql(), "late-instance", 0.3, tasks::ClaimPolicy::up_to(10))
            .await
            .unwrap()
    };
    assert_eq!(claimed.tasks.len(), 1);
    let expired = eventually(Duration::from_secs(10), || async { live_leases(&client).await == 0 }).await;
    assert!(expired);

    let now = chrono::Utc::now();
    let occurrence = claimed.tasks[0].schedule.occurrence().expect("it recurs");
    let next_failed = series::next(&occurrence, Ending::Failed, Scope::Occurrence, now, 3).unwrap();
    let next_completed = series::next(&occurrence, Ending::Completed, Scope::Occurrence, now, 3).unwrap();
    let rescue = |i: usize| {
        let (pool, next) = (&pools[i], next_failed.clone());
        async move {
            let conn = pool.conn().await.unwrap();
            tasks::rescue(&conn.sql(), 100, &[(series_id, next)]).await.unwrap()
        }
    };
    let late_finish = async {
        let conn = pools[2].conn().await.unwrap();
        let done = Finished {
            id: series_id,
            outcome: Outcome::Completed {
                result: "late result".into(),
                usage: None,
                model: None,
            },
            next: next_completed.clone(),
            series_ended: false,
        };
        tasks::finish(&conn.sql(), "late-instance", &[done]).await.unwrap()
    };
    let (a, b, late) = tokio::join!(rescue(0), rescue(1), late_finish);
    assert_eq!(a.failed + b.failed, 1, "exactly one rescuer failed it: {a:?} {b:?}");
    assert_eq!(late.finished, 0, "the stale finisher wrote nothing");
    let row = client
        .query_one("SELECT status, result FROM agent_tasks WHERE id = $1", &[&series_id])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("failed".to_string(), None)
    );
    assert_eq!(
        later_occurrences(&client, series_id).await.len(),
        1,
        "one next occurrence"
    );
}

#[tokio::test]
async fn rejecting_or_cancelling_an_occurrence_keeps_the_series_and_ending_the_series_stops_it() {
    use scheduler::series::{self, Ending, Scope};
    use scheduler::tasks::{self, Decision};
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let pool = db.default_pool();
    let decide = |series_id: uuid::Uuid, decision: Decision, scope: Scope| {
        let pool = &pool;
        async move {
            let conn = pool.conn().await.unwrap();
            let sql = conn.sql();
            let state = tasks::task_state(&sql, series_id, None).await.unwrap().unwrap();
            let ending = match decision {
                Decision::Reject => Ending::Rejected,
                Decision::Cancel => Ending::Cancelled,
            };
            let next = series::next(
                &state.schedule.occurrence().unwrap(),
                ending,
                scope,
                chrono::Utc::now(),
                3,
            )
            .unwrap();
            tasks::decide(&sql, series_id, None, decision, scope, next.as_ref())
                .await
                .unwrap()
        }
    };
    let pending_series = |prompt: &'static str| {
        let client = &client;
        async move {
            let id = seed_series(client, agent, prompt, 3).await;
            client
                .execute(
                    "UPDATE agent_tasks SET approval_status = 'pending' WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            id
        }
    };

    // Rejecting one occurrence: the next one is created and asks for approval again.
    let a = pending_series("rejected once").await;
    assert!(decide(a, Decision::Reject, Scope::Occurrence).await);
    assert_eq!(
        later_occurrences(&client, a).await,
        vec![("pending".into(), "pending".into(), 0, None)]
    );
    // Cancelling one occurrence of an approved series: the next one stays approved.
    let b = seed_series(&client, agent, "cancelled once", 3).await;
    assert!(decide(b, Decision::Cancel, Scope::Occurrence).await);
    assert_eq!(
        later_occurrences(&client, b).await,
        vec![("pending".into(), "approved".into(), 0, None)]
    );
    // Cancelling the series from its pending occurrence: no next, the others cancelled too.
    let next_of_b: uuid::Uuid = client
        .query_one("SELECT id FROM agent_tasks WHERE series_id = $1 AND id <> $1", &[&b])
        .await
        .unwrap()
        .get(0);
    assert!(decide(next_of_b, Decision::Cancel, Scope::Series).await);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM agent_tasks WHERE series_id = $1 AND status = 'pending'",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the series has no future");
    // Rejecting a series: nothing follows.
    let c = pending_series("rejected for good").await;
    assert!(decide(c, Decision::Reject, Scope::Series).await);
    assert!(later_occurrences(&client, c).await.is_empty());
    // A decision that no longer applies writes nothing.
    assert!(
        !decide(c, Decision::Cancel, Scope::Occurrence).await,
        "already rejected"
    );
    assert!(
        !decide(b, Decision::Cancel, Scope::Occurrence).await,
        "already cancelled"
    );
}

#[tokio::test]
async fn a_series_failing_too_often_in_a_row_is_suspended_for_a_person_to_decide() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let series_id = seed_series(&client, agent, "always fails", 1).await;
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Fail), test_config());
    // Each run fails the due occurrence; the test makes the next one due at once.
    let mut suspended = 0;
    for _ in 0..3 {
        let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
        assert_eq!(summary.failed, 1, "{summary:?}");
        suspended += summary.series_suspended;
        client
            .execute(
                "UPDATE agent_tasks SET scheduled_for = now() - interval '1 second'
                  WHERE series_id = $1 AND status = 'pending'",
                &[&series_id],
            )
            .await
            .unwrap();
    }
    assert_eq!(suspended, 1);
    let occurrences = later_occurrences(&client, series_id).await;
    let last = occurrences.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str(), last.2), ("pending", "pending", 3));
    assert!(last.3.as_deref().unwrap_or("").contains("suspended"), "{last:?}");
    // Suspended: not run until a person approves it.
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(summary.claimed, 0);
}

#[tokio::test]
async fn a_series_whose_cron_no_longer_evaluates_ends_counted_not_silently() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let series_id = seed_series(&client, agent, "broken schedule", 1).await;
    client
        .execute(
            "UPDATE agent_tasks SET cron = 'every full moon' WHERE id = $1",
            &[&series_id],
        )
        .await
        .unwrap();
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Succeed), test_config());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((summary.completed, summary.series_ended), (1, 1), "{summary:?}");
    assert!(later_occurrences(&client, series_id).await.is_empty());
}

#[tokio::test]
async fn a_throttled_task_is_handed_back_for_later_without_counting_an_attempt() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 3, "busy", ", max_attempts", ", 1").await;
    let s = scheduler_on(&db, RecordingModel::new(Behaviour::Throttle), test_config());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (summary.throttled, summary.failed, summary.retried),
        (3, 0, 0),
        "{summary:?}"
    );
    let rows = client
        .query(
            "SELECT status, attempts, scheduled_for > now() + interval '50 seconds' FROM agent_tasks",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let (status, attempts, later): (String, i32, bool) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (status.as_str(), attempts, later),
            ("pending", 0, true),
            "pending again, no attempt spent, due after the provider's Retry-After"
        );
    }
}

#[tokio::test]
async fn a_task_whose_agent_was_made_private_is_not_run_and_its_series_stops() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let (owner, user) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let agent: uuid::Uuid = client
        .query_one(
            "INSERT INTO agents (name, instructions, visibility, owner_id) VALUES ('shared', 'help', 'public', $1)
             RETURNING id",
            &[&owner],
        )
        .await
        .unwrap()
        .get(0);
    // The user's recurring task and the owner's own task on it, both due.
    let series_id = seed_series(&client, agent, "user's series", 3).await;
    client
        .execute(
            "UPDATE agent_tasks SET user_id = $1 WHERE id = $2",
            &[&user, &series_id],
        )
        .await
        .unwrap();
    seed_tasks(&client, agent, 1, "owner's", "", "").await;
    client
        .execute(
            "UPDATE agent_tasks SET user_id = $1 WHERE prompt LIKE 'owner''s%'",
            &[&owner],
        )
        .await
        .unwrap();
    // The owner makes the agent private: the user may no longer use it.
    client
        .execute("UPDATE agents SET visibility = 'private' WHERE id = $1", &[&agent])
        .await
        .unwrap();

    let model = RecordingModel::new(Behaviour::Succeed);
    let s = scheduler_on(&db, model.clone(), test_config());
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(summary.completed, 1, "only the owner's task ran: {summary:?}");
    assert_eq!(model.runs().keys().collect::<Vec<_>>(), ["owner's-1"]);
    let row = client
        .query_one(
            "SELECT status, attempts, last_error FROM agent_tasks WHERE id = $1",
            &[&series_id],
        )
        .await
        .unwrap();
    let (status, attempts, error): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (status.as_str(), attempts),
        ("cancelled", 0),
        "ended unrun, no attempt spent"
    );
    assert!(error.starts_with("agent_unavailable:"), "{error}");
    assert!(
        later_occurrences(&client, series_id).await.is_empty(),
        "the series stops"
    );
}

/// A model that records the order in which prompts are started, and reports usage.
struct OrderedModel {
    started: Mutex<Vec<String>>,
    /// How long each call takes (a provider's latency).
    latency: Duration,
}

#[async_trait]
impl AgentModel for OrderedModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        Ok(self.complete(request).await?.text)
    }

    async fn complete(&self, request: &ModelRequest) -> Result<shared::model::Reply, ModelError> {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        self.started.lock().unwrap().push(prompt.clone());
        // The provider's latency (simulated), so that a run lasts while the test acts.
        tokio::time::sleep(self.latency).await;
        let usage = shared::model::Usage {
            input_tokens: 7,
            output_tokens: 3,
        };
        Ok(shared::model::Reply::text(
            format!("done: {prompt}"),
            Some(usage),
            Some("ordered-test".into()),
        ))
    }
}

/// An agent every user may use.
async fn public_agent(client: &Client) -> uuid::Uuid {
    let agent = seed_agent(client).await;
    client
        .execute("UPDATE agents SET visibility = 'public' WHERE id = $1", &[&agent])
        .await
        .unwrap();
    agent
}

/// `n` approved tasks of `user` with prompts `<prefix>-1 … <prefix>-n`, due `ago` (an interval)
/// ago.
async fn user_tasks(client: &Client, agent: uuid::Uuid, user: uuid::Uuid, n: i32, prefix: &str, ago: &str) {
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, $2, $3 || '-' || i, 'approved', now() - $4::text::interval FROM generate_series(1, $5) i",
            &[&agent, &user, &prefix, &ago, &n],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_small_users_tasks_are_claimed_before_five_percent_of_a_big_users_backlog_is_done() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = public_agent(&client).await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // X: 20,000 tasks due a minute ago; Y: 10 due a second after all of X's.
    user_tasks(&client, agent, x, 20000, "x", "1 minute").await;
    user_tasks(&client, agent, y, 10, "y", "59 seconds").await;
    client.batch_execute("VACUUM ANALYZE agent_tasks").await.unwrap();
    let model = Arc::new(OrderedModel {
        started: Mutex::new(Vec::new()),
        latency: Duration::ZERO,
    });
    let s = scheduler_on(&db, model.clone(), test_config());
    let summary = invoke(&s, json!({"maxTasks": 3000}), Duration::from_secs(60))
        .await
        .unwrap();
    let started = model.started.lock().unwrap().clone();
    let last_y = started
        .iter()
        .rposition(|p| p.starts_with("y-"))
        .expect("Y's tasks ran");
    let x_before = started[..last_y].iter().filter(|p| p.starts_with("x-")).count();
    assert_eq!(
        started.iter().filter(|p| p.starts_with("y-")).count(),
        10,
        "{summary:?}"
    );
    assert!(
        x_before < 1000,
        "{x_before} of X's 20,000 tasks (5 % = 1,000) started before Y's last one"
    );
}

#[tokio::test]
async fn a_small_users_tasks_arriving_while_a_lone_user_drains_are_claimed_at_once() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = public_agent(&client).await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // X alone: 20,000 tasks due a minute ago; the run's claims find one user, then claim X's
    // tasks the lone way.
    user_tasks(&client, agent, x, 20000, "x", "1 minute").await;
    client.batch_execute("VACUUM ANALYZE agent_tasks").await.unwrap();
    let model = Arc::new(OrderedModel {
        started: Mutex::new(Vec::new()),
        latency: Duration::from_millis(5),
    });
    let s = scheduler_on(&db, model.clone(), test_config());
    let started_count = || model.started.lock().unwrap().len();
    // While the run drains X, Y's 10 tasks come due.
    let (summary, arrived) = tokio::join!(invoke(&s, json!({"maxTasks": 4000}), Duration::from_secs(120)), async {
        assert!(
            eventually(Duration::from_secs(60), || async { started_count() >= 300 }).await,
            "the run drains X"
        );
        client
            .execute(
                "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
                     SELECT $1, $2, 'y-' || i, 'approved', now() FROM generate_series(1, 10) i",
                &[&agent, &y],
            )
            .await
            .unwrap();
        started_count()
    });
    let summary = summary.expect("the run");
    let started = model.started.lock().unwrap().clone();
    assert_eq!(
        started.iter().filter(|p| p.starts_with("y-")).count(),
        10,
        "{summary:?}"
    );
    let last_y = started
        .iter()
        .rposition(|p| p.starts_with("y-"))
        .expect("Y's tasks ran");
    let x_meanwhile = started[arrived..last_y].iter().filter(|p| p.starts_with("x-")).count();
    assert!(
        x_meanwhile < 1000,
        "{x_meanwhile} of X's tasks (5 % of 20,000 = 1,000) started between Y's arrival and Y's last start"
    );
}

#[tokio::test]
async fn a_lone_users_claim_takes_their_oldest_tasks_and_gives_way_when_another_user_has_due_tasks() {
    use scheduler::tasks::{self, ClaimPolicy};
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = public_agent(&client).await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, $2, 'x-' || i, 'approved', now() - interval '1 minute' + i * interval '1 ms'
               FROM generate_series(1, 6) i",
            &[&agent, &x],
        )
        .await
        .unwrap();
    let pool = db.pool(&PoolOptions::default());
    let conn = pool.conn().await.unwrap();
    let lone = ClaimPolicy {
        lone: Some(x),
        ..ClaimPolicy::up_to(3)
    };
    let prompts =
        |claimed: &tasks::Claimed| -> Vec<String> { claimed.tasks.iter().map(|t| t.prompt.clone()).collect() };

    // Alone: the lone claim takes X's oldest, and says X is alone.
    let first = tasks::claim(&conn.sql(), "run", 60.0, lone).await.unwrap();
    assert_eq!(prompts(&first), ["x-1", "x-2", "x-3"]);
    assert!(!first.fell_back);
    assert_eq!(first.lone_user(3), Some(x));

    // Y's task comes due: the lone claim takes nothing, the fair claim runs in its place and
    // gives Y its turn in this very claim.
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             VALUES ($1, $2, 'y-1', 'approved', now())",
            &[&agent, &y],
        )
        .await
        .unwrap();
    let second = tasks::claim(&conn.sql(), "run", 60.0, lone).await.unwrap();
    assert!(second.fell_back);
    let mut got = prompts(&second);
    got.sort();
    assert_eq!(got, ["x-4", "x-5", "y-1"]);
    assert_eq!(second.lone_user(3), None);

    // The operator's tasks (no user) are a user of their own: X is not alone beside them.
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             VALUES ($1, 'operator-1', 'approved', now())",
            &[&agent],
        )
        .await
        .unwrap();
    let third = tasks::claim(&conn.sql(), "run", 60.0, lone).await.unwrap();
    assert!(third.fell_back);
    let mut got = prompts(&third);
    got.sort();
    assert_eq!(got, ["operator-1", "x-6"]);
}

#[tokio::test]
async fn a_user_over_the_daily_budget_has_tasks_deferred_to_midnight_with_attempts_untouched() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = public_agent(&client).await;
    let (spent, fresh) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (user, prompt) in [(spent, "spent"), (fresh, "fresh")] {
        client
            .execute(
                "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
                 VALUES ($1, $2, $3, 'approved', now() - interval '1 minute')",
                &[&agent, &user, &prompt],
            )
            .await
            .unwrap();
    }
    // `spent` used 1,000 tokens today; the budget is 1,000.
    client
        .execute(
            "INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
             VALUES ((now() AT TIME ZONE 'UTC')::date, $1, $2, 'm', 600, 400, 3)",
            &[&spent, &agent],
        )
        .await
        .unwrap();
    let model = RecordingModel::new(Behaviour::Succeed);
    let s = scheduler_on(
        &db,
        model.clone(),
        SchedulerSettings {
            user_daily_tokens: 1000,
            ..test_config()
        },
    );
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((summary.completed, summary.deferred), (1, 1), "{summary:?}");
    assert_eq!(model.runs().keys().collect::<Vec<_>>(), ["fresh"]);
    let row = client
        .query_one(
            "SELECT status, attempts, last_error IS NULL,
                    scheduled_for = (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
               FROM agent_tasks WHERE prompt = 'spent'",
            &[],
        )
        .await
        .unwrap();
    let (status, attempts, no_error, at_reset): (String, i32, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (status.as_str(), attempts, no_error, at_reset),
        ("pending", 0, true, true)
    );

    // The next UTC day (yesterday's usage, as the day moves on): it runs.
    client
        .batch_execute(
            "UPDATE usage_daily SET day = day - 1;
             UPDATE agent_tasks SET scheduled_for = now() - interval '1 second' WHERE prompt = 'spent'",
        )
        .await
        .unwrap();
    let summary = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((summary.completed, summary.deferred), (1, 0), "{summary:?}");
}

#[tokio::test]
async fn an_agent_over_its_daily_budget_has_its_tasks_deferred_and_usage_is_recorded_per_run() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let capped: uuid::Uuid = client
        .query_one(
            "INSERT INTO agents (name, instructions, visibility, daily_token_budget) VALUES ('capped', 'x', 'public', 20)
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let user = uuid::Uuid::new_v4();
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             SELECT $1, $2, 'run-' || i, 'approved', now() - interval '1 minute' + i * interval '1 millisecond'
               FROM generate_series(1, 2) i",
            &[&capped, &user],
        )
        .await
        .unwrap();
    let model = Arc::new(OrderedModel {
        started: Mutex::new(Vec::new()),
        latency: Duration::ZERO,
    });
    let s = scheduler_on(&db, model, test_config());
    // The first run records 2 × 10 tokens: the agent's 20 are spent.
    let first = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.completed, 2, "{first:?}");
    let stored = client
        .query(
            "SELECT input_tokens, output_tokens, model FROM agent_tasks WHERE agent_id = $1",
            &[&capped],
        )
        .await
        .unwrap();
    for row in &stored {
        let (i, o, m): (Option<i32>, Option<i32>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((i, o, m.as_deref()), (Some(7), Some(3), Some("ordered-test")));
    }
    let day = client
        .query_one(
            "SELECT input_tokens, output_tokens, calls FROM usage_daily WHERE user_id = $1 AND agent_id = $2",
            &[&user, &capped],
        )
        .await
        .unwrap();
    assert_eq!(
        (day.get::<_, i64>(0), day.get::<_, i64>(1), day.get::<_, i32>(2)),
        (14, 6, 2)
    );
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
             VALUES ($1, $2, 'one more', 'approved', now() - interval '1 second')",
            &[&capped, &user],
        )
        .await
        .unwrap();
    let second = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((second.completed, second.deferred), (0, 1), "{second:?}");
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_handed_back_uncounted_and_no_one_elses() {
    use scheduler::tasks;
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 5, "orphan", "", "").await;
    let pool = db.pool(&PoolOptions::default());
    let conn = pool.conn().await.unwrap();
    let lost = tasks::claim(&conn.sql(), "lost-run", 60.0, tasks::ClaimPolicy::up_to(3))
        .await
        .unwrap();
    let other = tasks::claim(&conn.sql(), "other-run", 60.0, tasks::ClaimPolicy::up_to(2))
        .await
        .unwrap();
    assert_eq!((lost.tasks.len(), other.tasks.len()), (3, 2));
    assert_eq!(tasks::release_orphans(&conn.sql(), "lost-run").await.unwrap(), 3);
    let rows = client
        .query(
            "SELECT status, attempts, lease_owner FROM agent_tasks ORDER BY status",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        seen.iter()
            .filter(|(s, a, o)| s == "pending" && *a == 0 && o.is_none())
            .count(),
        3,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|(s, _, o)| s == "running" && o.as_deref() == Some("other-run"))
            .count(),
        2,
        "{seen:?}"
    );
}
