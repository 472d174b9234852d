//! Token verification: the [`Authenticator`] (pinned algorithms; `exp`, `sub`, `aud`, `iss`
//! required) and the rule that makes claims a signed-in [`User`].

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::jwks::KeyCache;
use super::{AuthConfig, AuthError, User};

const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::ES256, Algorithm::RS256];

/// Verifies tokens; holds the instance's JWKS cache.
/// Cheap to clone: clones share one key cache and one HTTP client.
#[derive(Clone)]
pub struct Authenticator {
    pub(super) config: AuthConfig,
    pub(super) http: reqwest::Client,
    pub(super) cache: std::sync::Arc<Mutex<KeyCache>>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Seconds since the epoch (required, checked by the validation).
    #[serde(default)]
    exp: i64,
    #[serde(default)]
    role: Option<String>,
    /// Supabase marks anonymous sign-ins (role `authenticated` all the same).
    #[serde(default)]
    is_anonymous: bool,
}

/// A signed-in user's claims: `role` must be `authenticated` (the anon and service-role keys,
/// and tokens without a role, are not users), and an anonymous sign-in only when allowed.
pub(super) fn user_from(
    sub: &str,
    role: Option<&str>,
    anonymous: bool,
    allow_anonymous: bool,
) -> Result<User, AuthError> {
    if role != Some("authenticated") {
        return Err(AuthError::NotAUser);
    }
    if anonymous && !allow_anonymous {
        return Err(AuthError::Anonymous);
    }
    Uuid::parse_str(sub)
        .map(|id| User { id })
        .map_err(|_| AuthError::NotAUser)
}

impl Authenticator {
    /// The token check of `config`, with its JWKS client (3 s per fetch, 2 s to connect).
    pub fn new(config: AuthConfig) -> Result<Self, crate::outbound::ClientError> {
        let http = crate::outbound::client("the JWKS fetch", Duration::from_secs(3), Duration::from_secs(2))?;
        Ok(Self {
            config,
            http,
            cache: std::sync::Arc::new(Mutex::new(KeyCache::default())),
        })
    }

    /// Verifies one token.
    pub async fn verify(&self, token: &str) -> Result<User, AuthError> {
        self.verify_with_expiry(token).await.map(|(user, _)| user)
    }

    /// Verifies one token, and when it expires (its `exp`, seconds since the epoch): a
    /// session bound to the token (a WebSocket connection) ends no later than it.
    pub async fn verify_with_expiry(&self, token: &str) -> Result<(User, i64), AuthError> {
        if token.len() > 16 * 1024 {
            return Err(AuthError::Malformed);
        }
        // An unknown `alg` (including "none") fails here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let key = match header.alg {
            Algorithm::HS256 => match &self.config.hs256_secret {
                Some(secret) => DecodingKey::from_secret(secret.as_bytes()),
                None => return Err(AuthError::Algorithm),
            },
            alg => {
                self.public_key(header.kid.as_deref().ok_or(AuthError::UnknownKey)?, alg)
                    .await?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&["authenticated"]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Invalid(
                match e.kind() {
                    K::ExpiredSignature => "expired",
                    K::ImmatureSignature => "not yet valid",
                    K::InvalidAudience => "wrong audience",
                    K::InvalidIssuer => "wrong issuer",
                    K::InvalidSignature => "bad signature",
                    K::MissingRequiredClaim(_) => "missing a required claim",
                    K::InvalidAlgorithm => "key and algorithm do not match",
                    _ => "cannot be verified",
                }
                .to_string(),
            )
        })?;
        user_from(
            &data.claims.sub,
            data.claims.role.as_deref(),
            data.claims.is_anonymous,
            self.config.allow_anonymous,
        )
        .map(|user| (user, data.claims.exp))
    }
}
