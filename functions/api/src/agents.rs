//! `GET /api/agents`: the agents the caller may use (public ones and their own), never their
//! instructions.

use chrono::SecondsFormat;
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{column, DbError, FromRow, Row, Sql, Type};

/// More agents than a picker can show is a deployment problem, not a page to turn.
const MAX_AGENTS: i64 = 500;

pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub visibility: String,
    pub owned: bool,
}

impl FromRow for Agent {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            name: column(row, "name")?,
            description: column(row, "description")?,
            visibility: column(row, "visibility")?,
            owned: column(row, "owned")?,
        })
    }
}

impl Agent {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "visibility": self.visibility,
            "owned": self.owned,
        })
    }
}

/// The agents a user may use (`$1` the user, `$2` the cap).
pub const USABLE: &str = "SELECT id, name, description, visibility, coalesce(owner_id = $1, false) AS owned
     FROM agents
    WHERE visibility = 'public' OR owner_id = $1
    ORDER BY name, id
    LIMIT $2";

#[tracing::instrument(skip_all)]
pub async fn usable<C: GenericClient + Sync>(sql: &Sql<'_, C>, user: Uuid) -> Result<Vec<Agent>, DbError> {
    let rows = sql
        .query(USABLE, &[(&user, Type::UUID), (&MAX_AGENTS, Type::INT8)])
        .await?;
    Agent::from_rows(&rows)
}

/// RFC 3339 with milliseconds, as every route writes times.
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
