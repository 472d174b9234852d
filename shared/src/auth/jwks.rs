//! The instance's cache of the project's signing keys (the JWKS): fetched when stale or when a
//! token names an unknown `kid` (at most every `jwks_min_refresh`), backed off after failures,
//! trusted through an outage only up to `jwks_max_stale`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthError, Authenticator};
use crate::outbound::read_capped;

/// Why the signing keys could not be fetched (the cause kept for the log).
#[derive(Debug, thiserror::Error)]
pub(super) enum JwksError {
    #[error("the JWKS request failed")]
    Request(#[source] reqwest::Error),
    #[error("the JWKS endpoint answered HTTP {0}")]
    Status(u16),
    #[error("the JWKS answer could not be read")]
    Read(#[from] crate::outbound::ReadError),
    #[error("the JWKS answer is not a key set")]
    NotAKeySet(#[source] serde_json::Error),
}

const MAX_JWKS_BYTES: usize = 64 * 1024;

#[derive(Default)]
pub(super) struct KeyCache {
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

impl Authenticator {
    pub(super) async fn public_key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
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
                        tracing::warn!(
                            error = %crate::telemetry::Chain(&e),
                            failures = cache.failures,
                            "could not fetch the JWKS"
                        );
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

    async fn fetch_keys(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, JwksError> {
        let mut response = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(JwksError::Request)?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        let body = read_capped(&mut response, MAX_JWKS_BYTES).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(JwksError::NotAKeySet)?;
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
