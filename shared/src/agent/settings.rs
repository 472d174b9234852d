//! The outbound rules' settings, shared by every function that stores or calls a tool (the API
//! checks a tool's URL when it is saved; the runs check it again when they call it), and the
//! bounds of a run ([`RunSettings`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{ConfigError, Env, Setting, Unit};

use super::mcp::Mcp;
use super::run::Caller;
use super::sealed::SealKey;
use super::tool_call::ToolPolicy;

pub const AGENT_TOOL_ALLOW_LOOPBACK: Setting = Setting::flag(
    "AGENT_TOOL_ALLOW_LOOPBACK",
    false,
    "allow tool URLs over `http` to a loopback host (development and tests only; never in AWS)",
);
pub const AGENT_TOOL_ALLOWED_HOSTS: Setting = Setting::text(
    "AGENT_TOOL_ALLOWED_HOSTS",
    None,
    "comma-separated hosts a tool may be at (`api.example.com`, or `*.example.com` for its subdomains); unset: any host whose addresses are public",
);
pub const AGENT_TOOL_MAX_RESPONSE_BYTES: Setting = Setting::number(
    "AGENT_TOOL_MAX_RESPONSE_BYTES",
    1024,
    16 * 1024 * 1024,
    256 * 1024,
    Unit::Bytes,
    "largest answer read from a tool (the call fails above)",
);

pub const AGENT_TOOL_SIGNING_SECRET: Setting = Setting::secret(
    "AGENT_TOOL_SIGNING_SECRET",
    "the HMAC-SHA256 key of `X-Agent-Signature` on every tool call (or `AGENT_TOOL_SIGNING_SECRET_SECRET_ARN`); unset: tool calls are not made, the model is told so",
);
pub const AGENT_MCP_ENCRYPTION_KEY: Setting = Setting::secret(
    "AGENT_MCP_ENCRYPTION_KEY",
    "32 bytes as 64 hex digits: seals MCP sources' auth headers at rest (AES-256-GCM; or `AGENT_MCP_ENCRYPTION_KEY_SECRET_ARN`); unset: a source with an auth header cannot be saved nor used",
);
pub const AGENT_MCP_TOOLS_TTL_SECS: Setting = Setting::number(
    "AGENT_MCP_TOOLS_TTL_SECS",
    0,
    86_400,
    300,
    Unit::Plain,
    "how long an instance keeps an MCP server's tool list before listing it again (sooner when the server says its tools changed)",
);
pub const AGENT_MAX_STEPS: Setting = Setting::number(
    "AGENT_MAX_STEPS",
    1,
    50,
    8,
    Unit::Plain,
    "model calls in one run, across its attempts; a run still calling tools then ends `step_limit`",
);
pub const AGENT_TOOL_MAX_PARALLEL: Setting = Setting::number(
    "AGENT_TOOL_MAX_PARALLEL",
    1,
    32,
    4,
    Unit::Plain,
    "tool calls of one step made at once",
);
pub const AGENT_APPROVAL_TTL_HOURS: Setting = Setting::number(
    "AGENT_APPROVAL_TTL_HOURS",
    1,
    720,
    24,
    Unit::Plain,
    "how long a run waits for a person to approve or reject a call before it ends `expired`",
);

pub const SETTINGS: &[&Setting] = &[
    &AGENT_TOOL_ALLOW_LOOPBACK,
    &AGENT_TOOL_ALLOWED_HOSTS,
    &AGENT_TOOL_MAX_RESPONSE_BYTES,
    &AGENT_TOOL_SIGNING_SECRET,
    &AGENT_MCP_ENCRYPTION_KEY,
    &AGENT_MCP_TOOLS_TTL_SECS,
    &AGENT_MAX_STEPS,
    &AGENT_TOOL_MAX_PARALLEL,
    &AGENT_APPROVAL_TTL_HOURS,
];

/// How the functions that run agents run them: the outbound rules, the signing secret (`None`:
/// unset, no tool is called), the step limit, calls at once and how long a pause may last.
#[derive(Clone)]
pub struct RunSettings {
    pub policy: ToolPolicy,
    pub secret: Option<Arc<[u8]>>,
    pub max_steps: u32,
    pub parallel_calls: usize,
    pub approval_ttl: Duration,
    /// Opens MCP sources' auth headers (`None`: AGENT_MCP_ENCRYPTION_KEY unset).
    pub seal_key: Option<Arc<SealKey>>,
    pub mcp_tools_ttl: Duration,
    /// The tool-call client, built at its first use and shared by every clone.
    caller: Arc<OnceLock<Option<Caller>>>,
}

impl std::fmt::Debug for RunSettings {
    /// The secret shown only as set or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings")
            .field("policy", &self.policy)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("max_steps", &self.max_steps)
            .field("parallel_calls", &self.parallel_calls)
            .field("approval_ttl", &self.approval_ttl)
            .field("seal_key", &self.seal_key.as_ref().map(|_| "<set>"))
            .field("mcp_tools_ttl", &self.mcp_tools_ttl)
            .finish()
    }
}

impl RunSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secret = env.text(&AGENT_TOOL_SIGNING_SECRET).filter(|s| !s.is_empty());
        if secret.is_none() {
            tracing::warn!("AGENT_TOOL_SIGNING_SECRET is unset: agents' tool calls will not be made");
        }
        let seal_key = env
            .text(&AGENT_MCP_ENCRYPTION_KEY)
            .filter(|k| !k.is_empty())
            .map(|k| SealKey::from_hex(&k).map(Arc::new))
            .transpose()
            .map_err(|e| crate::config::invalid(AGENT_MCP_ENCRYPTION_KEY.name, e.to_string()))?;
        Ok(Self {
            policy: ToolPolicy::from_env(env)?,
            seal_key,
            mcp_tools_ttl: Duration::from_secs(env.number(&AGENT_MCP_TOOLS_TTL_SECS)?),
            secret: secret.map(|s| Arc::from(s.into_bytes())),
            max_steps: u32::try_from(env.number(&AGENT_MAX_STEPS)?).unwrap_or(u32::MAX),
            parallel_calls: usize::try_from(env.number(&AGENT_TOOL_MAX_PARALLEL)?).unwrap_or(usize::MAX),
            approval_ttl: Duration::from_secs(env.number(&AGENT_APPROVAL_TTL_HOURS)? * 3600),
            caller: Arc::default(),
        })
    }

    /// How tools are called under these settings, built once (`None`: no client could be
    /// built, which is logged). Without a signing secret, HTTP tools are not called (the model
    /// is told so); MCP tools are. Settings changed after the first call keep the clients built
    /// from them then.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller
            .get_or_init(|| {
                let policy = Arc::new(self.policy.clone());
                let client = super::tool_call::client(&self.policy)
                    .inspect_err(|e| tracing::error!(error = %crate::telemetry::Chain(e), "no client for tool calls"))
                    .ok()?;
                let mcp = Mcp::new(policy.clone(), self.mcp_tools_ttl)
                    .inspect_err(|e| tracing::error!(error = %crate::telemetry::Chain(e), "no client for MCP servers"))
                    .ok()?;
                Some(Caller {
                    client,
                    policy,
                    secret: self.secret.clone(),
                    mcp: Arc::new(mcp),
                })
            })
            .as_ref()
    }
}

impl ToolPolicy {
    /// The outbound rules the environment sets.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let allowed_hosts = env
            .text(&AGENT_TOOL_ALLOWED_HOSTS)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            allow_loopback: env.flag(&AGENT_TOOL_ALLOW_LOOPBACK)?,
            allowed_hosts,
            max_response_bytes: usize::try_from(env.number(&AGENT_TOOL_MAX_RESPONSE_BYTES)?).unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_closed_by_default_and_reads_its_list() {
        let closed = ToolPolicy::from_env(&Env::default()).unwrap();
        assert!(!closed.allow_loopback);
        assert!(closed.allowed_hosts.is_empty());
        assert_eq!(closed.max_response_bytes, 256 * 1024);
        let open = ToolPolicy::from_env(
            &Env::default()
                .with("AGENT_TOOL_ALLOW_LOOPBACK", "true")
                .with("AGENT_TOOL_ALLOWED_HOSTS", " api.example.com, *.tools.example.com ,,"),
        )
        .unwrap();
        assert!(open.allow_loopback);
        assert_eq!(open.allowed_hosts, ["api.example.com", "*.tools.example.com"]);
        assert!(ToolPolicy::from_env(&Env::default().with("AGENT_TOOL_ALLOW_LOOPBACK", "maybe")).is_err());
    }
}
