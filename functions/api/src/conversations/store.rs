//! The conversation statements: a page of a user's conversations, a window of one's messages;
//! keyset statements both ([`crate::cursor::keyset`]).

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use tokio_postgres::types::ToSql;

use shared::db::{column, DbError, FromRow, Sql, Type};

use crate::cursor::{keyset, Cursor, Page, PageRequest};
use crate::row::row;

row! {
    #[derive(Debug, Clone)]
    pub struct Conversation {
        pub id: Uuid,
        pub agent_id: Uuid,
        pub agent_name: String,
        pub created_at: DateTime<Utc>,
        /// Its last activity: the list's order.
        pub updated_at: DateTime<Utc>,
    }
}

row! {
    #[derive(Debug, Clone)]
    pub struct Message {
        pub id: Uuid,
        pub role: String,
        pub content: String,
        /// An assistant step's tool calls (`[{"id", "name", "arguments"}]`), when it made some.
        pub tool_calls: Option<serde_json::Value>,
        /// A `tool` message's call: the result of that call.
        pub tool_call_id: Option<String>,
        /// The agent run whose step it is (`GET /api/runs/{id}`), for a tool-calling turn.
        pub run_id: Option<Uuid>,
        pub created_at: DateTime<Utc>,
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

/// The caller's conversations (of `agent` when given), newest activity first: the page
/// `asked`.
#[tracing::instrument(skip_all)]
pub async fn page<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    agent: Option<Uuid>,
    asked: PageRequest,
) -> Result<Page<Conversation>, DbError> {
    let rows = keyset(sql, PAGE, &[(&user, Type::UUID), (&agent, Type::UUID)], asked, &[]).await?;
    Ok(Page::of(Conversation::from_rows(&rows)?, asked.limit, |c| {
        Cursor::new(c.updated_at, c.id)
    }))
}

/// A window of a conversation's messages: `$1` conversation, `$2` its user, `$3`/`$4` the
/// cursor or nulls, `$5` the limit.
pub const MESSAGES: &str = "SELECT m.id, m.role, m.content, m.tool_calls, m.tool_call_id, m.run_id, m.created_at
               FROM conversations c
               LEFT JOIN LATERAL (
                    SELECT id, role, content, tool_calls, tool_call_id, run_id, created_at FROM messages
                     WHERE conversation_id = c.id
                       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                     ORDER BY created_at DESC, id DESC
                     LIMIT $5) m ON true
              WHERE c.id = $1 AND c.user_id = $2";

/// The window of conversation `id` of `user`: `None` when it is not theirs (or does not exist);
/// else the page `asked` of its messages, newest first.
#[tracing::instrument(skip_all)]
pub async fn messages<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    conversation: Uuid,
    asked: PageRequest,
) -> Result<Option<Page<Message>>, DbError> {
    let scope = [(&conversation as &(dyn ToSql + Sync), Type::UUID), (&user, Type::UUID)];
    let rows = keyset(sql, MESSAGES, &scope, asked, &[]).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut window = Vec::with_capacity(rows.len());
    for row in &rows {
        // The conversation without messages (in this window) is one row of NULLs.
        if column::<Option<Uuid>>(row, "id")?.is_some() {
            window.push(Message::from_row(row)?);
        }
    }
    Ok(Some(Page::of(window, asked.limit, |m| Cursor::new(m.created_at, m.id))))
}
