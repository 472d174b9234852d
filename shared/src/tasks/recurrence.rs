//! Recurring tasks: a cron expression (5 fields, or 6 with seconds) evaluated in an IANA time
//! zone (UTC when none). Missed occurrences are skipped, not replayed: the next occurrence is the
//! first one strictly after both the finished occurrence and now, so a backlog never bursts.
//!
//! Daylight-saving days (tested below with fixed instants, Europe/Paris and America/New_York):
//! - a fixed local time that does not exist (the spring-forward gap, e.g. 02:30 in Paris on the
//!   last Sunday of March) runs once, at the first instant after the gap (03:00 summer time);
//! - a fixed local time that happens twice (the fall-back overlap) runs once, at its first
//!   occurrence (summer time), however late the previous run finished;
//! - interval crons (hourly, every 30 minutes) follow real time: each real hour runs once, so the
//!   spring day has 23 hourly runs and the autumn day 25 (the repeated wall-clock hour is two
//!   real hours).

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

/// Runs of a schedule examined by [`shortest_gap`]: enough to cover every minute of two hours
/// (the minute field's pattern, and the step from one allowed hour into the next).
const GAP_SAMPLE_RUNS: usize = 240;

/// Fields of a cron expression (`@hourly`-style nicknames are one).
pub fn field_count(cron: &str) -> usize {
    cron.split_whitespace().count()
}

/// The shortest gap between two consecutive runs among the next runs after `from` (`None` when
/// it runs at most once). A bound on how often a schedule fires, checked at creation.
pub fn shortest_gap(
    cron: &str,
    time_zone: Option<&str>,
    from: DateTime<Utc>,
) -> Result<Option<chrono::Duration>, RecurrenceError> {
    let mut previous = next_occurrence(cron, time_zone, from, from)?;
    let mut shortest: Option<chrono::Duration> = None;
    for _ in 0..GAP_SAMPLE_RUNS {
        let Ok(next) = next_occurrence(cron, time_zone, previous, previous) else {
            break;
        };
        let gap = next - previous;
        shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        previous = next;
    }
    Ok(shortest)
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

    #[test]
    fn the_shortest_gap_is_found_in_the_minute_pattern_and_across_hours() {
        let t = utc("2026-01-01T00:30:00Z");
        let gap = |cron: &str| shortest_gap(cron, None, t).unwrap().map(|d| d.num_seconds());
        assert_eq!(gap("* * * * * *"), Some(1));
        assert_eq!(gap("*/5 * * * *"), Some(300));
        assert_eq!(gap("0,1 * * * *"), Some(60));
        // 23:59 then 00:00: the gap that spans an hour (and a day) counts too.
        assert_eq!(gap("59,0 23,0 * * *"), Some(60));
        assert_eq!(gap("0 9 * * *"), Some(86_400));
        assert_eq!(field_count("* * * * * *"), 6);
        assert_eq!(field_count("@hourly"), 1);
    }

    /// The runs of `cron` in `zone` whose instants fall in [from, to), walking run after run.
    fn runs(cron: &str, zone: &str, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (mut t, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        loop {
            t = next_occurrence(cron, Some(zone), t, t).unwrap();
            if t >= end {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn a_daily_run_in_the_spring_gap_runs_once_right_after_it() {
        // Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:30 does not exist.
        let paris = runs(
            "30 2 * * *",
            "Europe/Paris",
            "2026-03-28T00:00:00Z",
            "2026-03-31T00:00:00Z",
        );
        assert_eq!(
            paris,
            vec![
                utc("2026-03-28T01:30:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-30T00:30:00Z")
            ]
        );
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z.
        let new_york = runs(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            "2026-03-10T12:00:00Z",
        );
        assert_eq!(
            new_york,
            vec![
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-09T06:30:00Z"),
                utc("2026-03-10T06:30:00Z")
            ]
        );
    }

    #[test]
    fn a_daily_run_in_the_autumn_overlap_runs_once_at_its_first_occurrence() {
        // Paris, 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:30 happens twice.
        let paris = runs(
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-24T00:00:00Z",
            "2026-10-27T00:00:00Z",
        );
        assert_eq!(
            paris,
            vec![
                utc("2026-10-24T00:30:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-26T01:30:00Z")
            ]
        );
        // However late that run finished, the second 02:30 is not run.
        let late = next_occurrence(
            "30 2 * * *",
            Some("Europe/Paris"),
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-25T01:20:00Z"),
        )
        .unwrap();
        assert_eq!(late, utc("2026-10-26T01:30:00Z"));
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00Z; 01:30 happens twice.
        let new_york = runs(
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            "2026-11-03T00:00:00Z",
        );
        assert_eq!(new_york, vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]);
        let late = next_occurrence(
            "30 1 * * *",
            Some("America/New_York"),
            utc("2026-11-01T05:30:00Z"),
            utc("2026-11-01T06:10:00Z"),
        )
        .unwrap();
        assert_eq!(late, utc("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn hourly_runs_follow_real_time_across_both_changes() {
        // Local days: 23 real hours in spring, 25 in autumn; one run per real hour, no duplicate.
        let days = [
            ("Europe/Paris", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
            ("Europe/Paris", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
            ("America/New_York", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23),
            ("America/New_York", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25),
        ];
        for (zone, start, end, expected) in days {
            // From one second before local midnight: the midnight run is the first.
            let from = (utc(start) - chrono::Duration::seconds(1)).to_rfc3339();
            let hours = runs("0 * * * *", zone, &from, end);
            assert_eq!(hours.len(), expected, "{zone} {start}: {hours:?}");
            assert!(
                hours.windows(2).all(|w| w[1] - w[0] == chrono::Duration::hours(1)),
                "{zone} {start}: one run per real hour"
            );
        }
    }
}
