//! An owner's tool sources (MCP servers) through the `api` function: `GET` and
//! `PUT /api/agents/{id}/tool-sources`, with `AGENT_MCP_ENCRYPTION_KEY` set as a deployment sets
//! it (or not). Requests are built from the sample events in `events/`.

use std::time::Duration;

use api::{Api, Settings as ApiSettings};
use integration_tests::harness::{harness, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::ChatModel;
use serde_json::{json, Value};
use shared::agent::sealed::SealKey;
use shared::auth::{AuthConfig, Authenticator};
use shared::config::Env;
use uuid::Uuid;

use crate::helpers::PoolOptions;

/// The deployment's `AGENT_MCP_ENCRYPTION_KEY` in these tests.
const KEY: &str = "8f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";
/// A header's secret part: never in an answer, never in a row as it was sent.
const TOKEN: &str = "ghp-s3cr3t-t0ken-4f9a2b";

struct ApiHarness {
    chat: Harness,
    api: Api,
}

/// A database with the public agent `helper`, the Supabase Auth stand-in, and the API function
/// on it, its settings read from `env` as the function reads them at init.
async fn api_harness_with(env: &Env) -> ApiHarness {
    let chat = harness(ChatModel::new(Duration::ZERO)).await;
    let api = Api {
        live: shared::live::Publisher::off(),
        db: chat.db.pool(&PoolOptions {
            app: "api".into(),
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&chat.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings: ApiSettings::from_env(env).expect("valid settings"),
        metrics: quiet_metrics("api"),
    };
    ApiHarness { chat, api }
}

/// The API function with the deployment's key.
async fn api_harness() -> ApiHarness {
    api_harness_with(&Env::default().with("AGENT_MCP_ENCRYPTION_KEY", KEY)).await
}

fn event_file(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

impl ApiHarness {
    /// `method path` as `user` from `events/<event>`, with `body` (raw) when given: the status
    /// and the body as sent (text).
    async fn send(&self, event: &str, method: &str, path: &str, body: Option<String>, user: &str) -> (u16, String) {
        let mut event = event_file(event);
        event["rawPath"] = path.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["http"]["method"] = method.into();
        let headers = event["headers"].as_object_mut().unwrap();
        headers.insert(
            "authorization".into(),
            format!("Bearer {}", self.chat.token(user)).into(),
        );
        match body {
            Some(body) => {
                headers.insert("content-type".into(), "application/json".into());
                event["body"] = body.into();
            }
            None => {
                event.as_object_mut().unwrap().remove("body");
            }
        }
        let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
        let response = api::handle(&self.api, request).await.unwrap();
        let text = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        (response.status().as_u16(), text)
    }

    async fn sources_text(&self, id: &str, user: &str) -> (u16, String) {
        let path = format!("/api/agents/{id}/tool-sources");
        self.send("api-agent-tool-sources.json", "GET", &path, None, user).await
    }

    async fn sources(&self, id: &str, user: &str) -> (u16, Value) {
        let (status, text) = self.sources_text(id, user).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put_text(&self, id: &str, body: String, user: &str) -> (u16, String) {
        let path = format!("/api/agents/{id}/tool-sources");
        self.send("api-agent-tool-sources-put.json", "PUT", &path, Some(body), user)
            .await
    }

    async fn put(&self, id: &str, sources: &[Value], user: &str) -> (u16, Value) {
        let (status, text) = self.put_text(id, json!({ "sources": sources }).to_string(), user).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An agent of `user`'s, made through the API: its id.
    async fn agent_of(&self, user: &str) -> String {
        let (status, text) = self
            .send(
                "api-agents-create.json",
                "POST",
                "/api/agents",
                Some(json!({"name": "mine"}).to_string()),
                user,
            )
            .await;
        assert_eq!(status, 201, "{text}");
        let agent: Value = serde_json::from_str(&text).unwrap();
        agent["id"].as_str().unwrap().to_string()
    }

    /// The source rows of the database, read directly: `(agent, name, url, sealed header)` by
    /// name.
    async fn stored(&self) -> Vec<(Uuid, String, String, Option<Vec<u8>>)> {
        let sql = self.chat.db.direct().await;
        sql.query(
            "SELECT agent_id, name, url, auth_header FROM agent_tool_sources ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }
}

fn source(name: &str) -> Value {
    json!({"name": name, "url": format!("https://mcp.example.com/{name}")})
}

fn with_header(name: &str, header: Value) -> Value {
    let mut s = source(name);
    s["authHeader"] = header;
    s
}

fn key() -> SealKey {
    SealKey::from_hex(KEY).unwrap()
}

#[tokio::test]
async fn put_then_get_round_trips_the_list_with_its_defaults_and_keeps_ids_of_unchanged_names() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    assert_eq!(h.sources(&agent, USER).await, (200, json!({"sources": []})));
    let mut full = source("github");
    full["kind"] = json!("mcp");
    full["allowedTools"] = json!(["search_issues", "repos/get.v2"]);
    full["approval"] = json!("always");
    full["timeoutMs"] = json!(2500);
    let (status, first) = h.put(&agent, &[full, source("docs")], USER).await;
    assert_eq!(status, 200, "{first}");
    let listed = first["sources"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let docs = &listed[0];
    assert_eq!(docs["name"], "docs");
    assert_eq!(docs["kind"], "mcp");
    assert_eq!(docs["url"], "https://mcp.example.com/docs");
    assert_eq!(docs["hasAuthHeader"], false);
    assert_eq!(docs["allowedTools"], Value::Null);
    assert_eq!(docs["approval"], "destructive");
    assert_eq!(docs["timeoutMs"], 10000);
    assert!(Uuid::parse_str(docs["id"].as_str().unwrap()).is_ok());
    assert!(docs["createdAt"].is_string());
    let mut fields: Vec<&str> = docs.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "allowedTools",
            "approval",
            "createdAt",
            "hasAuthHeader",
            "id",
            "kind",
            "name",
            "timeoutMs",
            "url"
        ]
    );
    let github = &listed[1];
    assert_eq!(github["allowedTools"], json!(["search_issues", "repos/get.v2"]));
    assert_eq!(
        (&github["approval"], &github["timeoutMs"]),
        (&json!("always"), &json!(2500))
    );
    assert_eq!(h.sources(&agent, USER).await, (200, first.clone()));

    // `github` changed keeps its id and creation time; `docs` goes; `linear` is new.
    let mut changed = source("github");
    changed["url"] = json!("https://mcp.example.com/v2");
    let (status, second) = h.put(&agent, &[changed, source("linear")], USER).await;
    assert_eq!(status, 200, "{second}");
    let names: Vec<&str> = second["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["github", "linear"]);
    assert_eq!(second["sources"][0]["id"], github["id"]);
    assert_eq!(second["sources"][0]["createdAt"], github["createdAt"]);
    assert_eq!(second["sources"][0]["url"], "https://mcp.example.com/v2");
    assert_eq!(
        second["sources"][0]["allowedTools"],
        Value::Null,
        "a replacement sets every field"
    );
    assert_eq!(second["sources"][0]["approval"], "destructive");
    assert_eq!(h.sources(&agent, USER).await, (200, second));
    assert_eq!(h.put(&agent, &[], USER).await, (200, json!({"sources": []})));
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn an_auth_header_is_never_in_any_answer() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let body = json!({"sources": [
        with_header("github", json!(format!("Bearer {TOKEN}"))),
        with_header("docs", json!(format!("X-Api-Key: {TOKEN}"))),
    ]})
    .to_string();
    let (status, put) = h.put_text(&agent, body, USER).await;
    assert_eq!(status, 200, "{put}");
    let (status, got) = h.sources_text(&agent, USER).await;
    assert_eq!(status, 200, "{got}");
    let sealed: Vec<Vec<u8>> = h.stored().await.into_iter().filter_map(|s| s.3).collect();
    assert_eq!(sealed.len(), 2);
    for answer in [&put, &got] {
        assert!(!answer.contains(TOKEN), "{answer}");
        assert!(!answer.contains("Bearer") && !answer.contains("X-Api-Key"), "{answer}");
        assert!(
            !answer.contains("authHeader") && !answer.contains("auth_header"),
            "{answer}"
        );
        let shown: Value = serde_json::from_str(answer).unwrap();
        assert!(shown["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["hasAuthHeader"] == true));
        for bytes in &sealed {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!answer.contains(&hex), "{answer}");
        }
    }
    // Nor in a refusal, nor in the answers of another user.
    for (header, says) in [
        (
            format!("Bearer {TOKEN}\n"),
            "sources[0].authHeader must be printable ASCII",
        ),
        (format!("Host: {TOKEN}"), "sources[0].authHeader must not set `Host`"),
    ] {
        let body = json!({"sources": [with_header("github", json!(header))]}).to_string();
        let (status, refused) = h.put_text(&agent, body, USER).await;
        assert_eq!(status, 422, "{refused}");
        assert!(refused.contains(says), "{refused}");
        assert!(!refused.contains(TOKEN), "{refused}");
    }
    let (status, other) = h.sources_text(&agent, OTHER_USER).await;
    assert_eq!(status, 404);
    assert!(!other.contains(TOKEN));
}

#[tokio::test]
async fn an_auth_header_is_stored_sealed_for_its_agent_only() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let (status, put) = h
        .put(&agent, &[with_header("github", json!(format!("Bearer {TOKEN}")))], USER)
        .await;
    assert_eq!(status, 200, "{put}");
    let stored = h.stored().await;
    let (owner, name, _, Some(sealed)) = &stored[0] else {
        panic!("no header stored: {stored:?}");
    };
    assert_eq!((owner.to_string(), name.as_str()), (agent.clone(), "github"));
    assert!(
        !sealed.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the token in clear"
    );
    assert!(!sealed.windows(6).any(|w| w == b"Bearer"), "the scheme in clear");
    let agent_id = Uuid::parse_str(&agent).unwrap();
    assert_eq!(
        key().open(agent_id, sealed).unwrap(),
        format!("Authorization: Bearer {TOKEN}")
    );
    assert!(
        key().open(Uuid::new_v4(), sealed).is_err(),
        "another agent's row cannot use it"
    );
    let other_key = SealKey::from_hex(&"42".repeat(32)).unwrap();
    assert!(other_key.open(agent_id, sealed).is_err());
}

#[tokio::test]
async fn an_absent_auth_header_keeps_the_stored_one_and_null_removes_it() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let agent_id = Uuid::parse_str(&agent).unwrap();
    let (status, _) = h
        .put(
            &agent,
            &[
                with_header("github", json!(format!("Bearer {TOKEN}"))),
                with_header("docs", json!("X-Api-Key: docs-key")),
            ],
            USER,
        )
        .await;
    assert_eq!(status, 200);
    let before = h.stored().await;

    // Absent: kept as it was (the same sealed bytes), whatever else changes; a new name with
    // no header has none.
    let mut moved = source("github");
    moved["url"] = json!("https://mcp.example.com/moved");
    let (status, kept) = h.put(&agent, &[moved, source("docs"), source("fresh")], USER).await;
    assert_eq!(status, 200, "{kept}");
    let flags: Vec<(&str, bool)> = kept["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["hasAuthHeader"].as_bool().unwrap()))
        .collect();
    assert_eq!(flags, [("docs", true), ("fresh", false), ("github", true)]);
    let after = h.stored().await;
    assert_eq!(after[0].3, before[0].3, "docs kept its sealed header");
    assert_eq!(after[2].3, before[1].3, "github kept its sealed header");
    assert_eq!(after[2].2, "https://mcp.example.com/moved");

    // A new header replaces it; null removes it.
    let (status, replaced) = h
        .put(
            &agent,
            &[
                with_header("github", json!("Bearer rotated")),
                with_header("docs", Value::Null),
            ],
            USER,
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["sources"][0]["hasAuthHeader"], false);
    assert_eq!(replaced["sources"][1]["hasAuthHeader"], true);
    let last = h.stored().await;
    assert_eq!(last[0].3, None, "docs has no header any more");
    let github = last[1].3.as_deref().unwrap();
    assert_eq!(key().open(agent_id, github).unwrap(), "Authorization: Bearer rotated");

    // A source removed and listed again later starts without its old header.
    assert_eq!(h.put(&agent, &[], USER).await.0, 200);
    let (status, again) = h.put(&agent, &[source("github")], USER).await;
    assert_eq!(status, 200);
    assert_eq!(again["sources"][0]["hasAuthHeader"], false);
}

#[tokio::test]
async fn another_user_gets_404_for_an_agents_tool_sources_like_a_missing_one() {
    let h = api_harness().await;
    let mine = h.agent_of(USER).await;
    let (status, _) = h
        .put(&mine, &[with_header("github", json!(format!("Bearer {TOKEN}")))], USER)
        .await;
    assert_eq!(status, 200);
    let before = h.stored().await;
    let public = h.chat.agent.to_string();
    let missing = Uuid::new_v4().to_string();
    for (id, user) in [
        (mine.as_str(), OTHER_USER),
        (public.as_str(), USER),
        (missing.as_str(), USER),
        ("not-a-uuid", USER),
    ] {
        assert_eq!(h.sources(id, user).await.0, 404, "GET sources of {id} as {user}");
        assert_eq!(
            h.put(id, &[with_header("forged", json!("Bearer forged"))], user)
                .await
                .0,
            404,
            "PUT sources to {id} as {user}"
        );
        assert_eq!(h.put(id, &[], user).await.0, 404, "PUT no sources to {id} as {user}");
        // Absent: the owner's header is not the forger's to keep.
        assert_eq!(
            h.put(id, &[source("github")], user).await.0,
            404,
            "PUT a source keeping a header to {id} as {user}"
        );
    }
    assert_eq!(h.stored().await, before);
}

#[tokio::test]
async fn hostile_source_lists_are_refused_naming_the_field_and_none_answers_500() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let (status, _) = h.put(&agent, &[source("kept")], USER).await;
    assert_eq!(status, 200);
    let with = |field: &str, value: Value| {
        let mut s = source("second");
        s[field] = value;
        json!({ "sources": [source("first"), s] }).to_string()
    };
    let many: Vec<Value> = (0..17).map(|i| source(&format!("s{i}"))).collect();
    let cases = [
        ("{\"sources\": [".to_string(), 400, "the body is not complete JSON"),
        ("[]".to_string(), 422, "the body must be a JSON object"),
        ("{}".to_string(), 422, "sources is required"),
        (json!({"sources": {}}).to_string(), 422, "sources must be a sequence"),
        (
            json!({"sources": [], "tools": []}).to_string(),
            422,
            "unknown field `tools`",
        ),
        (with("secret", json!(1)), 422, "unknown field `secret`"),
        (
            with("name", json!("a__b")),
            422,
            "sources[1].name must start with a letter",
        ),
        (with("name", json!(["x"])), 422, "sources[1].name must be a string"),
        (
            json!({"sources": [source("first"), source("first")]}).to_string(),
            422,
            "sources[1].name \"first\" is given twice",
        ),
        (with("kind", json!("openapi")), 422, "sources[1].kind must be \"mcp\""),
        (with("url", json!(7)), 422, "sources[1].url must be a string"),
        (
            with("url", json!("http://mcp.example.com/x")),
            422,
            "sources[1].url is refused: the tool's url is http",
        ),
        (
            with("url", json!("https://169.254.169.254/latest")),
            422,
            "sources[1].url is refused: the tool's host is",
        ),
        (
            with("url", json!("https://me:pw@mcp.example.com/x")),
            422,
            "sources[1].url is refused: the tool's url carries credentials",
        ),
        (
            with("url", json!(format!("https://mcp.example.com/{}", "p".repeat(2100)))),
            422,
            "sources[1].url must be 1 to 2048 characters",
        ),
        (
            with("authHeader", json!({"a": 1})),
            422,
            "sources[1].authHeader must be a string",
        ),
        (
            with("authHeader", json!("Bearer x\r\nX-Evil: 1")),
            422,
            "sources[1].authHeader must be printable ASCII",
        ),
        (
            with("authHeader", json!(format!("Bearer {}", "x".repeat(4100)))),
            422,
            "sources[1].authHeader must be at most 4096 characters",
        ),
        (
            with("authHeader", json!("Bad@Name: x")),
            422,
            "sources[1].authHeader must be `Name: value`",
        ),
        (
            with("authHeader", json!("Content-Length: 0")),
            422,
            "sources[1].authHeader must not set `Content-Length`",
        ),
        (
            with("allowedTools", json!("*")),
            422,
            "sources[1].allowedTools must be a sequence",
        ),
        (
            with("allowedTools", json!(["ok", "rm -rf"])),
            422,
            "sources[1].allowedTools[1] must be 1 to 128",
        ),
        (
            with("allowedTools", json!(["a", "a"])),
            422,
            "sources[1].allowedTools must not list `a` twice",
        ),
        (
            with(
                "allowedTools",
                json!((0..257).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            422,
            "sources[1].allowedTools must list at most 256 tools",
        ),
        (
            with("approval", json!("ask")),
            422,
            "sources[1].approval must be \"never\"",
        ),
        (
            with("timeoutMs", json!(0)),
            422,
            "sources[1].timeoutMs must be a whole number from 1 to 30000",
        ),
        (
            with("timeoutMs", json!(1e300)),
            422,
            "sources[1].timeoutMs must be a whole number",
        ),
        (
            with("timeoutMs", json!(u64::MAX)),
            422,
            "sources[1].timeoutMs must be a whole number",
        ),
        (
            json!({ "sources": many }).to_string(),
            422,
            "sources must have at most 16 sources (it has 17)",
        ),
        (
            with("authHeader", json!("x".repeat(70_000))),
            413,
            "the body is larger than",
        ),
    ];
    for (body, status, says) in cases {
        let shown: String = body.chars().take(120).collect();
        let (got, answer) = h.put_text(&agent, body, USER).await;
        assert_ne!(got, 500, "{shown}: {answer}");
        assert_eq!(got, status, "{shown}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with(says), "{shown}: {message}");
    }
    let stored: Vec<String> = h.stored().await.into_iter().map(|s| s.1).collect();
    assert_eq!(stored, ["kept"], "nothing was written");
}

#[tokio::test]
async fn without_the_key_a_source_with_an_auth_header_is_a_422_and_one_without_is_saved() {
    let h = api_harness_with(&Env::default()).await;
    let agent = h.agent_of(USER).await;
    let (status, refused) = h
        .put(
            &agent,
            &[source("docs"), with_header("github", json!(format!("Bearer {TOKEN}")))],
            USER,
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "sources[1].authHeader cannot be saved: this deployment has no AGENT_MCP_ENCRYPTION_KEY to seal it with"
    );
    assert!(!refused.to_string().contains(TOKEN));
    assert!(h.stored().await.is_empty(), "nothing stored, least of all in clear");
    let (status, saved) = h
        .put(&agent, &[source("docs"), with_header("github", Value::Null)], USER)
        .await;
    assert_eq!(status, 200, "{saved}");
    assert!(h.stored().await.iter().all(|s| s.3.is_none()));
}

#[tokio::test]
async fn a_malformed_key_stops_the_function_at_init_without_showing_it() {
    let bad = "not-a-key-but-long-enough-to-be-mistaken-for-one";
    let e = ApiSettings::from_env(&Env::default().with("AGENT_MCP_ENCRYPTION_KEY", bad)).unwrap_err();
    assert!(e.to_string().contains("AGENT_MCP_ENCRYPTION_KEY"), "{e}");
    assert!(!e.to_string().contains(bad), "{e}");
}

#[tokio::test]
async fn concurrent_replacements_of_one_agents_sources_leave_one_whole_list() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let left: Vec<Value> = (0..8).map(|i| source(&format!("left{i}"))).collect();
    let right: Vec<Value> = (0..8).map(|i| source(&format!("right{i}"))).collect();
    for _ in 0..5 {
        let (a, b) = tokio::join!(h.put(&agent, &left, USER), h.put(&agent, &right, USER));
        assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
        let stored: Vec<String> = h.stored().await.into_iter().map(|s| s.1).collect();
        let all_left = stored.iter().all(|s| s.starts_with("left"));
        let all_right = stored.iter().all(|s| s.starts_with("right"));
        assert!(stored.len() == 8 && (all_left || all_right), "a mixed list: {stored:?}");
    }
}

#[tokio::test]
async fn the_sample_put_is_saved_as_it_is_and_a_read_is_one_statement() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let sample = event_file("api-agent-tool-sources-put.json")["body"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, saved) = h.put_text(&agent, sample, USER).await;
    assert_eq!(status, 200, "{saved}");
    let saved: Value = serde_json::from_str(&saved).unwrap();
    let shown: Vec<(&str, bool, &str)> = saved["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["hasAuthHeader"].as_bool().unwrap(),
                s["approval"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, [("docs", true, "never"), ("github", true, "destructive")]);
    let before = h.api.db.statements_sent();
    let (status, read) = h.sources(&agent, USER).await;
    assert_eq!((status, read), (200, saved));
    assert_eq!(h.api.db.statements_sent() - before, 1);
}

impl ApiHarness {
    async fn source_tools(&self, id: &str, name: &str, user: &str) -> (u16, Value) {
        let path = format!("/api/agents/{id}/tool-sources/{name}/tools");
        let (status, text) = self
            .send("api-agent-tool-source-tools.json", "GET", &path, None, user)
            .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_sources_tools_are_listed_from_its_server_with_what_each_call_needs() {
    use integration_tests::mcp_servers::{PyMcp, PyMcpOptions};
    let server = PyMcp::start(PyMcpOptions {
        token: Some(TOKEN.into()),
        ..PyMcpOptions::default()
    })
    .await;
    let h = api_harness_with(
        &Env::default()
            .with("AGENT_MCP_ENCRYPTION_KEY", KEY)
            .with("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
    )
    .await;
    let agent = h.agent_of(USER).await;
    let shop = json!({"name": "shop", "url": server.url, "authHeader": format!("Bearer {TOKEN}")});
    let mut strict = json!({"name": "strict", "url": server.url, "approval": "always"});
    strict["authHeader"] = shop["authHeader"].clone();
    let (status, body) = h.put(&agent, &[shop, strict], USER).await;
    assert_eq!(status, 200, "{body}");

    let (status, listed) = h.source_tools(&agent, "shop", USER).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["source"], "shop");
    assert_eq!(listed["approval"], "destructive");
    let tool = |name: &str| {
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {listed}"))
            .clone()
    };
    let lookup = tool("shop__lookup_order");
    assert_eq!(
        (&lookup["serverName"], &lookup["readOnly"], &lookup["requiresApproval"]),
        (&json!("lookup_order"), &json!(true), &json!(false))
    );
    assert_eq!(tool("shop__refund_order")["requiresApproval"], true);
    assert_eq!(tool("shop__idempotent_update")["idempotent"], true);
    assert!(!listed.to_string().contains(TOKEN), "the header is never answered");
    let (_, strict) = h.source_tools(&agent, "strict", USER).await;
    assert!(strict["tools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["requiresApproval"] == true));
    assert!(server
        .calls()
        .iter()
        .filter(|c| c.event == "rpc")
        .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))));

    assert_eq!(h.source_tools(&agent, "nope", USER).await.0, 404);
    assert_eq!(h.source_tools(&agent, "shop", OTHER_USER).await.0, 404);
}

#[tokio::test]
async fn a_source_that_cannot_be_listed_is_a_502_that_says_why() {
    use integration_tests::mcp_servers::{PyMcp, PyMcpOptions};
    let mut server = PyMcp::start(PyMcpOptions::default()).await;
    // Saved while loopback was allowed; listed by a deployment that refuses it.
    let open = api_harness_with(
        &Env::default()
            .with("AGENT_MCP_ENCRYPTION_KEY", KEY)
            .with("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
    )
    .await;
    let agent = open.agent_of(USER).await;
    let (status, body) = open
        .put(&agent, &[json!({"name": "shop", "url": server.url})], USER)
        .await;
    assert_eq!(status, 200, "{body}");
    let strict = ApiHarness {
        api: Api {
            settings: ApiSettings::from_env(&Env::default().with("AGENT_MCP_ENCRYPTION_KEY", KEY)).unwrap(),
            live: shared::live::Publisher::off(),
            db: open.chat.db.pool(&PoolOptions {
                app: "api".into(),
                ..PoolOptions::default()
            }),
            auth: Authenticator::new(AuthConfig::new(&open.chat.auth.url(), Some(SECRET.into()))).unwrap(),
            metrics: quiet_metrics("api"),
        },
        chat: open.chat,
    };
    let (status, refused) = strict.source_tools(&agent, "shop", USER).await;
    assert_eq!(status, 502, "{refused}");
    assert_eq!(refused["error"]["code"], "upstream_failed", "{refused}");
    assert!(refused.to_string().contains("loopback"), "{refused}");
    let open = ApiHarness {
        api: Api {
            settings: ApiSettings::from_env(
                &Env::default()
                    .with("AGENT_MCP_ENCRYPTION_KEY", KEY)
                    .with("AGENT_TOOL_ALLOW_LOOPBACK", "true"),
            )
            .unwrap(),
            ..strict.api
        },
        chat: strict.chat,
    };
    server.stop();
    let (status, down) = open.source_tools(&agent, "shop", USER).await;
    assert_eq!(status, 502, "{down}");
    assert!(down.to_string().contains("could not be listed"), "{down}");
}
