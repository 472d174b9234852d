//! An owner's agents and their tools through the `api` function: `POST /api/agents`,
//! `PATCH /api/agents/{id}`, `GET` and `PUT /api/agents/{id}/tools`. Requests are built from the
//! sample events in `events/`.

use std::time::Duration;

use api::{Api, Settings as ApiSettings};
use integration_tests::harness::{harness, json_of, quiet_metrics, Harness, OTHER_USER, SECRET, USER};
use integration_tests::models::ChatModel;
use serde_json::{json, Value};
use shared::auth::{AuthConfig, Authenticator};
use uuid::Uuid;

use crate::helpers::PoolOptions;

struct ApiHarness {
    chat: Harness,
    api: Api,
}

/// A database with the public agent `helper` (the operator's), the Supabase Auth stand-in, and
/// the API function on it under `settings`.
async fn api_harness_with(settings: ApiSettings) -> ApiHarness {
    let chat = harness(ChatModel::new(Duration::ZERO)).await;
    let api = Api {
        live: shared::live::Publisher::off(),
        db: chat.db.pool(&PoolOptions {
            app: "api".into(),
            ..PoolOptions::default()
        }),
        auth: Authenticator::new(AuthConfig::new(&chat.auth.url(), Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        settings,
        metrics: quiet_metrics("api"),
    };
    ApiHarness { chat, api }
}

async fn api_harness() -> ApiHarness {
    api_harness_with(ApiSettings::default()).await
}

fn event_file(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

impl ApiHarness {
    /// `method path` as `user` from `events/<event>`, with `body` (raw) when given.
    async fn send(&self, event: &str, method: &str, path: &str, body: Option<String>, user: &str) -> (u16, Value) {
        let mut event = event_file(event);
        event["rawPath"] = path.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["http"]["method"] = method.into();
        let headers = event["headers"].as_object_mut().unwrap();
        headers.remove("idempotency-key");
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
        (response.status().as_u16(), json_of(&response))
    }

    async fn create(&self, body: &Value, user: &str) -> (u16, Value) {
        self.send(
            "api-agents-create.json",
            "POST",
            "/api/agents",
            Some(body.to_string()),
            user,
        )
        .await
    }

    async fn patch(&self, id: &str, body: &Value, user: &str) -> (u16, Value) {
        let path = format!("/api/agents/{id}");
        self.send("api-agents-create.json", "PATCH", &path, Some(body.to_string()), user)
            .await
    }

    async fn tools(&self, id: &str, user: &str) -> (u16, Value) {
        let path = format!("/api/agents/{id}/tools");
        self.send("api-agents.json", "GET", &path, None, user).await
    }

    async fn put_raw(&self, id: &str, body: String, user: &str) -> (u16, Value) {
        let path = format!("/api/agents/{id}/tools");
        self.send("api-agent-tools-put.json", "PUT", &path, Some(body), user)
            .await
    }

    async fn put(&self, id: &str, tools: &[Value], user: &str) -> (u16, Value) {
        self.put_raw(id, json!({ "tools": tools }).to_string(), user).await
    }

    /// An agent of `user`'s, made through the API: its id.
    async fn agent_of(&self, user: &str) -> String {
        let (status, agent) = self.create(&json!({"name": "mine"}), user).await;
        assert_eq!(status, 201, "{agent}");
        agent["id"].as_str().unwrap().to_string()
    }

    /// The tool rows of the database, as `name url` by name.
    async fn stored_tools(&self) -> Vec<String> {
        let sql = self.chat.db.direct().await;
        sql.query("SELECT name || ' ' || url FROM agent_tools ORDER BY name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

fn tool(name: &str) -> Value {
    json!({
        "name": name,
        "description": format!("the {name} tool"),
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        "url": format!("https://tools.example.com/{name}"),
    })
}

fn ids_by_name(set: &Value) -> Vec<(String, String, String)> {
    set["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["id"].as_str().unwrap().to_string(),
                t["createdAt"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_owner_creates_a_private_agent_sees_its_instructions_and_nobody_else_sees_it() {
    let h = api_harness().await;
    let body = json!({"name": " Support triage ", "description": "Sorts tickets", "instructions": "Be brief.",
                      "model": "gpt-4o-mini", "dailyTokenBudget": 200000});
    let (status, agent) = h.create(&body, USER).await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["name"], "Support triage");
    assert_eq!(agent["description"], "Sorts tickets");
    assert_eq!(agent["instructions"], "Be brief.");
    assert_eq!(agent["model"], "gpt-4o-mini");
    assert_eq!(agent["visibility"], "private");
    assert_eq!(agent["dailyTokenBudget"], 200000);
    assert!(
        agent["createdAt"].is_string() && agent["updatedAt"].is_string(),
        "{agent}"
    );
    let id = agent["id"].as_str().unwrap();
    let owner: String = h
        .chat
        .db
        .direct()
        .await
        .query_one("SELECT owner_id::text FROM agents WHERE id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, USER);
    let h = &h;
    let listed = |user: &'static str| async move {
        let (status, list) = h.send("api-agents.json", "GET", "/api/agents", None, user).await;
        assert_eq!(status, 200, "{list}");
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        listed(USER).await,
        ["helper".to_string(), "Support triage".into()].into()
    );
    assert_eq!(listed(OTHER_USER).await, ["helper".to_string()].into());
}

#[tokio::test]
async fn creating_an_agent_refuses_a_visibility_wrong_types_bad_json_and_oversized_bodies() {
    let h = api_harness().await;
    let cases = [
        (
            json!({"name": "x", "visibility": "public"}).to_string(),
            422,
            "unknown field `visibility`",
        ),
        (json!({"name": 5}).to_string(), 422, "name must be a string"),
        (
            json!({"name": "x", "dailyTokenBudget": -5}).to_string(),
            422,
            "dailyTokenBudget must be a whole number",
        ),
        (
            json!({"name": "x", "instructions": "i".repeat(20_001)}).to_string(),
            422,
            "instructions must be at most",
        ),
        ("{\"name\": ".to_string(), 400, "the body is not complete JSON"),
        (
            json!({"name": "x".repeat(70_000)}).to_string(),
            413,
            "the body is larger than",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = h
            .send("api-agents-create.json", "POST", "/api/agents", Some(body), USER)
            .await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap_or("").starts_with(says),
            "{answer}"
        );
    }
    let stored: i64 = h
        .chat
        .db
        .direct()
        .await
        .query_one("SELECT count(*) FROM agents WHERE owner_id IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn an_owner_may_have_at_most_a_hundred_agents() {
    let h = api_harness().await;
    h.chat
        .db
        .direct()
        .await
        .execute(
            "INSERT INTO agents (name, owner_id, visibility) SELECT 'a' || i, $1::text::uuid, 'private' FROM generate_series(1, 99) i",
            &[&USER],
        )
        .await
        .unwrap();
    let (status, _) = h.create(&json!({"name": "the hundredth"}), USER).await;
    assert_eq!(status, 201);
    let (status, refused) = h.create(&json!({"name": "one too many"}), USER).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("100 agents"),
        "{refused}"
    );
    // Another owner is not counted against.
    assert_eq!(h.create(&json!({"name": "theirs"}), OTHER_USER).await.0, 201);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields_clears_nullable_ones_and_bumps_updated_at() {
    let h = api_harness().await;
    let (_, created) = h
        .create(
            &json!({"name": "first", "description": "d", "instructions": "i", "model": "m", "dailyTokenBudget": 10}),
            USER,
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, patched) = h
        .patch(
            id,
            &json!({"instructions": "new", "model": null, "dailyTokenBudget": null}),
            USER,
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "first");
    assert_eq!(patched["description"], "d");
    assert_eq!(patched["instructions"], "new");
    assert_eq!(patched["model"], Value::Null);
    assert_eq!(patched["dailyTokenBudget"], Value::Null);
    assert_eq!(patched["createdAt"], created["createdAt"]);
    assert!(
        patched["updatedAt"].as_str().unwrap() > created["updatedAt"].as_str().unwrap(),
        "{created} then {patched}"
    );
    let (_, again) = h
        .patch(id, &json!({"name": "renamed", "description": null}), USER)
        .await;
    assert_eq!(
        (again["name"].as_str(), again["description"].as_str()),
        (Some("renamed"), Some(""))
    );
    assert_eq!(again["instructions"], "new");
    for (body, says) in [
        (json!({}), "the body changes nothing"),
        (json!({"name": null}), "name cannot be cleared"),
        (json!({"visibility": "public"}), "unknown field `visibility`"),
        (
            json!({"dailyTokenBudget": 1.5}),
            "dailyTokenBudget must be a whole number",
        ),
    ] {
        let (status, refused) = h.patch(id, &body, USER).await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert!(
            refused["error"]["message"].as_str().unwrap().starts_with(says),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn another_user_gets_404_for_an_agents_tools_and_for_editing_it_like_a_missing_one() {
    let h = api_harness().await;
    let mine = h.agent_of(USER).await;
    let (status, _) = h.put(&mine, &[tool("lookup")], USER).await;
    assert_eq!(status, 200);
    let public = h.chat.agent.to_string();
    let missing = Uuid::new_v4().to_string();
    for (id, user) in [
        (mine.as_str(), OTHER_USER),
        (public.as_str(), USER),
        (missing.as_str(), USER),
        ("not-a-uuid", USER),
    ] {
        assert_eq!(h.tools(id, user).await.0, 404, "GET tools of {id} as {user}");
        assert_eq!(
            h.put(id, &[tool("forged")], user).await.0,
            404,
            "PUT tools of {id} as {user}"
        );
        assert_eq!(h.put(id, &[], user).await.0, 404, "PUT no tools to {id} as {user}");
        assert_eq!(
            h.patch(id, &json!({"instructions": "pwned"}), user).await.0,
            404,
            "PATCH {id} as {user}"
        );
    }
    assert_eq!(h.stored_tools().await, ["lookup https://tools.example.com/lookup"]);
    let untouched: i64 = h
        .chat
        .db
        .direct()
        .await
        .query_one("SELECT count(*) FROM agents WHERE instructions = 'pwned'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched, 0);
}

#[tokio::test]
async fn put_tools_replaces_the_set_and_keeps_ids_of_unchanged_names() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let (status, empty) = h.tools(&agent, USER).await;
    assert_eq!((status, empty), (200, json!({"tools": []})));
    let (status, first) = h.put(&agent, &[tool("zeta"), tool("alpha")], USER).await;
    assert_eq!(status, 200, "{first}");
    let first_ids = ids_by_name(&first);
    assert_eq!(
        first_ids.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["alpha", "zeta"]
    );
    assert_eq!(first["tools"][0]["timeoutMs"], 10000);
    assert_eq!(first["tools"][0]["requiresApproval"], false);
    assert_eq!(first["tools"][0]["parameters"]["required"], json!(["id"]));
    let mut changed = tool("zeta");
    changed["description"] = json!("changed");
    changed["timeoutMs"] = json!(2500);
    changed["requiresApproval"] = json!(true);
    let (status, second) = h.put(&agent, &[changed, tool("beta")], USER).await;
    assert_eq!(status, 200, "{second}");
    let second_ids = ids_by_name(&second);
    assert_eq!(
        second_ids.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["beta", "zeta"]
    );
    // `zeta` kept its id and creation time, with its new fields; `alpha` is gone; `beta` is new.
    assert_eq!(second_ids[1], first_ids[1]);
    assert_eq!(second["tools"][1]["description"], "changed");
    assert_eq!(second["tools"][1]["timeoutMs"], 2500);
    assert_eq!(second["tools"][1]["requiresApproval"], true);
    assert!(first_ids.iter().all(|t| t.1 != second_ids[0].1));
    let (status, read) = h.tools(&agent, USER).await;
    assert_eq!((status, &read), (200, &second));
    let (status, cleared) = h.put(&agent, &[], USER).await;
    assert_eq!((status, cleared), (200, json!({"tools": []})));
    assert!(h.stored_tools().await.is_empty());
}

#[tokio::test]
async fn hostile_tool_sets_are_refused_naming_the_field_and_none_answers_500() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let (status, _) = h.put(&agent, &[tool("kept")], USER).await;
    assert_eq!(status, 200);
    let with = |field: &str, value: Value| {
        let mut t = tool("second");
        t[field] = value;
        json!({ "tools": [tool("first"), t] }).to_string()
    };
    let many: Vec<Value> = (0..65).map(|i| tool(&format!("t{i}"))).collect();
    let cases = [
        ("{\"tools\": [".to_string(), 400, "the body is not complete JSON"),
        ("[]".to_string(), 422, "the body must be a JSON object"),
        (
            json!({"tools": [], "agentId": "x"}).to_string(),
            422,
            "unknown field `agentId`",
        ),
        (json!({"tools": {}}).to_string(), 422, "tools must be a sequence"),
        (
            with("timeoutMs", json!("10")),
            422,
            "tools[1].timeoutMs must be a number",
        ),
        (
            with("timeoutMs", json!(30_001)),
            422,
            "tools[1].timeoutMs must be a whole number from 1 to 30000",
        ),
        (
            with("requiresApproval", json!(1)),
            422,
            "tools[1].requiresApproval must be true or false",
        ),
        (
            with("parameters", json!({"type": "string"})),
            422,
            "tools[1].parameters must be an object schema",
        ),
        (
            with("parameters", json!("{}")),
            422,
            "tools[1].parameters must be a JSON Schema object",
        ),
        (
            with(
                "parameters",
                json!({"type": "object", "properties": {}, "required": ["x"]}),
            ),
            422,
            "tools[1].parameters must only require its own properties",
        ),
        (
            with("name", json!("get weather")),
            422,
            "tools[1].name must start with a letter",
        ),
        (
            with("name", json!("mcp__search")),
            422,
            "tools[1].name must not contain `__`",
        ),
        (
            with("name", json!("first")),
            422,
            "tools[1].name \"first\" is given twice",
        ),
        (
            with("description", json!(null)),
            422,
            "tools[1].description is required",
        ),
        (
            with("url", json!("ftp://tools.example.com/x")),
            422,
            "tools[1].url is refused",
        ),
        (
            with("url", json!("https://me:secret@tools.example.com/x")),
            422,
            "tools[1].url is refused: the tool's url carries credentials",
        ),
        (
            with("url", json!("http://tools.example.com/x")),
            422,
            "tools[1].url is refused: the tool's url is http",
        ),
        (
            with("url", json!("http://127.0.0.1:9/x")),
            422,
            "tools[1].url is refused: the tool's url is http",
        ),
        (
            with("url", json!("https://169.254.169.254/latest")),
            422,
            "tools[1].url is refused: the tool's host is",
        ),
        (
            json!({ "tools": many }).to_string(),
            422,
            "tools must have at most 64 tools (it has 65)",
        ),
        (
            with("description", json!("d".repeat(70_000))),
            413,
            "the body is larger than",
        ),
    ];
    for (body, status, says) in cases {
        let shown: String = body.chars().take(120).collect();
        let (got, answer) = h.put_raw(&agent, body, USER).await;
        assert_ne!(got, 500, "{shown}: {answer}");
        assert_eq!(got, status, "{shown}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with(says), "{shown}: {message}");
    }
    assert_eq!(h.stored_tools().await, ["kept https://tools.example.com/kept"]);
}

#[tokio::test]
async fn http_tool_urls_are_saved_only_to_loopback_and_only_when_the_setting_allows_it() {
    let mut settings = ApiSettings::default();
    settings.tool_policy.allow_loopback = true;
    let h = api_harness_with(settings).await;
    let agent = h.agent_of(USER).await;
    let mut local = tool("local");
    local["url"] = json!("http://127.0.0.1:8080/tool");
    let (status, saved) = h.put(&agent, &[local.clone()], USER).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["tools"][0]["url"], "http://127.0.0.1:8080/tool");
    let mut remote = tool("remote");
    remote["url"] = json!("http://tools.example.com/tool");
    let (status, refused) = h.put(&agent, &[local.clone(), remote], USER).await;
    assert_eq!(status, 422, "{refused}");

    let closed = api_harness().await;
    let agent = closed.agent_of(USER).await;
    let (status, refused) = closed.put(&agent, &[local], USER).await;
    assert_eq!(status, 422, "{refused}");
    assert!(closed.stored_tools().await.is_empty());
}

#[tokio::test]
async fn concurrent_replacements_of_one_agents_tools_leave_one_whole_set() {
    let h = api_harness().await;
    let agent = h.agent_of(USER).await;
    let left: Vec<Value> = (0..20).map(|i| tool(&format!("left{i:02}"))).collect();
    let right: Vec<Value> = (0..20).map(|i| tool(&format!("right{i:02}"))).collect();
    for _ in 0..5 {
        let (a, b) = tokio::join!(h.put(&agent, &left, USER), h.put(&agent, &right, USER));
        assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
        let stored = h.stored_tools().await;
        let all_left = stored.iter().all(|t| t.starts_with("left"));
        let all_right = stored.iter().all(|t| t.starts_with("right"));
        assert!(stored.len() == 20 && (all_left || all_right), "a mixed set: {stored:?}");
    }
}
