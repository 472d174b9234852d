//! The one configuration reader. Every setting is declared once — name, kind, range, default and
//! one line of documentation — next to the code that uses it; values come from one snapshot of
//! the environment taken at start-up ([`Env::from_process`], the only place that reads
//! `std::env`). Every malformed value is an error that names the setting and never echoes a
//! secret. The README's configuration tables are checked against these declarations by a test.
//!
//! This module knows nothing of any feature: database, auth, model and function settings declare
//! themselves with it.

mod env;
mod setting;
mod table;

pub use self::env::Env;
pub use self::setting::{Kind, Setting, Unit};
pub use self::table::markdown_table;

/// A setting that is missing or malformed. The message names the setting and never contains a
/// password or a full connection string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// A [`ConfigError::Invalid`] naming `name`.
pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        reason: reason.into(),
    }
}
