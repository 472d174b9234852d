//! `POST /api/agents/chat` in process: the conversation and its history, every way a token is
//! refused, hostile bodies, no connection held while the model thinks, idempotency, the rate
//! limit, model failures and throttling, the provider clients' wire formats, usage stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat::{Chat, Settings as ChatSettings};
use integration_tests::fakes::{self, FakeServer, Mode};
use integration_tests::harness::{harness, harness_with, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::{bedrock_model, limits, openai_model, ChatModel};
use serde_json::{json, Value};
use shared::model::{AgentModel, ModelError, ModelRequest, Role};
use uuid::Uuid;

use crate::helpers::{admin_command, eventually, pooler_clients, PoolOptions, PrivateBouncer};

/// A hostile-input case: name, body, extra headers, expected status, what the error message
/// says (the field at fault, for a 422).
type BadRequestCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test]
async fn two_messages_keep_the_conversation_and_the_model_sees_the_history_in_order() {
    let model = ChatModel::new(Duration::ZERO);
    let h = harness(model.clone()).await;
    let (status, first) = h.send("first question", None).await;
    assert_eq!(status, 200, "{first}");
    let conversation = first["conversationId"].as_str().unwrap().to_string();
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(first["message"]["content"], "reply to: first question");
    assert!(chrono::DateTime::parse_from_rfc3339(first["message"]["createdAt"].as_str().unwrap()).is_ok());

    let (status, second) = h.send("second question", Some(&conversation)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["conversationId"], conversation.as_str());

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].instructions, "You are terse.");
    let seen: Vec<(Role, &str)> = requests[1]
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Role::User, "first question"),
            (Role::Assistant, "reply to: first question"),
            (Role::User, "second question"),
        ]
    );
    assert_eq!(h.message_rows().await, 4);
}

#[tokio::test]
async fn every_bad_token_is_a_401() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let good = fakes::claims(&h.issuer, USER);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let now = chrono::Utc::now().timestamp();
    let anon = json!({"iss": "supabase", "ref": "project", "role": "anon", "iat": now, "exp": now + 3600});
    let service = json!({"iss": "supabase", "ref": "project", "role": "service_role", "iat": now, "exp": now + 3600});
    let service_like_user = with("role", "service_role".into());
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("expired", Some(fakes::hs256(SECRET, &with("exp", (now - 3600).into())))),
        (
            "wrong audience",
            Some(fakes::hs256(SECRET, &with("aud", "anon".into()))),
        ),
        (
            "wrong issuer",
            Some(fakes::hs256(
                SECRET,
                &with("iss", "https://evil.example/auth/v1".into()),
            )),
        ),
        (
            "bad signature",
            Some(fakes::hs256("another-secret-of-sufficient-length-000", &good)),
        ),
        ("alg none", Some(fakes::unsigned(&good))),
        ("unknown kid", Some(fakes::es256(&good, "no-such-key"))),
        ("anon key", Some(fakes::hs256(SECRET, &anon))),
        ("service-role key", Some(fakes::hs256(SECRET, &service))),
        ("service role claims", Some(fakes::hs256(SECRET, &service_like_user))),
        (
            "sub not a uuid",
            Some(fakes::hs256(SECRET, &with("sub", "admin".into()))),
        ),
        (
            "no exp",
            Some(fakes::hs256(SECRET, &{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            })),
        ),
        ("garbage", Some("not.a.token".into())),
        ("ES256 header on an RS256 key", Some(fakes::es256(&good, "rsa-key-1"))),
    ];
    for (name, token) in cases {
        let (status, body, response) = h.send_raw(token.as_deref(), &h.body("hi", None), &[]).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
        assert!(response.headers().contains_key("x-request-id"));
    }
    let (status, _, _) = h
        .send_raw(None, &h.body("hi", None), &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(status, 401, "basic auth");
    assert_eq!(
        h.message_rows().await,
        0,
        "nothing written for unauthenticated requests"
    );
}

#[tokio::test]
async fn hs256_es256_and_rs256_tokens_are_accepted() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let claims = fakes::claims(&h.issuer, USER);
    for token in [
        fakes::hs256(SECRET, &claims),
        fakes::es256(&claims, "ec-key-1"),
        fakes::rs256(&claims, "rsa-key-1"),
    ] {
        let (status, body, _) = h.send_raw(Some(&token), &h.body("hello", None), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    // The JWKS was fetched once and cached for the second asymmetric token.
    assert_eq!(h.auth.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn api_gateway_authorizer_claims_are_used_only_when_trusted() {
    let event_with_claims = |h: &Harness| {
        let mut event: Value = serde_json::from_str(include_str!("../../events/chat-jwt-authorizer.json")).unwrap();
        event["body"] = h.body("via the authorizer", None).into();
        lambda_http::request::from_str(&event.to_string()).unwrap()
    };
    let trusted = harness_with(ChatModel::new(Duration::ZERO), ChatSettings::default(), None, true).await;
    let response = chat::handle(&trusted.chat, event_with_claims(&trusted)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let untrusted = harness(ChatModel::new(Duration::ZERO)).await;
    let response = chat::handle(&untrusted.chat, event_with_claims(&untrusted))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "off by default");
}

#[tokio::test]
async fn chat_returns_404_for_another_users_conversation() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let (_, first) = h.send("mine", None).await;
    let conversation = first["conversationId"].as_str().unwrap().to_string();
    let rows = h.message_rows().await;

    let other = h.token(OTHER_USER);
    let (status, theirs, _) = h
        .send_raw(Some(&other), &h.body("let me in", Some(&conversation)), &[])
        .await;
    let (status_missing, missing, _) = h
        .send_raw(
            Some(&other),
            &h.body("let me in", Some(&Uuid::new_v4().to_string())),
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(status_missing, 404);
    assert_eq!(
        theirs["error"], missing["error"],
        "indistinguishable from a missing conversation"
    );
    assert_eq!(h.message_rows().await, rows, "nothing written to it");
}

#[tokio::test]
async fn an_unknown_agent_is_a_404() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let body = json!({"agentId": Uuid::new_v4(), "message": "hi"}).to_string();
    let (status, value, _) = h.send_raw(Some(&h.token(USER)), &body, &[]).await;
    assert_eq!(status, 404, "{value}");
    assert_eq!(h.message_rows().await, 0);
}

#[tokio::test]
async fn hostile_and_malformed_requests_get_the_right_4xx_never_a_500() {
    let h = harness_with(
        ChatModel::new(Duration::ZERO),
        ChatSettings {
            max_body_bytes: 16 * 1024,
            ..ChatSettings::default()
        },
        None,
        false,
    )
    .await;
    let agent = h.agent.to_string();
    let token = h.token(USER);
    let cases: Vec<BadRequestCase> = vec![
        ("malformed JSON", "{\"agentId\":".into(), vec![], 400, ""),
        ("not JSON", "agentId=1&message=hi".into(), vec![], 400, ""),
        ("array", "[1,2]".into(), vec![], 422, "the body must be a JSON object"),
        (
            "wrong type agentId",
            json!({"agentId": 42, "message": "x"}).to_string(),
            vec![],
            422,
            "agentId must be",
        ),
        (
            "wrong type message",
            json!({"agentId": agent, "message": {"text": "x"}}).to_string(),
            vec![],
            422,
            "message must be a string",
        ),
        (
            "bad uuid",
            json!({"agentId": "x' OR 1=1 --", "message": "x"}).to_string(),
            vec![],
            422,
            "agentId must be a UUID",
        ),
        (
            "unknown field",
            json!({"agentId": agent, "message": "x", "context": "y"}).to_string(),
            vec![],
            422,
            "unknown field `context`",
        ),
        (
            "empty message",
            json!({"agentId": agent, "message": ""}).to_string(),
            vec![],
            422,
            "message must not be empty",
        ),
        (
            "whitespace message",
            json!({"agentId": agent, "message": " \n\t "}).to_string(),
            vec![],
            422,
            "message must not be empty",
        ),
        (
            "NUL in message",
            json!({"agentId": agent, "message": "a\u{0}b"}).to_string(),
            vec![],
            422,
            "message must not contain NUL",
        ),
        (
            "oversized message",
            json!({"agentId": agent, "message": "x".repeat(4001)}).to_string(),
            vec![],
            413,
            "message is 4001 characters",
        ),
        (
            "huge body",
            json!({"agentId": agent, "message": "x".repeat(100_000)}).to_string(),
            vec![],
            413,
            "",
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
            vec![],
            400,
            "",
        ),
        (
            "wrong content type",
            json!({"agentId": agent, "message": "x"}).to_string(),
            vec![("content-type", "text/plain")],
            415,
            "",
        ),
        (
            "bad idempotency key",
            json!({"agentId": agent, "message": "x"}).to_string(),
            vec![("idempotency-key", "has spaces in it")],
            400,
            "",
        ),
    ];
    for (name, body, headers, expected, says) in cases {
        let (status, value, response) = h.send_raw(Some(&token), &body, &headers).await;
        assert_eq!(status, expected, "{name}: {value}");
        let text = value.to_string();
        assert!(value["error"]["code"].is_string(), "{name}: the error shape");
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{name}: {message:?} does not say {says:?}");
        for leak in ["SELECT", "INSERT", "postgres://", "panicked", SECRET] {
            assert!(!text.contains(leak), "{name}: body leaks {leak}: {text}");
        }
        assert!(response.headers().contains_key("x-request-id"));
    }
    assert_eq!(h.message_rows().await, 0);
}

#[tokio::test]
async fn no_connection_or_transaction_is_held_while_the_model_thinks() {
    let model = ChatModel::new(Duration::from_secs(2));
    let h = harness(model.clone()).await;
    let inspector = h.db.direct().await;
    let request = h.send("take your time", None);
    let observe = async {
        // The model has been called and is thinking for 2 s.
        let thinking = eventually(Duration::from_secs(5), || async { model.calls() == 1 }).await;
        assert!(thinking, "the model was called");
        let status = h.chat.db.status();
        let sessions = h.db.server_sessions(&inspector).await;
        (status, sessions)
    };
    let ((status, body), (pool, sessions)) = tokio::join!(request, observe);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        pool.available, pool.size,
        "the chat instance's connection is back in its pool: {pool:?}"
    );
    assert!(
        !sessions
            .iter()
            .any(|s| s.state.starts_with("idle in transaction") || s.state == "active"),
        "no open transaction or running statement during the model call: {sessions:?}"
    );
}

#[tokio::test]
async fn a_paused_pooler_gets_503_or_504_within_the_bound_not_a_hang() {
    let bouncer = PrivateBouncer::start(2).await;
    let h = harness_with(
        ChatModel::new(Duration::ZERO),
        ChatSettings::default(),
        Some(&bouncer),
        false,
    )
    .await;
    assert_eq!(h.send("warm up", None).await.0, 200);
    let admin = bouncer.admin().await;
    admin_command(&admin, "PAUSE").await;
    let started = Instant::now();
    let (status, body, response) = h
        .send_raw(Some(&h.token(USER)), &h.body("are you there?", None), &[])
        .await;
    let elapsed = started.elapsed();
    admin_command(&admin, "RESUME").await;
    assert!(status == 503 || status == 504, "{status} {body}");
    if status == 503 {
        assert!(response.headers().contains_key("retry-after"));
    }
    assert!(elapsed < Duration::from_secs(4), "answered after {elapsed:?}");
    let back = eventually(Duration::from_secs(5), || async {
        h.send("back?", None).await.0 == 200
    })
    .await;
    assert!(back, "serves again after RESUME");
}

#[tokio::test]
async fn the_same_idempotency_key_twice_calls_the_model_once_and_answers_the_same() {
    let model = ChatModel::new(Duration::ZERO);
    let h = harness(model.clone()).await;
    let token = h.token(USER);
    let body = h.body("charge my card once", None);
    let key = [("idempotency-key", "req-7f3a")];
    let (s1, first, _) = h.send_raw(Some(&token), &body, &key).await;
    let (s2, second, _) = h.send_raw(Some(&token), &body, &key).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "the same response");
    assert_eq!(model.calls(), 1, "one model call");
    let replies: i64 =
        h.db.direct()
            .await
            .query_one("SELECT count(*) FROM messages WHERE role = 'assistant'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(replies, 1, "one reply row");
    assert_eq!(h.message_rows().await, 2);
}

#[tokio::test]
async fn a_retry_after_a_model_failure_answers_the_stored_message() {
    let h = harness(ChatModel::failing()).await;
    let token = h.token(USER);
    let body = h.body("please answer", None);
    let key = [("idempotency-key", "retry-me")];
    let (status, value, _) = h.send_raw(Some(&token), &body, &key).await;
    assert_eq!(status, 502, "{value}");
    assert_eq!(h.message_rows().await, 1, "the user's message is kept");

    let h = Harness {
        chat: Chat {
            live: shared::live::Publisher::off(),
            model: ChatModel::new(Duration::ZERO),
            ..h.chat
        },
        ..h
    };
    let (status, value, _) = h.send_raw(Some(&token), &body, &key).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["message"]["content"], "reply to: please answer");
    assert_eq!(h.message_rows().await, 2, "no second copy of the user's message");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let h = harness_with(
        ChatModel::new(Duration::ZERO),
        ChatSettings {
            rate_limit: 3,
            rate_window: Duration::from_secs(60),
            ..ChatSettings::default()
        },
        None,
        false,
    )
    .await;
    for i in 0..3 {
        assert_eq!(h.send(&format!("message {i}"), None).await.0, 200);
    }
    let (status, body, response) = h
        .send_raw(Some(&h.token(USER)), &h.body("one too many", None), &[])
        .await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Another user is not limited by this one.
    let (status, _, _) = h
        .send_raw(Some(&h.token(OTHER_USER)), &h.body("hello", None), &[])
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn model_failures_map_to_502_and_timeouts_to_504() {
    let h = harness(ChatModel::failing()).await;
    let (status, body) = h.send("hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "model_error");

    let slow = harness_with(
        ChatModel::new(Duration::from_secs(5)),
        ChatSettings {
            model_timeout: Duration::from_millis(300),
            ..ChatSettings::default()
        },
        None,
        false,
    )
    .await;
    let started = Instant::now();
    let (status, body) = slow.send("hi", None).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn request() -> ModelRequest {
    ModelRequest::task("Be brief.", "What is 2+2?")
}

#[tokio::test]
async fn the_openai_compatible_client_speaks_the_wire_format() {
    let server = FakeServer::openai().await;
    let model = shared::model::openai::OpenAiModel::new(
        &format!("{}/v1", server.url()),
        Some("sk-test".into()),
        "gpt-test",
        limits(Duration::from_millis(1500)),
    )
    .expect("an HTTP client with its timeouts");
    assert_eq!(model.generate(&request()).await.unwrap(), "openai says: What is 2+2?");
    let seen = server.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.body["model"], "gpt-test");
    assert_eq!(
        seen.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        seen.body["messages"][1],
        json!({"role": "user", "content": "What is 2+2?"})
    );
    assert!(seen
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer sk-test"));

    server.set_mode(Mode::HttpError);
    let err = model.generate(&request()).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::Failed(m) if m.contains("HTTP 500")),
        "{err:?}"
    );
    server.set_mode(Mode::Slow);
    let started = Instant::now();
    assert!(matches!(model.generate(&request()).await, Err(ModelError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.set_mode(Mode::Oversized);
    assert!(matches!(model.generate(&request()).await, Err(ModelError::TooLarge(_))));
}

#[tokio::test]
async fn the_bedrock_client_speaks_the_converse_wire_format() {
    let server = FakeServer::bedrock().await;
    let model = bedrock_model(&server, Duration::from_millis(1500));
    assert_eq!(model.generate(&request()).await.unwrap(), "bedrock says: What is 2+2?");
    let seen = server.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/model/anthropic.claude-test/converse");
    assert_eq!(seen.body["system"][0]["text"], "Be brief.");
    assert_eq!(seen.body["messages"][0]["role"], "user");
    assert_eq!(seen.body["inferenceConfig"]["maxTokens"], 256);
    assert!(
        seen.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("AWS4-HMAC-SHA256")),
        "requests are SigV4-signed"
    );

    server.set_mode(Mode::HttpError);
    let err = model.generate(&request()).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::Failed(m) if m.contains("ValidationException")),
        "{err:?}"
    );
    server.set_mode(Mode::Slow);
    let started = Instant::now();
    assert!(matches!(model.generate(&request()).await, Err(ModelError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.set_mode(Mode::Oversized);
    assert!(matches!(model.generate(&request()).await, Err(ModelError::TooLarge(_))));
}

#[tokio::test]
async fn in_release_mode_no_pooler_client_is_open_while_the_model_thinks() {
    for (mode, expected) in [("release", 0), ("warm", 1)] {
        let model = ChatModel::new(Duration::from_secs(2));
        let mut h = harness(model.clone()).await;
        h.chat.db = h.db.pool(&PoolOptions {
            app: "chat".into(),
            mode,
            ..PoolOptions::default()
        });
        let request = h.send("take your time", None);
        let observe = async {
            let thinking = eventually(Duration::from_secs(5), || async { model.calls() == 1 }).await;
            assert!(thinking, "the model was called");
            pooler_clients(&h.db, "chat").await
        };
        let ((status, body), clients) = tokio::join!(request, observe);
        assert_eq!(status, 200, "{body}");
        assert_eq!(clients, expected, "{mode}: pooler clients while the model thinks");
    }
}

#[tokio::test]
async fn both_model_clients_report_throttling_as_its_own_error() {
    let openai_server = FakeServer::openai().await;
    openai_server.set_mode(Mode::Throttled);
    let openai = openai_model(&openai_server, Duration::from_millis(1500));
    assert_eq!(
        openai.generate(&request()).await,
        Err(ModelError::Throttled {
            retry_after: Some(Duration::from_secs(2))
        })
    );
    let bedrock_server = FakeServer::bedrock().await;
    bedrock_server.set_mode(Mode::Throttled);
    let bedrock = bedrock_model(&bedrock_server, Duration::from_millis(1500));
    assert_eq!(
        bedrock.generate(&request()).await,
        Err(ModelError::Throttled { retry_after: None })
    );
}

#[tokio::test]
async fn a_throttling_model_is_a_503_with_retry_after_and_the_retry_is_answered_once() {
    let server = FakeServer::openai().await;
    let model = openai_model(&server, Duration::from_secs(2));
    let h = harness(Arc::new(model)).await;
    server.set_mode(Mode::Throttled);
    let body = h.body("are you there?", None);
    let (status, err, response) = h
        .send_raw(Some(&h.token(USER)), &body, &[("idempotency-key", "throttled-1")])
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "model_busy");
    assert_eq!(response.headers().get("retry-after").unwrap(), "2");
    server.set_mode(Mode::Ok);
    let (status, reply, _) = h
        .send_raw(Some(&h.token(USER)), &body, &[("idempotency-key", "throttled-1")])
        .await;
    assert_eq!(status, 200, "{reply}");
    let users: i64 =
        h.db.direct()
            .await
            .query_one("SELECT count(*) FROM messages WHERE role = 'user'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(users, 1, "the user's message is stored once");
}

#[tokio::test]
async fn a_reply_stores_the_providers_usage_and_model_and_unknown_usage_as_null() {
    // OpenAI-compatible and Bedrock stand-ins speaking their usage formats, and the local model.
    let openai = FakeServer::openai().await;
    let bedrock = FakeServer::bedrock().await;
    let cases: Vec<(Arc<dyn AgentModel>, &str)> = vec![
        (Arc::new(openai_model(&openai, Duration::from_secs(5))), "gpt-test"),
        (
            Arc::new(bedrock_model(&bedrock, Duration::from_secs(5))),
            "anthropic.claude-test",
        ),
    ];
    for (model, name) in cases {
        let h = harness(model).await;
        let (status, body) = h.send("what does it cost?", None).await;
        assert_eq!(status, 200, "{body}");
        let row =
            h.db.direct()
                .await
                .query_one(
                    "SELECT input_tokens, output_tokens, model FROM messages WHERE role = 'assistant'",
                    &[],
                )
                .await
                .unwrap();
        let (input, output, stored): (Option<i32>, Option<i32>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (input, output),
            (Some(fakes::PLAIN_USAGE.0 as i32), Some(fakes::PLAIN_USAGE.1 as i32)),
            "{name}"
        );
        assert!(stored.is_some_and(|m| m.starts_with(name)), "{name}");
        let day =
            h.db.direct()
                .await
                .query_one("SELECT input_tokens, output_tokens, calls FROM usage_daily", &[])
                .await
                .unwrap();
        assert_eq!(
            (day.get::<_, i64>(0), day.get::<_, i64>(1), day.get::<_, i32>(2)),
            (fakes::PLAIN_USAGE.0, fakes::PLAIN_USAGE.1, 1),
            "{name}: one upsert with the reply"
        );
    }
    // A provider that reports no usage: NULL, never 0; the call still counts.
    openai.set_mode(Mode::NoUsage);
    let h = harness(Arc::new(openai_model(&openai, Duration::from_secs(5)))).await;
    let (status, body) = h.send("free?", None).await;
    assert_eq!(status, 200, "{body}");
    let row =
        h.db.direct()
            .await
            .query_one(
                "SELECT m.input_tokens, m.output_tokens, d.calls, d.input_tokens
               FROM messages m, usage_daily d WHERE m.role = 'assistant'",
                &[],
            )
            .await
            .unwrap();
    let (input, output, calls, day_input): (Option<i32>, Option<i32>, i32, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((input, output, calls, day_input), (None, None, 1, 0));
    // The local model reports deterministic counts.
    let h = harness(Arc::new(shared::model::LocalModel::default())).await;
    let (status, _) = h.send("count my words please", None).await;
    assert_eq!(status, 200);
    let row =
        h.db.direct()
            .await
            .query_one(
                "SELECT input_tokens, output_tokens, model FROM messages WHERE role = 'assistant'",
                &[],
            )
            .await
            .unwrap();
    let (input, output, model): (Option<i32>, Option<i32>, Option<String>) = (row.get(0), row.get(1), row.get(2));
    assert!(
        input.is_some_and(|n| n > 0) && output.is_some_and(|n| n > 0),
        "{input:?} {output:?}"
    );
    assert_eq!(model.as_deref(), Some("local"));
}
