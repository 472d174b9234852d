//! The agents statements: the list (one, capped); an owner's creation (one guarded insert under
//! the owner's lock) and edit (one guarded update).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{DbError, FromRow, Sql, Type};

use super::request::{AgentPatch, NewAgent};
use crate::row::row;

/// More agents than a picker can show is a deployment problem, not a page to turn.
const MAX_AGENTS: i64 = 500;

row! {
    /// An agent as the caller sees it (no instructions): shown as it is read.
    #[derive(Debug, Clone, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Agent {
        pub id: Uuid,
        pub name: String,
        pub description: String,
        /// `public`, or `private` (its owner's only).
        pub visibility: String,
        /// The caller owns it.
        pub owned: bool,
    }
}

/// The agents a user may use (`$1` the user, `$2` the cap).
pub const USABLE: &str = "SELECT id, name, description, visibility, coalesce(owner_id = $1, false) AS owned
     FROM agents
    WHERE visibility = 'public' OR owner_id = $1
    ORDER BY name, id
    LIMIT $2";

/// The agents `user` may use, by name: one statement.
#[tracing::instrument(skip_all)]
pub async fn usable<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid) -> Result<Vec<Agent>, DbError> {
    let rows = sql
        .query(USABLE, &[(&user, Type::UUID), (&MAX_AGENTS, Type::INT8)])
        .await?;
    Agent::from_rows(&rows)
}

row! {
    /// An agent as its owner sees it: everything it says, its instructions included.
    #[derive(Debug, Clone)]
    pub struct OwnedAgent {
        pub id: Uuid,
        pub name: String,
        pub description: String,
        pub instructions: String,
        pub model: Option<String>,
        pub visibility: String,
        pub daily_token_budget: Option<i64>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

/// The columns of [`OwnedAgent`].
const OWNED_COLUMNS: &str =
    "id, name, description, instructions, model, visibility, daily_token_budget, created_at, updated_at";

/// Serialises the agent creations of one owner until the transaction ends (a
/// transaction-scoped advisory lock: safe through the pooler), so the cap counts every
/// committed agent.
#[tracing::instrument(skip_all)]
pub async fn lock_owner<C: GenericClient + Sync>(sql: &Sql<'_, C>, owner: Uuid) -> Result<(), DbError> {
    sql.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('agents.create:' || $1::text, 0))",
        &[(&owner, Type::UUID)],
    )
    .await?;
    Ok(())
}

/// Inserts `agent`, private to `owner`, while the owner has fewer than `cap` agents: one
/// guarded statement (under [`lock_owner`]); `None` when the cap is reached.
#[tracing::instrument(skip_all)]
pub async fn insert<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: &NewAgent,
    cap: i64,
) -> Result<Option<OwnedAgent>, DbError> {
    let row = sql
        .query_opt(
            &format!(
                "INSERT INTO agents (owner_id, visibility, name, description, instructions, model, daily_token_budget)
                 SELECT $1, 'private', $2, $3, $4, $5, $6
                  WHERE (SELECT count(*) FROM agents WHERE owner_id = $1) < $7
                 RETURNING {OWNED_COLUMNS}"
            ),
            &[
                (&owner, Type::UUID),
                (&agent.name, Type::TEXT),
                (&agent.description, Type::TEXT),
                (&agent.instructions, Type::TEXT),
                (&agent.model, Type::TEXT),
                (&agent.daily_token_budget, Type::INT8),
                (&cap, Type::INT8),
            ],
        )
        .await?;
    row.as_ref().map(OwnedAgent::from_row).transpose()
}

/// Applies `patch` to agent `id` of `owner`: one guarded statement, `updated_at` bumped; `None`
/// when no agent of the owner's has that id.
#[tracing::instrument(skip_all)]
pub async fn update<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    id: Uuid,
    patch: &AgentPatch,
) -> Result<Option<OwnedAgent>, DbError> {
    let (set_model, model) = (patch.model.is_some(), patch.model.clone().flatten());
    let (set_budget, budget) = (patch.daily_token_budget.is_some(), patch.daily_token_budget.flatten());
    let row = sql
        .query_opt(
            &format!(
                "UPDATE agents
                    SET name = coalesce($3, name),
                        description = coalesce($4, description),
                        instructions = coalesce($5, instructions),
                        model = CASE WHEN $6 THEN $7 ELSE model END,
                        daily_token_budget = CASE WHEN $8 THEN $9 ELSE daily_token_budget END,
                        updated_at = now()
                  WHERE id = $1 AND owner_id = $2
              RETURNING {OWNED_COLUMNS}"
            ),
            &[
                (&id, Type::UUID),
                (&owner, Type::UUID),
                (&patch.name, Type::TEXT),
                (&patch.description, Type::TEXT),
                (&patch.instructions, Type::TEXT),
                (&set_model, Type::BOOL),
                (&model, Type::TEXT),
                (&set_budget, Type::BOOL),
                (&budget, Type::INT8),
            ],
        )
        .await?;
    row.as_ref().map(OwnedAgent::from_row).transpose()
}
