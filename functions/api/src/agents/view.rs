//! The JSON of `GET /api/agents`, and of an agent as its owner sees it ([`OwnedAgentView`]:
//! what `POST /api/agents` and `PATCH /api/agents/{id}` answer).
//!
//! `GET /api/agents`: `{"agents": [...]}`, each agent as it is read
//! ([`Agent`] is its own view: it holds what the caller may see and nothing else).

use serde::Serialize;
use uuid::Uuid;

use shared::http::Timestamp;

use super::store::{Agent, OwnedAgent};

#[derive(Debug, Serialize)]
pub struct AgentsView<'a> {
    pub agents: &'a [Agent],
}

impl<'a> AgentsView<'a> {
    pub fn of(agents: &'a [Agent]) -> Self {
        Self { agents }
    }
}

/// An agent as its owner sees it, instructions included.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedAgentView<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub instructions: &'a str,
    pub model: Option<&'a str>,
    pub visibility: &'a str,
    pub daily_token_budget: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<'a> OwnedAgentView<'a> {
    pub fn of(agent: &'a OwnedAgent) -> Self {
        Self {
            id: agent.id,
            name: &agent.name,
            description: &agent.description,
            instructions: &agent.instructions,
            model: agent.model.as_deref(),
            visibility: &agent.visibility,
            daily_token_budget: agent.daily_token_budget,
            created_at: agent.created_at.into(),
            updated_at: agent.updated_at.into(),
        }
    }
}
