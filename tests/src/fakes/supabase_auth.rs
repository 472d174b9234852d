//! Supabase Auth: its JWKS endpoint ([`FakeServer::supabase_auth`], serving the public keys of
//! `tests/fixtures/`), and access tokens as a Supabase project issues them (legacy HS256 secret,
//! ES256 and RS256 signing keys), or as an attacker forges them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{FakeServer, Mode};

impl FakeServer {
    /// Supabase Auth: `GET /auth/v1/.well-known/jwks.json` serves `tests/fixtures/jwks.json`
    /// (`Mode::HttpError`: an outage, 503).
    pub async fn supabase_auth() -> FakeServer {
        Self::start(|mode, path, _| {
            if mode == Mode::HttpError {
                return (503, vec![], "upstream unavailable".into(), Duration::ZERO);
            }
            if path == "/auth/v1/.well-known/jwks.json" {
                (
                    200,
                    vec![],
                    include_str!("../../fixtures/jwks.json").to_string(),
                    Duration::ZERO,
                )
            } else {
                (404, vec![], "{}".into(), Duration::ZERO)
            }
        })
        .await
    }
}

/// Claims of a Supabase access token of `sub`, valid for an hour.
pub fn claims(issuer: &str, sub: &str) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    json!({
        "iss": issuer, "sub": sub, "aud": "authenticated", "role": "authenticated",
        "exp": now + 3600, "iat": now, "email": "user@example.com", "session_id": "s"
    })
}

/// A token signed with the project's legacy JWT secret.
pub fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token signed with the fixtures' EC key, under `kid`.
pub fn es256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ec_pem(include_bytes!("../../fixtures/ec-private.pem")).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token signed with the fixtures' RSA key, under `kid`.
pub fn rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/rsa-private.pem")).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// An unsigned token (`alg: none`), as an attacker would send it.
pub fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        e.encode(claims.to_string())
    )
}

/// `events/chat.json` with a real bearer token in place of its placeholder.
pub fn chat_event(token: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("../../../events/chat.json")).expect("events/chat.json");
    event["headers"]["authorization"] = format!("Bearer {token}").into();
    event
}
