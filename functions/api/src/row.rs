//! Rows decoded by column name. [`row!`] declares a struct and its [`shared::db::FromRow`] at
//! once: each field is read from the column of its name, as its type [`Decode`]s (a state stored
//! as text, such as [`TaskStatus`], into its enum, through its `FromSql`). A row of another shape is a
//! [`DbError::Decode`] naming the column, never a panic.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use shared::db::{column, DbError, Row};
use shared::tasks::series::Approval;
use shared::tasks::TaskStatus;

/// A struct whose every field is the column of its name, and its `FromRow`: the field list is
/// written once.
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $type:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $type,)*
        }

        impl shared::db::FromRow for $name {
            fn from_row(row: &shared::db::Row) -> Result<Self, shared::db::DbError> {
                Ok(Self {
                    $($field: <$type as $crate::row::Decode>::decode(row, stringify!($field))?,)*
                })
            }
        }
    };
}
pub(crate) use row;

/// A value read from one column.
pub trait Decode: Sized {
    fn decode(row: &Row, name: &str) -> Result<Self, DbError>;
}

/// Types the driver reads as they are.
macro_rules! as_stored {
    ($($type:ty),* $(,)?) => {
        $(impl Decode for $type {
            fn decode(row: &Row, name: &str) -> Result<Self, DbError> {
                column(row, name)
            }
        })*
    };
}

as_stored!(
    bool,
    i32,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<Vec<String>>,
    Uuid,
    Option<Uuid>,
    NaiveDate,
    serde_json::Value,
    Option<serde_json::Value>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    // States are stored as text and read by their enum's `parse` (`shared::tasks`).
    TaskStatus,
    Approval,
);
