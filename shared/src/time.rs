//! The one time format of every HTTP answer: RFC 3339, UTC, milliseconds
//! (`2026-12-05T07:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// A time in a view, serialised in the one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_written_in_utc_with_milliseconds() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T08:00:00.123456+01:00")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        assert_eq!(
            serde_json::to_string(&Timestamp(t)).unwrap(),
            "\"2026-12-05T07:00:00.123Z\""
        );
    }
}
