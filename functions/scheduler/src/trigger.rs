//! What started an invocation: the EventBridge schedule, or a manual invoke with overrides.

use serde::Deserialize;
use serde_json::Value;

/// Largest `maxTasks` a manual invoke may ask for.
pub const MAX_TASKS_LIMIT: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trigger {
    /// Stop after claiming this many tasks.
    pub max_tasks: Option<u64>,
    /// Report what is due without claiming or running anything.
    pub dry_run: bool,
    /// The link in a chain of self-invocations (`None`: the schedule or a manual invoke).
    pub continuation: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manual {
    max_tasks: Option<u64>,
    dry_run: Option<bool>,
    continuation: Option<u32>,
}

/// Highest link a continuation payload may carry (the setting's own cap is lower).
pub const MAX_CONTINUATION_LINK: u32 = 1000;

/// A payload that is neither a scheduled event nor a valid manual invoke.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPayload {
    /// The field at fault (`None`: the payload as a whole).
    pub field: Option<String>,
    pub reason: String,
}

impl BadPayload {
    fn field(field: &str, reason: String) -> Self {
        Self {
            field: Some(field.to_string()),
            reason,
        }
    }
}

impl std::fmt::Display for BadPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "invalid scheduler payload: {field}: {}", self.reason),
            None => write!(f, "invalid scheduler payload: {}", self.reason),
        }
    }
}

impl std::error::Error for BadPayload {}

/// What a manual invoke looks like, for the errors.
const EXPECTED: &str = r#"{"maxTasks": n, "dryRun": bool}"#;

impl Trigger {
    pub fn parse(payload: &Value) -> Result<Trigger, BadPayload> {
        match payload {
            // `cargo lambda invoke` without data, or an empty test event.
            Value::Null => Ok(Trigger::default()),
            Value::Object(map) if is_scheduled_event(map) => Ok(Trigger::default()),
            Value::Object(_) => {
                let manual: Manual = serde_path_to_error::deserialize(payload).map_err(|e| BadPayload {
                    // A path with no segment is the payload itself.
                    field: e.path().iter().next().map(|_| e.path().to_string()),
                    reason: format!("{} (expected {EXPECTED})", e.inner()),
                })?;
                if let Some(n) = manual.max_tasks {
                    if n == 0 || n > MAX_TASKS_LIMIT {
                        let reason = format!("must be between 1 and {MAX_TASKS_LIMIT}");
                        return Err(BadPayload::field("maxTasks", reason));
                    }
                }
                if let Some(link) = manual.continuation {
                    if link == 0 || link > MAX_CONTINUATION_LINK {
                        let reason = format!("must be between 1 and {MAX_CONTINUATION_LINK}");
                        return Err(BadPayload::field("continuation", reason));
                    }
                }
                Ok(Trigger {
                    max_tasks: manual.max_tasks,
                    dry_run: manual.dry_run.unwrap_or(false),
                    continuation: manual.continuation,
                })
            }
            other => Err(BadPayload {
                field: None,
                reason: format!(
                    "expected a JSON object (an EventBridge scheduled event or {EXPECTED}), got {}",
                    kind(other)
                ),
            }),
        }
    }
}

fn is_scheduled_event(map: &serde_json::Map<String, Value>) -> bool {
    map.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        && map.get("source").and_then(Value::as_str) == Some("aws.events")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_sample_scheduled_event_is_a_schedule() {
        let event: Value = serde_json::from_str(include_str!("../../../events/schedule.json")).unwrap();
        assert_eq!(Trigger::parse(&event), Ok(Trigger::default()));
    }

    #[test]
    fn manual_overrides_are_read() {
        let t = Trigger::parse(&json!({"maxTasks": 5, "dryRun": true})).unwrap();
        assert_eq!(t.max_tasks, Some(5));
        assert!(t.dry_run);
        assert_eq!(Trigger::parse(&json!({})).unwrap(), Trigger::default());
        let t = Trigger::parse(&json!({"continuation": 3})).unwrap();
        assert_eq!(t.continuation, Some(3));
    }

    #[test]
    fn a_malformed_field_is_named() {
        let cases = [
            (json!({"maxTask": 5}), "maxTask"),
            (json!({"maxTasks": "5"}), "maxTasks"),
            (json!({"maxTasks": -1}), "maxTasks"),
            (json!({"maxTasks": 0}), "maxTasks"),
            (json!({"maxTasks": 1.5}), "maxTasks"),
            (json!({"maxTasks": 100_000_000u64}), "maxTasks"),
            (json!({"dryRun": "yes"}), "dryRun"),
            (json!({"continuation": 0}), "continuation"),
            (json!({"continuation": 5000}), "continuation"),
            (json!({"continuation": "1"}), "continuation"),
            (json!({"continuation": -1}), "continuation"),
            (json!({"maxTasks": 5, "extra": {"nested": [1, 2, 3]}}), "extra"),
        ];
        for (payload, named) in cases {
            let err = Trigger::parse(&payload).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(named), "{payload}: {err}");
            let prefix = format!("invalid scheduler payload: {named}: ");
            assert!(err.to_string().starts_with(&prefix), "{err}");
        }
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_named_by_its_kind() {
        for (payload, kind) in [
            (json!([1, 2]), "an array"),
            (json!("run"), "a string"),
            (json!(42), "a number"),
            (json!(true), "a boolean"),
        ] {
            let err = Trigger::parse(&payload).unwrap_err();
            assert_eq!(err.field, None, "{payload}");
            assert!(
                err.to_string()
                    .starts_with("invalid scheduler payload: expected a JSON object"),
                "{err}"
            );
            assert!(err.reason.ends_with(&format!("got {kind}")), "{err}");
        }
    }
}
