//! The JSON of `GET /api/agents`: `{"agents": [...]}`, each agent as it is read
//! ([`Agent`] is its own view: it holds what the caller may see and nothing else).

use serde::Serialize;

use super::store::Agent;

#[derive(Debug, Serialize)]
pub struct AgentsView<'a> {
    pub agents: &'a [Agent],
}

impl<'a> AgentsView<'a> {
    pub fn of(agents: &'a [Agent]) -> Self {
        Self { agents }
    }
}
