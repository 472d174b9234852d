//! Tools from MCP servers (issue 27): a client of the Model Context Protocol over its Streamable
//! HTTP transport, through the official Rust SDK (`rmcp`).
//!
//! - One session per source and instance, made at its first use (`initialize`, the version
//!   negotiated down from [`PROTOCOL_VERSION`] to what the server speaks), its `Mcp-Session-Id`
//!   reused while the instance is warm; a `404` (the server forgot the session) makes a new one
//!   and the request is sent again once (rmcp's session recovery); a session whose transport
//!   closed (the server went down) is dropped and made again at the next use.
//! - `tools/list`, every page, kept for `AGENT_MCP_TOOLS_TTL_SECS` and listed again sooner when
//!   the server sends `notifications/tools/list_changed`.
//! - `tools/call` bounded by the source's timeout (at most 30 s); the result mapped to what the
//!   model sees: the `structuredContent` when there is one, else the text of `content` (images,
//!   audio and resources described, not inlined), bounded in size; `isError` is an error.
//! - The outbound rules of tools ([`ToolPolicy`]) apply to the server's URL: checked before
//!   connecting, every resolved address checked in the client's resolver, no redirect followed,
//!   no proxy, answers capped at `AGENT_TOOL_MAX_RESPONSE_BYTES`.
//!
//! Nothing here touches the database: the caller reads the sources, gives its connection back,
//! and only then lists or calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock, Implementation,
    ProtocolVersion, ResourceContents,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use super::tool_call::{CheckedResolver, ToolPolicy, MAX_TIMEOUT};
use crate::model::ToolSpec;

/// The newest version this client offers in `initialize` (a server answers with the newest it
/// speaks; rmcp accepts 2024-11-05, 2025-03-26, 2025-06-18 and 2025-11-25).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::LATEST_WITH_INITIALIZE;
/// Separates a source's name from its tool's in the name the model sees.
pub const SEPARATOR: &str = "__";
/// Longest tool name both providers take.
const MAX_NAME: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When a person approves a call of a source's tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Never,
    Always,
    /// Unless the tool says `readOnlyHint: true` (MCP's default for a tool is destructive).
    Destructive,
}

impl Approval {
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "never" => Some(Self::Never),
            "always" => Some(Self::Always),
            "destructive" => Some(Self::Destructive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Always => "always",
            Self::Destructive => "destructive",
        }
    }

    /// Whether a call of a tool with these hints waits for a person.
    pub fn requires(self, hints: Hints) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::Destructive => !hints.read_only,
        }
    }
}

/// An MCP source of an agent, its auth header opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    /// `Authorization`'s value, or `Name: value` for another header.
    pub auth_header: Option<String>,
    pub allowed_tools: Option<Vec<String>>,
    pub approval: Approval,
    pub timeout: Duration,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("auth_header", &self.auth_header.as_ref().map(|_| "<set>"))
            .field("allowed_tools", &self.allowed_tools)
            .field("approval", &self.approval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Source {
    /// The header the auth header is sent as.
    fn header(&self) -> Result<Option<(HeaderName, HeaderValue)>, McpError> {
        let Some(raw) = self.auth_header.as_deref() else {
            return Ok(None);
        };
        let (name, value) = match raw.split_once(':') {
            Some((name, value))
                if !name.is_empty() && HeaderName::try_from(name.trim()).is_ok() && !name.contains(' ') =>
            {
                (name.trim(), value.trim())
            }
            _ => ("authorization", raw.trim()),
        };
        let name =
            HeaderName::try_from(name).map_err(|_| McpError::Refused("the auth header's name is not valid".into()))?;
        let mut value = HeaderValue::try_from(value)
            .map_err(|_| McpError::Refused("the auth header's value is not valid".into()))?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// What a tool says of itself (its annotations; MCP's defaults when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hints {
    pub read_only: bool,
    pub idempotent: bool,
}

impl Hints {
    /// A call that may be made again after a crash left its outcome unknown.
    pub fn repeatable(self) -> bool {
        self.read_only || self.idempotent
    }
}

/// A tool of a source, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// Its name on the server.
    pub name: String,
    /// The name the model sees (`<source>__<tool>`, valid for both providers).
    pub exposed: String,
    pub description: String,
    pub input_schema: Value,
    pub hints: Hints,
}

impl McpTool {
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.exposed.clone(),
            description: self.description.clone(),
            parameters: self.input_schema.clone(),
        }
    }
}

/// Why a list or a call gave nothing: what the model is told instead.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("the MCP server did not answer within {0} ms")]
    TimedOut(u128),
    #[error("the MCP server could not be reached or the session could not be made")]
    Connect(#[source] Box<rmcp::service::ClientInitializeError>),
    #[error("the MCP request failed")]
    Request(#[source] Box<rmcp::ServiceError>),
    /// The tool answered with `isError: true`: its text.
    #[error("the tool reported an error: {0}")]
    Tool(String),
}

impl McpError {
    /// The tool result the model sees: `{"error": "..."}`, with the causes.
    pub fn as_result(&self) -> Value {
        serde_json::json!({ "error": crate::telemetry::Chain(self).to_string() })
    }
}

/// Tells the session its tool list changed.
#[derive(Clone)]
struct Handler {
    stale: Arc<AtomicBool>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!("an MCP server's tools changed: listing them again at the next use");
        self.stale.store(true, Ordering::Release);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agent-backend", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(PROTOCOL_VERSION)
    }
}

struct Session {
    service: RunningService<RoleClient, Handler>,
    stale: Arc<AtomicBool>,
    tools: Mutex<Option<(Instant, Arc<Vec<McpTool>>)>>,
}

/// What a session is for: the same server, with the same credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    source: Uuid,
    url: String,
    auth: Option<String>,
}

/// A source's session, made under its own lock (`None`: none yet, or the last one failed).
type Slot = Arc<Mutex<Option<Arc<Session>>>>;

/// The MCP client of one instance: its HTTP client under the outbound rules, and its sessions.
pub struct Mcp {
    client: reqwest_mcp::Client,
    policy: Arc<ToolPolicy>,
    tools_ttl: Duration,
    sessions: Mutex<HashMap<SessionKey, Slot>>,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mcp")
            .field("policy", &self.policy)
            .field("tools_ttl", &self.tools_ttl)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for MCP could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client for MCP servers could not be built")]
pub struct McpClientError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl Mcp {
    pub fn new(policy: Arc<ToolPolicy>, tools_ttl: Duration) -> Result<Self, McpClientError> {
        let roots: rustls::RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| McpClientError(Box::new(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest_mcp::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest_mcp::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_loopback: policy.allow_loopback,
            }))
            .build()
            .map_err(|e| McpClientError(Box::new(e)))?;
        Ok(Self {
            client,
            policy,
            tools_ttl,
            sessions: Mutex::default(),
        })
    }

    fn key(source: &Source) -> SessionKey {
        SessionKey {
            source: source.id,
            url: source.url.clone(),
            auth: source.auth_header.clone(),
        }
    }

    /// The source's live session, made when there is none (or the last one closed). Two calls
    /// at once to a cold source make one session; a slow server delays only its own callers.
    async fn session(&self, source: &Source) -> Result<Arc<Session>, McpError> {
        let slot = self.sessions.lock().await.entry(Self::key(source)).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(session) = slot.as_ref() {
            if !session.service.is_closed() {
                return Ok(session.clone());
            }
        }
        *slot = None;
        let session = Arc::new(self.connect(source).await?);
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn connect(&self, source: &Source) -> Result<Session, McpError> {
        let url = self
            .policy
            .check_url(&source.url)
            .map_err(|e| McpError::Refused(e.to_string()))?;
        let mut headers = HashMap::new();
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .max_json_response_size(self.policy.max_response_bytes)
            .max_sse_event_size(self.policy.max_response_bytes)
            .reinit_on_expired_session(true)
            .max_concurrent_requests(8);
        match source.header()? {
            Some((name, value)) if name == http::header::AUTHORIZATION => {
                // rmcp sends `auth_header` as a bearer token: anything else goes as it is.
                match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                    Some(token) => config = config.auth_header(token.to_string()),
                    None => {
                        headers.insert(name, value);
                    }
                }
            }
            Some((name, value)) => {
                headers.insert(name, value);
            }
            None => {}
        }
        if !headers.is_empty() {
            config = config.custom_headers(headers);
        }
        let transport = StreamableHttpClientTransport::with_client(self.client.clone(), config);
        let stale = Arc::new(AtomicBool::new(false));
        let handler = Handler { stale: stale.clone() };
        let service = handler
            .serve(transport)
            .await
            .map_err(|e| McpError::Connect(Box::new(e)))?;
        if let Some(info) = service.peer_info() {
            tracing::info!(source = %source.name, version = %info.protocol_version, "MCP session made");
        }
        Ok(Session {
            service,
            stale,
            tools: Mutex::default(),
        })
    }

    async fn forget(&self, source: &Source) {
        let slot = self.sessions.lock().await.get(&Self::key(source)).cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// The source's tools the agent may use (its `allowed_tools`), listed at most every
    /// `tools_ttl` (sooner after `notifications/tools/list_changed`), within its timeout.
    #[tracing::instrument(skip_all, fields(source = %source.name))]
    pub async fn tools(&self, source: &Source) -> Result<Arc<Vec<McpTool>>, McpError> {
        let timeout = source.timeout.min(MAX_TIMEOUT);
        let listed = tokio::time::timeout(timeout, self.list(source)).await;
        match listed {
            Ok(Ok(tools)) => Ok(tools),
            Ok(Err(e)) => {
                self.forget(source).await;
                Err(e)
            }
            Err(_) => {
                self.forget(source).await;
                Err(McpError::TimedOut(timeout.as_millis()))
            }
        }
    }

    async fn list(&self, source: &Source) -> Result<Arc<Vec<McpTool>>, McpError> {
        let session = self.session(source).await?;
        let mut cached = session.tools.lock().await;
        let changed = session.stale.swap(false, Ordering::AcqRel);
        if let Some((at, tools)) = cached.as_ref() {
            if !changed && at.elapsed() < self.tools_ttl {
                return Ok(tools.clone());
            }
        }
        let listed = session
            .service
            .list_all_tools()
            .await
            .map_err(|e| McpError::Request(Box::new(e)))?;
        let mut taken = Vec::new();
        let tools: Vec<McpTool> = listed
            .into_iter()
            .filter(|t| {
                source
                    .allowed_tools
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|a| a == t.name.as_ref()))
            })
            .map(|t| {
                let annotations = t.annotations.as_ref();
                let exposed = exposed_name(&source.name, &t.name, &taken);
                taken.push(exposed.clone());
                McpTool {
                    name: t.name.to_string(),
                    exposed,
                    description: t
                        .description
                        .as_deref()
                        .or(t.title.as_deref())
                        .unwrap_or(t.name.as_ref())
                        .chars()
                        .take(1024)
                        .collect(),
                    input_schema: Value::Object((*t.input_schema).clone()),
                    hints: Hints {
                        read_only: annotations.and_then(|a| a.read_only_hint).unwrap_or(false),
                        idempotent: annotations.and_then(|a| a.idempotent_hint).unwrap_or(false),
                    },
                }
            })
            .collect();
        let tools = Arc::new(tools);
        *cached = Some((Instant::now(), tools.clone()));
        Ok(tools)
    }

    /// Calls `tool` of `source` within `timeout` (at most 30 s): the result the model sees, or why
    /// there is none. Never retried here (the run's durability decides whether a call is made
    /// again); a session that failed is dropped, so the next call makes a new one.
    #[tracing::instrument(skip_all, fields(source = %source.name, tool))]
    pub async fn call(
        &self,
        source: &Source,
        tool: &str,
        arguments: &Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        let timeout = timeout.min(MAX_TIMEOUT);
        let Value::Object(arguments) = arguments else {
            return Err(McpError::Refused("the arguments are not a JSON object".into()));
        };
        let made = async {
            let session = self.session(source).await?;
            session
                .service
                .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments.clone()))
                .await
                .map_err(|e| McpError::Request(Box::new(e)))
        };
        let result = match tokio::time::timeout(timeout, made).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                if !matches!(&e, McpError::Request(inner) if matches!(**inner, rmcp::ServiceError::McpError(_))) {
                    self.forget(source).await;
                }
                return Err(e);
            }
            Err(_) => return Err(McpError::TimedOut(timeout.as_millis())),
        };
        mapped(result, self.policy.max_response_bytes)
    }
}

/// The name the model sees for `tool` of `source`: `<source>__<tool>`, characters neither
/// provider takes replaced by `_`, cut to 64 characters (with a short hash of the full name when
/// cut), and made unique among `taken`.
pub fn exposed_name(source: &str, tool: &str, taken: &[String]) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{source}{SEPARATOR}{clean}");
    let digest = |salt: u32| {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(format!("{source}/{tool}/{salt}").as_bytes());
        hex::encode(&hash[..4])
    };
    let mut name = if full.len() <= MAX_NAME && clean == tool {
        full
    } else {
        let keep = MAX_NAME - 9;
        format!("{}_{}", &full[..full.len().min(keep)], digest(0))
    };
    let mut salt = 1;
    while taken.contains(&name) {
        let keep = MAX_NAME - 9;
        name = format!("{}_{}", &name[..name.len().min(keep)], digest(salt));
        salt += 1;
    }
    name
}

/// A call's result as the model sees it: the structured content when there is one, else the
/// text of the content (other kinds described), at most `cap` bytes of it; `isError` an error.
fn mapped(result: CallToolResult, cap: usize) -> Result<Value, McpError> {
    let text = result.content.iter().map(describe).collect::<Vec<_>>().join("\n");
    let text = bounded(text, cap);
    if result.is_error == Some(true) {
        return Err(McpError::Tool(bounded(text, 2000)));
    }
    match result.structured_content {
        Some(structured) if structured.to_string().len() <= cap => Ok(structured),
        Some(_) => Ok(Value::String(format!(
            "{text}\n[structured content larger than {cap} bytes left out]"
        ))),
        None => Ok(Value::String(text)),
    }
}

fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!(
            "[image {}, {} bytes, not shown]",
            image.mime_type,
            image.data.len() / 4 * 3
        ),
        ContentBlock::Audio(audio) => format!(
            "[audio {}, {} bytes, not shown]",
            audio.mime_type,
            audio.data.len() / 4 * 3
        ),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => format!("[resource {uri}]\n{text}"),
            ResourceContents::BlobResourceContents {
                uri, mime_type, blob, ..
            } => format!(
                "[resource {uri}, {}, {} bytes, not shown]",
                mime_type.as_deref().unwrap_or("binary"),
                blob.len() / 4 * 3
            ),
            _ => "[a resource of a kind this client does not know, not shown]".into(),
        },
        ContentBlock::ResourceLink(link) => format!("[resource link {} ({})]", link.uri, link.name),
        _ => "[content of a kind this client does not know, not shown]".into(),
    }
}

fn bounded(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut at = cap.saturating_sub(40);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("\n[cut: the result is larger than allowed]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_are_namespaced_valid_for_both_providers_and_unique() {
        assert_eq!(exposed_name("github", "search_issues", &[]), "github__search_issues");
        assert_eq!(exposed_name("gh", "get-sum", &[]), "gh__get-sum");
        let dotted = exposed_name("fs", "files.read/all", &[]);
        assert!(dotted.starts_with("fs__files_read_all_"), "{dotted}");
        let long = exposed_name("src", &"x".repeat(100), &[]);
        assert_eq!(long.len(), 64);
        let valid = |n: &str| n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        assert!(valid(&dotted) && valid(&long));
        let first = exposed_name("fs", "a.b", &[]);
        let second = exposed_name("fs", "a_b", &[]);
        assert_ne!(first, second);
        let again = exposed_name("fs", "a_b", std::slice::from_ref(&second));
        assert_ne!(again, second);
        assert!(valid(&again));
    }

    #[test]
    fn the_destructive_policy_pauses_every_tool_but_the_read_only_ones() {
        let read_only = Hints {
            read_only: true,
            idempotent: false,
        };
        let idempotent = Hints {
            read_only: false,
            idempotent: true,
        };
        assert!(!Approval::Destructive.requires(read_only));
        assert!(Approval::Destructive.requires(idempotent));
        assert!(Approval::Destructive.requires(Hints::default()));
        assert!(Approval::Always.requires(read_only));
        assert!(!Approval::Never.requires(Hints::default()));
        assert!(read_only.repeatable() && idempotent.repeatable() && !Hints::default().repeatable());
    }

    fn result(value: Value) -> CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn results_give_structured_content_or_text_and_is_error_is_an_error() {
        let structured = result(serde_json::json!({
            "content": [{"type": "text", "text": "{\"order\":1}"}],
            "structuredContent": {"order": 1}
        }));
        assert_eq!(mapped(structured, 1024).unwrap(), serde_json::json!({"order": 1}));
        let text = result(serde_json::json!({
            "content": [{"type": "text", "text": "hello"},
                        {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                        {"type": "resource", "resource": {"uri": "file:///a", "text": "inside"}}]
        }));
        let Value::String(seen) = mapped(text, 1024).unwrap() else {
            panic!("text")
        };
        assert!(seen.contains("hello") && seen.contains("[image image/png, 3 bytes") && seen.contains("inside"));
        let failed =
            result(serde_json::json!({"content": [{"type": "text", "text": "no such order"}], "isError": true}));
        let error = mapped(failed, 1024).unwrap_err();
        assert_eq!(
            error.as_result(),
            serde_json::json!({"error": "the tool reported an error: no such order"})
        );
        let big = result(serde_json::json!({"content": [{"type": "text", "text": "é".repeat(1000)}]}));
        let Value::String(cut) = mapped(big, 101).unwrap() else {
            panic!("text")
        };
        assert!(cut.len() <= 101 + 50 && cut.ends_with("larger than allowed]"));
    }

    #[test]
    fn an_auth_header_is_authorization_unless_it_names_another_header() {
        let source = |h: &str| Source {
            id: Uuid::nil(),
            name: "s".into(),
            url: "https://mcp.example.com/mcp".into(),
            auth_header: Some(h.into()),
            allowed_tools: None,
            approval: Approval::Destructive,
            timeout: Duration::from_secs(1),
        };
        let (name, value) = source("Bearer abc").header().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer abc")
        );
        let (name, value) = source("X-Api-Key: k1").header().unwrap().unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-api-key", "k1"));
        assert!(!format!("{:?}", source("Bearer abc")).contains("abc"));
    }
}
