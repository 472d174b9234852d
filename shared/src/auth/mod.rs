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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::http::HeaderMap;
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};
use crate::outbound::read_capped;

pub const SUPABASE_URL: Setting = Setting::text(
    "SUPABASE_URL",
    None,
    "the Supabase project URL: tokens' issuer is `$SUPABASE_URL/auth/v1`, keys at `…/auth/v1/.well-known/jwks.json`",
);
pub const SUPABASE_JWT_SECRET: Setting = Setting::secret(
    "SUPABASE_JWT_SECRET",
    "the project's legacy HS256 JWT secret (unset: only asymmetric keys from the JWKS are accepted)",
);
pub const AUTH_TRUST_API_GATEWAY: Setting = Setting::flag(
    "AUTH_TRUST_API_GATEWAY",
    false,
    "accept the claims of an API Gateway JWT authorizer instead of verifying the token again",
);
pub const AUTH_JWKS_TTL_SECS: Setting = Setting::number(
    "AUTH_JWKS_TTL_SECS",
    1,
    86_400,
    DEFAULT_JWKS_TTL_SECS,
    Unit::Seconds,
    "how long fetched signing keys are trusted before they are fetched again",
);

pub const AUTH_JWKS_MAX_STALE_SECS: Setting = Setting::number(
    "AUTH_JWKS_MAX_STALE_SECS",
    0,
    86_400,
    3600,
    Unit::Seconds,
    "how long past their TTL fetched keys stay trusted while the JWKS cannot be fetched (an outage); after that, requests get a 503 until it answers (a revoked key is not trusted forever)",
);
pub const AUTH_ALLOW_ANONYMOUS: Setting = Setting::flag(
    "AUTH_ALLOW_ANONYMOUS",
    false,
    "accept Supabase anonymous sign-ins (tokens with `is_anonymous: true`); refused by default, so an unverified visitor cannot spend the model budget",
);

pub const AUTH_TOKEN_HEADER: Setting = Setting::text(
    "AUTH_TOKEN_HEADER",
    Some("authorization"),
    "the header carrying `Bearer <token>`; behind CloudFront with Origin Access Control (which signs `Authorization`) the template sets `x-agent-authorization`, which its viewer function fills",
);

pub const SETTINGS: &[&Setting] = &[
    &SUPABASE_URL,
    &AUTH_TOKEN_HEADER,
    &SUPABASE_JWT_SECRET,
    &AUTH_TRUST_API_GATEWAY,
    &AUTH_JWKS_TTL_SECS,
    &AUTH_JWKS_MAX_STALE_SECS,
    &AUTH_ALLOW_ANONYMOUS,
];

const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::ES256, Algorithm::RS256];
const MAX_JWKS_BYTES: usize = 64 * 1024;
const DEFAULT_JWKS_TTL_SECS: u64 = 600;

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

#[derive(Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub jwks_url: String,
    hs256_secret: Option<String>,
    pub trust_api_gateway: bool,
    pub jwks_ttl: Duration,
    /// How long past `jwks_ttl` keys stay trusted while refreshes fail.
    pub jwks_max_stale: Duration,
    pub jwks_min_refresh: Duration,
    /// Whether tokens of anonymous sign-ins (`is_anonymous: true`) are users.
    pub allow_anonymous: bool,
    /// The header the bearer token comes in.
    pub token_header: lambda_http::http::HeaderName,
    pub leeway_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "<redacted>"))
            .field("trust_api_gateway", &self.trust_api_gateway)
            .finish()
    }
}

impl AuthConfig {
    pub fn new(supabase_url: &str, hs256_secret: Option<String>) -> Self {
        let base = supabase_url.trim_end_matches('/');
        Self {
            issuer: format!("{base}/auth/v1"),
            jwks_url: format!("{base}/auth/v1/.well-known/jwks.json"),
            hs256_secret: hs256_secret.filter(|s| !s.is_empty()),
            trust_api_gateway: false,
            jwks_ttl: Duration::from_secs(DEFAULT_JWKS_TTL_SECS),
            jwks_max_stale: Duration::from_secs(3600),
            jwks_min_refresh: Duration::from_secs(30),
            allow_anonymous: false,
            token_header: lambda_http::http::header::AUTHORIZATION,
            leeway_secs: 30,
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required(&SUPABASE_URL)?;
        let parsed = url::Url::parse(&url).map_err(|e| invalid(SUPABASE_URL.name, format!("not a valid URL ({e})")))?;
        let loopback = matches!(parsed.host(), Some(url::Host::Domain("localhost")))
            || matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(
                    SUPABASE_URL.name,
                    "expected an https:// URL (plain http only on loopback): signing keys are never fetched in clear",
                ))
            }
        }
        let mut config = Self::new(&url, env.text(&SUPABASE_JWT_SECRET));
        config.trust_api_gateway = env.flag(&AUTH_TRUST_API_GATEWAY)?;
        config.jwks_ttl = env.duration(&AUTH_JWKS_TTL_SECS)?;
        config.jwks_max_stale = env.duration(&AUTH_JWKS_MAX_STALE_SECS)?;
        config.allow_anonymous = env.flag(&AUTH_ALLOW_ANONYMOUS)?;
        if let Some(name) = env.text(&AUTH_TOKEN_HEADER) {
            config.token_header = lambda_http::http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| invalid(AUTH_TOKEN_HEADER.name, "not a valid HTTP header name"))?;
        }
        Ok(config)
    }

    pub fn with_trusted_gateway(mut self, trust: bool) -> Self {
        self.trust_api_gateway = trust;
        self
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
    /// No fetch before this (after a success: the unknown-`kid` refetch limit; after failures:
    /// an exponential backoff), so an outage is not hammered by every request.
    next_fetch_at: Option<Instant>,
    failures: u32,
}

/// Backoff after `failures` failed fetches in a row: 1, 2, 4 … 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_JWKS_BACKOFF)
}

const MAX_JWKS_BACKOFF: Duration = Duration::from_secs(60);

/// Verifies tokens; holds the instance's JWKS cache.
/// Cheap to clone: clones share one key cache and one HTTP client.
#[derive(Clone)]
pub struct Authenticator {
    config: AuthConfig,
    http: reqwest::Client,
    cache: std::sync::Arc<Mutex<KeyCache>>,
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
fn user_from(sub: &str, role: Option<&str>, anonymous: bool, allow_anonymous: bool) -> Result<User, AuthError> {
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
    pub fn new(config: AuthConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            cache: std::sync::Arc::new(Mutex::new(KeyCache::default())),
        }
    }

    /// The user a request speaks for: from the API Gateway authorizer's claims when trusted,
    /// else from the `Authorization: Bearer` token.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        gateway_claims: Option<&HashMap<String, String>>,
    ) -> Result<User, AuthError> {
        if self.config.trust_api_gateway {
            if let Some(claims) = gateway_claims.filter(|c| !c.is_empty()) {
                let sub = claims.get("sub").ok_or(AuthError::NotAUser)?;
                // The authorizer hands claims over as strings.
                let anonymous = claims.get("is_anonymous").is_some_and(|v| v == "true");
                return user_from(
                    sub,
                    claims.get("role").map(String::as_str),
                    anonymous,
                    self.config.allow_anonymous,
                );
            }
        }
        let header = headers
            .get(&self.config.token_header)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(token.trim()).await
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

    async fn public_key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < self.config.jwks_ttl);
        if !fresh || !cache.keys.contains_key(kid) {
            if cache.next_fetch_at.is_none_or(|t| now >= t) {
                match self.fetch_keys().await {
                    Ok(keys) => {
                        cache.keys = keys;
                        cache.fetched_at = Some(now);
                        cache.failures = 0;
                        cache.next_fetch_at = Some(now + self.config.jwks_min_refresh);
                    }
                    Err(e) => {
                        cache.failures = cache.failures.saturating_add(1);
                        cache.next_fetch_at = Some(now + backoff(cache.failures));
                        tracing::warn!(error = %e, failures = cache.failures, "could not fetch the JWKS");
                    }
                }
            }
            let too_stale = cache
                .fetched_at
                .is_some_and(|t| t.elapsed() >= self.config.jwks_ttl + self.config.jwks_max_stale);
            if too_stale {
                // Keys that could not be refreshed for that long may have been revoked since:
                // no longer trusted until the JWKS answers again.
                cache.keys.clear();
                cache.fetched_at = None;
            }
            if cache.keys.is_empty() && cache.fetched_at.is_none() {
                // Stale keys keep working through an outage (up to the bound above); without any, it is an
                // outage. (A fetched but empty key set is an answer: the token's key is unknown.)
                let wait = cache
                    .next_fetch_at
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                return Err(AuthError::KeysUnavailable {
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        match cache.keys.get(kid) {
            Some((key_alg, key)) if *key_alg == alg => Ok(key.clone()),
            Some(_) => Err(AuthError::Algorithm),
            None => Err(AuthError::UnknownKey),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let mut response = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| format!("JWKS request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("JWKS answered HTTP {}", response.status().as_u16()));
        }
        let body = read_capped(&mut response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("JWKS: {e}"))?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("JWKS is not a key set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_), _) => Algorithm::ES256,
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), _) => Algorithm::RS256,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        Ok(keys)
    }
}
/// The signed-in user: an API Gateway JWT authorizer's claims when trusted, else the bearer token.
pub async fn authenticate_request(
    auth: &Authenticator,
    request: &lambda_http::Request,
) -> Result<User, crate::http::ApiError> {
    let gateway_claims: Option<&HashMap<String, String>> = match lambda_http::RequestExt::request_context_ref(request) {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
        }
        _ => None,
    };
    auth.authenticate(request.headers(), gateway_claims)
        .await
        .map_err(|e| match e {
            AuthError::KeysUnavailable { retry_after_secs } => {
                crate::http::ApiError::AuthUnavailable { retry_after_secs }
            }
            other => crate::http::ApiError::Unauthorized(other.to_string()),
        })
}
