//! Recurring series: the one rule for what every ending of an occurrence means for its series.
//!
//! | ending | the series goes on? | next occurrence | its approval |
//! |---|---|---|---|
//! | completed | yes | first slot after both the occurrence's slot and now | as this one's (approved stays approved) |
//! | failed after its retries | yes | same | as this one's, unless the series is suspended (below) |
//! | failed by rescue (its instance died on the last attempt) | yes | same | same as failed |
//! | rejected (the occurrence) | yes | same | `pending`: the next one asks again |
//! | cancelled (the occurrence) | yes | same | as this one's |
//! | rejected or cancelled (the series) | no | none; every pending occurrence of the series is cancelled | — |
//!
//! A series whose occurrences failed `SCHEDULER_SERIES_FAILURE_LIMIT` times in a row is
//! *suspended*: its next occurrence is still created, but `pending` approval, with a note in
//! `last_error`, so a person decides whether it resumes (counted in the `SeriesSuspended`
//! metric). A completed occurrence resets the count.
//!
//! The next occurrence is created by the same statement that ends the current one (finish,
//! rescue, reject, cancel), at most once: the `(series_id, scheduled_for)` unique key. An
//! occurrence waiting for approval past its next slot does not pile slots up: no later
//! occurrence exists until it ends, and then the missed slots are skipped.

use chrono::{DateTime, Utc};

use super::recurrence::{next_occurrence, RecurrenceError};

/// How an occurrence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// Failed after its retries, or failed by the rescue of an expired lease on its last attempt.
    Failed,
    Rejected,
    Cancelled,
}

/// What a person's rejection or cancellation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Occurrence,
    Series,
}

/// `agent_tasks.approval_status`, stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Pending,
    Approved,
    Rejected,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Pending => "pending",
            Approval::Approved => "approved",
            Approval::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Approval> {
        [Approval::Pending, Approval::Approved, Approval::Rejected]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// An occurrence of a series, as the rule needs it.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    pub cron: &'a str,
    pub time_zone: Option<&'a str>,
    pub scheduled_for: DateTime<Utc>,
    pub approval: Approval,
    /// Failed occurrences in a row before this one.
    pub failures: i32,
}

/// The occurrence to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    pub at: DateTime<Utc>,
    pub approval: Approval,
    /// Failed occurrences in a row before it.
    pub failures: i32,
    /// Set when the series is suspended by this ending.
    pub note: Option<String>,
}

impl Next {
    pub fn suspends(&self) -> bool {
        self.note.is_some()
    }
}

/// The rule: what follows `occurrence` ending with `ending` (applied to `scope`), at `now`.
pub fn next(
    occurrence: &Occurrence<'_>,
    ending: Ending,
    scope: Scope,
    now: DateTime<Utc>,
    failure_limit: i32,
) -> Result<Option<Next>, RecurrenceError> {
    if scope == Scope::Series {
        return Ok(None);
    }
    let at = next_occurrence(occurrence.cron, occurrence.time_zone, occurrence.scheduled_for, now)?;
    let failures = match ending {
        Ending::Completed => 0,
        Ending::Failed => occurrence.failures.saturating_add(1),
        Ending::Rejected | Ending::Cancelled => occurrence.failures,
    };
    let standing = match ending {
        Ending::Rejected => Approval::Pending,
        _ if occurrence.approval == Approval::Approved => Approval::Approved,
        _ => Approval::Pending,
    };
    let suspended = ending == Ending::Failed && failures >= failure_limit && standing == Approval::Approved;
    Ok(Some(Next {
        at,
        approval: if suspended { Approval::Pending } else { standing },
        failures,
        note: suspended.then(|| {
            format!("series suspended after {failures} failed occurrences in a row: approve this occurrence to resume")
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hourly(approval: Approval, failures: i32) -> Occurrence<'static> {
        Occurrence {
            cron: "0 * * * *",
            time_zone: None,
            scheduled_for: utc("2026-05-01T10:00:00Z"),
            approval,
            failures,
        }
    }

    const NOW: &str = "2026-05-01T10:00:30Z";

    #[test]
    fn every_ending_of_an_occurrence_keeps_the_series_going() {
        for ending in [Ending::Completed, Ending::Failed, Ending::Rejected, Ending::Cancelled] {
            let next = next(&hourly(Approval::Approved, 0), ending, Scope::Occurrence, utc(NOW), 3)
                .unwrap()
                .expect("a next occurrence");
            assert_eq!(next.at, utc("2026-05-01T11:00:00Z"), "{ending:?}");
        }
    }

    #[test]
    fn ending_the_series_creates_nothing() {
        for ending in [Ending::Rejected, Ending::Cancelled] {
            assert_eq!(
                next(&hourly(Approval::Approved, 0), ending, Scope::Series, utc(NOW), 3).unwrap(),
                None
            );
        }
    }

    #[test]
    fn approval_carries_over_except_after_a_rejection() {
        let rule = |approval, ending| {
            next(&hourly(approval, 0), ending, Scope::Occurrence, utc(NOW), 3)
                .unwrap()
                .unwrap()
                .approval
        };
        assert_eq!(rule(Approval::Approved, Ending::Completed), Approval::Approved);
        assert_eq!(rule(Approval::Approved, Ending::Cancelled), Approval::Approved);
        assert_eq!(rule(Approval::Pending, Ending::Cancelled), Approval::Pending);
        assert_eq!(rule(Approval::Pending, Ending::Rejected), Approval::Pending);
    }

    #[test]
    fn failures_in_a_row_suspend_the_series_and_a_success_resets_the_count() {
        let after = |failures, ending| {
            next(
                &hourly(Approval::Approved, failures),
                ending,
                Scope::Occurrence,
                utc(NOW),
                3,
            )
            .unwrap()
            .unwrap()
        };
        let second = after(1, Ending::Failed);
        assert_eq!(
            (second.failures, second.approval, second.suspends()),
            (2, Approval::Approved, false)
        );
        let third = after(2, Ending::Failed);
        assert_eq!(
            (third.failures, third.approval, third.suspends()),
            (3, Approval::Pending, true)
        );
        assert!(third.note.unwrap().contains("suspended after 3"));
        assert_eq!(after(2, Ending::Completed).failures, 0);
        assert_eq!(after(2, Ending::Cancelled).failures, 2);
    }

    #[test]
    fn missed_slots_are_skipped_not_piled_up() {
        let late = Occurrence {
            scheduled_for: utc("2026-05-01T10:00:00Z"),
            ..hourly(Approval::Approved, 0)
        };
        let next = next(
            &late,
            Ending::Completed,
            Scope::Occurrence,
            utc("2026-05-01T15:20:00Z"),
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.at, utc("2026-05-01T16:00:00Z"));
    }
}
