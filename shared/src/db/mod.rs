//! The database platform: settings, TLS, one warm pool per instance, bounded pooler-safe
//! statements with server-side cancel, classified errors, typed row decoding, migrations and the
//! `pg_stat_activity` report.

pub mod activity;
mod cancel;
mod counters;
mod error;
pub mod migrate;
mod pool;
pub mod probe;
mod row;
pub mod settings;
mod sql;
pub mod tls;

pub use counters::DbActivity;
pub use error::{Cause, DbError, DbErrorKind};
pub use pool::{Conn, Db, PoolStatus, RequestGuard};
pub use row::{column, FromRow};
pub use settings::{ConnectionMode, DbSettings, PoolDefaults, SslMode};
pub use sql::{Param, Sql, Tx};
pub use tokio_postgres::types::Type;
pub use tokio_postgres::Row;
