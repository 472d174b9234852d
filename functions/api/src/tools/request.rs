//! What a `PUT /api/agents/{id}/tools` body says: [`ToolsBody`], each field its own type (a
//! malformed one is a 422 naming it by its path, `tools[3].name`), then checked as a set and
//! against the outbound rules into [`NewTool`]s.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use shared::agent::tool_call::ToolError;
use shared::agent::ToolPolicy;
use shared::http::{parse_json, ApiError, Flag, Text, WholeNumber};

/// Tools one agent may have.
pub const MAX_TOOLS: usize = 64;
/// Longest tool name: `[A-Za-z][A-Za-z0-9_-]{0,63}` (OpenAI function names and Bedrock toolSpec
/// names both take it).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Largest `parameters` schema, as compact JSON.
pub const MAX_PARAMETERS_BYTES: usize = 16 * 1024;
/// Longest url.
pub const MAX_URL_CHARS: usize = 2048;
/// A tool's timeout: bounds and default, in milliseconds.
pub const MAX_TIMEOUT_MS: i64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: i32 = 10_000;

/// The body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsBody {
    tools: Vec<ToolBody>,
}

/// One tool as sent (a `null` optional field is an absent one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolBody {
    name: ToolName,
    description: Text,
    parameters: Parameters,
    url: ToolUrl,
    requires_approval: Option<Flag>,
    timeout_ms: Option<WholeNumber>,
}

/// `name`: a letter, then up to 63 letters, digits, `_` or `-`, without `__` (kept for
/// namespaced tools: `<source>__<tool>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolName(pub String);

/// `parameters`: a JSON Schema of the arguments, an object schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters(pub Value);

/// `url`: a string of at most [`MAX_URL_CHARS`]; the outbound rules are checked after parsing
/// ([`parse`]), with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolUrl(pub String);

/// The name rule, said as a field's error (`must …`).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !first_is_letter || !rest_ok || name.len() > MAX_NAME_CHARS {
        return Err(format!(
            "must start with a letter and have at most {MAX_NAME_CHARS} letters, digits, `_` or `-`"
        ));
    }
    if name.contains("__") {
        return Err("must not contain `__` (kept for namespaced tools)".into());
    }
    Ok(())
}

impl<'de> Deserialize<'de> for ToolName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        check_name(&name).map_err(serde::de::Error::custom)?;
        Ok(ToolName(name))
    }
}

/// The schema rule, said as a field's error: an object with `"type": "object"`; `properties`, if
/// present, an object whose values are objects; `required`, if present, an array of strings each
/// naming a property; at most [`MAX_PARAMETERS_BYTES`] as compact JSON.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    let Value::Object(fields) = schema else {
        return Err("must be a JSON Schema object".into());
    };
    if fields.get("type").and_then(Value::as_str) != Some("object") {
        return Err(r#"must be an object schema ("type": "object")"#.into());
    }
    let properties = match fields.get("properties") {
        None => None,
        Some(Value::Object(properties)) => {
            if let Some((name, _)) = properties.iter().find(|(_, v)| !v.is_object()) {
                let shown: String = name.chars().take(64).collect();
                return Err(format!(
                    "must have a schema object for each property (`{shown}` is not one)"
                ));
            }
            Some(properties)
        }
        Some(_) => return Err("must have `properties` as an object".into()),
    };
    match fields.get("required") {
        None => {}
        Some(Value::Array(required)) => {
            for item in required {
                let Some(name) = item.as_str() else {
                    return Err("must have `required` as an array of strings".into());
                };
                if !properties.is_some_and(|p| p.contains_key(name)) {
                    let shown: String = name.chars().take(64).collect();
                    return Err(format!("must only require its own properties (`{shown}` is not one)"));
                }
            }
        }
        Some(_) => return Err("must have `required` as an array of strings".into()),
    }
    let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(format!(
            "must be at most {MAX_PARAMETERS_BYTES} bytes as JSON (it is {size})"
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let schema = Value::deserialize(d)?;
        check_schema(&schema).map_err(serde::de::Error::custom)?;
        Ok(Parameters(schema))
    }
}

impl<'de> Deserialize<'de> for ToolUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        let url = url.trim();
        if url.is_empty() || url.chars().count() > MAX_URL_CHARS {
            return Err(serde::de::Error::custom(format!(
                "must be 1 to {MAX_URL_CHARS} characters"
            )));
        }
        Ok(ToolUrl(url.to_string()))
    }
}

/// A validated tool.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub url: String,
    pub requires_approval: bool,
    pub timeout_ms: i32,
}

/// Reads and validates a body already capped in size: at most [`MAX_TOOLS`] tools, names
/// unique, each url allowed by `policy`.
pub fn parse(body: &[u8], policy: &ToolPolicy) -> Result<Vec<NewTool>, ApiError> {
    let ToolsBody { tools } = parse_json(body)?;
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::Unprocessable(format!(
            "tools must have at most {MAX_TOOLS} tools (it has {})",
            tools.len()
        )));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let ToolName(name) = tool.name;
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(ApiError::Unprocessable(format!(
                "tools[{i}].name {name:?} is given twice (first at tools[{first}])"
            )));
        }
        let description = tool.description.into_inner();
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::Unprocessable(format!(
                "tools[{i}].description must be at most {MAX_DESCRIPTION_CHARS} characters (it has {chars})"
            )));
        }
        let ToolUrl(url) = tool.url;
        policy.check_url(&url).map_err(|e| {
            ApiError::Unprocessable(match e {
                ToolError::Refused(why) => format!("tools[{i}].url is refused: {why}"),
                other => format!("tools[{i}].url is refused: {other}"),
            })
        })?;
        let timeout_ms = match tool.timeout_ms {
            None => DEFAULT_TIMEOUT_MS,
            Some(n) => {
                let n = n.within(&format!("tools[{i}].timeoutMs"), 1, MAX_TIMEOUT_MS)?;
                i32::try_from(n).map_err(|e| ApiError::Internal(e.into()))?
            }
        };
        out.push(NewTool {
            name,
            description,
            parameters: tool.parameters.0,
            url,
            requires_approval: tool.requires_approval.is_some_and(|Flag(b)| b),
            timeout_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(allow_loopback: bool) -> ToolPolicy {
        ToolPolicy {
            allow_loopback,
            allowed_hosts: Vec::new(),
            max_response_bytes: 1024,
        }
    }

    fn tool() -> Value {
        json!({"name": "lookup_order", "description": "Finds an order", "url": "https://tools.example.com/order",
               "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}})
    }

    fn refusal(body: &Value, loopback: bool) -> (u16, String) {
        let e = parse(body.to_string().as_bytes(), &policy(loopback)).unwrap_err();
        (e.parts().0.as_u16(), e.to_string())
    }

    #[test]
    fn a_tool_takes_its_defaults() {
        let tools = parse(json!({"tools": [tool()]}).to_string().as_bytes(), &policy(false)).unwrap();
        assert_eq!(tools.len(), 1);
        assert_eq!((tools[0].timeout_ms, tools[0].requires_approval), (10_000, false));
        assert_eq!(tools[0].parameters["required"], json!(["id"]));
        assert!(parse(br#"{"tools": []}"#, &policy(false)).unwrap().is_empty());
    }

    #[test]
    fn names_follow_the_rule_both_providers_accept() {
        for ok in ["a", "lookup_order", "get-weather2", &format!("a{}", "b".repeat(63))] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "_a", "has space", "a.b", "café", "a__b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_refusal_names_its_field_by_its_path() {
        let big = json!({"type": "object", "description": "x".repeat(MAX_PARAMETERS_BYTES)});
        let cases = [
            ("name", json!("a__b"), "tools[1].name must not contain `__`"),
            ("name", json!("9lives"), "tools[1].name must start with a letter"),
            ("name", json!(7), "tools[1].name must be a string"),
            ("description", json!(""), "tools[1].description must not be empty"),
            (
                "description",
                json!("d".repeat(1025)),
                "tools[1].description must be at most 1024",
            ),
            (
                "parameters",
                json!([]),
                "tools[1].parameters must be a JSON Schema object",
            ),
            (
                "parameters",
                json!({"type": "string"}),
                "tools[1].parameters must be an object schema",
            ),
            (
                "parameters",
                json!({"type": "object", "properties": []}),
                "tools[1].parameters must have `properties` as an object",
            ),
            (
                "parameters",
                json!({"type": "object", "properties": {"a": 1}}),
                "tools[1].parameters must have a schema object for each property",
            ),
            (
                "parameters",
                json!({"type": "object", "required": ["a"]}),
                "tools[1].parameters must only require its own properties",
            ),
            (
                "parameters",
                json!({"type": "object", "properties": {}, "required": [1]}),
                "tools[1].parameters must have `required` as an array of strings",
            ),
            ("parameters", big, "tools[1].parameters must be at most 16384 bytes"),
            (
                "url",
                json!("ftp://tools.example.com/x"),
                "tools[1].url is refused: the tool's url scheme \"ftp\"",
            ),
            (
                "url",
                json!("https://user:pw@tools.example.com/x"),
                "tools[1].url is refused: the tool's url carries credentials",
            ),
            (
                "url",
                json!("http://tools.example.com/x"),
                "tools[1].url is refused: the tool's url is http",
            ),
            (
                "url",
                json!("http://127.0.0.1:8080/x"),
                "tools[1].url is refused: the tool's url is http",
            ),
            (
                "url",
                json!("https://10.0.0.5/x"),
                "tools[1].url is refused: the tool's host is",
            ),
            (
                "url",
                json!("not a url"),
                "tools[1].url is refused: the tool's url is not a URL",
            ),
            (
                "url",
                json!(format!("https://a.example.com/{}", "p".repeat(2048))),
                "tools[1].url must be 1 to 2048 characters",
            ),
            (
                "timeoutMs",
                json!(0),
                "tools[1].timeoutMs must be a whole number from 1 to 30000",
            ),
            (
                "timeoutMs",
                json!(30_001),
                "tools[1].timeoutMs must be a whole number from 1 to 30000",
            ),
            (
                "requiresApproval",
                json!("yes"),
                "tools[1].requiresApproval must be true or false",
            ),
            ("secret", json!(1), "unknown field `secret`"),
        ];
        for (field, value, says) in cases {
            let mut second = tool();
            second["name"] = json!("second");
            second[field] = value;
            let body = json!({"tools": [tool(), second]});
            let (status, message) = refusal(&body, false);
            assert_eq!(status, 422, "{field}: {message}");
            assert!(message.starts_with(says), "{field}: {message}");
        }
    }

    #[test]
    fn the_set_is_checked_as_a_whole() {
        let (status, message) = refusal(&json!({"tools": [tool(), tool()]}), false);
        assert_eq!(status, 422);
        assert_eq!(
            message,
            r#"tools[1].name "lookup_order" is given twice (first at tools[0])"#
        );
        let many: Vec<Value> = (0..65)
            .map(|i| {
                let mut t = tool();
                t["name"] = json!(format!("t{i}"));
                t
            })
            .collect();
        let (status, message) = refusal(&json!({ "tools": many }), false);
        assert_eq!(
            (status, message.as_str()),
            (422, "tools must have at most 64 tools (it has 65)")
        );
        assert_eq!(refusal(&json!({}), false), (422, "tools is required".into()));
    }

    #[test]
    fn http_is_allowed_only_to_loopback_and_only_when_loopback_is() {
        let mut local = tool();
        local["url"] = json!("http://127.0.0.1:8080/tool");
        let body = json!({"tools": [local]}).to_string();
        assert!(parse(body.as_bytes(), &policy(false)).is_err());
        assert_eq!(
            parse(body.as_bytes(), &policy(true)).unwrap()[0].url,
            "http://127.0.0.1:8080/tool"
        );
        let mut remote = tool();
        remote["url"] = json!("http://tools.example.com/x");
        assert!(parse(json!({"tools": [remote]}).to_string().as_bytes(), &policy(true)).is_err());
    }
}
