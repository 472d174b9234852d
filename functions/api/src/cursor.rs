//! Keyset pagination cursors: the sort key of the last item of a page (a time and an id), opaque
//! to clients (base64url). A cursor that does not decode is a 422, never a 500.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

use shared::http::ApiError;

/// Where a page starts: strictly before this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(text: &str) -> Result<Cursor, ApiError> {
        let bad = || ApiError::Unprocessable("before must be the `next` cursor of a previous page".into());
        if text.len() > 128 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
        // Only times a page can start from (Postgres refuses some chrono can represent).
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .filter(|t| (1970..=9999).contains(&t.year()))
            .ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Cursor { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_795_780_800_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn hostile_cursors_are_422() {
        let long = "A".repeat(1000);
        for text in [
            "",
            "not base64!",
            "bm90IGEgY3Vyc29y",
            long.as_str(),
            &URL_SAFE_NO_PAD.encode("99999999999999999999.x"),
            &URL_SAFE_NO_PAD.encode(format!("-8000000000000000000.{}", Uuid::nil())),
            &URL_SAFE_NO_PAD.encode(format!("253402300800000000.{}", Uuid::nil())),
            &URL_SAFE_NO_PAD.encode("1.not-a-uuid"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert_eq!(Cursor::decode(text).unwrap_err().parts().0.as_u16(), 422, "{text}");
        }
    }
}
