//! Pooler-safe, bounded database access.

mod cancel;
mod counters;
mod error;
mod pool;
mod sql;

pub use counters::DbActivity;
pub use error::{DbError, DbErrorKind};
pub use pool::{Conn, Db, PoolStatus, RequestGuard};
pub use sql::{Param, Sql, Tx};
pub use tokio_postgres::types::Type;
pub use tokio_postgres::Row;
