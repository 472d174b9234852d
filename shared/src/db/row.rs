//! Rows decoded by column name into typed values: a statement whose columns change is a
//! [`DbError::Decode`], never a panic.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::DbError;

/// The value of column `name`, or a decoding error naming it.
pub fn column<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, DbError> {
    row.try_get(name).map_err(|e| DbError::decode_column(name, e))
}

/// A type built from one row.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, DbError>;

    /// Every row, or the first decoding error.
    fn from_rows(rows: &[Row]) -> Result<Vec<Self>, DbError> {
        rows.iter().map(Self::from_row).collect()
    }
}
