//! Recurring tasks: a cron expression (5 fields, or 6 with seconds) evaluated in an IANA time
//! zone (UTC when none). Missed occurrences are skipped, not replayed: the next occurrence is the
//! first one strictly after both the finished occurrence and now, so a backlog never bursts.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecurrenceError {
    #[error("invalid cron expression {0:?}")]
    Cron(String),
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    #[error("cron expression {0:?} has no next occurrence")]
    NoNext(String),
}

/// The next occurrence after `max(occurrence, now)`.
pub fn next_occurrence(
    cron: &str,
    time_zone: Option<&str>,
    occurrence: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, RecurrenceError> {
    let tz: Tz = match time_zone {
        None => Tz::UTC,
        Some(name) => Tz::from_str(name).map_err(|_| RecurrenceError::TimeZone(name.to_string()))?,
    };
    let schedule = Cron::from_str(cron).map_err(|_| RecurrenceError::Cron(cron.to_string()))?;
    let from = occurrence.max(now).with_timezone(&tz);
    schedule
        .find_next_occurrence(&from, false)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| RecurrenceError::NoNext(cron.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_nine_am_in_paris_follows_the_dst_change() {
        // Paris leaves summer time on 2026-10-25: 09:00 local is 07:00Z before, 08:00Z after.
        let before = next_occurrence(
            "0 9 * * *",
            Some("Europe/Paris"),
            utc("2026-10-24T07:00:00Z"),
            utc("2026-10-24T07:00:00Z"),
        )
        .unwrap();
        assert_eq!(before, utc("2026-10-25T08:00:00Z"));
        let after = next_occurrence("0 9 * * *", Some("Europe/Paris"), before, before).unwrap();
        assert_eq!(after, utc("2026-10-26T08:00:00Z"));
    }

    #[test]
    fn a_backlog_skips_to_the_next_future_occurrence() {
        let next = next_occurrence(
            "0 * * * *",
            None,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-03T10:30:00Z"),
        )
        .unwrap();
        assert_eq!(next, utc("2026-01-03T11:00:00Z"));
    }

    #[test]
    fn bad_expressions_and_zones_are_errors() {
        let t = utc("2026-01-01T00:00:00Z");
        assert!(matches!(
            next_occurrence("every hour", None, t, t),
            Err(RecurrenceError::Cron(_))
        ));
        assert!(matches!(
            next_occurrence("0 * * * *", Some("Mars/Olympus"), t, t),
            Err(RecurrenceError::TimeZone(_))
        ));
    }
}

