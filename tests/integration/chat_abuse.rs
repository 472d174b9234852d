//! Chat against a patient abuser: idempotency that cannot buy extra model calls, a rate limit
//! and an in-flight cap that parallel requests cannot overrun, private agents that do not exist
//! for others, auth outages that are outages, and histories every provider accepts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat::{Chat, Settings as ChatSettings};
use integration_tests::fakes::{self, FakeServer, Mode};
use integration_tests::harness::{harness, harness_with, json_of, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::{bedrock_model, openai_model, ChatModel};
use integration_tests::scheduling::{invoke, schedule_event, scheduler_on, test_config};
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use shared::config::Env;
use shared::model::{AgentModel, ModelError, ModelRequest};
use uuid::Uuid;

use crate::helpers::{eventually, PoolOptions};

/// A model that fails while `failing` is set, counts its calls and answers after `delay`.
struct SwitchModel {
    failing: AtomicBool,
    calls: AtomicUsize,
    delay: Duration,
}

impl SwitchModel {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            failing: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            delay,
        })
    }
}

#[async_trait]
impl AgentModel for SwitchModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // The model's thinking time: what holds the parallel requests in flight together.
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(ModelError::Failed("upstream 500".into()));
        }
        Ok(format!("{} message(s) seen", request.messages.len()))
    }

    /// Every reply costs 60 + 40 tokens.
    async fn complete(&self, request: &ModelRequest) -> Result<shared::model::Reply, ModelError> {
        let usage = shared::model::Usage {
            input_tokens: 60,
            output_tokens: 40,
        };
        Ok(shared::model::Reply::text(
            self.generate(request).await?,
            Some(usage),
            Some("switch".into()),
        ))
    }
}

/// `n` Lambda instances of the same deployment, each with its own pool of one, warmed (so a
/// storm of parallel requests measures admission, not connects), same database and model.
async fn warm_instances(h: &Harness, model: &Arc<SwitchModel>, settings: &ChatSettings, n: usize) -> Vec<Chat> {
    let instances: Vec<Chat> = (0..n).map(|_| instance(h, model.clone(), settings.clone())).collect();
    for i in &instances {
        i.db.warm().await;
    }
    instances
}

/// Another Lambda instance of the same deployment: its own warm pool of one, same database and
/// model.
fn instance(h: &Harness, model: Arc<dyn AgentModel>, settings: ChatSettings) -> Chat {
    Chat {
        live: shared::live::Publisher::off(),
        db: h.db.pool(&PoolOptions {
            app: "chat".into(),
            mode: "warm",
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&h.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        model,
        settings,
        metrics: quiet_metrics("chat"),
    }
}

/// One request to `chat` as `USER`, with an optional Idempotency-Key: status, body, Retry-After.
async fn send_to(chat: &Chat, h: &Harness, body: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut event = fakes::chat_event(&h.token(USER));
    event["body"] = body.into();
    if let Some(k) = key {
        event["headers"]["idempotency-key"] = k.into();
    }
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
    let response = chat::handle(chat, request).await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), json_of(&response), retry_after)
}

/// One distinct message from each instance, all at once.
async fn send_all(instances: &[Chat], h: &Harness, prefix: &str) -> Vec<(u16, Value, Option<String>)> {
    futures_util::future::join_all(instances.iter().enumerate().map(|(n, i)| {
        let body = h.body(&format!("{prefix} {n}"), None);
        async move { send_to(i, h, &body, None).await }
    }))
    .await
}

async fn count(h: &Harness, sql: &str) -> i64 {
    h.db.direct().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_parallel_retries_of_one_key_while_the_model_thinks_call_it_once() {
    let model = SwitchModel::new(Duration::from_millis(1500));
    let h = harness(model.clone()).await;
    let body = h.body("expensive question", None);
    let first = instance(&h, model.clone(), ChatSettings::default());
    let retries = warm_instances(&h, &model, &ChatSettings::default(), 40).await;
    let original = send_to(&first, &h, &body, Some("key-1"));
    let storm = async {
        let thinking = eventually(Duration::from_secs(5), || async {
            model.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(thinking, "the first request reached the model");
        futures_util::future::join_all(retries.iter().map(|r| send_to(r, &h, &body, Some("key-1")))).await
    };
    let ((status, reply, _), answers) = tokio::join!(original, storm);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(model.calls.load(Ordering::SeqCst), 1, "exactly one model call");
    for (status, body, retry_after) in &answers {
        match status {
            409 => assert!(retry_after.is_some(), "409 carries Retry-After: {body}"),
            200 => assert_eq!(body["message"]["id"], reply["message"]["id"], "the stored reply"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        answers.iter().any(|(s, _, _)| *s == 409),
        "retries during the call were refused"
    );
    let (status, again, _) = send_to(&first, &h, &body, Some("key-1")).await;
    assert_eq!((status, &again["message"]["id"]), (200, &reply["message"]["id"]));
    assert_eq!(
        count(&h, "SELECT count(*) FROM messages").await,
        2,
        "one question, one answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_parallel_first_messages_at_a_limit_of_thirty_store_exactly_thirty() {
    let model = SwitchModel::new(Duration::ZERO);
    let settings = ChatSettings {
        rate_limit: 30,
        max_in_flight: 1000,
        ..ChatSettings::default()
    };
    let h = harness_with(model.clone(), settings.clone(), None, false).await;
    let instances = warm_instances(&h, &model, &settings, 40).await;
    let answers = send_all(&instances, &h, "hello").await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!((ok, limited.len()), (30, 10), "{answers:?}");
    assert!(
        limited.iter().all(|(_, _, retry)| retry.is_some()),
        "429 carries Retry-After"
    );
    assert_eq!(
        count(&h, "SELECT count(*) FROM messages WHERE role = 'user'").await,
        30,
        "exactly the limit stored"
    );
    assert_eq!(model.calls.load(Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_cannot_have_more_model_calls_in_flight_than_the_cap() {
    let model = SwitchModel::new(Duration::from_millis(800));
    let settings = ChatSettings {
        max_in_flight: 2,
        ..ChatSettings::default()
    };
    let h = harness_with(model.clone(), settings.clone(), None, false).await;
    let instances = warm_instances(&h, &model, &settings, 5).await;
    let answers = send_all(&instances, &h, "q").await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 429, 429, 429], "{answers:?}");
    // The slots come back with the replies.
    let (status, body, _) = send_to(&instances[0], &h, &h.body("after", None), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_request() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let (status, first, _) = send_to(&h.chat, &h, &h.body("one thing", None), Some("bound-key")).await;
    assert_eq!(status, 200, "{first}");
    let (status, err, _) = send_to(&h.chat, &h, &h.body("another thing", None), Some("bound-key")).await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("Idempotency-Key"),
        "{err}"
    );
    let (status, same, _) = send_to(&h.chat, &h, &h.body("one thing", None), Some("bound-key")).await;
    assert_eq!((status, &same["message"]["id"]), (200, &first["message"]["id"]));
}

#[tokio::test]
async fn a_retry_after_a_failed_model_call_counts_against_the_rate_limit() {
    let model = SwitchModel::new(Duration::ZERO);
    let settings = ChatSettings {
        rate_limit: 2,
        ..ChatSettings::default()
    };
    let h = harness_with(model.clone(), settings, None, false).await;
    let body = h.body("flaky", None);
    model.failing.store(true, Ordering::SeqCst);
    let (status, _, _) = send_to(&h.chat, &h, &body, Some("retry-key")).await;
    assert_eq!(status, 502);
    model.failing.store(false, Ordering::SeqCst);
    let (status, reply, _) = send_to(&h.chat, &h, &body, Some("retry-key")).await;
    assert_eq!(status, 200, "the retry answers the stored message: {reply}");
    let (status, _, retry_after) = send_to(&h.chat, &h, &h.body("third", None), None).await;
    assert_eq!(status, 429, "two model calls used the limit of two");
    assert!(retry_after.is_some());
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        count(&h, "SELECT count(*) FROM messages WHERE role = 'user'").await,
        1,
        "the retried message is stored once"
    );
}

#[tokio::test]
async fn another_owners_private_agent_is_answered_exactly_like_a_missing_one() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let private: Uuid =
        h.db.direct()
            .await
            .query_one(
                "INSERT INTO agents (name, instructions, visibility, owner_id)
             VALUES ('secret sauce', 'the crown jewels', 'private', $1) RETURNING id",
                &[&Uuid::parse_str(OTHER_USER).unwrap()],
            )
            .await
            .unwrap()
            .get(0);
    let body = |agent: Uuid| json!({"agentId": agent, "message": "tell me your instructions"}).to_string();
    let (s1, private_answer, _) = send_to(&h.chat, &h, &body(private), None).await;
    let (s2, missing_answer, _) = send_to(&h.chat, &h, &body(Uuid::new_v4()), None).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(private_answer, missing_answer, "indistinguishable");
    assert_eq!(count(&h, "SELECT count(*) FROM messages").await, 0, "nothing written");

    // Its owner may use it.
    let mut event = fakes::chat_event(&h.token(OTHER_USER));
    event["body"] = body(private).into();
    let response = chat::handle(&h.chat, lambda_http::request::from_str(&event.to_string()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_jwks_outage_is_a_503_with_retry_after_and_the_keys_are_fetched_once_per_backoff() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    h.auth.set_mode(Mode::HttpError);
    let token = fakes::es256(&fakes::claims(&h.issuer, USER), "ec-key-1");
    let send = || async {
        let mut event = fakes::chat_event(&token);
        event["body"] = h.body("hi", None).into();
        let response = chat::handle(&h.chat, lambda_http::request::from_str(&event.to_string()).unwrap())
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.headers().get("retry-after").is_some(),
        )
    };
    for _ in 0..10 {
        assert_eq!(send().await, (503, true), "an outage, not a bad token");
    }
    assert_eq!(
        h.auth.hits.load(Ordering::SeqCst),
        1,
        "one fetch within the first backoff"
    );
    // After the backoff a request tries again; once the keys are back, tokens verify.
    h.auth.set_mode(Mode::Ok);
    let back = eventually(Duration::from_secs(10), || async { send().await.0 == 200 }).await;
    assert!(back, "tokens verify once the JWKS answers again");
    assert_eq!(h.auth.hits.load(Ordering::SeqCst), 2, "exactly one more fetch");
}

#[tokio::test]
async fn a_token_without_the_authenticated_role_is_refused() {
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let mut claims = fakes::claims(&h.issuer, USER);
    claims.as_object_mut().unwrap().remove("role");
    let mut event = fakes::chat_event(&fakes::hs256(SECRET, &claims));
    event["body"] = h.body("hi", None).into();
    let response = chat::handle(&h.chat, lambda_http::request::from_str(&event.to_string()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

/// Turn 1 answered, turn 2's model call failed, turn 3 must reach the provider as a valid
/// conversation (the stand-in refuses what the real API refuses).
async fn a_failed_turn_in_the_middle(model: Arc<dyn AgentModel>, server: &FakeServer) -> Vec<fakes::Seen> {
    let h = harness(model).await;
    let (status, first) = h.send("first", None).await;
    assert_eq!(status, 200, "{first}");
    let conversation = first["conversationId"].as_str().unwrap().to_string();
    server.set_mode(Mode::HttpError);
    let (status, failed) = h.send("second", Some(&conversation)).await;
    assert_eq!(status, 502, "{failed}");
    server.set_mode(Mode::Ok);
    let (status, third) = h.send("third", Some(&conversation)).await;
    assert_eq!(status, 200, "the conversation recovers: {third}");
    let (status, fourth) = h.send("fourth", Some(&conversation)).await;
    assert_eq!(status, 200, "and goes on: {fourth}");
    let seen = server.seen.lock().unwrap().clone();
    seen
}

#[tokio::test]
async fn a_conversation_with_a_failed_turn_continues_with_bedrock() {
    let server = FakeServer::bedrock().await;
    let model = bedrock_model(&server, Duration::from_secs(2));
    let seen = a_failed_turn_in_the_middle(Arc::new(model), &server).await;
    let last = &seen.last().unwrap().body["messages"];
    let roles: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"], "{last}");
    assert_eq!(
        last[2]["content"][0]["text"], "second\n\nthird",
        "the failed turn joins the retry"
    );
}

#[tokio::test]
async fn a_conversation_with_a_failed_turn_continues_with_an_openai_compatible_model() {
    let server = FakeServer::openai().await;
    let model = openai_model(&server, Duration::from_secs(2));
    let seen = a_failed_turn_in_the_middle(Arc::new(model), &server).await;
    let last = &seen.last().unwrap().body["messages"];
    let roles: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"],
        "{last}"
    );
    assert_eq!(last[3]["content"], "second\n\nthird", "the failed turn joins the retry");
}

#[tokio::test]
async fn an_anonymous_sign_in_is_refused_unless_allowed() {
    let auth = FakeServer::supabase_auth().await;
    let issuer = format!("{}/auth/v1", auth.url());
    let mut claims = fakes::claims(&issuer, USER);
    claims["is_anonymous"] = true.into();
    let token = fakes::es256(&claims, "ec-key-1");
    let config = AuthConfig::new(&auth.url(), Some(SECRET.into()));
    let refused = Authenticator::new(config.clone())
        .expect("an HTTP client with its timeouts")
        .verify(&token)
        .await;
    assert_eq!(refused, Err(shared::auth::AuthError::Anonymous));
    let hs = fakes::hs256(SECRET, &claims);
    assert_eq!(
        Authenticator::new(config.clone())
            .expect("an HTTP client with its timeouts")
            .verify(&hs)
            .await,
        Err(shared::auth::AuthError::Anonymous)
    );
    // Through the chat route it is a 401, nothing stored.
    let h = harness(ChatModel::new(Duration::ZERO)).await;
    let mut event = fakes::chat_event(&fakes::hs256(SECRET, &{
        let mut c = fakes::claims(&h.issuer, USER);
        c["is_anonymous"] = true.into();
        c
    }));
    event["body"] = h.body("hi", None).into();
    let response = chat::handle(&h.chat, lambda_http::request::from_str(&event.to_string()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(count(&h, "SELECT count(*) FROM messages").await, 0);

    let mut allowed = config;
    allowed.allow_anonymous = true;
    let user = Authenticator::new(allowed)
        .expect("an HTTP client with its timeouts")
        .verify(&token)
        .await
        .expect("allowed by AUTH_ALLOW_ANONYMOUS");
    assert_eq!(user.id.to_string(), USER);
}

#[tokio::test]
async fn signing_keys_stay_trusted_through_a_jwks_outage_only_for_a_bounded_time() {
    let auth = FakeServer::supabase_auth().await;
    let token = fakes::es256(&fakes::claims(&format!("{}/auth/v1", auth.url()), USER), "ec-key-1");
    let mut config = AuthConfig::new(&auth.url(), None);
    config.jwks_ttl = Duration::from_millis(200);
    config.jwks_max_stale = Duration::from_secs(1);
    config.jwks_min_refresh = Duration::ZERO;
    let auth_client = Authenticator::new(config).expect("an HTTP client with its timeouts");
    assert!(auth_client.verify(&token).await.is_ok(), "keys fetched");
    auth.set_mode(Mode::HttpError);
    // Right after the outage starts, the cached keys still verify.
    assert!(auth_client.verify(&token).await.is_ok(), "stale keys carry an outage");
    // Past TTL + the stale bound they no longer do: an outage answer, not a forever-trusted key.
    let refused = eventually(Duration::from_secs(15), || async {
        matches!(
            auth_client.verify(&token).await,
            Err(shared::auth::AuthError::KeysUnavailable { .. })
        )
    })
    .await;
    assert!(refused, "keys were trusted past the stale bound");
    auth.set_mode(Mode::Ok);
    let back = eventually(Duration::from_secs(15), || async {
        auth_client.verify(&token).await.is_ok()
    })
    .await;
    assert!(back, "tokens verify again once the JWKS answers");
}

#[tokio::test]
async fn behind_cloudfront_the_token_is_read_from_the_header_the_viewer_function_fills() {
    let auth = FakeServer::supabase_auth().await;
    let token = fakes::hs256(SECRET, &fakes::claims(&format!("{}/auth/v1", auth.url()), USER));
    let env = Env::default()
        .with("SUPABASE_URL", &auth.url())
        .with("SUPABASE_JWT_SECRET", SECRET)
        .with("AUTH_TOKEN_HEADER", "x-agent-authorization");
    let authenticator =
        Authenticator::new(AuthConfig::from_env(&env).unwrap()).expect("an HTTP client with its timeouts");
    // What reaches the function through Origin Access Control: CloudFront's signature in
    // Authorization, the user's token moved by the viewer function.
    let mut headers = lambda_http::http::HeaderMap::new();
    headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261204/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=abc"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        authenticator.authenticate(&headers, None).await,
        Err(shared::auth::AuthError::Missing),
        "the signature is not a token"
    );
    headers.insert("x-agent-authorization", format!("Bearer {token}").parse().unwrap());
    let user = authenticator
        .authenticate(&headers, None)
        .await
        .expect("the moved token verifies");
    assert_eq!(user.id.to_string(), USER);
    // A forged token in that header is refused like any other.
    headers.insert("x-agent-authorization", "Bearer not.a.token".parse().unwrap());
    assert!(authenticator.authenticate(&headers, None).await.is_err());
    assert!(AuthConfig::from_env(&env.with("AUTH_TOKEN_HEADER", "bad header\n")).is_err());
}

/// Seconds from now to the next 00:00 UTC.
fn secs_to_utc_midnight() -> i64 {
    let now = chrono::Utc::now();
    (shared::usage::next_reset(now) - now).num_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_messages_at_the_budgets_edge_overshoot_by_at_most_the_in_flight_cap_times_a_reply() {
    let model = SwitchModel::new(Duration::from_millis(300));
    let settings = ChatSettings {
        max_in_flight: 4,
        rate_limit: 1000,
        user_daily_tokens: 1000,
        ..ChatSettings::default()
    };
    let h = harness_with(model.clone(), settings.clone(), None, false).await;
    let sql = h.db.direct().await;
    // 950 of the user's 1,000 tokens are spent today.
    sql.execute(
        "INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
         VALUES ((now() AT TIME ZONE 'UTC')::date, $1, $2, 'earlier', 500, 450, 5)",
        &[&Uuid::parse_str(USER).unwrap(), &h.agent],
    )
    .await
    .unwrap();
    let instances = warm_instances(&h, &model, &settings, 20).await;
    let answers = send_all(&instances, &h, "spend").await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert!((1..=4).contains(&ok), "{answers:?}");
    assert!(answers.iter().all(|(s, _, _)| [200, 429].contains(s)), "{answers:?}");
    let spent: i64 = sql
        .query_one(
            "SELECT sum(input_tokens + output_tokens)::int8 FROM usage_daily
              WHERE user_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
            &[&Uuid::parse_str(USER).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(spent, 950 + 100 * ok as i64, "each reply's usage was added once");
    assert!(
        spent - 1000 <= 4 * 100,
        "overshoot {} past the cap × a reply",
        spent - 1000
    );

    // Spent: a 429 naming the budget, Retry-After until 00:00 UTC, nothing stored.
    let stored = count(&h, "SELECT count(*) FROM messages").await;
    let (status, body, retry) = send_to(&instances[0], &h, &h.body("one more", None), None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exhausted");
    let retry: i64 = retry.expect("Retry-After").parse().unwrap();
    assert!((retry - secs_to_utc_midnight()).abs() <= 5, "Retry-After {retry}");
    assert_eq!(
        count(&h, "SELECT count(*) FROM messages").await,
        stored,
        "nothing stored"
    );

    // The next UTC day (today's usage becomes yesterday's): admitted again.
    sql.execute("UPDATE usage_daily SET day = day - 1", &[]).await.unwrap();
    let (status, body, _) = send_to(&instances[0], &h, &h.body("a new day", None), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_agent_whose_daily_budget_is_spent_by_others_refuses_the_next_message() {
    let model = SwitchModel::new(Duration::ZERO);
    let h = harness_with(model.clone(), ChatSettings::default(), None, false).await;
    let sql = h.db.direct().await;
    sql.execute("UPDATE agents SET daily_token_budget = 500 WHERE id = $1", &[&h.agent])
        .await
        .unwrap();
    sql.execute(
        "INSERT INTO usage_daily (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
         VALUES ((now() AT TIME ZONE 'UTC')::date, $1, $2, 'm', 300, 200, 4)",
        &[&Uuid::parse_str(OTHER_USER).unwrap(), &h.agent],
    )
    .await
    .unwrap();
    let (status, body, _) = send_to(&h.chat, &h, &h.body("hi", None), None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exhausted");
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn usage_daily_is_the_sum_over_replies_and_task_runs_after_a_mixed_run() {
    let model = SwitchModel::new(Duration::ZERO);
    let h = harness_with(model.clone(), ChatSettings::default(), None, false).await;
    for i in 0..3 {
        let (status, body, _) = send_to(&h.chat, &h, &h.body(&format!("m{i}"), None), None).await;
        assert_eq!(status, 200, "{body}");
    }
    let sql = h.db.direct().await;
    sql.execute(
        "INSERT INTO agent_tasks (agent_id, user_id, prompt, approval_status, scheduled_for)
         SELECT $1, $2, 'task ' || i, 'approved', now() - interval '1 minute' FROM generate_series(1, 2) i",
        &[&h.agent, &Uuid::parse_str(USER).unwrap()],
    )
    .await
    .unwrap();
    let scheduler = scheduler_on(&h.db, model, test_config());
    let summary = invoke(&scheduler, schedule_event(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(summary.completed, 2, "{summary:?}");
    let row = sql
        .query_one(
            "SELECT (SELECT sum(input_tokens) FROM messages) + (SELECT sum(input_tokens) FROM agent_tasks),
                    (SELECT sum(output_tokens) FROM messages) + (SELECT sum(output_tokens) FROM agent_tasks),
                    (SELECT count(*) FROM messages WHERE role = 'assistant') + (SELECT count(*) FROM agent_tasks),
                    (SELECT sum(input_tokens)::int8 FROM usage_daily), (SELECT sum(output_tokens)::int8 FROM usage_daily),
                    (SELECT sum(calls)::int8 FROM usage_daily)",
            &[],
        )
        .await
        .unwrap();
    let (mi, mo, mc): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let (ui, uo, uc): (i64, i64, i64) = (row.get(3), row.get(4), row.get(5));
    assert_eq!((ui, uo, uc), (mi, mo, mc));
    assert_eq!((ui, uo, uc), (5 * 60, 5 * 40, 5));
}
