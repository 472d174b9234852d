//! Tracing set-up: JSON lines in Lambda (CloudWatch parses them; Lambda's JSON log format is
//! honoured), human-readable text locally. Level from `RUST_LOG`, else Lambda's
//! `AWS_LAMBDA_LOG_LEVEL`, else `info`.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Env, Setting};

pub const LOG_FORMAT: Setting = Setting::choice(
    "LOG_FORMAT",
    &["text", "json"],
    "text",
    "log line format outside Lambda (Lambda's own `AWS_LAMBDA_LOG_FORMAT=JSON` also selects JSON); level from `RUST_LOG`",
);

pub const SETTINGS: &[&Setting] = &[&LOG_FORMAT];

/// Installs the subscriber once (later calls keep the first). A malformed `LOG_FORMAT` is an
/// error, after a text subscriber is installed so that the error itself is logged.
pub fn init(env: &Env) -> Result<(), ConfigError> {
    let filter = env
        .raw("RUST_LOG")
        .or_else(|| env.raw("AWS_LAMBDA_LOG_LEVEL"))
        .and_then(|l| EnvFilter::try_new(l.to_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = env
        .raw("AWS_LAMBDA_LOG_FORMAT")
        .is_some_and(|f| f.eq_ignore_ascii_case("json"))
        || env.choice(&LOG_FORMAT).is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    // Already initialised (tests call this more than once): keep the first subscriber.
    let _ = result;
    env.choice(&LOG_FORMAT).map(|_| ())
}

/// An error with its causes, for a log line: `error = %Chain(&e)` prints
/// `outer: cause: root cause`. Response bodies never use it (they stay sanitised).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_prints_every_cause_in_order() {
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(Chain(&e).to_string(), "outer: root");
    }
}
