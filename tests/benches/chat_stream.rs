//! `chat_stream`: time to the first byte and to the whole reply, streamed route beside buffered
//! route in the same run. 200 simulated Lambda instances (each its own pool of 1, its own user)
//! through a pgbouncer in transaction mode with a server pool of 10; the OpenAI-compatible
//! stand-in writes each reply as 10 words 100 ms apart (about 1 s), whole for the buffered route.
//! The real handlers: `chat::handle_stream` (its SSE body read frame by frame) and `chat::handle`.
//!
//! Run: `scripts/bench chat_stream` (`STREAM_INSTANCES` 200, `STREAM_MESSAGES` 5 per instance
//! and route, `STREAM_THINK_MS` 1000 between one instance's messages).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat::Chat;
use http_body_util::BodyExt;
use integration_tests::bench::{chat_instance, token};
use integration_tests::fakes::{self, openai_streaming, StreamScript};
use integration_tests::helpers::{settings_for, watch_connections, PoolOptions, PrivateBouncer, TestDb};
use integration_tests::stats::percentile;
use serde_json::json;
use shared::db::Db;
use shared::model::{ModelLimits, SharedModel};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One message's timings in ms: first byte, first delta (streamed only), whole reply; status.
struct Timing {
    first_byte: f64,
    first_delta: Option<f64>,
    done: f64,
    ok: bool,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

async fn streamed(chat: &Arc<Chat>, event: &serde_json::Value) -> Timing {
    let request = lambda_http::request::from_str(&event.to_string()).expect("event");
    let t = Instant::now();
    let response = chat::handle_stream(chat.clone(), request).await.expect("infallible");
    let ok = response.status() == 200;
    let mut body = response.into_body();
    let (mut first_byte, mut first_delta, mut saw_done) = (None, None, false);
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            first_byte.get_or_insert_with(|| ms(t));
            let text = String::from_utf8_lossy(data);
            if text.contains("event: delta") {
                first_delta.get_or_insert_with(|| ms(t));
            }
            saw_done |= text.contains("event: done");
        }
    }
    Timing {
        first_byte: first_byte.unwrap_or(f64::NAN),
        first_delta,
        done: ms(t),
        ok: ok && saw_done,
    }
}

async fn buffered(chat: &Chat, event: &serde_json::Value) -> Timing {
    let request = lambda_http::request::from_str(&event.to_string()).expect("event");
    let t = Instant::now();
    let response = chat::handle(chat, request).await.expect("infallible");
    let done = ms(t);
    Timing {
        first_byte: done,
        first_delta: None,
        done,
        ok: response.status() == 200,
    }
}

fn row(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        values.len(),
        percentile(values, 0.5),
        percentile(values, 0.99),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances = env_number("STREAM_INSTANCES", 200) as usize;
    let messages = env_number("STREAM_MESSAGES", 5) as usize;
    let think_ms = env_number("STREAM_THINK_MS", 1000);
    let db = TestDb::new().await;
    let bouncer = PrivateBouncer::start(10).await;
    let agent: uuid::Uuid = db
        .direct()
        .await
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('bench', 'Be brief.', 'public') RETURNING id",
            &[],
        )
        .await
        .expect("agent")
        .get(0);
    let (url, _) = openai_streaming(StreamScript {
        words: (0..10).map(|i| format!("word{i} ")).collect(),
        gap: Duration::from_millis(100),
        break_after: None,
        break_when: None,
    })
    .await;
    println!(
        "chat_stream: {instances} instances x {messages} messages per route, pool of 1 each, pgbouncer server pool 10, \
         model 10 words 100 ms apart, think time {think_ms} ms"
    );
    let settings = settings_for(
        &bouncer.url(&db),
        &PoolOptions {
            app: "chat".into(),
            ..PoolOptions::default()
        },
    );
    let (stop, monitor) = watch_connections(&db);
    let barrier = Arc::new(tokio::sync::Barrier::new(instances + 1));
    let mut tasks = Vec::new();
    for i in 0..instances {
        let (settings, barrier, url) = (settings.clone(), barrier.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let model: SharedModel = Arc::new(
                shared::model::openai::OpenAiModel::new(
                    &url,
                    None,
                    "gpt-test",
                    ModelLimits {
                        timeout: Duration::from_secs(30),
                        max_reply_bytes: 64 * 1024,
                        max_tokens: 256,
                        stream_gap: Duration::from_secs(10),
                    },
                )
                .expect("an HTTP client with its timeouts"),
            );
            let chat = Arc::new(chat_instance(Db::new(&settings).expect("pool"), model));
            chat.db.warm().await;
            barrier.wait().await;
            if think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..think_ms))).await;
            }
            let user = uuid::Uuid::new_v4().to_string();
            let template = fakes::chat_event(&token(&user));
            let mut out = Vec::new();
            for n in 0..messages * 2 {
                let stream = n % 2 == 0;
                let mut event = template.clone();
                event["body"] = json!({"agentId": agent, "message": format!("instance {i} message {n}")})
                    .to_string()
                    .into();
                if stream {
                    event["rawPath"] = "/api/agents/chat/stream".into();
                    event["requestContext"]["http"]["path"] = "/api/agents/chat/stream".into();
                    out.push((true, streamed(&chat, &event).await));
                } else {
                    out.push((false, buffered(&chat, &event).await));
                }
                tokio::time::sleep(Duration::from_millis(think_ms)).await;
            }
            out
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("instance"));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = monitor.await.unwrap_or(0);
    let failed = results.iter().filter(|(_, t)| !t.ok).count();
    println!(
        "{} messages in {seconds:.1} s, {failed} not answered whole, {peak} server connections at most\n",
        results.len()
    );
    println!("| ms | messages | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let pick = |stream: bool, f: fn(&Timing) -> Option<f64>| -> Vec<f64> {
        results
            .iter()
            .filter(|(s, t)| *s == stream && t.ok)
            .filter_map(|(_, t)| f(t))
            .collect()
    };
    row("streamed: first byte (`meta`)", &mut pick(true, |t| Some(t.first_byte)));
    row("streamed: first `delta`", &mut pick(true, |t| t.first_delta));
    row("streamed: `done`", &mut pick(true, |t| Some(t.done)));
    row("buffered: first byte = whole reply", &mut pick(false, |t| Some(t.done)));
}
