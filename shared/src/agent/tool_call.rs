//! One tool call: an HTTPS `POST` of `{"toolCallId","name","arguments","agentId","userId","runId"}`
//! to the tool's URL, with `Idempotency-Key: <run>:<step>:<call>` and
//! `X-Agent-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! The outbound rules, checked before anything is sent:
//! - `https` only; `http` only to a loopback host when loopback is allowed (development, tests);
//! - the host on the allow-list when there is one (`host` exactly, or `*.suffix`);
//! - every address the host resolves to allowed ([`AddressKind::allowed`]), checked in the
//!   client's own resolver so the address connected to is the address checked (no second lookup
//!   that DNS rebinding could answer differently); an IP literal is checked as written;
//! - no proxy from the environment, no redirect followed (a 3xx is a refusal), the answer
//!   bounded in time (the tool's timeout, at most [`MAX_TIMEOUT`]) and in size.
//!
//! A refusal or a failure is a [`ToolError`], whose [`ToolError::as_result`] is what the model
//! is given (`{"error": "..."}`): a tool never crashes a run.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use url::{Host, Url};
use uuid::Uuid;

use super::address::AddressKind;
use crate::outbound::{read_capped, ReadError};

/// The longest a tool may take, whatever its own timeout says.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take (within the call's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The outbound rules of one instance (from `AGENT_TOOL_ALLOW_LOOPBACK`,
/// `AGENT_TOOL_ALLOWED_HOSTS`, `AGENT_TOOL_MAX_RESPONSE_BYTES`).
#[derive(Debug, Clone)]
pub struct ToolPolicy {
    pub allow_loopback: bool,
    /// Hosts a tool may be at (`example.com`, or `*.example.com` for its subdomains); empty: any
    /// host whose addresses are allowed.
    pub allowed_hosts: Vec<String>,
    pub max_response_bytes: usize,
}

impl ToolPolicy {
    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|entry| {
                let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
                match entry.strip_prefix("*.") {
                    Some(suffix) => host.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.')),
                    None => host == entry,
                }
            })
    }

    /// The URL a tool may be called at, or why not (before any lookup: scheme, host, list,
    /// literal addresses).
    pub fn check_url(&self, raw: &str) -> Result<Url, ToolError> {
        let url = Url::parse(raw).map_err(|e| ToolError::Refused(format!("the tool's url is not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ToolError::Refused("the tool's url carries credentials".into()));
        }
        let host = url
            .host()
            .ok_or_else(|| ToolError::Refused("the tool's url has no host".into()))?;
        let literal = match &host {
            Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
            Host::Domain(_) => None,
        };
        let loopback_name = matches!(&host, Host::Domain(d) if d.eq_ignore_ascii_case("localhost"));
        let loopback = loopback_name || literal.is_some_and(|ip| AddressKind::of(ip) == AddressKind::Loopback);
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_loopback => {}
            "http" => {
                return Err(ToolError::Refused(
                    "the tool's url is http: only https is allowed (http only to loopback in development)".into(),
                ))
            }
            other => {
                return Err(ToolError::Refused(format!(
                    "the tool's url scheme {other:?} is not https"
                )))
            }
        }
        let name = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if !self.host_listed(name) {
            return Err(ToolError::Refused(format!(
                "the host {name} is not on the allowed list (AGENT_TOOL_ALLOWED_HOSTS)"
            )));
        }
        if let Some(ip) = literal {
            check_address(ip, self.allow_loopback)?;
        }
        if loopback_name && !self.allow_loopback {
            return Err(ToolError::Refused("the tool's host is a loopback address".into()));
        }
        Ok(url)
    }
}

fn check_address(ip: IpAddr, allow_loopback: bool) -> Result<(), ToolError> {
    let kind = AddressKind::of(ip);
    if kind.allowed(allow_loopback) {
        Ok(())
    } else {
        Err(ToolError::Refused(format!(
            "the tool's host is {} ({ip})",
            kind.describe()
        )))
    }
}

/// The client's resolver: the system's lookup, then every address checked; one refused address
/// refuses the host (a name that mixes public and private answers is not trusted). The tool
/// calls' client and the MCP client (on another reqwest) both use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedResolver {
    pub(crate) allow_loopback: bool,
}

impl CheckedResolver {
    async fn lookup(self, host: String) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map_err(|e| format!("{host} could not be resolved: {e}"))?
            .collect();
        if found.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        for addr in &found {
            check_address(addr.ip(), self.allow_loopback).map_err(|e| e.to_string())?;
        }
        Ok(found)
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = *self;
        Box::pin(async move {
            let found = this.lookup(name.as_str().to_string()).await?;
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

impl reqwest_mcp::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest_mcp::dns::Name) -> reqwest_mcp::dns::Resolving {
        let this = *self;
        Box::pin(async move {
            let found = this.lookup(name.as_str().to_string()).await?;
            let addrs: reqwest_mcp::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The client for tool calls (one per instance): the checked resolver, no redirects, no proxy.
pub fn client(policy: &ToolPolicy) -> Result<reqwest::Client, crate::outbound::ClientError> {
    crate::outbound::build("tool calls", |builder| {
        builder
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(MAX_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_loopback: policy.allow_loopback,
            }))
    })
}

/// What a tool is sent.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRequest<'a> {
    pub tool_call_id: &'a str,
    pub name: &'a str,
    pub arguments: &'a Value,
    pub agent_id: Uuid,
    /// The run's user (`None`: the operator's task).
    pub user_id: Option<Uuid>,
    pub run_id: Uuid,
}

/// Where and how long: the tool's URL and timeout.
#[derive(Debug, Clone)]
pub struct ToolEndpoint<'a> {
    pub url: &'a str,
    pub timeout: Duration,
}

/// The key a tool deduplicates by: the same call of the same step of the same run, whoever
/// (or whichever attempt) sends it.
pub fn idempotency_key(run: Uuid, step: u32, call: &str) -> String {
    format!("{run}:{step}:{call}")
}

/// `sha256=<hex>` of `body` under `secret`: what `X-Agent-Signature` carries.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a tool call gave no result: what the model is told instead.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("the tool did not answer within {0} ms")]
    TimedOut(u128),
    #[error("the tool's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the tool answered {status} with a redirect, which is not followed")]
    Redirect { status: u16 },
    #[error("the tool answered HTTP {status}")]
    Status { status: u16, body: String },
    #[error("the tool's answer is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the tool could not be reached")]
    Transport(#[source] reqwest::Error),
}

impl ToolError {
    /// The tool result the model sees: `{"error": "..."}`, with the causes.
    pub fn as_result(&self) -> Value {
        serde_json::json!({ "error": crate::telemetry::Chain(self).to_string() })
    }
}

/// Calls the tool: its answer (JSON) or why there is none. Never panics, never retries (the
/// run's durability decides whether a call is made again, with the same key).
#[tracing::instrument(skip_all, fields(tool = request.name, call = request.tool_call_id))]
pub async fn call(
    client: &reqwest::Client,
    policy: &ToolPolicy,
    secret: &[u8],
    endpoint: &ToolEndpoint<'_>,
    request: &ToolRequest<'_>,
    key: &str,
) -> Result<Value, ToolError> {
    let url = policy.check_url(endpoint.url)?;
    let timeout = endpoint.timeout.min(MAX_TIMEOUT);
    let body = serde_json::to_vec(request).map_err(ToolError::NotJson)?;
    let sent = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-agent-signature", signature(secret, &body))
        .body(body)
        .send();
    let read = async {
        let mut response = sent.await.map_err(|e| transport(e, timeout))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ToolError::Redirect {
                status: status.as_u16(),
            });
        }
        let bytes = read_capped(&mut response, policy.max_response_bytes)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(cap) => ToolError::TooLarge(cap),
                ReadError::Transport(e) => transport(e, timeout),
            })?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
            return Err(ToolError::Status {
                status: status.as_u16(),
                body,
            });
        }
        serde_json::from_slice(&bytes).map_err(ToolError::NotJson)
    };
    // The body's read is bounded too: a tool that sends its headers and then trickles.
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ToolError::TimedOut(timeout.as_millis())))
}

fn transport(e: reqwest::Error, timeout: Duration) -> ToolError {
    if e.is_timeout() {
        ToolError::TimedOut(timeout.as_millis())
    } else {
        ToolError::Transport(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_loopback: bool, hosts: &[&str]) -> ToolPolicy {
        ToolPolicy {
            allow_loopback,
            allowed_hosts: hosts.iter().map(ToString::to_string).collect(),
            max_response_bytes: 1024,
        }
    }

    fn refused(policy: &ToolPolicy, url: &str) -> String {
        match policy.check_url(url) {
            Err(ToolError::Refused(why)) => why,
            other => panic!("{url} was not refused: {other:?}"),
        }
    }

    #[test]
    fn https_urls_on_public_hosts_pass_and_http_only_to_loopback_in_development() {
        let open = policy(false, &[]);
        assert!(open.check_url("https://tools.example.com/refund").is_ok());
        assert!(refused(&open, "http://tools.example.com/refund").contains("only https"));
        assert!(refused(&open, "http://127.0.0.1:8080/t").contains("only https"));
        assert!(refused(&open, "ftp://tools.example.com/").contains("not https"));
        let dev = policy(true, &[]);
        assert!(dev.check_url("http://127.0.0.1:8080/t").is_ok());
        assert!(dev.check_url("http://localhost:8080/t").is_ok());
        assert!(dev.check_url("http://[::1]:8080/t").is_ok());
        assert!(refused(&dev, "http://tools.example.com/").contains("only https"));
    }

    #[test]
    fn literal_private_link_local_and_metadata_addresses_are_refused_even_in_development() {
        let dev = policy(true, &[]);
        for (url, says) in [
            ("https://169.254.169.254/latest/meta-data/", "metadata"),
            ("https://[fd00:ec2::254]/", "metadata"),
            ("https://10.0.0.5/", "private"),
            ("https://192.168.1.10/", "private"),
            ("https://169.254.10.10/", "link-local"),
            ("https://[::ffff:169.254.169.254]/", "metadata"),
            ("https://0.0.0.0/", "reserved"),
        ] {
            assert!(refused(&dev, url).contains(says), "{url}");
        }
        let prod = policy(false, &[]);
        assert!(refused(&prod, "https://127.0.0.1/").contains("loopback"));
        assert!(refused(&prod, "https://localhost/").contains("loopback"));
    }

    #[test]
    fn the_allow_list_takes_exact_hosts_and_subdomain_patterns() {
        let listed = policy(false, &["api.example.com", "*.tools.example.org"]);
        assert!(listed.check_url("https://api.example.com/x").is_ok());
        assert!(listed.check_url("https://API.example.com./x").is_ok());
        assert!(listed.check_url("https://a.tools.example.org/x").is_ok());
        assert!(refused(&listed, "https://tools.example.org/x").contains("allowed list"));
        assert!(refused(&listed, "https://evil-tools.example.org/x").contains("allowed list"));
        assert!(refused(&listed, "https://api.example.com.evil.net/x").contains("allowed list"));
        assert!(refused(&listed, "https://example.com/x").contains("allowed list"));
    }

    #[test]
    fn malformed_urls_and_urls_with_credentials_are_refused() {
        let open = policy(false, &[]);
        assert!(refused(&open, "not a url").contains("not a URL"));
        assert!(refused(&open, "https://user:pw@tools.example.com/").contains("credentials"));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused_by_the_clients_resolver() {
        // `localhost` is in every hosts file; the name check before the lookup is bypassed here.
        let name = || "localhost".parse::<Name>().expect("a name");
        let refused = CheckedResolver { allow_loopback: false }.resolve(name()).await;
        let error = refused.err().expect("refused").to_string();
        assert!(error.contains("loopback"), "{error}");
        let allowed = CheckedResolver { allow_loopback: true }.resolve(name()).await;
        assert!(allowed.expect("resolved").all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_idempotency_key_names_run_step_and_call() {
        let run = Uuid::nil();
        assert_eq!(
            idempotency_key(run, 2, "call_1"),
            "00000000-0000-0000-0000-000000000000:2:call_1"
        );
    }

    #[test]
    fn an_error_becomes_a_result_the_model_can_read() {
        let result = ToolError::TimedOut(1500).as_result();
        assert_eq!(
            result,
            serde_json::json!({"error": "the tool did not answer within 1500 ms"})
        );
    }
}
