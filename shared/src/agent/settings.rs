//! The outbound rules' settings, shared by every function that stores or calls a tool (the API
//! checks a tool's URL when it is saved; the runs check it again when they call it).

use crate::config::{ConfigError, Env, Setting, Unit};

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

pub const SETTINGS: &[&Setting] = &[
    &AGENT_TOOL_ALLOW_LOOPBACK,
    &AGENT_TOOL_ALLOWED_HOSTS,
    &AGENT_TOOL_MAX_RESPONSE_BYTES,
];

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
