//! The tool-source statements: an agent's list read in one statement; replaced in one
//! transaction (the agent locked as the caller's, then one statement that upserts the list by
//! name and deletes the rest), rows decoded by column name into [`Source`]. The list shows only
//! whether a source has an auth header; [`sealed`] reads it, still sealed, for the one route
//! that lists the source's tools from its server (the header is sent there, never answered).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::agent::store::{SourceRow, SOURCE_JSON};
use shared::db::{column, DbError, FromRow, Sql, Type};

use super::request::{HeaderChange, NewSource};
use crate::row::row;

row! {
    /// A tool source of an agent's, as stored (its auth header only as whether it has one).
    #[derive(Debug, Clone)]
    pub struct Source {
        pub id: Uuid,
        pub name: String,
        pub kind: String,
        pub url: String,
        pub has_auth_header: bool,
        pub allowed_tools: Option<Vec<String>>,
        pub approval: String,
        pub timeout_ms: i32,
        pub created_at: DateTime<Utc>,
    }
}

/// The columns of [`Source`], of the table aliased `s`.
const COLUMNS: &str = "s.id, s.name, s.kind, s.url, s.auth_header IS NOT NULL AS has_auth_header, \
                       s.allowed_tools, s.approval, s.timeout_ms, s.created_at";

/// The tool sources of agent `agent` of `owner`, by name: one statement; `None` when no agent of
/// the owner's has that id (an agent without sources is one row of nulls).
#[tracing::instrument(skip_all)]
pub async fn list<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: Uuid,
) -> Result<Option<Vec<Source>>, DbError> {
    let rows = sql
        .query(
            &format!(
                "SELECT {COLUMNS}
                   FROM agents a LEFT JOIN agent_tool_sources s ON s.agent_id = a.id
                  WHERE a.id = $1 AND a.owner_id = $2
                  ORDER BY s.name COLLATE \"C\""
            ),
            &[(&agent, Type::UUID), (&owner, Type::UUID)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut sources = Vec::with_capacity(rows.len());
    for row in &rows {
        if column::<Option<Uuid>>(row, "id")?.is_some() {
            sources.push(Source::from_row(row)?);
        }
    }
    Ok(Some(sources))
}

/// Locks the agent as its owner's (the tools' statement: one lock serialises both lists).
pub use crate::tools::store::lock_agent;

/// Makes `sources` the list of agent `agent` (locked by [`lock_agent`]): one statement. A name
/// already there keeps its id and `created_at`, and its sealed header when the source says
/// [`HeaderChange::Keep`]; a name not listed is deleted. The new list, by name.
#[tracing::instrument(skip_all)]
pub async fn replace<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    agent: Uuid,
    sources: &[NewSource],
) -> Result<Vec<Source>, DbError> {
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let urls: Vec<&str> = sources.iter().map(|s| s.url.as_str()).collect();
    let keeps: Vec<bool> = sources.iter().map(|s| s.auth_header == HeaderChange::Keep).collect();
    let headers: Vec<Option<&[u8]>> = sources
        .iter()
        .map(|s| match &s.auth_header {
            HeaderChange::Set(Some(sealed)) => Some(sealed.as_slice()),
            HeaderChange::Set(None) | HeaderChange::Keep => None,
        })
        .collect();
    // Each list of allowed tools as JSON (`null`: all): unnest cannot take an array of arrays of
    // different lengths.
    let allowed: Vec<Value> = sources
        .iter()
        .map(|s| {
            s.allowed_tools
                .as_ref()
                .map_or(Value::Null, |names| Value::from(names.clone()))
        })
        .collect();
    let approvals: Vec<&str> = sources.iter().map(|s| s.approval.as_str()).collect();
    let timeouts: Vec<i32> = sources.iter().map(|s| s.timeout_ms).collect();
    let rows = sql
        .query(
            &format!(
                "WITH gone AS (
                     DELETE FROM agent_tool_sources WHERE agent_id = $1 AND NOT (name = ANY ($2))
                 ), s AS (
                     INSERT INTO agent_tool_sources AS s (agent_id, name, url, auth_header, allowed_tools, approval, timeout_ms)
                     SELECT $1, x.n, x.u,
                            CASE WHEN x.k
                                 THEN (SELECT o.auth_header FROM agent_tool_sources o WHERE o.agent_id = $1 AND o.name = x.n)
                                 ELSE x.h END,
                            CASE WHEN jsonb_typeof(x.a) = 'array'
                                 THEN ARRAY(SELECT e.t FROM jsonb_array_elements_text(x.a) WITH ORDINALITY AS e(t, i) ORDER BY e.i) END,
                            x.ap, x.ms
                       FROM unnest($2, $3, $4, $5, $6, $7, $8) AS x(n, u, k, h, a, ap, ms)
                     ON CONFLICT (agent_id, name) DO UPDATE
                        SET url = excluded.url, auth_header = excluded.auth_header, allowed_tools = excluded.allowed_tools,
                            approval = excluded.approval, timeout_ms = excluded.timeout_ms
                     RETURNING *
                 )
                 SELECT {COLUMNS} FROM s ORDER BY s.name COLLATE \"C\""
            ),
            &[
                (&agent, Type::UUID),
                (&names, Type::TEXT_ARRAY),
                (&urls, Type::TEXT_ARRAY),
                (&keeps, Type::BOOL_ARRAY),
                (&headers, Type::BYTEA_ARRAY),
                (&allowed, Type::JSONB_ARRAY),
                (&approvals, Type::TEXT_ARRAY),
                (&timeouts, Type::INT4_ARRAY),
            ],
        )
        .await?;
    Source::from_rows(&rows)
}

/// Source `name` of agent `agent` of `owner`, its auth header still sealed (`None`: no such
/// source of the owner's).
#[tracing::instrument(skip_all)]
pub async fn sealed<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: Uuid,
    name: &str,
) -> Result<Option<SourceRow>, DbError> {
    let row = sql
        .query_opt(
            &format!(
                "SELECT {SOURCE_JSON} AS source FROM agent_tool_sources s JOIN agents a ON a.id = s.agent_id
                  WHERE a.id = $1 AND a.owner_id = $2 AND s.name = $3"
            ),
            &[(&agent, Type::UUID), (&owner, Type::UUID), (&name, Type::TEXT)],
        )
        .await?;
    row.map(|row| {
        serde_json::from_value(column::<Value>(&row, "source")?).map_err(|e| DbError::decode_column("source", e))
    })
    .transpose()
}
