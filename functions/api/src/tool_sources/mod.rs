//! `/api/agents/{id}/tool-sources`: an agent's tool sources (MCP servers: where they are, the
//! auth header sent to them, sealed at rest and never shown, which of their tools the agent may
//! use, when a person approves a call), its owner's only: read, or replaced as a whole list in
//! one transaction. [`request`] reads and checks the list (names, the outbound rules of each
//! url, headers sealed for the agent), [`store`] runs the statements, [`view`] shows the list.

pub mod request;
pub mod store;
pub mod view;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::Sql;
use shared::http::ApiError;

pub use request::{parse, Approval, HeaderChange, NewSource, MAX_SOURCES};
pub use store::{list, sealed, Source};
pub use view::{SourceToolsView, SourcesView};

/// Replaces the tool sources of agent `agent` of `owner` in the caller's transaction (`sql`):
/// the agent is locked as the owner's first (404 when it is not theirs), then the list is
/// written.
#[tracing::instrument(skip_all)]
pub async fn replace<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: Uuid,
    sources: &[NewSource],
) -> Result<Vec<Source>, ApiError> {
    if !store::lock_agent(sql, owner, agent).await? {
        return Err(ApiError::NotFoundWith("agent not found"));
    }
    Ok(store::replace(sql, agent, sources).await?)
}
