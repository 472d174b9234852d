//! Keyset pagination: a cursor is the sort key of the last item of a page (a time and an id),
//! opaque to clients (base64url) and given back as the `before` query parameter; a cursor that
//! does not decode is a 422 naming `before`, never a 500. [`keyset`] runs a page's statement,
//! [`Page`] cuts the `limit + 1` items it fetched into a page and the cursor of the next one;
//! [`PageView`] is its JSON.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{DbError, Param, Row, Sql, Type};
use shared::http::ApiError;

/// The query parameter a cursor comes back in.
pub const PARAMETER: &str = "before";
/// Longest cursor text decoded.
const MAX_CHARS: usize = 128;

/// Where a page starts: strictly before this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn new(at: DateTime<Utc>, id: Uuid) -> Self {
        Self { at, id }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.at.timestamp_micros(), self.id))
    }

    /// A cursor given back: 422 naming [`PARAMETER`] when it is not one this API wrote.
    pub fn decode(text: &str) -> Result<Cursor, ApiError> {
        Self::parse(text)
            .ok_or_else(|| ApiError::Unprocessable(format!("{PARAMETER} must be the `next` cursor of a previous page")))
    }

    fn parse(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CHARS {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (micros, id) = std::str::from_utf8(&raw).ok()?.split_once('.')?;
        // Only times a page can start from (Postgres refuses some chrono can represent).
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .filter(|t| (1970..=9999).contains(&t.year()))?;
        let id = Uuid::parse_str(id).ok()?;
        Some(Cursor { at, id })
    }
}

/// In a view, a cursor is its text.
impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

/// The page a list route is asked for: `limit` items strictly before `before` (from the start
/// when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub before: Option<Cursor>,
    pub limit: i64,
}

/// Runs a keyset statement for `page`: its parameters are `leading`, then the cursor's time and
/// id (nulls for the first page) and the number of rows to fetch (`limit + 1`: one more tells
/// whether there is a next page), then `trailing`.
#[tracing::instrument(skip_all)]
pub async fn keyset<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    statement: &str,
    leading: &[Param<'_>],
    page: PageRequest,
    trailing: &[Param<'_>],
) -> Result<Vec<Row>, DbError> {
    let PageRequest { before, limit } = page;
    let (at, id, fetch) = (before.map(|c| c.at), before.map(|c| c.id), limit.saturating_add(1));
    let mut params = leading.to_vec();
    params.extend([
        (&at as &(dyn ToSql + Sync), Type::TIMESTAMPTZ),
        (&id, Type::UUID),
        (&fetch, Type::INT8),
    ]);
    params.extend_from_slice(trailing);
    sql.query(statement, &params).await
}

/// One page of a list: at most `limit` items, and where the next page starts when there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// From the `limit + 1` items a statement fetched in page order, each keyed by `key`.
    pub fn of(mut items: Vec<T>, limit: i64, key: fn(&T) -> Cursor) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(key) } else { None };
        Self { items, next }
    }

    /// The page's view: its items, each shown by `show`, listed under `name`.
    pub fn view<'a, V>(&'a self, name: &'static str, show: impl FnMut(&'a T) -> V) -> PageView<V> {
        PageView {
            name,
            items: self.items.iter().map(show).collect(),
            next: self.next,
        }
    }
}

/// A page as a list route answers it: `{"<name>": [...], "next": cursor or null}`.
#[derive(Debug, Clone)]
pub struct PageView<V> {
    pub name: &'static str,
    pub items: Vec<V>,
    pub next: Option<Cursor>,
}

impl<V: serde::Serialize> serde::Serialize for PageView<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(self.name, &self.items)?;
        map.serialize_entry("next", &self.next)?;
        map.end()
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
    fn a_page_keeps_limit_items_and_points_past_the_last() {
        let key = |n: &i64| Cursor {
            at: DateTime::from_timestamp_micros(*n).unwrap(),
            id: Uuid::nil(),
        };
        let page = Page::of(vec![5, 4, 3], 2, key);
        assert_eq!((page.items, page.next), (vec![5, 4], Some(key(&4))));
        let last = Page::of(vec![5, 4], 2, key);
        assert_eq!((&last.items, last.next), (&vec![5, 4], None));
        let view = serde_json::to_value(last.view("numbers", |n| n * 10)).unwrap();
        assert_eq!(view, serde_json::json!({"numbers": [50, 40], "next": null}));
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
            let e = Cursor::decode(text).unwrap_err();
            assert_eq!(e.parts().0.as_u16(), 422, "{text}");
            assert!(e.to_string().starts_with("before must be"), "{e}");
        }
    }
}
