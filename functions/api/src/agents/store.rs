//! The agents statement: one, capped.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{DbError, FromRow, Sql, Type};

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
