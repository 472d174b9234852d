//! The chat function in process, as the chat, API, live and fault tests drive it: a fresh
//! database with one public agent, the Supabase Auth stand-in, access tokens of two users
//! ([`USER`], [`OTHER_USER`]) signed with the project's legacy secret ([`SECRET`]), and requests
//! built from the sample event `events/chat.json`.

use std::sync::Arc;
use std::time::Duration;

use chat::{Chat, Settings as ChatSettings};
use lambda_http::Body;
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use shared::db::Db;
use shared::metrics::{Metrics, Sink};
use shared::model::AgentModel;
use uuid::Uuid;

use crate::fakes::{self, FakeServer};
use crate::helpers::{settings_for, PoolOptions, PrivateBouncer, TestDb};

/// The Supabase project's legacy JWT secret.
pub const SECRET: &str = "test-legacy-jwt-secret-with-at-least-32-characters";
/// The user the requests come from.
pub const USER: &str = "5b1c7a2e-8f6d-4c3b-9a1e-2d4f6b8c0e13";
/// Someone else, who must see nothing of [`USER`]'s.
pub const OTHER_USER: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";

/// A function's metrics kept in memory instead of cluttering the output.
pub fn quiet_metrics(function: &str) -> Metrics {
    Metrics::new(&shared::config::Env::default(), function).with_sink(Sink::Buffer(Arc::default()))
}

/// The JSON of a function's response (`null` when its body is not JSON text).
pub fn json_of(response: &lambda_http::Response<Body>) -> Value {
    match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// One chat instance on a fresh database: the agent it has, the Auth stand-in it trusts.
pub struct Harness {
    pub db: TestDb,
    pub chat: Chat,
    /// The public agent, `helper` ("You are terse.").
    pub agent: Uuid,
    /// The issuer the tokens must name (the stand-in's `/auth/v1`).
    pub issuer: String,
    pub auth: FakeServer,
}

/// A harness answering with `model` under `settings`; `through`: a private pgbouncer to reach the
/// database by, with short bounds; `trust_gateway`: take API Gateway's authorizer claims.
pub async fn harness_with(
    model: Arc<dyn AgentModel>,
    settings: ChatSettings,
    through: Option<&PrivateBouncer>,
    trust_gateway: bool,
) -> Harness {
    let db = TestDb::new().await;
    let auth = FakeServer::supabase_auth().await;
    let agent: Uuid = db
        .direct()
        .await
        .query_one(
            "INSERT INTO agents (name, instructions, visibility) VALUES ('helper', 'You are terse.', 'public') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let pool = match through {
        Some(bouncer) => Db::new(&settings_for(
            &bouncer.url(&db),
            &PoolOptions {
                app: "chat".into(),
                statement: Duration::from_millis(800),
                connect: Duration::from_millis(800),
                wait: Duration::from_millis(500),
                ..PoolOptions::default()
            },
        ))
        .unwrap(),
        None => db.pool(&PoolOptions {
            app: "chat".into(),
            ..PoolOptions::default()
        }),
    };
    let auth_config = AuthConfig::new(&auth.url(), Some(SECRET.into())).with_trusted_gateway(trust_gateway);
    Harness {
        issuer: auth_config.issuer.clone(),
        chat: Chat {
            live: shared::live::Publisher::off(),
            db: pool,
            auth: Authenticator::new(auth_config).expect("an HTTP client with its timeouts"),
            model,
            settings,
            metrics: quiet_metrics("chat"),
        },
        db,
        agent,
        auth,
    }
}

/// A harness answering with `model`, default settings, straight through the shared pooler.
pub async fn harness(model: Arc<dyn AgentModel>) -> Harness {
    harness_with(model, ChatSettings::default(), None, false).await
}

impl Harness {
    /// An access token of `user` that this instance accepts.
    pub fn token(&self, user: &str) -> String {
        fakes::hs256(SECRET, &fakes::claims(&self.issuer, user))
    }

    /// A chat body to the agent: `message`, in `conversation` if given.
    pub fn body(&self, message: &str, conversation: Option<&str>) -> String {
        let mut b = json!({"agentId": self.agent, "message": message});
        if let Some(c) = conversation {
            b["conversationId"] = c.into();
        }
        b.to_string()
    }

    /// Sends a request built from `events/chat.json` with `body`, the bearer `token` (no
    /// `Authorization` header without one) and extra `headers`: status, JSON body (`null` when
    /// it is not JSON), the response.
    pub async fn send_raw(
        &self,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value, lambda_http::Response<Body>) {
        let mut event = fakes::chat_event(token.unwrap_or_default());
        if token.is_none() {
            event["headers"].as_object_mut().unwrap().remove("authorization");
        }
        event["body"] = body.into();
        for (k, v) in headers {
            event["headers"][*k] = (*v).into();
        }
        let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
        let response = chat::handle(&self.chat, request).await.unwrap();
        (response.status().as_u16(), json_of(&response), response)
    }

    /// `message` from [`USER`], in `conversation` if given: status and JSON body.
    pub async fn send(&self, message: &str, conversation: Option<&str>) -> (u16, Value) {
        let (s, v, _) = self
            .send_raw(Some(&self.token(USER)), &self.body(message, conversation), &[])
            .await;
        (s, v)
    }

    /// How many messages the database holds, anyone's.
    pub async fn message_rows(&self) -> i64 {
        self.db
            .direct()
            .await
            .query_one("SELECT count(*) FROM messages", &[])
            .await
            .unwrap()
            .get(0)
    }
}
