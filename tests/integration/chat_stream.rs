//! `POST /api/agents/chat/stream` through `cargo lambda watch` (the `chat-stream` binary with its
//! streaming runtime), the OpenAI-compatible stand-in streaming a reply word by word.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use integration_tests::cargo_lambda::Watch;
use integration_tests::fakes::{self, openai_streaming, LastWritten, StreamScript};
use integration_tests::harness::{harness, SECRET, USER};
use integration_tests::models::{bedrock_model_at, ChatModel};
use serde_json::{json, Value};

use crate::helpers::TestDb;

const AGENT: &str = "00000000-0000-4000-8000-000000000001";
const SUPABASE: &str = "https://stream.supabase.co";

/// An event of the stream and when it arrived.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    data: Value,
    at: Instant,
}

struct Setup {
    db: TestDb,
    watch: Watch,
    last_written: LastWritten,
    token: String,
}

/// A database with an agent, the stand-in streaming 10 words 100 ms apart (about 1 s; cut after
/// 3 words when the message says "please break"), `cargo lambda watch` serving the functions
/// with it.
async fn setup() -> Setup {
    let db = TestDb::new().await;
    db.direct()
        .await
        .batch_execute(&format!(
            "INSERT INTO agents (id, name, instructions, visibility) VALUES ('{AGENT}', 'helper', 'Be brief.', 'public')"
        ))
        .await
        .unwrap();
    let (url, last_written) = openai_streaming(StreamScript {
        words: (0..10).map(|i| format!("word{i} ")).collect(),
        gap: Duration::from_millis(100),
        break_after: Some(3),
        break_when: Some("please break"),
    })
    .await;
    let watch = Watch::start(
        &db,
        &[
            ("MODEL_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", url.as_str()),
            ("OPENAI_MODEL", "gpt-test"),
            ("SUPABASE_URL", SUPABASE),
            ("SUPABASE_JWT_SECRET", SECRET),
        ],
    )
    .await;
    let token = fakes::hs256(SECRET, &fakes::claims(&format!("{SUPABASE}/auth/v1"), USER));
    Setup {
        db,
        watch,
        last_written,
        token,
    }
}

impl Setup {
    /// Sends a message to the stream route: the status, and the events (or the JSON error).
    async fn send(&self, message: &str, conversation: Option<&str>, key: Option<&str>) -> (u16, Vec<Event>, Value) {
        let mut body = json!({"agentId": AGENT, "message": message});
        if let Some(c) = conversation {
            body["conversationId"] = c.into();
        }
        let url = format!(
            "http://127.0.0.1:{}/lambda-url/chat-stream/api/agents/chat/stream",
            self.watch.port
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(240))
            .build()
            .unwrap();
        let mut request = client
            .post(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            request = request.header("idempotency-key", k);
        }
        let response = request.send().await.expect("the stream route answers");
        let status = response.status().as_u16();
        let is_sse = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        if !is_sse {
            let value = response.json::<Value>().await.unwrap_or(Value::Null);
            return (status, Vec::new(), value);
        }
        let mut events = Vec::new();
        let mut buffer = String::new();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream reads")));
            while let Some(end) = buffer.find("\n\n") {
                let raw: String = buffer.drain(..end + 2).collect();
                let name = raw
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("")
                    .to_string();
                let data = raw.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
                events.push(Event {
                    name,
                    data: serde_json::from_str(data).unwrap_or(Value::Null),
                    at: Instant::now(),
                });
            }
        }
        (status, events, Value::Null)
    }

    async fn stored(&self, conversation: &str) -> Vec<(String, String)> {
        self.db
            .direct()
            .await
            .query(
                "SELECT role, content FROM messages WHERE conversation_id = $1::text::uuid ORDER BY created_at, id",
                &[&conversation],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn deltas(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_arrives_as_meta_deltas_done_and_is_stored_as_the_buffered_route_would() {
    let s = setup().await;
    let (status, events, error) = s.send("Tell me a story", None, None).await;
    assert_eq!(status, 200, "{error}");
    let order = names(&events);
    assert_eq!(order.first(), Some(&"meta"), "{order:?}");
    assert_eq!(order.last(), Some(&"done"), "{order:?}");
    assert!(
        order[1..order.len() - 1].iter().all(|n| *n == "delta") && order.len() > 3,
        "{order:?}"
    );
    // The first delta was on the client before the provider had written the reply's end.
    let first_delta = events.iter().find(|e| e.name == "delta").unwrap().at;
    let last_written = s.last_written.lock().unwrap().expect("the stand-in wrote");
    assert!(
        first_delta < last_written,
        "the first words came before the model finished"
    );

    let meta = &events[0].data;
    let done = &events.last().unwrap().data;
    let conversation = meta["conversationId"].as_str().unwrap().to_string();
    assert_eq!(done["conversationId"], conversation.as_str());
    assert_eq!(
        done["message"]["id"], meta["id"],
        "meta names the reply that done stores"
    );
    assert_eq!(done["message"]["role"], "assistant");
    let text = deltas(&events);
    assert_eq!(
        done["message"]["content"],
        text.as_str(),
        "the deltas are the stored reply"
    );
    assert_eq!(
        s.stored(&conversation).await,
        vec![
            ("user".into(), "Tell me a story".into()),
            ("assistant".into(), text.clone())
        ]
    );

    // The reply is stored with the usage of the stream's last chunk (stream_options.include_usage).
    let usage =
        s.db.direct()
            .await
            .query_one(
                "SELECT input_tokens, output_tokens, model FROM messages
              WHERE conversation_id = $1::text::uuid AND role = 'assistant'",
                &[&conversation],
            )
            .await
            .unwrap();
    let expected = fakes::streamed_usage(&StreamScript {
        words: (0..10).map(|i| format!("word{i} ")).collect(),
        gap: Duration::ZERO,
        break_after: None,
        break_when: None,
    });
    assert_eq!(
        (
            usage.get::<_, Option<i32>>(0),
            usage.get::<_, Option<i32>>(1),
            usage.get::<_, Option<String>>(2)
        ),
        (
            Some(expected.0 as i32),
            Some(expected.1 as i32),
            Some("gpt-test".to_string())
        )
    );

    // A second message keeps the conversation.
    let (status, second, _) = s.send("And then?", Some(&conversation), None).await;
    assert_eq!(status, 200);
    assert_eq!(second[0].data["conversationId"], conversation.as_str());
    assert_eq!(s.stored(&conversation).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_midway_ends_with_an_error_event_keeps_the_message_and_the_next_turn_works() {
    let s = setup().await;
    let (status, events, _) = s.send("please break", None, Some("turn-1")).await;
    assert_eq!(status, 200);
    let order = names(&events);
    assert_eq!(order.first(), Some(&"meta"));
    assert_eq!(order.last(), Some(&"error"), "{order:?}");
    assert!(!order.contains(&"done"), "{order:?}");
    let error = &events.last().unwrap().data;
    assert!(error["code"].is_string() && error["message"].is_string(), "{error}");
    let conversation = events[0].data["conversationId"].as_str().unwrap().to_string();
    assert_eq!(
        s.stored(&conversation).await,
        vec![("user".into(), "please break".into())],
        "the user's message is kept, no partial reply stored"
    );
    let (status, next, _) = s.send("Tell me a story", Some(&conversation), None).await;
    assert_eq!(status, 200);
    assert_eq!(names(&next).last(), Some(&"done"), "{:?}", names(&next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_the_first_byte_are_json_and_a_retried_key_gets_the_stored_reply_as_one_done() {
    let s = setup().await;
    let (status, events, error) = s.send("", None, None).await;
    assert_eq!((status, events.len()), (422, 0), "{error}");
    assert_eq!(error["error"]["code"], "validation_failed");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("message must not be empty")),
        "the 422 names the field: {error}"
    );

    let (status, first, _) = s.send("Tell me a story", None, Some("same-key")).await;
    assert_eq!(status, 200);
    let (status, again, _) = s.send("Tell me a story", None, Some("same-key")).await;
    assert_eq!(status, 200);
    assert_eq!(names(&again), ["meta", "done"]);
    assert_eq!(again[1].data, first.last().unwrap().data, "the stored reply, once");
    let conversation = first[0].data["conversationId"].as_str().unwrap().to_string();
    assert_eq!(s.stored(&conversation).await.len(), 2, "nothing stored twice");
}

#[tokio::test]
async fn the_sample_function_url_event_is_a_stream_request_and_a_bad_token_is_a_json_401() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let chat = std::sync::Arc::new(h.chat);
    let mut event: Value = serde_json::from_str(include_str!("../../events/chat-stream.json")).unwrap();
    event["headers"]["authorization"] = "Bearer not-a-token".into();
    let request = lambda_http::request::from_str(&event.to_string()).expect("a function URL event");
    let response = chat::handle_stream(chat.clone(), request).await.unwrap();
    assert_eq!(response.status(), 401);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"]["code"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_stream_does_not_stop_the_turn_the_reply_is_stored_whole() {
    let s = setup().await;
    let url = format!(
        "http://127.0.0.1:{}/lambda-url/chat-stream/api/agents/chat/stream",
        s.watch.port
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("authorization", format!("Bearer {}", s.token))
        .header("content-type", "application/json")
        .header("idempotency-key", "left-early")
        .body(json!({"agentId": AGENT, "message": "Tell me a story"}).to_string())
        .send()
        .await
        .expect("the stream starts");
    let mut bytes = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        let chunk = bytes.next().await.expect("a first delta").expect("readable");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(bytes);
    let conversation: String = serde_json::from_str::<Value>(
        seen.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("meta's data"),
    )
    .unwrap()["conversationId"]
        .as_str()
        .unwrap()
        .to_string();
    let whole = (0..10).map(|i| format!("word{i} ")).collect::<String>();
    let stored = crate::helpers::eventually(Duration::from_secs(20), || async {
        s.stored(&conversation)
            .await
            .last()
            .is_some_and(|(role, text)| role == "assistant" && *text == whole)
    })
    .await;
    assert!(
        stored,
        "the reply was stored whole: {:?}",
        s.stored(&conversation).await
    );
    // The same key gets it back as one done.
    let (_, again, _) = s.send("Tell me a story", None, Some("left-early")).await;
    assert_eq!(names(&again), ["meta", "done"]);
    assert_eq!(again[1].data["message"]["content"], whole.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bedrock_stream_stores_the_usage_of_its_metadata_event_and_none_without_it() {
    for metadata in [true, false] {
        let script = StreamScript {
            words: (0..4).map(|i| format!("w{i} ")).collect(),
            gap: Duration::ZERO,
            break_after: None,
            break_when: None,
        };
        let expected = fakes::streamed_usage(&script);
        let url = fakes::bedrock_streaming_with(script, metadata).await;
        let model: std::sync::Arc<dyn shared::model::AgentModel> =
            std::sync::Arc::new(bedrock_model_at(&url, Duration::from_secs(10)));
        let h = harness(model).await;
        let token = h.token(USER);
        let (agent, db) = (h.agent, h.db);
        let chat = std::sync::Arc::new(h.chat);
        let mut event: Value = serde_json::from_str(include_str!("../../events/chat-stream.json")).unwrap();
        event["headers"]["authorization"] = format!("Bearer {token}").into();
        event["body"] = json!({"agentId": agent, "message": "stream it"}).to_string().into();
        let request = lambda_http::request::from_str(&event.to_string()).expect("a function URL event");
        let response = chat::handle_stream(chat.clone(), request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("event: done"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let row = db
            .direct()
            .await
            .query_one(
                "SELECT input_tokens, output_tokens, model FROM messages WHERE role = 'assistant'",
                &[],
            )
            .await
            .unwrap();
        let (input, output, model): (Option<i32>, Option<i32>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        if metadata {
            assert_eq!((input, output), (Some(expected.0 as i32), Some(expected.1 as i32)));
        } else {
            assert_eq!((input, output), (None, None), "no metadata: unknown, never 0");
        }
        assert_eq!(model.as_deref(), Some("anthropic.claude-test"));
    }
}
