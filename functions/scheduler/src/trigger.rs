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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid scheduler payload: {0}")]
pub struct BadPayload(pub String);

impl Trigger {
    pub fn parse(payload: &Value) -> Result<Trigger, BadPayload> {
        match payload {
            // `cargo lambda invoke` without data, or an empty test event.
            Value::Null => Ok(Trigger::default()),
            Value::Object(map) if is_scheduled_event(map) => Ok(Trigger::default()),
            Value::Object(_) => {
                let manual: Manual = serde_json::from_value(payload.clone())
                    .map_err(|e| BadPayload(format!("{e} (expected {{\"maxTasks\": n, \"dryRun\": bool}})")))?;
                if let Some(n) = manual.max_tasks {
                    if n == 0 || n > MAX_TASKS_LIMIT {
                        return Err(BadPayload(format!("maxTasks must be between 1 and {MAX_TASKS_LIMIT}")));
                    }
                }
                if let Some(link) = manual.continuation {
                    if link == 0 || link > MAX_CONTINUATION_LINK {
                        return Err(BadPayload(format!(
                            "continuation must be between 1 and {MAX_CONTINUATION_LINK}"
                        )));
                    }
                }
                Ok(Trigger {
                    max_tasks: manual.max_tasks,
                    dry_run: manual.dry_run.unwrap_or(false),
                    continuation: manual.continuation,
                })
            }
            other => Err(BadPayload(format!(
                "expected a JSON object (an EventBridge scheduled event or {{\"maxTasks\": n, \"dryRun\": bool}}), got {}",
                kind(other)
            ))),
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
    fn malformed_manual_payloads_get_a_clear_error() {
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
            (json!({"continuation": -1}), "integer `-1`"),
            (json!([1, 2]), "array"),
            (json!("run"), "string"),
            (json!(42), "number"),
        ];
        for (payload, named) in cases {
            let err = Trigger::parse(&payload).unwrap_err().to_string();
            assert!(err.contains(named) || err.contains("invalid type"), "{payload}: {err}");
            assert!(err.starts_with("invalid scheduler payload"), "{err}");
        }
    }
}
