//! `GET /api/conversations` and `GET /api/conversations/{id}/messages`: the caller's history,
//! one statement per request, keyset pages.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Row, Sql, Type};

use crate::agents::time;
use crate::cursor::Cursor;

pub struct Conversation {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FromRow for Conversation {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            agent_id: column(row, "agent_id")?,
            agent_name: column(row, "agent_name")?,
            created_at: column(row, "created_at")?,
            updated_at: column(row, "updated_at")?,
        })
    }
}

impl Conversation {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "agentId": self.agent_id,
            "agentName": self.agent_name,
            "createdAt": time(self.created_at),
            "updatedAt": time(self.updated_at),
        })
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.updated_at,
            id: self.id,
        }
    }
}

/// A page of a user's conversations: `$1` user, `$2` agent or null, `$3`/`$4` the cursor or
/// nulls, `$5` the limit.
pub const PAGE: &str = "SELECT c.id, c.agent_id, a.name AS agent_name, c.created_at, c.updated_at
               FROM conversations c JOIN agents a ON a.id = c.agent_id
              WHERE c.user_id = $1 AND ($2::uuid IS NULL OR c.agent_id = $2)
                AND ($3::timestamptz IS NULL OR (c.updated_at, c.id) < ($3, $4))
              ORDER BY c.updated_at DESC, c.id DESC
              LIMIT $5";

/// The caller's conversations, newest activity first, `limit` of them before `before`.
#[tracing::instrument(skip_all)]
pub async fn page<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    agent: Option<Uuid>,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Conversation>, DbError> {
    let (at, id) = (before.map(|c| c.at), before.map(|c| c.id));
    let rows = sql
        .query(
            PAGE,
            &[
                (&user, Type::UUID),
                (&agent, Type::UUID),
                (&at, Type::TIMESTAMPTZ),
                (&id, Type::UUID),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    Conversation::from_rows(&rows)
}

pub struct Message {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl Message {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "createdAt": time(self.created_at),
        })
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.created_at,
            id: self.id,
        }
    }
}

/// A window of a conversation's messages: `$1` conversation, `$2` its user, `$3`/`$4` the
/// cursor or nulls, `$5` the limit.
pub const MESSAGES: &str = "SELECT m.id, m.role, m.content, m.created_at
               FROM conversations c
               LEFT JOIN LATERAL (
                    SELECT id, role, content, created_at FROM messages
                     WHERE conversation_id = c.id
                       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                     ORDER BY created_at DESC, id DESC
                     LIMIT $5) m ON true
              WHERE c.id = $1 AND c.user_id = $2";

/// The window of conversation `id` of `user`: `None` when it is not theirs (or does not exist);
/// else up to `limit` messages before `before`, newest first.
#[tracing::instrument(skip_all)]
pub async fn messages<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    conversation: Uuid,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Option<Vec<Message>>, DbError> {
    let (at, id) = (before.map(|c| c.at), before.map(|c| c.id));
    let rows = sql
        .query(
            MESSAGES,
            &[
                (&conversation, Type::UUID),
                (&user, Type::UUID),
                (&at, Type::TIMESTAMPTZ),
                (&id, Type::UUID),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut window = Vec::with_capacity(rows.len());
    for row in &rows {
        // The conversation without messages (in this window) is one row of NULLs.
        let Some(id) = column::<Option<Uuid>>(row, "id")? else {
            continue;
        };
        window.push(Message {
            id,
            role: column(row, "role")?,
            content: column(row, "content")?,
            created_at: column(row, "created_at")?,
        });
    }
    Ok(Some(window))
}
