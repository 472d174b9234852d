//! Secrets read at run time from AWS Secrets Manager, through the AWS Parameters and Secrets
//! Lambda Extension (the layer AWS recommends: cached, no SDK in the function). For each secret
//! setting (`DATABASE_URL`, `HEALTH_API_KEY`, `SUPABASE_JWT_SECRET`, `OPENAI_API_KEY`,
//! `AGENT_TOOL_SIGNING_SECRET`, `AGENT_MCP_ENCRYPTION_KEY`), a `<NAME>_SECRET_ARN`
//! names the secret; at init its value replaces the setting in the environment snapshot, so the
//! plaintext never sits in the function's configuration. Without an ARN, the plain environment
//! variable is used (local development).
//!
//! The extension answers `GET localhost:$PARAMETERS_SECRETS_EXTENSION_HTTP_PORT/secretsmanager/get?secretId=…`
//! (header `X-Aws-Parameters-Secrets-Token: $AWS_SESSION_TOKEN`) with `GetSecretValue`'s JSON.
//! A `SecretString` that is a JSON object holding the setting's name as a key gives that field;
//! any other `SecretString` is the value itself.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

pub const DATABASE_URL_SECRET_ARN: Setting = Setting::text(
    "DATABASE_URL_SECRET_ARN",
    None,
    "Secrets Manager secret holding `DATABASE_URL`, read at init (and again when the database rejects the password)",
);
pub const HEALTH_API_KEY_SECRET_ARN: Setting = Setting::text(
    "HEALTH_API_KEY_SECRET_ARN",
    None,
    "secret holding `HEALTH_API_KEY`, read at init",
);
pub const SUPABASE_JWT_SECRET_ARN: Setting = Setting::text(
    "SUPABASE_JWT_SECRET_ARN",
    None,
    "secret holding `SUPABASE_JWT_SECRET`, read at init",
);
pub const OPENAI_API_KEY_SECRET_ARN: Setting = Setting::text(
    "OPENAI_API_KEY_SECRET_ARN",
    None,
    "secret holding `OPENAI_API_KEY`, read at init",
);
pub const AGENT_TOOL_SIGNING_SECRET_SECRET_ARN: Setting = Setting::text(
    "AGENT_TOOL_SIGNING_SECRET_SECRET_ARN",
    None,
    "secret holding `AGENT_TOOL_SIGNING_SECRET`, read at init",
);
pub const AGENT_MCP_ENCRYPTION_KEY_SECRET_ARN: Setting = Setting::text(
    "AGENT_MCP_ENCRYPTION_KEY_SECRET_ARN",
    None,
    "secret holding `AGENT_MCP_ENCRYPTION_KEY`, read at init",
);
pub const PARAMETERS_SECRETS_EXTENSION_HTTP_PORT: Setting = Setting::number(
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    1,
    65_535,
    2773,
    Unit::Plain,
    "the secrets extension's port on localhost",
);
pub const AWS_SESSION_TOKEN: Setting = Setting::secret(
    "AWS_SESSION_TOKEN",
    "set by Lambda; the secrets extension requires it as `X-Aws-Parameters-Secrets-Token`",
);

pub const SETTINGS: &[&Setting] = &[
    &DATABASE_URL_SECRET_ARN,
    &HEALTH_API_KEY_SECRET_ARN,
    &SUPABASE_JWT_SECRET_ARN,
    &OPENAI_API_KEY_SECRET_ARN,
    &AGENT_TOOL_SIGNING_SECRET_SECRET_ARN,
    &AGENT_MCP_ENCRYPTION_KEY_SECRET_ARN,
    &PARAMETERS_SECRETS_EXTENSION_HTTP_PORT,
    &AWS_SESSION_TOKEN,
];

/// Each secret setting and the setting naming its secret.
const SECRET_SETTINGS: [(&str, &Setting); 6] = [
    ("DATABASE_URL", &DATABASE_URL_SECRET_ARN),
    ("HEALTH_API_KEY", &HEALTH_API_KEY_SECRET_ARN),
    ("SUPABASE_JWT_SECRET", &SUPABASE_JWT_SECRET_ARN),
    ("OPENAI_API_KEY", &OPENAI_API_KEY_SECRET_ARN),
    ("AGENT_TOOL_SIGNING_SECRET", &AGENT_TOOL_SIGNING_SECRET_SECRET_ARN),
    ("AGENT_MCP_ENCRYPTION_KEY", &AGENT_MCP_ENCRYPTION_KEY_SECRET_ARN),
];

const FETCH_BOUND: Duration = Duration::from_secs(3);
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The secrets extension on localhost.
#[derive(Debug, Clone)]
pub struct SecretStore {
    port: u16,
    token: Option<String>,
}

impl SecretStore {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: u16::try_from(env.number(&PARAMETERS_SECRETS_EXTENSION_HTTP_PORT)?).unwrap_or(2773),
            token: env.text(&AWS_SESSION_TOKEN),
        })
    }

    /// The value of secret `arn` for setting `name` (`None`: a JSON secret without that key).
    /// Errors name the setting, never the value.
    pub async fn fetch(&self, name: &str, arn: &str) -> Result<Option<String>, ConfigError> {
        let arn_setting = format!("{name}_SECRET_ARN");
        let fail = |reason: String| invalid(arn_setting.clone(), reason);
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("secretId", arn)
            .finish();
        let uri = format!("http://127.0.0.1:{}/secretsmanager/get?{query}", self.port);
        let mut request = hyper::Request::get(uri);
        if let Some(token) = &self.token {
            request = request.header("X-Aws-Parameters-Secrets-Token", token);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(format!("bad request: {e}")))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let call = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| fail(format!("the secrets extension is unreachable ({e})")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_SECRET_BYTES)
                .collect()
                .await
                .map_err(|_| fail("the secrets extension's answer is too large or broken".into()))?
                .to_bytes();
            if !status.is_success() {
                return Err(fail(format!("the secrets extension answered HTTP {}", status.as_u16())));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(FETCH_BOUND, call)
            .await
            .map_err(|_| fail(format!("no answer from the secrets extension within {FETCH_BOUND:?}")))??;
        secret_value(name, &body).map_err(|reason| fail(reason.into()))
    }
}

/// The setting's value from a `GetSecretValue` answer.
fn secret_value(name: &str, body: &[u8]) -> Result<Option<String>, &'static str> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| "the secrets extension's answer is not JSON")?;
    let text = answer
        .get("SecretString")
        .and_then(Value::as_str)
        .ok_or("the secret has no SecretString")?;
    Ok(match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map.get(name).and_then(Value::as_str).map(str::to_string),
        _ => Some(text.to_string()),
    })
}

/// The environment with every secret whose ARN is set read from the store.
pub async fn resolve(env: Env) -> Result<Env, ConfigError> {
    let mut env = env;
    let store = SecretStore::from_env(&env)?;
    for (name, arn) in SECRET_SETTINGS {
        if let Some(arn) = env.text(arn) {
            if let Some(value) = store.fetch(name, &arn).await? {
                tracing::info!(setting = name, "read from Secrets Manager");
                env = env.with(name, &value);
            } else {
                tracing::info!(setting = name, "not in its secret; left unset");
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_its_string_or_the_named_field_of_a_json_object() {
        let plain = br#"{"Name":"db","SecretString":"postgres://u:p@h/db"}"#;
        assert_eq!(
            secret_value("DATABASE_URL", plain),
            Ok(Some("postgres://u:p@h/db".to_string()))
        );
        let json = br#"{"SecretString":"{\"DATABASE_URL\":\"postgres://x\",\"other\":\"y\"}"}"#;
        assert_eq!(secret_value("DATABASE_URL", json), Ok(Some("postgres://x".to_string())));
        assert_eq!(secret_value("HEALTH_API_KEY", json), Ok(None));
        assert!(secret_value("DATABASE_URL", br#"{"SecretBinary":"AAAA"}"#).is_err());
        assert!(secret_value("DATABASE_URL", b"not json").is_err());
    }
}
