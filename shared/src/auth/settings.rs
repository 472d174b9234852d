//! The auth settings and the [`AuthConfig`] read from them: the issuer and JWKS URL derived
//! from `SUPABASE_URL`, the legacy HS256 secret, the key cache's bounds, the token header.

use std::time::Duration;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

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

const DEFAULT_JWKS_TTL_SECS: u64 = 600;

#[derive(Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub jwks_url: String,
    pub(super) hs256_secret: Option<String>,
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
