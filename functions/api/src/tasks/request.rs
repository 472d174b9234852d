//! What a task request says: the `POST /api/tasks` body, read into [`TaskBody`] (each field its
//! own type: a malformed one is a 422 naming it), then checked against the settings and the
//! clock into a [`NewTask`]; and the filters of the task list's query string.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use shared::http::{parse_json, ApiError, Flag, Id, Text, WholeNumber};
use shared::tasks::recurrence::{field_count, next_occurrence, shortest_gap, RecurrenceError};
use shared::tasks::series::Approval;
use shared::tasks::TaskStatus;

use crate::query::Query;
use crate::settings::Settings;

/// Longest cron expression and time-zone name (the table's own bounds).
const MAX_CRON_CHARS: usize = 200;
const MAX_TIME_ZONE_CHARS: usize = 64;
/// Fields of a cron expression: minute hour day-of-month month day-of-week (no seconds).
const CRON_FIELDS: usize = 5;
/// A `scheduledFor` further in the past than this is a mistake, not "now".
const PAST_TOLERANCE_HOURS: i64 = 24;
/// `maxAttempts` when not given.
const DEFAULT_MAX_ATTEMPTS: i32 = 3;

/// The `POST /api/tasks` body as sent (a `null` field is an absent one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskBody {
    agent_id: Id,
    prompt: Text,
    scheduled_for: Option<ScheduledFor>,
    cron: Option<CronExpression>,
    time_zone: Option<TimeZoneName>,
    max_attempts: Option<WholeNumber>,
    approved: Option<Flag>,
}

/// `scheduledFor`: an RFC 3339 time with an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledFor(pub DateTime<Utc>);

/// `cron`: 1 to [`MAX_CRON_CHARS`] characters, at most [`CRON_FIELDS`] fields. Whether it
/// parses, and how often it fires, is checked with its time zone ([`NewTask::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpression(pub String);

/// `timeZone`: 1 to [`MAX_TIME_ZONE_CHARS`] characters; whether it is a known zone is checked
/// with the cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName(pub String);

/// A JSON string, trimmed, read by `read`; its error is said of the field (`must …`, `is …`).
fn string_as<'de, D: Deserializer<'de>, T>(d: D, read: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    read(text.trim()).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for ScheduledFor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_as(d, |s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| ScheduledFor(t.with_timezone(&Utc)))
                .map_err(|_| "must be an RFC 3339 time with an offset".into())
        })
    }
}

impl<'de> Deserialize<'de> for CronExpression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_as(d, |s| {
            if s.is_empty() || s.chars().count() > MAX_CRON_CHARS {
                return Err(format!("must be 1 to {MAX_CRON_CHARS} characters"));
            }
            if field_count(s) > CRON_FIELDS {
                return Err(
                    "must have 5 fields (minute hour day-of-month month day-of-week); a seconds field is not accepted"
                        .into(),
                );
            }
            Ok(CronExpression(s.to_string()))
        })
    }
}

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_as(d, |s| {
            if s.is_empty() || s.chars().count() > MAX_TIME_ZONE_CHARS {
                return Err(UNKNOWN_TIME_ZONE.into());
            }
            Ok(TimeZoneName(s.to_string()))
        })
    }
}

const UNKNOWN_TIME_ZONE: &str = "is not a known IANA time zone (e.g. Europe/Paris)";

/// A validated `POST /api/tasks` body (serialised, it is the request an Idempotency-Key is
/// bound to).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewTask {
    pub agent_id: Uuid,
    pub prompt: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub cron: Option<String>,
    pub time_zone: Option<String>,
    pub max_attempts: i32,
    pub approved: bool,
}

/// Reads and validates a body already capped in size.
pub fn parse(body: &[u8], settings: &Settings, now: DateTime<Utc>) -> Result<NewTask, ApiError> {
    NewTask::read(parse_json(body)?, settings, now)
}

impl NewTask {
    /// The checks that need the settings, the clock or two fields at once.
    pub fn read(body: TaskBody, settings: &Settings, now: DateTime<Utc>) -> Result<NewTask, ApiError> {
        let prompt = body.prompt.at_most("prompt", settings.max_prompt_chars)?;
        let scheduled_for = body.scheduled_for.map(|ScheduledFor(at)| at);
        if let Some(at) = scheduled_for {
            if at > now + Duration::days(settings.horizon_days) {
                return Err(ApiError::Unprocessable(format!(
                    "scheduledFor must be within {} days from now",
                    settings.horizon_days
                )));
            }
            if at < now - Duration::hours(PAST_TOLERANCE_HOURS) {
                return Err(ApiError::Unprocessable(
                    "scheduledFor is more than a day in the past".into(),
                ));
            }
        }
        let cron = body.cron.map(|CronExpression(c)| c);
        let time_zone = body.time_zone.map(|TimeZoneName(z)| z);
        if time_zone.is_some() && cron.is_none() {
            return Err(ApiError::Unprocessable(
                "timeZone applies to a cron schedule; give cron too".into(),
            ));
        }
        if let Some(cron) = &cron {
            check_interval(cron, time_zone.as_deref(), settings, now)?;
        }
        let max_attempts = match body.max_attempts {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(n) => {
                let n = n.within("maxAttempts", 1, settings.max_attempts.into())?;
                i32::try_from(n).map_err(|e| ApiError::Internal(e.into()))?
            }
        };
        Ok(NewTask {
            agent_id: body.agent_id.0,
            prompt,
            scheduled_for,
            cron,
            time_zone,
            max_attempts,
            approved: body.approved.is_some_and(|Flag(b)| b),
        })
    }

    /// When the first occurrence is due: `scheduledFor`; else the cron's next slot; else now.
    pub fn first_due(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
        match (&self.scheduled_for, &self.cron) {
            (Some(at), _) => Ok(*at),
            (None, Some(cron)) => {
                next_occurrence(cron, self.time_zone.as_deref(), now, now).map_err(|e| recurrence_error(&e))
            }
            (None, None) => Ok(now),
        }
    }

    /// What the Idempotency-Key is bound to: the validated request, as it was asked.
    pub fn fingerprint(&self) -> Result<String, ApiError> {
        serde_json::to_string(self).map_err(|e| ApiError::Internal(e.into()))
    }
}

fn recurrence_error(e: &RecurrenceError) -> ApiError {
    ApiError::Unprocessable(match e {
        RecurrenceError::Cron(_) => {
            "cron is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week)".into()
        }
        RecurrenceError::TimeZone(_) => format!("timeZone {UNKNOWN_TIME_ZONE}"),
        RecurrenceError::NoNext(_) => "cron has no future occurrence".into(),
    })
}

/// A schedule may not fire more often than `TASKS_MIN_INTERVAL_SECS`: no two runs closer than
/// that (a seconds field is refused by [`CronExpression`]).
fn check_interval(
    cron: &str,
    time_zone: Option<&str>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let gap = shortest_gap(cron, time_zone, now).map_err(|e| recurrence_error(&e))?;
    let min = Duration::from_std(settings.min_interval).map_err(|e| ApiError::Internal(e.into()))?;
    match gap {
        Some(gap) if gap < min => Err(ApiError::Unprocessable(format!(
            "cron runs every {} s at times; the shortest interval allowed is {} s",
            gap.num_seconds(),
            min.num_seconds()
        ))),
        _ => Ok(()),
    }
}

const STATUSES: [TaskStatus; 6] = [
    TaskStatus::Pending,
    TaskStatus::Running,
    TaskStatus::AwaitingApproval,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];
const APPROVALS: [Approval; 3] = [Approval::Pending, Approval::Approved, Approval::Rejected];

/// Filters of the task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    pub status: Option<TaskStatus>,
    pub approval: Option<Approval>,
}

impl Filter {
    /// `status` and `approval`, each one of its states when given.
    pub fn of(query: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            status: query.choice("status", &STATUSES, TaskStatus::as_str)?,
            approval: query.choice("approval", &APPROVALS, Approval::as_str)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AGENT: &str = "00000000-0000-4000-8000-000000000001";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().to_utc()
    }

    fn task_of(body: &serde_json::Value) -> Result<NewTask, ApiError> {
        parse(body.to_string().as_bytes(), &Settings::default(), now())
    }

    fn refusal(body: &serde_json::Value) -> (u16, String) {
        let e = task_of(body).unwrap_err();
        (e.parts().0.as_u16(), e.to_string())
    }

    #[test]
    fn a_minimal_body_takes_the_defaults() {
        let task = task_of(&json!({"agentId": AGENT, "prompt": "  count  ", "cron": null})).unwrap();
        assert_eq!(task.prompt, "count");
        assert_eq!(
            (task.max_attempts, task.approved, task.cron.as_deref()),
            (3, false, None)
        );
        assert_eq!(task.first_due(now()).unwrap(), now());
    }

    #[test]
    fn a_schedule_is_read_trimmed_and_due_at_its_next_slot() {
        let body = json!({"agentId": AGENT, "prompt": "x", "cron": " 0 9 * * * ", "timeZone": " Europe/Paris ",
                          "maxAttempts": 5, "approved": true});
        let task = task_of(&body).unwrap();
        assert_eq!(task.cron.as_deref(), Some("0 9 * * *"));
        assert_eq!(task.time_zone.as_deref(), Some("Europe/Paris"));
        assert_eq!((task.max_attempts, task.approved), (5, true));
        assert_eq!(task.first_due(now()).unwrap().to_rfc3339(), "2026-03-02T08:00:00+00:00");
    }

    #[test]
    fn each_refusal_names_its_field() {
        // One field set on a valid body, and the start of what the refusal says.
        let cases = [
            ("scheduledFor", json!(5), 422, "scheduledFor must be a string"),
            (
                "scheduledFor",
                json!("2026-03-01T12:00:00"),
                422,
                "scheduledFor must be an RFC 3339 time with an offset",
            ),
            ("cron", json!(""), 422, "cron must be 1 to 200 characters"),
            ("cron", json!("*/30 * * * * *"), 422, "cron must have 5 fields"),
            ("timeZone", json!(""), 422, "timeZone is not a known IANA time zone"),
            ("maxAttempts", json!(1e3), 422, "maxAttempts must be a whole number"),
            (
                "prompt",
                json!("é".repeat(8001)),
                413,
                "prompt is 8001 characters; the limit is 8000",
            ),
        ];
        for (field, value, status, says) in cases {
            let mut body = json!({"agentId": AGENT, "prompt": "x", "cron": "0 9 * * *"});
            body[field] = value;
            let (got, message) = refusal(&body);
            assert_eq!(got, status, "{body}: {message}");
            assert!(message.starts_with(says), "{body}: {message}");
        }
    }

    #[test]
    fn the_fingerprint_is_the_request_as_asked() {
        let task = task_of(&json!({"agentId": AGENT, "prompt": "x", "approved": false})).unwrap();
        assert_eq!(
            task.fingerprint().unwrap(),
            format!(
                r#"{{"agent_id":"{AGENT}","prompt":"x","scheduled_for":null,"cron":null,"time_zone":null,"max_attempts":3,"approved":false}}"#
            )
        );
    }
}
