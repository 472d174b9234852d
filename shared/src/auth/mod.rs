//! Supabase access tokens, verified in the function.
//!
//! Both kinds Supabase issues: the legacy shared secret (HS256, `SUPABASE_JWT_SECRET`) and the
//! asymmetric signing keys (ES256/RS256) published at
//! `$SUPABASE_URL/auth/v1/.well-known/jwks.json`, cached per instance for a short TTL and fetched
//! again when a token names an unknown `kid` (at most every 30 s).
//! Algorithms are pinned to those three; `exp`, `sub` (a uuid), `aud = authenticated` and
//! `iss = $SUPABASE_URL/auth/v1` are required; the anon and service-role keys (role other than
//! `authenticated`) are refused. When the deployment puts an API Gateway JWT authorizer in front
//! (`AUTH_TRUST_API_GATEWAY=true`), the claims it verified are accepted instead.

mod jwks;
mod request;
mod settings;
mod verify;

use uuid::Uuid;

pub use self::request::authenticate_request;
pub use self::settings::{
    AuthConfig, AUTH_ALLOW_ANONYMOUS, AUTH_JWKS_MAX_STALE_SECS, AUTH_JWKS_TTL_SECS, AUTH_TOKEN_HEADER,
    AUTH_TRUST_API_GATEWAY, SETTINGS, SUPABASE_JWT_SECRET, SUPABASE_URL,
};
pub use self::verify::Authenticator;

/// Why a request is not authenticated. Every variant is a 401; the message says what is wrong
/// with the credential, never what the server expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token is not a signed-in user's")]
    NotAUser,
    #[error("anonymous sign-ins are not accepted; sign in with an account")]
    Anonymous,
    /// The project's signing keys cannot be fetched: an outage, not a bad token (503).
    #[error("signing keys unavailable")]
    KeysUnavailable { retry_after_secs: u64 },
}

/// The signed-in user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
}
