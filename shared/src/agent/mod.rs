//! Agents that act (issue 22), the parts every function that runs an agent shares. So far:
//! - [`address`]: which addresses a tool may be called at;
//! - [`tool_call`]: one tool call over HTTPS, its outbound rules (scheme, host allow-list,
//!   addresses after DNS resolution, no redirects, time and size bounds), signature and
//!   idempotency key; any refusal or failure becomes the result the model sees;
//! - [`mcp`]: tools from MCP servers (Streamable HTTP, through `rmcp`), sessions and lists
//!   kept per instance, results mapped to what the model sees;
//! - [`run`]: the loop of a run (model, tool calls, results, model...) with its steps stored
//!   as they complete, its limits and its pause for a person's approval;
//! - [`store`]: the durable side of a run (tools, runs, steps, decisions), one statement each;
//! - [`sealed`]: an MCP source's auth header sealed at rest (AES-256-GCM);
//! - [`toolbox`]: an agent's HTTP tools and its MCP sources' tools, for one run;
//! - [`settings`]: the settings of those rules (`AGENT_TOOL_*`), read into a [`ToolPolicy`].

pub mod address;
pub mod mcp;
pub mod run;
pub mod sealed;
pub mod settings;
pub mod store;
pub mod tool_call;
pub mod toolbox;

pub use tool_call::ToolPolicy;
