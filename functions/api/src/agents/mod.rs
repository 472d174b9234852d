//! `/api/agents`: the agents the caller may use (public ones and their own, never their
//! instructions: `GET`), and the caller's own agents, created (`POST`, private, at most
//! [`MAX_AGENTS_PER_OWNER`]) and edited (`PATCH`) as their owner sees them. [`request`] reads
//! the bodies, [`store`] runs the statements, [`view`] shows agents; this module holds the rule
//! between them: the cap.

pub mod request;
pub mod store;
pub mod view;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::Sql;
use shared::http::ApiError;

pub use request::{parse_new, parse_patch, AgentPatch, NewAgent};
pub use store::{update, usable, Agent, OwnedAgent, USABLE};
pub use view::{AgentsView, OwnedAgentView};

/// Agents one user may own: more is a deployment problem (the list route shows 500 at most).
pub const MAX_AGENTS_PER_OWNER: i64 = 100;

/// Creates `agent` for `owner` in the caller's transaction (`sql`): the owner's creations are
/// serialised, then the guarded insert counts their agents; 409 at the cap.
#[tracing::instrument(skip_all)]
pub async fn create<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: Uuid,
    agent: &NewAgent,
) -> Result<OwnedAgent, ApiError> {
    store::lock_owner(sql, owner).await?;
    store::insert(sql, owner, agent, MAX_AGENTS_PER_OWNER)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "you have {MAX_AGENTS_PER_OWNER} agents, the most one user may own: edit one instead"
            ))
        })
}
