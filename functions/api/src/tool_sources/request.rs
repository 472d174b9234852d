//! What a `PUT /api/agents/{id}/tool-sources` body says: [`SourcesBody`], each field its own type
//! (a malformed one is a 422 naming it by its path, `sources[2].authHeader`), then checked as a
//! list and against the outbound rules into [`NewSource`]s, an auth header sealed for its agent
//! as soon as it is read (its text goes no further than [`parse`]).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use shared::agent::sealed::SealKey;
use shared::agent::tool_call::ToolError;
use shared::agent::ToolPolicy;
use shared::http::{parse_json, ApiError, WholeNumber};

/// Sources one agent may have.
pub const MAX_SOURCES: usize = 16;
/// Longest source name: `[A-Za-z][A-Za-z0-9-]{0,23}`.
pub const MAX_NAME_CHARS: usize = 24;
/// Longest url.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest auth header, as given.
pub const MAX_AUTH_HEADER_CHARS: usize = 4096;
/// Tools a source's `allowedTools` may list, and the longest of their names.
pub const MAX_ALLOWED_TOOLS: usize = 256;
pub const MAX_TOOL_NAME_CHARS: usize = 128;
/// A source's timeout: bounds and default, in milliseconds.
pub const MAX_TIMEOUT_MS: i64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: i32 = 10_000;

/// Headers an auth header may not set: the MCP client's own (transport, session, framing).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "accept",
    "accept-encoding",
    "expect",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "proxy-authorization",
    "proxy-connection",
];

/// The body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesBody {
    sources: Vec<SourceBody>,
}

/// One source as sent (a `null` optional field is an absent one, except `authHeader`: absent
/// keeps the stored header, `null` removes it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceBody {
    name: SourceName,
    url: SourceUrl,
    /// Checked, then not needed: `mcp` is the only kind.
    #[serde(rename = "kind")]
    _kind: Option<Kind>,
    #[serde(default, deserialize_with = "given")]
    auth_header: Option<Option<AuthHeader>>,
    allowed_tools: Option<AllowedTools>,
    approval: Option<Approval>,
    timeout_ms: Option<WholeNumber>,
}

/// A field that is present: `Some(None)` when it is `null`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `name`: a letter, then up to 23 letters, digits or `-` (no `_`: the first `__` of a namespaced
/// tool's name, `<source>__<tool>`, ends the source's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceName(pub String);

/// `url`: a string of at most [`MAX_URL_CHARS`]; the outbound rules are checked after parsing
/// ([`parse`]), with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl(pub String);

/// `kind`: only `"mcp"` (a Model Context Protocol server over Streamable HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind;

/// `authHeader`: `Name: value`, or just the value of `Authorization`; kept as `Name: value`.
/// Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeader(String);

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthHeader(<hidden>)")
    }
}

impl AuthHeader {
    /// The header as `Name: value` (what is sealed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `allowedTools`: the source's tools the agent may use, each named once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedTools(pub Vec<String>);

/// One name of `allowedTools`: 1 to 128 of `A-Z a-z 0-9 _ . - /`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct McpToolName(String);

/// `approval`: when a person approves a call to one of the source's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Approval {
    /// Never asked.
    Never,
    /// Every call.
    Always,
    /// Every call to a tool its server does not say is read-only (`readOnlyHint`).
    #[default]
    Destructive,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Never => "never",
            Approval::Always => "always",
            Approval::Destructive => "destructive",
        }
    }
}

/// The name rule, said as a field's error (`must …`).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
    if first_is_letter && rest_ok && name.len() <= MAX_NAME_CHARS {
        Ok(())
    } else {
        Err(format!(
            "must start with a letter and have at most {MAX_NAME_CHARS} letters, digits or `-`"
        ))
    }
}

/// The header rule: printable ASCII, at most [`MAX_AUTH_HEADER_CHARS`]; `Name: value` when the
/// text before its first `:` is one word (the name then a valid header name, not one the client
/// sets itself), else the value of `Authorization`. The header as `Name: value`, or why not.
pub fn check_auth_header(text: &str) -> Result<String, String> {
    if text.chars().count() > MAX_AUTH_HEADER_CHARS {
        return Err(format!("must be at most {MAX_AUTH_HEADER_CHARS} characters"));
    }
    if !text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err("must be printable ASCII (no tab, line break or other control character)".into());
    }
    let text = text.trim();
    let (name, value) = match text.split_once(':') {
        Some((name, value)) if !name.contains(' ') => (name, value.trim()),
        _ => ("Authorization", text),
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err("must be `Name: value` with a valid header name, or the value of `Authorization`".into());
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        let shown: String = name.chars().take(40).collect();
        return Err(format!("must not set `{shown}` (the MCP client sets it)"));
    }
    if value.is_empty() {
        return Err("must have a value".into());
    }
    Ok(format!("{name}: {value}"))
}

impl<'de> Deserialize<'de> for SourceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        check_name(&name).map_err(de::Error::custom)?;
        Ok(SourceName(name))
    }
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        let url = url.trim();
        if url.is_empty() || url.chars().count() > MAX_URL_CHARS {
            return Err(de::Error::custom(format!("must be 1 to {MAX_URL_CHARS} characters")));
        }
        Ok(SourceUrl(url.to_string()))
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""mcp""#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Kind, E> {
                if s == "mcp" {
                    Ok(Kind)
                } else {
                    Err(E::custom(r#"must be "mcp""#))
                }
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for AuthHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AuthHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AuthHeader, E> {
                check_auth_header(s).map(AuthHeader).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for McpToolName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = McpToolName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<McpToolName, E> {
                let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
                if s.is_empty() || s.len() > MAX_TOOL_NAME_CHARS || !s.chars().all(allowed) {
                    return Err(E::custom(format!(
                        "must be 1 to {MAX_TOOL_NAME_CHARS} letters, digits, `_`, `.`, `-` or `/`"
                    )));
                }
                Ok(McpToolName(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for AllowedTools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<McpToolName>::deserialize(d)?;
        if names.len() > MAX_ALLOWED_TOOLS {
            return Err(de::Error::custom(format!(
                "must list at most {MAX_ALLOWED_TOOLS} tools (it lists {})",
                names.len()
            )));
        }
        let mut seen = HashSet::with_capacity(names.len());
        let mut out = Vec::with_capacity(names.len());
        for McpToolName(name) in names {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom(format!("must not list `{name}` twice")));
            }
            out.push(name);
        }
        Ok(AllowedTools(out))
    }
}

impl<'de> Deserialize<'de> for Approval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Approval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""never", "always" or "destructive""#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Approval, E> {
                match s {
                    "never" => Ok(Approval::Never),
                    "always" => Ok(Approval::Always),
                    "destructive" => Ok(Approval::Destructive),
                    _ => Err(E::custom(r#"must be "never", "always" or "destructive""#)),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// What a replacement does to a source's stored auth header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderChange {
    /// `authHeader` absent: the header stored for a source of that name, if any.
    Keep,
    /// `null` (`None`) or a header sealed for the agent (`Some`).
    Set(Option<Vec<u8>>),
}

/// A validated source, its header already sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSource {
    pub name: String,
    pub url: String,
    pub auth_header: HeaderChange,
    pub allowed_tools: Option<Vec<String>>,
    pub approval: Approval,
    pub timeout_ms: i32,
}

/// Reads and validates a body already capped in size for agent `agent`: at most
/// [`MAX_SOURCES`] sources, names unique, each url allowed by `policy`, each auth header sealed
/// under `key` for the agent (a 422 naming it when the deployment has no key).
pub fn parse(body: &[u8], policy: &ToolPolicy, key: Option<&SealKey>, agent: Uuid) -> Result<Vec<NewSource>, ApiError> {
    let SourcesBody { sources } = parse_json(body)?;
    if sources.len() > MAX_SOURCES {
        return Err(ApiError::Unprocessable(format!(
            "sources must have at most {MAX_SOURCES} sources (it has {})",
            sources.len()
        )));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(sources.len());
    for (i, source) in sources.into_iter().enumerate() {
        let SourceName(name) = source.name;
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(ApiError::Unprocessable(format!(
                "sources[{i}].name {name:?} is given twice (first at sources[{first}])"
            )));
        }
        let SourceUrl(url) = source.url;
        policy.check_url(&url).map_err(|e| {
            ApiError::Unprocessable(match e {
                ToolError::Refused(why) => format!("sources[{i}].url is refused: {why}"),
                other => format!("sources[{i}].url is refused: {other}"),
            })
        })?;
        let auth_header = match source.auth_header {
            None => HeaderChange::Keep,
            Some(None) => HeaderChange::Set(None),
            Some(Some(header)) => {
                let key = key.ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "sources[{i}].authHeader cannot be saved: this deployment has no AGENT_MCP_ENCRYPTION_KEY to seal it with"
                    ))
                })?;
                let sealed = key
                    .seal(agent, header.as_str())
                    .map_err(|e| ApiError::Internal(e.into()))?;
                HeaderChange::Set(Some(sealed))
            }
        };
        let timeout_ms = match source.timeout_ms {
            None => DEFAULT_TIMEOUT_MS,
            Some(n) => {
                let n = n.within(&format!("sources[{i}].timeoutMs"), 1, MAX_TIMEOUT_MS)?;
                i32::try_from(n).map_err(|e| ApiError::Internal(e.into()))?
            }
        };
        out.push(NewSource {
            name,
            url,
            auth_header,
            allowed_tools: source.allowed_tools.map(|AllowedTools(names)| names),
            approval: source.approval.unwrap_or_default(),
            timeout_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn policy() -> ToolPolicy {
        ToolPolicy {
            allow_loopback: false,
            allowed_hosts: Vec::new(),
            max_response_bytes: 1024,
        }
    }

    fn key() -> SealKey {
        SealKey::from_hex(KEY).unwrap()
    }

    fn source() -> Value {
        json!({"name": "github", "url": "https://mcp.example.com/mcp"})
    }

    fn parsed(body: &Value, key: Option<&SealKey>, agent: Uuid) -> Result<Vec<NewSource>, ApiError> {
        parse(body.to_string().as_bytes(), &policy(), key, agent)
    }

    fn refusal(body: &Value) -> (u16, String) {
        let e = parsed(body, Some(&key()), Uuid::nil()).unwrap_err();
        (e.parts().0.as_u16(), e.to_string())
    }

    #[test]
    fn a_source_takes_its_defaults_and_keeps_its_header_when_none_is_given() {
        let sources = parsed(&json!({"sources": [source()]}), None, Uuid::nil()).unwrap();
        assert_eq!(
            sources,
            [NewSource {
                name: "github".into(),
                url: "https://mcp.example.com/mcp".into(),
                auth_header: HeaderChange::Keep,
                allowed_tools: None,
                approval: Approval::Destructive,
                timeout_ms: 10_000,
            }]
        );
        let mut full = source();
        full["kind"] = json!("mcp");
        full["authHeader"] = Value::Null;
        full["allowedTools"] = json!(["search_issues", "repos/get.v2"]);
        full["approval"] = json!("never");
        full["timeoutMs"] = json!(2500);
        let sources = parsed(&json!({ "sources": [full] }), None, Uuid::nil()).unwrap();
        assert_eq!(sources[0].auth_header, HeaderChange::Set(None));
        assert_eq!(
            sources[0].allowed_tools.as_deref(),
            Some(&["search_issues".to_string(), "repos/get.v2".to_string()][..])
        );
        assert_eq!((sources[0].approval, sources[0].timeout_ms), (Approval::Never, 2500));
        assert!(parse(br#"{"sources": []}"#, &policy(), None, Uuid::nil())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_header_is_sealed_for_its_agent_in_its_name_value_form() {
        let agent = Uuid::new_v4();
        for (given, sealed) in [
            ("Bearer s3cr3t", "Authorization: Bearer s3cr3t"),
            ("X-Api-Key: s3cr3t", "X-Api-Key: s3cr3t"),
            (
                "  authorization:Basic dXNlcjpwYXNz ",
                "authorization: Basic dXNlcjpwYXNz",
            ),
            ("Bearer a:b", "Authorization: Bearer a:b"),
        ] {
            let mut s = source();
            s["authHeader"] = json!(given);
            let sources = parsed(&json!({ "sources": [s] }), Some(&key()), agent).unwrap();
            let HeaderChange::Set(Some(bytes)) = &sources[0].auth_header else {
                panic!("{given}: not sealed");
            };
            assert!(!bytes.windows(6).any(|w| w == b"s3cr3t"));
            assert_eq!(key().open(agent, bytes).unwrap(), sealed);
        }
    }

    #[test]
    fn a_header_without_a_key_is_a_422_naming_it_and_the_setting() {
        let mut s = source();
        s["name"] = json!("second");
        s["authHeader"] = json!("Bearer abc");
        let e = parsed(&json!({"sources": [source(), s]}), None, Uuid::nil()).unwrap_err();
        assert_eq!(e.parts().0.as_u16(), 422);
        assert_eq!(
            e.to_string(),
            "sources[1].authHeader cannot be saved: this deployment has no AGENT_MCP_ENCRYPTION_KEY to seal it with"
        );
    }

    #[test]
    fn names_follow_their_rule() {
        for ok in ["a", "github", "my-server-2", &format!("a{}", "b".repeat(23))] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a_b",
            "a__b",
            "has space",
            "a.b",
            "café",
            &"a".repeat(25),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_refusal_names_its_field_by_its_path_and_never_shows_the_header() {
        let cases = [
            ("name", json!("a_b"), "sources[1].name must start with a letter"),
            (
                "name",
                json!("x".repeat(25)),
                "sources[1].name must start with a letter",
            ),
            ("name", json!(7), "sources[1].name must be a string"),
            ("name", Value::Null, "sources[1].name is required"),
            ("kind", json!("http"), r#"sources[1].kind must be "mcp""#),
            ("kind", json!(1), r#"sources[1].kind must be "mcp""#),
            (
                "url",
                json!("http://mcp.example.com/x"),
                "sources[1].url is refused: the tool's url is http",
            ),
            (
                "url",
                json!("https://u:p@mcp.example.com/x"),
                "sources[1].url is refused: the tool's url carries credentials",
            ),
            (
                "url",
                json!("https://10.1.2.3/mcp"),
                "sources[1].url is refused: the tool's host is",
            ),
            ("url", json!(""), "sources[1].url must be 1 to 2048 characters"),
            (
                "url",
                json!(format!("https://a.example.com/{}", "p".repeat(2048))),
                "sources[1].url must be 1 to 2048 characters",
            ),
            ("authHeader", json!(5), "sources[1].authHeader must be a string"),
            (
                "authHeader",
                json!("Bearer s3cr3t\r\nHost: evil"),
                "sources[1].authHeader must be printable ASCII",
            ),
            (
                "authHeader",
                json!("Bearer s3cr3t\u{e9}"),
                "sources[1].authHeader must be printable ASCII",
            ),
            (
                "authHeader",
                json!(format!("Bearer {}", "s".repeat(4096))),
                "sources[1].authHeader must be at most 4096 characters",
            ),
            ("authHeader", json!("   "), "sources[1].authHeader must have a value"),
            (
                "authHeader",
                json!("X(bad): s3cr3t"),
                "sources[1].authHeader must be `Name: value`",
            ),
            (
                "authHeader",
                json!("X-Key:   "),
                "sources[1].authHeader must have a value",
            ),
            (
                "authHeader",
                json!("Host: s3cr3t"),
                "sources[1].authHeader must not set `Host`",
            ),
            (
                "authHeader",
                json!("mcp-session-id: s3cr3t"),
                "sources[1].authHeader must not set `mcp-session-id`",
            ),
            (
                "allowedTools",
                json!("all"),
                "sources[1].allowedTools must be a sequence",
            ),
            (
                "allowedTools",
                json!([""]),
                "sources[1].allowedTools[0] must be 1 to 128",
            ),
            (
                "allowedTools",
                json!(["a b"]),
                "sources[1].allowedTools[0] must be 1 to 128",
            ),
            (
                "allowedTools",
                json!(["ok", "x".repeat(129)]),
                "sources[1].allowedTools[1] must be 1 to 128",
            ),
            (
                "allowedTools",
                json!(["a", 1]),
                "sources[1].allowedTools[1] must be a string",
            ),
            (
                "allowedTools",
                json!(["a", "a"]),
                "sources[1].allowedTools must not list `a` twice",
            ),
            (
                "allowedTools",
                json!((0..257).map(|i| format!("t{i}")).collect::<Vec<_>>()),
                "sources[1].allowedTools must list at most 256 tools (it lists 257)",
            ),
            ("approval", json!("sometimes"), "sources[1].approval must be \"never\""),
            ("approval", json!(true), "sources[1].approval must be \"never\""),
            (
                "timeoutMs",
                json!(0),
                "sources[1].timeoutMs must be a whole number from 1 to 30000",
            ),
            (
                "timeoutMs",
                json!(30_001),
                "sources[1].timeoutMs must be a whole number from 1 to 30000",
            ),
            ("timeoutMs", json!(1.5), "sources[1].timeoutMs must be a whole number"),
            ("timeoutMs", json!("10"), "sources[1].timeoutMs must be a number"),
            ("headers", json!({}), "unknown field `headers`"),
        ];
        for (field, value, says) in cases {
            let mut second = source();
            second["name"] = json!("second");
            second[field] = value;
            let (status, message) = refusal(&json!({"sources": [source(), second]}));
            assert_eq!(status, 422, "{field}: {message}");
            assert!(message.starts_with(says), "{field}: {message}");
            assert!(!message.contains("s3cr3t"), "{field}: {message}");
        }
    }

    #[test]
    fn the_list_is_checked_as_a_whole() {
        let (status, message) = refusal(&json!({"sources": [source(), source()]}));
        assert_eq!(
            (status, message.as_str()),
            (422, r#"sources[1].name "github" is given twice (first at sources[0])"#)
        );
        let many: Vec<Value> = (0..17)
            .map(|i| {
                let mut s = source();
                s["name"] = json!(format!("s{i}"));
                s
            })
            .collect();
        assert_eq!(
            refusal(&json!({ "sources": many })),
            (422, "sources must have at most 16 sources (it has 17)".into())
        );
        assert_eq!(refusal(&json!({})), (422, "sources is required".into()));
        assert_eq!(refusal(&json!({"sources": null})), (422, "sources is required".into()));
        assert_eq!(refusal(&json!({"sources": {}})).0, 422);
    }
}
