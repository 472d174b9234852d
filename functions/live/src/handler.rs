//! The three routes.

use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use shared::auth::{AuthError, Authenticator};
use shared::db::{Db, DbError, DbErrorKind};
use shared::metrics::Metrics;
use shared::telemetry::Chain;

use crate::event::{Frame, WebSocketEvent, WebSocketResponse, SUBPROTOCOL};
use crate::settings::Settings;
use crate::store::{self, Admitted};

/// Query parameters that would carry a credential (they end up in access logs): refused.
const TOKEN_PARAMETERS: [&str; 7] = [
    "token",
    "access_token",
    "accesstoken",
    "jwt",
    "auth",
    "authorization",
    "bearer",
];

/// The live function's state, built once per instance.
pub struct Live {
    pub db: Db,
    pub auth: Authenticator,
    pub settings: Settings,
    pub metrics: Metrics,
}

/// Why a route refused.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("ask for the `agent-live.v1` subprotocol")]
    Subprotocol,
    #[error("tokens are not accepted in the query string (they end up in access logs): send it as the second Sec-WebSocket-Protocol entry")]
    TokenInQuery,
    #[error(transparent)]
    Unauthorized(AuthError),
    #[error("signing keys unavailable; retry in {0} s")]
    AuthUnavailable(u64),
    #[error("{open} live connections are open for this user; the limit is {max}: close a tab")]
    TooManyConnections { open: i64, max: i64 },
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error("unknown route {0}")]
    UnknownRoute(String),
    #[error("send {{\"action\":\"ping\"}}; events come from the server")]
    UnknownAction,
}

impl LiveError {
    fn response(&self) -> WebSocketResponse {
        let (status, code) = match self {
            LiveError::Subprotocol => (400, "subprotocol_required"),
            LiveError::TokenInQuery => (400, "token_in_query"),
            LiveError::Unauthorized(_) => (401, "unauthorized"),
            LiveError::AuthUnavailable(_) => (503, "auth_unavailable"),
            LiveError::TooManyConnections { .. } => (429, "too_many_connections"),
            LiveError::Db(e) => match e.kind() {
                DbErrorKind::PoolTimeout | DbErrorKind::Unreachable => (503, "unavailable"),
                DbErrorKind::StatementTimeout => (504, "timeout"),
                _ => (500, "internal"),
            },
            LiveError::UnknownRoute(_) => (404, "not_found"),
            LiveError::UnknownAction => (400, "unknown_action"),
        };
        // No SQL, no credential in an answer.
        let message = match self {
            LiveError::Db(_) => "the database is unavailable; retry later".to_string(),
            other => other.to_string(),
        };
        WebSocketResponse::error(status, code, &message)
    }
}

impl Live {
    /// An instance's state from its (secrets-resolved) environment: settings, the Supabase token
    /// check, and the warmed pool named `function`.
    pub async fn from_env(env: &shared::config::Env, function: &str) -> Result<Live, lambda_runtime::Error> {
        let settings = Settings::from_env(env)?;
        let auth = Authenticator::new(shared::auth::AuthConfig::from_env(env)?)?;
        let db = shared::lifecycle::database(env, function, shared::db::PoolDefaults { max_size: 1 }).await?;
        Ok(Live {
            db,
            auth,
            settings,
            metrics: Metrics::new(env, function),
        })
    }
}

/// The Lambda handler: every event gets an answer (a malformed one a 400); the pooler client
/// goes back after each event.
pub async fn handle(
    live: &Live,
    event: LambdaEvent<serde_json::Value>,
) -> Result<WebSocketResponse, lambda_runtime::Error> {
    let in_flight = live.db.begin_request();
    let response = match serde_json::from_value::<WebSocketEvent>(event.payload) {
        Ok(event) => respond(live, &event).await,
        Err(e) => WebSocketResponse::error(400, "bad_event", &format!("not an API Gateway WebSocket event: {e}")),
    };
    drop(in_flight);
    live.db.release_idle();
    live.metrics.flush_db(&live.db, &[]);
    Ok(response)
}

/// One event's answer.
pub async fn respond(live: &Live, event: &WebSocketEvent) -> WebSocketResponse {
    let route = event.request_context.route_key.as_str();
    let result = match route {
        "$connect" => connect(live, event).await,
        "$disconnect" => disconnect(live, event).await,
        "$default" => default(event),
        other => Err(LiveError::UnknownRoute(other.chars().take(64).collect())),
    };
    match result {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(route, error = %Chain(&e), "refused");
            e.response()
        }
    }
}

/// The token from `Sec-WebSocket-Protocol: agent-live.v1, <token>`.
fn token(event: &WebSocketEvent) -> Result<String, LiveError> {
    if let Some(query) = &event.query_string_parameters {
        let credential = query.iter().any(|(k, v)| {
            TOKEN_PARAMETERS.contains(&k.to_ascii_lowercase().as_str())
                || (v.starts_with("eyJ") && v.matches('.').count() == 2)
        });
        if credential {
            return Err(LiveError::TokenInQuery);
        }
    }
    let offered = event.header("sec-websocket-protocol").unwrap_or_default();
    let mut entries = offered.split(',').map(str::trim).filter(|s| !s.is_empty());
    if entries.next() != Some(SUBPROTOCOL) {
        return Err(LiveError::Subprotocol);
    }
    match entries.next() {
        Some(token) => Ok(token.to_string()),
        None => Err(LiveError::Unauthorized(AuthError::Missing)),
    }
}

async fn connect(live: &Live, event: &WebSocketEvent) -> Result<WebSocketResponse, LiveError> {
    let token = token(event)?;
    let (user, exp) = live.auth.verify_with_expiry(&token).await.map_err(|e| match e {
        AuthError::KeysUnavailable { retry_after_secs } => LiveError::AuthUnavailable(retry_after_secs),
        other => LiveError::Unauthorized(other),
    })?;
    let expires_at =
        DateTime::<Utc>::from_timestamp(exp, 0).ok_or(LiveError::Unauthorized(AuthError::Invalid("expired".into())))?;
    if expires_at <= Utc::now() {
        // Within the verification's leeway, but no event could reach it: refused.
        return Err(LiveError::Unauthorized(AuthError::Invalid("expired".into())));
    }
    let max = live.settings.max_connections_per_user;
    let admitted = {
        let conn = live.db.conn().await?;
        store::connect(
            &conn.sql(),
            &event.request_context.connection_id,
            user.id,
            expires_at,
            max,
        )
        .await?
    };
    match admitted {
        Admitted::Yes => {
            let mut response = WebSocketResponse::frame(200, &Frame::Connected);
            response
                .headers
                .insert("Sec-WebSocket-Protocol".into(), SUBPROTOCOL.into());
            Ok(response)
        }
        Admitted::TooMany(open) => Err(LiveError::TooManyConnections { open, max }),
    }
}

async fn disconnect(live: &Live, event: &WebSocketEvent) -> Result<WebSocketResponse, LiveError> {
    let conn = live.db.conn().await?;
    store::disconnect(&conn.sql(), &event.request_context.connection_id).await?;
    Ok(WebSocketResponse::frame(200, &Frame::Disconnected))
}

/// `{"action":"ping"}` → `{"type":"pong"}`; anything else a clear error. No statement.
fn default(event: &WebSocketEvent) -> Result<WebSocketResponse, LiveError> {
    /// A client's message: `{"action": "..."}` (other fields are the client's business).
    #[derive(serde::Deserialize)]
    struct Message {
        action: String,
    }
    let action = event
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Message>(b).ok())
        .map(|m| m.action);
    match action.as_deref() {
        Some("ping") => Ok(WebSocketResponse::frame(200, &Frame::Pong)),
        _ => Err(LiveError::UnknownAction),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn connect_event(protocol: Option<&str>, query: Option<(&str, &str)>) -> WebSocketEvent {
        let mut e = WebSocketEvent::default();
        e.request_context.route_key = "$connect".into();
        e.request_context.connection_id = "abc=".into();
        e.headers = protocol.map(|p| HashMap::from([("Sec-WebSocket-Protocol".to_string(), p.to_string())]));
        e.query_string_parameters = query.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
        e
    }

    #[test]
    fn the_token_is_the_second_subprotocol_entry_and_never_the_query_string() {
        assert_eq!(
            token(&connect_event(Some("agent-live.v1, tok.en.x"), None)).ok(),
            Some("tok.en.x".to_string())
        );
        assert!(matches!(
            token(&connect_event(Some("agent-live.v1"), None)),
            Err(LiveError::Unauthorized(AuthError::Missing))
        ));
        assert!(matches!(
            token(&connect_event(Some("other, tok"), None)),
            Err(LiveError::Subprotocol)
        ));
        assert!(matches!(
            token(&connect_event(Some("agent-live.v1, tok"), Some(("access_token", "x")))),
            Err(LiveError::TokenInQuery)
        ));
        assert!(matches!(
            token(&connect_event(Some("agent-live.v1, tok"), Some(("q", "eyJa.b.c")))),
            Err(LiveError::TokenInQuery)
        ));
    }

    #[test]
    fn ping_gets_pong_and_anything_else_a_clear_error() {
        let mut e = WebSocketEvent::default();
        e.request_context.route_key = "$default".into();
        e.body = Some(r#"{"action":"ping"}"#.into());
        assert_eq!(
            default(&e).ok().and_then(|r| r.body),
            Some(r#"{"type":"pong"}"#.to_string())
        );
        e.body = Some("hello".into());
        let refused = default(&e).err().map(|e| e.response());
        assert_eq!(refused.map(|r| r.status_code), Some(400));
    }
}
