//! Real model work at scale: the scheduler against provider stand-ins with a capacity (a quota
//! of calls at once, throttling beyond it, latency with jitter), prompt pickup of tasks that come
//! due while it runs, and the next invocation started when a backlog outlives a deadline.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::fakes::{FakeServer, Mode, Quota};
use integration_tests::models::{bedrock_model, openai_model};
use integration_tests::scheduling::{
    invoke, schedule_event, scheduled_invocation, scheduler_on, scheduler_process, seed_agent, seed_tasks,
    status_counts, test_config,
};
use scheduler::continuation::LambdaSelf;
use scheduler::{Scheduler, Settings as SchedulerSettings};

use crate::helpers::{deadline_in, eventually, InvokeResult, RuntimeApi, TestDb};

/// Samples the instance's concurrency limit every 100 ms until `stop` is set.
fn sample_limit(s: &Scheduler) -> (Arc<Mutex<Vec<usize>>>, Arc<std::sync::atomic::AtomicBool>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (limiter, out, done) = (s.limiter.clone(), samples.clone(), stop.clone());
    tokio::spawn(async move {
        while !done.load(Ordering::SeqCst) {
            out.lock().unwrap().push(limiter.limit());
            // The sampling period: a sleep by design (samples evenly spread over the run).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (samples, stop)
}

fn median(mut values: Vec<usize>) -> usize {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Every task completed on its first attempt: nothing failed, no attempt spent on a throttle.
async fn all_completed_first_time(client: &tokio_postgres::Client, n: i64) {
    let counts = status_counts(client).await;
    assert_eq!(counts.get("completed").copied(), Some(n), "{counts:?}");
    let spent: i64 = client
        .query_one("SELECT count(*) FROM agent_tasks WHERE attempts <> 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(spent, 0, "a throttle was counted as an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_tasks_against_a_provider_admitting_fifty_at_once_all_complete_and_concurrency_settles_near_fifty()
{
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 2000, "quota", "", "").await;
    let provider = FakeServer::openai().await;
    provider.set_quota(Quota {
        concurrent: 50,
        latency: Duration::from_millis(200),
        jitter: 0.2,
    });
    let s = scheduler_on(
        &db,
        Arc::new(openai_model(&provider, Duration::from_secs(10))),
        SchedulerSettings {
            min_concurrency: 4,
            max_concurrency: 1000,
            ..test_config()
        },
    );
    let (samples, stop) = sample_limit(&s);
    let summary = invoke(&s, schedule_event(), Duration::from_secs(120)).await.unwrap();
    stop.store(true, Ordering::SeqCst);

    all_completed_first_time(&client, 2000).await;
    assert_eq!(
        (summary.completed, summary.failed, summary.retried),
        (2000, 0, 0),
        "{summary:?}"
    );
    let throttled = provider.load.throttled.load(Ordering::SeqCst);
    assert!(
        throttled > 0,
        "the provider never throttled: the test did not reach its quota"
    );
    assert_eq!(
        summary.throttled as usize, throttled,
        "every throttle handed a task back"
    );
    assert!(provider.load.peak.load(Ordering::SeqCst) <= 50);
    // The limit over the run's second half (slow start excluded) sits near the quota.
    let samples = samples.lock().unwrap().clone();
    let settled = median(samples[samples.len() / 2..].to_vec());
    assert!((40..=65).contains(&settled), "settled at {settled}: {samples:?}");
}

#[tokio::test]
async fn the_bedrock_stand_in_throttles_beyond_its_quota_and_every_task_still_completes() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 300, "bedrock", "", "").await;
    let provider = FakeServer::bedrock().await;
    provider.set_quota(Quota {
        concurrent: 20,
        latency: Duration::from_millis(100),
        jitter: 0.2,
    });
    let s = scheduler_on(
        &db,
        Arc::new(bedrock_model(&provider, Duration::from_secs(10))),
        SchedulerSettings {
            min_concurrency: 4,
            max_concurrency: 1000,
            throttle_delay: Duration::from_millis(200),
            ..test_config()
        },
    );
    let summary = invoke(&s, schedule_event(), Duration::from_secs(120)).await.unwrap();
    all_completed_first_time(&client, 300).await;
    assert!(summary.throttled > 0, "{summary:?}");
    assert_eq!(
        summary.throttled as usize,
        provider.load.throttled.load(Ordering::SeqCst)
    );
    assert!(
        s.limiter.limit() < 40,
        "the limit followed the quota: {}",
        s.limiter.limit()
    );
}

#[tokio::test]
async fn a_task_made_due_during_a_running_invocation_starts_within_two_seconds() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 2, "long", "", "").await;
    let provider = FakeServer::openai().await;
    provider.set_quota(Quota {
        concurrent: 100,
        latency: Duration::from_secs(4),
        jitter: 0.0,
    });
    let s = scheduler_on(
        &db,
        Arc::new(openai_model(&provider, Duration::from_secs(10))),
        test_config(),
    );
    let run = {
        let s = s.clone();
        tokio::spawn(async move { invoke(&s, schedule_event(), Duration::from_secs(60)).await })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            provider.hits.load(Ordering::SeqCst) == 2
        })
        .await,
        "the first two tasks started"
    );
    client
        .execute(
            "INSERT INTO agent_tasks (agent_id, prompt, approval_status, scheduled_for)
             VALUES ($1, 'late', 'approved', now())",
            &[&agent],
        )
        .await
        .unwrap();
    let due = Instant::now();
    let started = || {
        provider
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.body["messages"][1]["content"] == "late")
            .map(|r| r.at)
    };
    assert!(
        eventually(Duration::from_secs(5), || async { started().is_some() }).await,
        "the task made due never started"
    );
    let waited = started().unwrap().saturating_duration_since(due);
    assert!(waited <= Duration::from_secs(2), "started {waited:?} after it came due");
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.completed, 3, "{summary:?}");
}

/// A scheduler whose continuation is the real Lambda client pointed at the `Invoke` stand-in.
fn continuing(db: &TestDb, lambda: &FakeServer, latency: Duration) -> Scheduler {
    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(lambda.url())
        .http_client(shared::model::bedrock::http_client())
        .build();
    let next = LambdaSelf::from_client(
        aws_sdk_lambda::Client::from_conf(config),
        "agent-backend-scheduler".into(),
    );
    scheduler_on(
        db,
        Arc::new(shared::model::LocalModel { latency }),
        SchedulerSettings {
            self_invoke: true,
            max_continuations: 3,
            min_concurrency: 2,
            max_concurrency: 2,
            safety_margin: Duration::from_millis(500),
            ..test_config()
        },
    )
    .with_continuation(Arc::new(next))
}

#[tokio::test]
async fn a_run_its_deadline_stops_with_a_backlog_left_starts_the_next_invocation_asynchronously() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 500, "backlog", "", "").await;
    let lambda = FakeServer::lambda().await;
    let s = continuing(&db, &lambda, Duration::from_millis(50));
    let summary = invoke(&s, schedule_event(), Duration::from_secs(2)).await.unwrap();
    assert!(summary.continued && summary.remaining_due > 0, "{summary:?}");
    let seen = lambda.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        "/2015-03-31/functions/agent-backend-scheduler/invocations"
    );
    let header = |name: &str| seen[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-amz-invocation-type").as_deref(), Some("Event"));
    assert_eq!(seen[0].body, serde_json::json!({"continuation": 1}));

    // The continuation itself goes on, link by link, until the chain's bound.
    let linked = invoke(&s, serde_json::json!({"continuation": 2}), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(linked.continued);
    assert_eq!(
        lambda.seen.lock().unwrap()[1].body,
        serde_json::json!({"continuation": 3})
    );
    let last = invoke(&s, serde_json::json!({"continuation": 3}), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        !last.continued && last.completed > 0,
        "the last allowed link stops: {last:?}"
    );
    assert_eq!(lambda.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_or_drained_run_starts_nothing_and_a_refused_continuation_does_not_fail_the_run() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    let lambda = FakeServer::lambda().await;
    let s = continuing(&db, &lambda, Duration::ZERO);
    let idle = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((idle.claimed, idle.continued), (0, false), "{idle:?}");
    seed_tasks(&client, agent, 20, "few", "", "").await;
    let drained = invoke(&s, schedule_event(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((drained.completed, drained.continued), (20, false), "{drained:?}");
    assert_eq!(lambda.hits.load(Ordering::SeqCst), 0);

    // Lambda refuses the invoke (reserved concurrency reached): the run still reports its work.
    seed_tasks(&client, agent, 500, "refused", "", "").await;
    lambda.set_mode(Mode::HttpError);
    let slow = continuing(&db, &lambda, Duration::from_millis(50));
    let refused = invoke(&slow, schedule_event(), Duration::from_secs(2)).await.unwrap();
    assert!(!refused.continued && refused.completed > 0, "{refused:?}");
    assert!(
        lambda.hits.load(Ordering::SeqCst) >= 1,
        "the invoke was tried (the SDK retries a throttled one)"
    );
}

#[tokio::test]
async fn the_scheduler_binary_asks_the_platform_for_its_next_invocation_which_finishes_the_backlog() {
    let db = TestDb::new().await;
    let client = db.direct().await;
    let agent = seed_agent(&client).await;
    seed_tasks(&client, agent, 400, "chained", "", "").await;
    let runtime = RuntimeApi::start().await;
    let lambda = FakeServer::lambda().await;
    let url = lambda.url();
    let _function = scheduler_process(
        &runtime,
        &db,
        &[
            ("LOCAL_MODEL_LATENCY_MS", "50"),
            ("SCHEDULER_MAX_CONCURRENCY", "4"),
            ("SCHEDULER_SELF_INVOKE", "true"),
            ("AWS_ENDPOINT_URL_LAMBDA", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    let InvokeResult::Response(first) = scheduled_invocation(&runtime, Duration::from_secs(2)).await else {
        panic!("the first invocation failed");
    };
    assert_eq!(first["continued"], true, "{first}");
    let next = lambda.seen.lock().unwrap()[0].clone();
    assert_eq!(next.path, "/2015-03-31/functions/scheduler/invocations");
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../../events/scheduler-continuation.json")).unwrap();
    assert_eq!(
        next.body, sample,
        "events/scheduler-continuation.json is what the function sends"
    );

    // The platform runs the continuation on the warm instance: it finishes the backlog and,
    // with nothing left, starts nothing more.
    let InvokeResult::Response(second) = runtime.invoke(&next.body, deadline_in(Duration::from_secs(60))).await else {
        panic!("the continuation failed");
    };
    assert_eq!(second["continued"], false, "{second}");
    assert_eq!(status_counts(&client).await.get("completed").copied(), Some(400));
    assert_eq!(lambda.hits.load(Ordering::SeqCst), 1);
}
