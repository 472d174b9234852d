//! The JSON of the tool-source routes: `{"sources": [...]}`, each source as its owner sees it:
//! whether it has an auth header, never the header.

use serde::Serialize;
use uuid::Uuid;

use shared::http::Timestamp;

use super::store::Source;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub kind: &'a str,
    pub url: &'a str,
    pub has_auth_header: bool,
    pub allowed_tools: Option<&'a [String]>,
    pub approval: &'a str,
    pub timeout_ms: i32,
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize)]
pub struct SourcesView<'a> {
    pub sources: Vec<SourceView<'a>>,
}

impl<'a> SourcesView<'a> {
    pub fn of(sources: &'a [Source]) -> Self {
        Self {
            sources: sources
                .iter()
                .map(|s| SourceView {
                    id: s.id,
                    name: &s.name,
                    kind: &s.kind,
                    url: &s.url,
                    has_auth_header: s.has_auth_header,
                    allowed_tools: s.allowed_tools.as_deref(),
                    approval: &s.approval,
                    timeout_ms: s.timeout_ms,
                    created_at: s.created_at.into(),
                })
                .collect(),
        }
    }
}

/// A source's tools as its server lists them (`GET /api/agents/{id}/tool-sources/{name}/tools`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceToolView<'a> {
    /// The name the model sees (`<source>__<tool>`).
    pub name: &'a str,
    pub server_name: &'a str,
    pub description: &'a str,
    pub read_only: bool,
    pub idempotent: bool,
    pub requires_approval: bool,
}

#[derive(Debug, Serialize)]
pub struct SourceToolsView<'a> {
    pub source: &'a str,
    pub approval: &'a str,
    pub tools: Vec<SourceToolView<'a>>,
}

impl<'a> SourceToolsView<'a> {
    pub fn of(source: &'a shared::agent::mcp::Source, tools: &'a [shared::agent::mcp::McpTool]) -> Self {
        Self {
            source: &source.name,
            approval: source.approval.as_str(),
            tools: tools
                .iter()
                .map(|t| SourceToolView {
                    name: &t.exposed,
                    server_name: &t.name,
                    description: &t.description,
                    read_only: t.hints.read_only,
                    idempotent: t.hints.idempotent,
                    requires_approval: source.approval.requires(t.hints),
                })
                .collect(),
        }
    }
}
