//! The health function: `GET /api/health` (public liveness) and `GET /api/health/connections`
//! (admin: connection usage against the limit, with warning/critical levels).

mod handler;
pub mod settings;

pub use handler::{handle, ping, Health, Level};
pub use settings::{Settings, Thresholds};
