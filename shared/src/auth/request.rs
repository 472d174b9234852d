//! Which user a request speaks for: an API Gateway JWT authorizer's claims when trusted, else
//! the bearer token of the configured header; and how a refusal becomes an API error.

use std::collections::HashMap;

use lambda_http::http::HeaderMap;

use super::verify::user_from;
use super::{AuthError, Authenticator, User};

impl Authenticator {
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
