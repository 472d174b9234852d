//! An agent's whole toolbox for a run: its HTTP tools (`agent_tools`) and the tools its MCP
//! sources list (each source listed at once, every one bounded by its timeout; a source that
//! cannot be opened or listed is left out, logged, and the run goes on with the others). Called
//! after the database's connection is given back: listing is network only.

use std::sync::Arc;

use futures_util::future::join_all;
use uuid::Uuid;

use super::mcp::Source;
use super::run::{Caller, McpTarget, Tool};
use super::sealed::SealKey;
use super::store::SourceRow;
use crate::telemetry::Chain;

/// `tools` and the tools of `sources` (of `agent`): an MCP tool whose name the model would see
/// twice is left out.
pub async fn with_sources(
    mut tools: Vec<Tool>,
    agent: Uuid,
    sources: &[SourceRow],
    key: Option<&SealKey>,
    caller: Option<&Caller>,
) -> Vec<Tool> {
    if sources.is_empty() {
        return tools;
    }
    let Some(caller) = caller else {
        tracing::warn!(%agent, "no MCP client: the agent's MCP sources are left out");
        return tools;
    };
    let opened: Vec<Arc<Source>> = sources
        .iter()
        .filter_map(|row| {
            row.open(agent, key)
                .inspect_err(
                    |e| tracing::warn!(%agent, source = %row.name, error = %Chain(e), "an MCP source is left out"),
                )
                .ok()
                .map(Arc::new)
        })
        .collect();
    let listed = join_all(opened.iter().map(|source| async move {
        let listed = caller.mcp.tools(source).await;
        (source, listed)
    }))
    .await;
    for (source, listed) in listed {
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(%agent, source = %source.name, error = %Chain(&e), "an MCP source's tools could not be listed: left out of this run");
                continue;
            }
        };
        for tool in listed.iter() {
            if tools.iter().any(|t| t.spec.name == tool.exposed) {
                tracing::warn!(%agent, tool = %tool.exposed, "an MCP tool's name is taken: left out");
                continue;
            }
            tools.push(Tool {
                spec: tool.spec(),
                url: source.url.clone(),
                requires_approval: source.approval.requires(tool.hints),
                timeout: source.timeout,
                mcp: Some(McpTarget {
                    source: source.clone(),
                    tool: tool.name.clone(),
                    hints: tool.hints,
                }),
            });
        }
    }
    tools
}
