//! JSON bodies read into typed requests: `#[derive(Deserialize)]` structs with
//! `#[serde(deny_unknown_fields, rename_all = "camelCase")]` whose fields are the validating
//! newtypes below (parse, don't validate). A body that is not JSON is a 400; one that does not
//! fit the type is a 422 whose message names the field (`agentId must be a UUID`,
//! `prompt is required`, ``unknown field `context`; expected …``), through
//! `serde_path_to_error`. Messages are cut short: a hostile key never fills a response.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

use super::ApiError;

/// Longest 422 message built from a body (a field name or an unknown key can be long).
const MAX_MESSAGE_CHARS: usize = 300;
/// Longest unknown key shown.
const MAX_KEY_CHARS: usize = 64;

/// Reads a body (already capped in size) into `T`: 400 when it is not JSON, 422 naming the
/// field when it is not an object or does not fit `T`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(match e.classify() {
            serde_json::error::Category::Eof => "the body is not complete JSON".into(),
            _ => format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()),
        })
    })?;
    // Serde would read a struct from an array too: a body is an object or nothing.
    if !value.is_object() {
        return Err(ApiError::Unprocessable("the body must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Unprocessable(field_message(&path, &e.into_inner().to_string()))
    })
}

/// A serde message, said of the field at `path` (`.` is the body itself).
fn field_message(path: &str, message: &str) -> String {
    let field = if path == "." { "the body" } else { path };
    let within = |name: &str| {
        if path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let said = if let Some(rest) = message.strip_prefix("missing field `") {
        format!("{} is required", within(rest.trim_end_matches('`')))
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        // "unknown field `k`, expected one of `a`, `b`": the key itself may hold anything.
        // Our field names follow the key, so the last separator is the one.
        let (key, expected) = match (rest.rfind("`, expected "), rest.rfind("`, there are no fields")) {
            (Some(at), _) => (&rest[..at], &rest[at + 3..]),
            (None, Some(at)) => (&rest[..at], "expected no fields"),
            (None, None) => (rest.trim_end_matches('`'), ""),
        };
        let shown: String = key.chars().take(MAX_KEY_CHARS).collect();
        format!("unknown field `{shown}`; {expected}")
    } else if message.starts_with("invalid type: null") {
        format!("{field} is required")
    } else if message.starts_with("invalid type: ") || message.starts_with("invalid value: ") {
        let expected = message
            .rfind(", expected ")
            .map_or("", |at| &message[at + ", expected ".len()..]);
        format!("{field} must be {expected}")
    } else if message.starts_with("must ") || message.starts_with("is ") {
        format!("{field} {message}")
    } else {
        format!("{field}: {message}")
    };
    if said.chars().count() > MAX_MESSAGE_CHARS {
        said.chars().take(MAX_MESSAGE_CHARS).chain("…".chars()).collect()
    } else {
        said
    }
}

/// A UUID given as a string: `must be a UUID` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(pub uuid::Uuid);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a UUID")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                uuid::Uuid::parse_str(s.trim())
                    .map(Id)
                    .map_err(|_| E::custom("must be a UUID"))
            }
        }
        d.deserialize_str(V)
    }
}

/// A text field: trimmed, not empty, no NUL. Its length bound comes from settings
/// ([`Text::at_most`]), so it is checked after parsing, in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// The one length check of a text field: 413 naming it when it has more than `max` characters.
    pub fn at_most(self, field: &str, max: usize) -> Result<String, ApiError> {
        let chars = self.0.chars().count();
        if chars > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "{field} is {chars} characters; the limit is {max}"
            )));
        }
        Ok(self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                let s = s.trim();
                if s.is_empty() {
                    return Err(E::custom("must not be empty"));
                }
                if s.contains('\0') {
                    return Err(E::custom("must not contain NUL characters"));
                }
                Ok(Text(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// `true` or `false`, named so in its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b))
            }
        }
        d.deserialize_bool(V)
    }
}

/// A whole number (JSON `3`, not `3.5` nor `"3"`); its range comes from settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i64);

impl WholeNumber {
    /// The one range check: `must be a whole number from {min} to {max}` naming `field`.
    pub fn within(self, field: &str, min: i64, max: i64) -> Result<i64, ApiError> {
        if (min..=max).contains(&self.0) {
            Ok(self.0)
        } else {
            Err(ApiError::Unprocessable(format!(
                "{field} must be a whole number from {min} to {max}"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                i64::try_from(n)
                    .map(WholeNumber)
                    .map_err(|_| E::custom("must be a whole number in range"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<WholeNumber, E> {
                Err(E::custom("must be a whole number"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        agent_id: Id,
        message: Text,
        #[serde(default)]
        approved: Option<Flag>,
        #[serde(default)]
        max_attempts: Option<WholeNumber>,
    }

    const AGENT: &str = "00000000-0000-4000-8000-000000000001";

    fn message_of(body: &serde_json::Value) -> (u16, String) {
        let e = parse_json::<Body>(body.to_string().as_bytes()).unwrap_err();
        (e.parts().0.as_u16(), e.to_string())
    }

    #[test]
    fn a_valid_body_is_read_and_its_text_trimmed() {
        let body = json!({"agentId": AGENT, "message": "  hi  ", "approved": true, "maxAttempts": 3});
        let parsed: Body = parse_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.message.as_str(), "hi");
        assert_eq!(parsed.approved, Some(Flag(true)));
        assert_eq!(parsed.max_attempts, Some(WholeNumber(3)));
    }

    #[test]
    fn each_wrong_field_is_named_in_the_422() {
        let cases = [
            (json!({"message": "x"}), "agentId is required"),
            (json!({"agentId": null, "message": "x"}), "agentId is required"),
            (json!({"agentId": 5, "message": "x"}), "agentId must be a UUID"),
            (json!({"agentId": "nope", "message": "x"}), "agentId must be a UUID"),
            (json!({"agentId": AGENT, "message": 7}), "message must be a string"),
            (json!({"agentId": AGENT, "message": "  "}), "message must not be empty"),
            (
                json!({"agentId": AGENT, "message": "a\u{0}b"}),
                "message must not contain NUL",
            ),
            (
                json!({"agentId": AGENT, "message": "x", "approved": "yes"}),
                "approved must be true or false",
            ),
            (
                json!({"agentId": AGENT, "message": "x", "maxAttempts": "3"}),
                "maxAttempts must be a number",
            ),
            (
                json!({"agentId": AGENT, "message": "x", "maxAttempts": 1.5}),
                "maxAttempts must be a whole number",
            ),
            (
                json!({"agentId": AGENT, "message": "x", "context": {}}),
                "unknown field `context`; expected one of",
            ),
        ];
        for (body, expected) in cases {
            let (status, message) = message_of(&body);
            assert_eq!(status, 422, "{body}");
            assert!(message.starts_with(expected), "{body}: {message}");
        }
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused_before_its_fields() {
        for (raw, status) in [("{", 400), ("not json", 400), ("", 400), ("[]", 422), ("\"x\"", 422)] {
            let e = parse_json::<Body>(raw.as_bytes()).unwrap_err();
            assert_eq!(e.parts().0.as_u16(), status, "{raw}");
        }
        // An array in the struct's field order is still not an object.
        let e = parse_json::<Body>(json!([AGENT, "x"]).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "the body must be a JSON object");
        let deep = "[".repeat(10_000);
        assert_eq!(parse_json::<Body>(deep.as_bytes()).unwrap_err().parts().0.as_u16(), 400);
    }

    #[test]
    fn a_hostile_unknown_key_is_cut_short_in_the_message() {
        let key = "k".repeat(100_000);
        let (status, message) = message_of(&json!({ key: 1, "agentId": AGENT, "message": "x" }));
        assert_eq!(status, 422);
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1, "{}", message.len());
        assert!(message.starts_with("unknown field `kkkk"), "{message}");
    }

    #[test]
    fn the_text_bound_counts_characters_and_names_the_field() {
        let text: Text = serde_json::from_value(json!("é".repeat(10))).unwrap();
        assert_eq!(text.clone().at_most("message", 10).unwrap(), "é".repeat(10));
        let e = text.at_most("message", 9).unwrap_err();
        assert_eq!(e.parts().0.as_u16(), 413);
        assert_eq!(e.to_string(), "message is 10 characters; the limit is 9");
    }

    #[test]
    fn a_whole_number_outside_its_range_names_the_range() {
        let e = WholeNumber(11).within("maxAttempts", 1, 10).unwrap_err();
        assert_eq!(e.to_string(), "maxAttempts must be a whole number from 1 to 10");
        assert_eq!(WholeNumber(10).within("maxAttempts", 1, 10).unwrap(), 10);
    }
}
