//! Live updates, the publishing side (feature `live`): after a change commits, `chat`,
//! `chat-stream`, `api` and `scheduler` push a small event to each of the owner's WebSocket
//! connections through the API Gateway Management API (`PostToConnection`), at `LIVE_ENDPOINT`.
//!
//! - The owner's connections come back from the statement that made the change
//!   ([`connections_cte`] and [`CONNECTIONS_COLUMNS`]): no extra round trip.
//! - Pushes run after the commit, with no pooler client held, concurrently
//!   (`LIVE_PUSH_CONCURRENCY`) and bounded (`LIVE_PUSH_TIMEOUT_MS` each,
//!   `LIVE_PUBLISH_TIMEOUT_MS` for all of one change): a failed push is counted
//!   (`LivePushFailed`) and logged, never the request's failure.
//! - `410 Gone` (the connection is closed) deletes its row; a connection past its token's expiry
//!   gets no event and is closed (`DeleteConnection`), its row deleted too. Both in one
//!   statement after the pushes.
//! - `LIVE_ENDPOINT` unset: live updates are off; no SDK client is built, nothing is pushed.
//!
//! Events are hints, not state: ids and status only, never content.

use serde::Deserialize;

use crate::db::{column, DbError, Row};

#[cfg(feature = "live")]
mod publish;
#[cfg(feature = "live")]
pub use publish::*;

/// A user's connections as the statement that changed something saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Connections {
    /// Within their token's lifetime: they get the events.
    pub open: Vec<String>,
    /// Past their token's expiry: no event; closed.
    pub expired: Vec<String>,
}

impl Connections {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.expired.is_empty()
    }

    /// From the two columns of [`CONNECTIONS_COLUMNS`].
    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            open: column(row, "live_open")?,
            expired: column(row, "live_expired")?,
        })
    }
}

/// A CTE named `live` of user `user`'s connections (`connection_id`, `open`), to add to the
/// statement that makes a change (`user` is an SQL expression: a parameter such as `$2`).
pub fn connections_cte(user: &str) -> String {
    format!(
        "live AS (
             SELECT connection_id, expires_at > now() AS open FROM live_connections WHERE user_id = {user}
         )"
    )
}

/// The two columns (`live_open`, `live_expired`: text[]) read from [`connections_cte`].
pub const CONNECTIONS_COLUMNS: &str = "
    (SELECT coalesce(array_agg(connection_id) FILTER (WHERE open), '{}') FROM live) AS live_open,
    (SELECT coalesce(array_agg(connection_id) FILTER (WHERE NOT open), '{}') FROM live) AS live_expired";
