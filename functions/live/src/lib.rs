//! The `live` function: the API Gateway WebSocket API's `$connect`, `$disconnect` and
//! `$default` routes. Live updates reach the browser through it; the other functions push to
//! its connections after commit (`shared::live`).
//!
//! - `$connect` checks the Supabase access token exactly like the HTTP routes (HS256 and
//!   JWKS), taken from the second entry of `Sec-WebSocket-Protocol: agent-live.v1, <token>`, and
//!   answers with the selected subprotocol `agent-live.v1`. A token in the query string is
//!   refused (it would end up in access logs). The connection is stored with the token's `exp`
//!   (no event past it) unless the user already has `LIVE_MAX_CONNECTIONS_PER_USER` open:
//!   check and insert in one statement.
//! - `$disconnect` deletes the row: one statement.
//! - `$default` answers `{"type":"pong"}` to `{"action":"ping"}`, a clear error to anything
//!   else; no statement.
//!
//! No pooler client is held between events: the pool gives its client back after each one.

pub mod event;
mod handler;
pub mod settings;
pub mod store;

pub use event::{WebSocketEvent, WebSocketResponse};
pub use handler::{handle, respond, Live};
pub use settings::Settings;
