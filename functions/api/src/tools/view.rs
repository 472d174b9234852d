//! The JSON of the tool routes: `{"tools": [...]}`, each tool as its owner sees it.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use shared::http::Timestamp;

use super::store::Tool;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolView<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub parameters: &'a Value,
    pub url: &'a str,
    pub requires_approval: bool,
    pub timeout_ms: i32,
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize)]
pub struct ToolsView<'a> {
    pub tools: Vec<ToolView<'a>>,
}

impl<'a> ToolsView<'a> {
    pub fn of(tools: &'a [Tool]) -> Self {
        Self {
            tools: tools
                .iter()
                .map(|t| ToolView {
                    id: t.id,
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                    url: &t.url,
                    requires_approval: t.requires_approval,
                    timeout_ms: t.timeout_ms,
                    created_at: t.created_at.into(),
                })
                .collect(),
        }
    }
}
