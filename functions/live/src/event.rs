//! The API Gateway WebSocket event (the fields this function reads) and its answer.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The subprotocol a browser asks for, and the one the function selects.
pub const SUBPROTOCOL: &str = "agent-live.v1";

/// An API Gateway WebSocket proxy event.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketEvent {
    pub request_context: RequestContext,
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
    #[serde(default)]
    pub query_string_parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// `$connect`, `$disconnect`, `$default` (or a custom route's key).
    pub route_key: String,
    /// `CONNECT`, `MESSAGE`, `DISCONNECT`.
    #[serde(default)]
    pub event_type: Option<String>,
    pub connection_id: String,
    #[serde(default)]
    pub domain_name: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
}

impl WebSocketEvent {
    /// A header by name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The function's answer: for `$connect` its status decides the handshake (and its
/// `Sec-WebSocket-Protocol` header is the selected subprotocol); for `$default` the body goes
/// back to the client (the route's response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketResponse {
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What the function says on a socket: `{"type":"connected"}`, `pong`, `disconnected`, or
/// `{"type":"error","code","message"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame<'a> {
    Connected,
    Disconnected,
    Pong,
    Error { code: &'a str, message: &'a str },
}

impl WebSocketResponse {
    pub fn frame(status_code: u16, frame: &Frame<'_>) -> Self {
        Self {
            status_code,
            headers: HashMap::new(),
            // A frame is a tag and two strings: it always serialises.
            body: serde_json::to_string(frame).ok(),
        }
    }

    /// `{"type":"error","code","message"}` with a status.
    pub fn error(status_code: u16, code: &str, message: &str) -> Self {
        Self::frame(status_code, &Frame::Error { code, message })
    }
}
