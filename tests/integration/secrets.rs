//! Secrets at run time: the real function binary reads `DATABASE_URL` and `HEALTH_API_KEY` from
//! Secrets Manager at init through the Parameters and Secrets extension's local endpoint, and
//! reads the database secret again when the database rejects a rotated password. Secrets
//! Manager itself is moto in server mode (the real AWS JSON wire protocol); the extension is a
//! stand-in that forwards to it, as the real extension forwards to AWS.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use integration_tests::fakes::{secrets_extension, Moto};
use serde_json::{json, Value};

use crate::helpers::{deadline_in, eventually, function_binary, InvokeResult, RuntimeApi, TestDb};

/// The instance's session token, which the extension asks for.
const TOKEN: &str = "session-token-of-the-instance";

fn event(path: &str, key: Option<&str>) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("../../events/health.json")).unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    if let Some(k) = key {
        event["headers"]["x-api-key"] = k.into();
    }
    event
}

async fn status_of(runtime: &RuntimeApi, event: &Value) -> u64 {
    match runtime.invoke(event, deadline_in(Duration::from_secs(30))).await {
        InvokeResult::Response(v) => v["statusCode"].as_u64().unwrap_or(0),
        InvokeResult::Error(e) => panic!("the function failed: {e}"),
    }
}

/// The health binary, configured only with secret ARNs.
fn health_with_secrets(runtime: &RuntimeApi, arn: &str, extension_port: u16) -> tokio::process::Child {
    tokio::process::Command::new(function_binary("health"))
        .envs(runtime.function_env("health"))
        .env_remove("DATABASE_URL")
        .env_remove("HEALTH_API_KEY")
        .env("DATABASE_URL_SECRET_ARN", arn)
        .env("HEALTH_API_KEY_SECRET_ARN", arn)
        .env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", extension_port.to_string())
        .env("AWS_SESSION_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the health binary")
}

#[tokio::test]
async fn the_functions_read_their_secrets_from_secrets_manager_at_init() {
    let db = TestDb::new().await;
    let moto = Moto::start().await;
    let created = moto
        .call(
            "CreateSecret",
            &json!({
                "Name": "agent-backend/test",
                "SecretString": json!({"DATABASE_URL": db.pooled_url, "HEALTH_API_KEY": "key-from-secrets-manager"}).to_string(),
            }),
        )
        .await;
    let arn = created["ARN"].as_str().expect("an ARN").to_string();
    let (port, fetches) = secrets_extension(&moto, TOKEN).await;
    let runtime = RuntimeApi::start().await;
    let _function = health_with_secrets(&runtime, &arn, port);

    assert_eq!(status_of(&runtime, &event("/api/health", None)).await, 200);
    assert_eq!(
        status_of(
            &runtime,
            &event("/api/health/connections", Some("key-from-secrets-manager"))
        )
        .await,
        200,
        "the API key came from the secret"
    );
    assert_eq!(
        status_of(&runtime, &event("/api/health/connections", Some("wrong"))).await,
        403
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one fetch per secret setting, at init"
    );
}

#[tokio::test]
async fn a_rotated_database_password_is_read_again_from_the_secret() {
    let db = TestDb::new().await;
    let admin = db.direct().await;
    let role = format!("rot_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'first-password'"))
        .await
        .unwrap();
    let url_with = |password: &str| {
        let mut u = url::Url::parse(&db.direct_url).unwrap();
        u.set_username(&role).unwrap();
        u.set_password(Some(password)).unwrap();
        u.to_string()
    };
    let moto = Moto::start().await;
    let created = moto
        .call(
            "CreateSecret",
            &json!({"Name": "agent-backend/rotating", "SecretString": json!({"DATABASE_URL": url_with("first-password")}).to_string()}),
        )
        .await;
    let arn = created["ARN"].as_str().expect("an ARN").to_string();
    let (port, fetches) = secrets_extension(&moto, TOKEN).await;
    let runtime = RuntimeApi::start().await;
    let function = health_with_secrets(&runtime, &arn, port);
    assert_eq!(status_of(&runtime, &event("/api/health", None)).await, 200);
    let at_init = fetches.load(Ordering::SeqCst);

    // Rotation: new password on the role and in the secret; the instance's session ends.
    admin
        .batch_execute(&format!("ALTER ROLE {role} PASSWORD 'second-password'"))
        .await
        .unwrap();
    moto.call(
        "PutSecretValue",
        &json!({"SecretId": arn, "SecretString": json!({"DATABASE_URL": url_with("second-password")}).to_string()}),
    )
    .await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();

    let recovered = eventually(Duration::from_secs(20), || async {
        status_of(&runtime, &event("/api/health", None)).await == 200 && fetches.load(Ordering::SeqCst) > at_init
    })
    .await;
    assert!(recovered, "the instance reconnected with the rotated password");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        at_init + 1,
        "the secret was read once more"
    );

    drop(function);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();
    let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await;
}

#[tokio::test]
async fn the_model_key_and_the_token_secret_come_from_their_own_secrets() {
    let db = TestDb::new().await;
    db.direct()
        .await
        .batch_execute(
            "INSERT INTO agents (id, name, visibility) VALUES ('00000000-0000-4000-8000-000000000001', 'a', 'public')",
        )
        .await
        .unwrap();
    let moto = Moto::start().await;
    let secret = |name: &'static str, value: &str| {
        let body = json!({"Name": format!("agent-backend/{name}"), "SecretString": value});
        let moto = &moto;
        async move {
            moto.call("CreateSecret", &body).await["ARN"]
                .as_str()
                .expect("an ARN")
                .to_string()
        }
    };
    let (jwt, key) = ("jwt-secret-from-secrets-manager-32-chars", "sk-from-secrets-manager");
    let jwt_arn = secret("jwt", jwt).await;
    let key_arn = secret("openai", &json!({"OPENAI_API_KEY": key}).to_string()).await;
    let (port, fetches) = secrets_extension(&moto, TOKEN).await;
    let openai = integration_tests::fakes::FakeServer::openai().await;
    let runtime = RuntimeApi::start().await;
    let supabase = "https://secrets.supabase.co";
    let _chat = tokio::process::Command::new(function_binary("chat"))
        .envs(runtime.function_env("chat"))
        .env("DATABASE_URL", &db.pooled_url)
        .env("SUPABASE_URL", supabase)
        .env_remove("SUPABASE_JWT_SECRET")
        .env_remove("OPENAI_API_KEY")
        .env("SUPABASE_JWT_SECRET_ARN", &jwt_arn)
        .env("OPENAI_API_KEY_SECRET_ARN", &key_arn)
        .env("MODEL_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.url()))
        .env("OPENAI_MODEL", "gpt-test")
        .env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.to_string())
        .env("AWS_SESSION_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the chat binary");
    let token = integration_tests::fakes::hs256(
        jwt,
        &integration_tests::fakes::claims(&format!("{supabase}/auth/v1"), "11111111-1111-4111-8111-111111111111"),
    );
    let status = status_of(&runtime, &integration_tests::fakes::chat_event(&token)).await;
    assert_eq!(
        status, 200,
        "the token verified with the secret's key and the model answered"
    );
    let seen = openai.seen.lock().unwrap().clone();
    let authorization = seen
        .iter()
        .flat_map(|s| s.headers.iter())
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(authorization.as_deref(), Some("Bearer sk-from-secrets-manager"));
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "one fetch per secret, at init");
}
