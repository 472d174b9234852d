//! The tool statements: an agent's set read in one statement; replaced in one transaction (the
//! agent locked as the caller's, then one statement that upserts the set by name and deletes the
//! rest), rows decoded by column name into [`Tool`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Sql, Type};

use super::request::NewTool;
use crate::row::row;

row! {
    /// A tool of an agent's, as stored.
    #[derive(Debug, Clone)]
    pub struct Tool {
        pub id: Uuid,
        pub name: String,
        pub description: String,
        pub parameters: Value,
        pub url: String,
        pub requires_approval: bool,
        pub timeout_ms: i32,
        pub created_at: DateTime<Utc>,
    }
}

/// The columns of [`Tool`], of the table aliased `t`.
const COLUMNS: &str =
    "t.id, t.name, t.description, t.parameters, t.url, t.requires_approval, t.timeout_ms, t.created_at";

/// The tools of agent `agent` of `owner`, by name: one statement; `None` when no agent of the
/// owner's has that id (an agent without tools is one row of nulls).
#[tracing::instrument(skip_all)]
pub async fn list<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: Uuid,
) -> Result<Option<Vec<Tool>>, DbError> {
    let rows = sql
        .query(
            &format!(
                "SELECT {COLUMNS}
                   FROM agents a LEFT JOIN agent_tools t ON t.agent_id = a.id
                  WHERE a.id = $1 AND a.owner_id = $2
                  ORDER BY t.name COLLATE \"C\""
            ),
            &[(&agent, Type::UUID), (&owner, Type::UUID)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut tools = Vec::with_capacity(rows.len());
    for row in &rows {
        if column::<Option<Uuid>>(row, "id")?.is_some() {
            tools.push(Tool::from_row(row)?);
        }
    }
    Ok(Some(tools))
}

/// Locks agent `agent` of `owner` until the transaction ends (replacements of one agent's set
/// are serialised): whether the owner has it.
#[tracing::instrument(skip_all)]
pub async fn lock_agent<C: GenericClient + Sync>(sql: &Sql<'_, C>, owner: Uuid, agent: Uuid) -> Result<bool, DbError> {
    let row = sql
        .query_opt(
            "SELECT id FROM agents WHERE id = $1 AND owner_id = $2 FOR NO KEY UPDATE",
            &[(&agent, Type::UUID), (&owner, Type::UUID)],
        )
        .await?;
    Ok(row.is_some())
}

/// Makes `tools` the set of agent `agent` (locked by [`lock_agent`]): one statement. A name
/// already there keeps its id and `created_at`; a name not listed is deleted. The new set, by
/// name.
#[tracing::instrument(skip_all)]
pub async fn replace<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    agent: Uuid,
    tools: &[NewTool],
) -> Result<Vec<Tool>, DbError> {
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let descriptions: Vec<&str> = tools.iter().map(|t| t.description.as_str()).collect();
    let parameters: Vec<&Value> = tools.iter().map(|t| &t.parameters).collect();
    let urls: Vec<&str> = tools.iter().map(|t| t.url.as_str()).collect();
    let approvals: Vec<bool> = tools.iter().map(|t| t.requires_approval).collect();
    let timeouts: Vec<i32> = tools.iter().map(|t| t.timeout_ms).collect();
    let rows = sql
        .query(
            &format!(
                "WITH gone AS (
                     DELETE FROM agent_tools WHERE agent_id = $1 AND NOT (name = ANY ($2))
                 ), t AS (
                     INSERT INTO agent_tools AS t (agent_id, name, description, parameters, url, requires_approval, timeout_ms)
                     SELECT $1, n, d, p, u, r, ms FROM unnest($2, $3, $4, $5, $6, $7) AS x(n, d, p, u, r, ms)
                     ON CONFLICT (agent_id, name) DO UPDATE
                        SET description = excluded.description, parameters = excluded.parameters, url = excluded.url,
                            requires_approval = excluded.requires_approval, timeout_ms = excluded.timeout_ms
                     RETURNING *
                 )
                 SELECT {COLUMNS} FROM t ORDER BY t.name COLLATE \"C\""
            ),
            &[
                (&agent, Type::UUID),
                (&names, Type::TEXT_ARRAY),
                (&descriptions, Type::TEXT_ARRAY),
                (&parameters, Type::JSONB_ARRAY),
                (&urls, Type::TEXT_ARRAY),
                (&approvals, Type::BOOL_ARRAY),
                (&timeouts, Type::INT4_ARRAY),
            ],
        )
        .await?;
    Tool::from_rows(&rows)
}
