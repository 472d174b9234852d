//! Everything a test needs, by job: [`crate::database`] (a fresh database per test),
//! [`crate::bouncer`] (pgbouncer processes), [`crate::cluster`] (Postgres clusters),
//! [`crate::runtime`] (the Lambda Runtime API) and [`crate::wait`] (bounded polling).

pub use crate::bouncer::*;
pub use crate::cluster::*;
pub use crate::database::*;
pub use crate::monitor::*;
pub use crate::runtime::*;
pub use crate::wait::*;
