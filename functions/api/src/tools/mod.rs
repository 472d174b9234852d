//! `/api/agents/{id}/tools`: an agent's tools (what the model is told, where the call goes), its
//! owner's only: read, or replaced as a whole set in one transaction. [`request`] reads and
//! checks the set (names, schemas, the outbound rules of each url), [`store`] runs the
//! statements, [`view`] shows the set.

pub mod request;
pub mod store;
pub mod view;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::Sql;
use shared::http::ApiError;

pub use request::{parse, NewTool, MAX_TOOLS};
pub use store::{list, Tool};
pub use view::ToolsView;

/// Replaces the tools of agent `agent` of `owner` in the caller's transaction (`sql`): the agent
/// is locked as the owner's first (404 when it is not theirs), then the set is written.
#[tracing::instrument(skip_all)]
pub async fn replace<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: Uuid,
    tools: &[NewTool],
) -> Result<Vec<Tool>, ApiError> {
    if !store::lock_agent(sql, owner, agent).await? {
        return Err(ApiError::NotFoundWith("agent not found"));
    }
    Ok(store::replace(sql, agent, tools).await?)
}
