//! The connection URL (`DATABASE_URL`, `DIRECT_URL`): its parts, percent-decoded, and the
//! parameters it may carry (Prisma's `connection_limit` and `pool_timeout`, libpq's
//! `connect_timeout`, `sslmode` and `sslrootcert`; others known to be harmless are ignored, the
//! rest refused). Errors name the setting and the parameter, never echo the URL.

use std::time::Duration;

use url::Url;

use super::ssl::{RootCert, SslMode};
use super::{MAX_POOL_SIZE, MAX_TIMEOUT_MS};
use crate::config::{invalid, ConfigError};

/// URL parameters that are understood elsewhere (Prisma, libpq) and harmless to ignore here.
const IGNORED_URL_PARAMS: &[&str] = &[
    "pgbouncer",
    "statement_cache_size",
    "socket_timeout",
    "sslaccept",
    "application_name",
];

fn parse_seconds(name: &str, value: &str) -> Result<Duration, ConfigError> {
    let s: u64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, "expected a whole number of seconds"))?;
    if s == 0 || s * 1000 > MAX_TIMEOUT_MS {
        return Err(invalid(
            name,
            format!(
                "must be between 1 and {} s (unbounded waits are not allowed)",
                MAX_TIMEOUT_MS / 1000
            ),
        ));
    }
    Ok(Duration::from_secs(s))
}

fn parse_pool_size(name: &str, value: &str) -> Result<usize, ConfigError> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, "expected a whole number"))?;
    if n == 0 || n > MAX_POOL_SIZE {
        return Err(invalid(name, format!("must be between 1 and {MAX_POOL_SIZE}")));
    }
    Ok(n)
}

fn decode(name: &str, part: &str, what: &str) -> Result<String, ConfigError> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| invalid(name, format!("the {what} is not valid UTF-8 after percent-decoding")))
}

/// Parts of a connection URL, before environment overrides.
pub(super) struct ParsedUrl {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: Option<String>,
    pub(super) dbname: String,
    pub(super) ssl_mode: Option<SslMode>,
    pub(super) ssl_root_cert: Option<RootCert>,
    pub(super) connection_limit: Option<usize>,
    pub(super) pool_timeout: Option<Duration>,
    pub(super) connect_timeout: Option<Duration>,
}

pub(super) fn parse_url(name: &str, raw: &str) -> Result<ParsedUrl, ConfigError> {
    // url::ParseError never echoes its input, so the password cannot leak through it.
    let url = Url::parse(raw.trim()).map_err(|e| invalid(name, format!("not a valid URL ({e})")))?;
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        return Err(invalid(name, "the scheme must be postgres:// or postgresql://"));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(name, "the host is missing"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let user = decode(name, url.username(), "user name")?;
    if user.is_empty() {
        return Err(invalid(name, "the user name is missing"));
    }
    let password = url.password().map(|p| decode(name, p, "password")).transpose()?;
    let dbname = decode(name, url.path().trim_start_matches('/'), "database name")?;
    let dbname = if dbname.is_empty() {
        "postgres".to_string()
    } else {
        dbname
    };

    let mut parsed = ParsedUrl {
        host,
        port: url.port().unwrap_or(5432),
        user,
        password,
        dbname,
        ssl_mode: None,
        ssl_root_cert: None,
        connection_limit: None,
        pool_timeout: None,
        connect_timeout: None,
    };
    for (key, value) in url.query_pairs() {
        let param = format!("{name} parameter {key}");
        match key.as_ref() {
            "connection_limit" => parsed.connection_limit = Some(parse_pool_size(&param, &value)?),
            "pool_timeout" => parsed.pool_timeout = Some(parse_seconds(&param, &value)?),
            "connect_timeout" => parsed.connect_timeout = Some(parse_seconds(&param, &value)?),
            "sslmode" => parsed.ssl_mode = Some(SslMode::parse(&param, &value)?),
            "sslrootcert" => parsed.ssl_root_cert = Some(RootCert::parse(&value)),
            "options" => {
                return Err(invalid(
                    param,
                    "startup options are session state, which a transaction pooler does not keep",
                ))
            }
            k if IGNORED_URL_PARAMS.contains(&k) => {}
            _ => return Err(invalid(param, "unknown parameter")),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{env, ONE};
    use super::super::DbSettings;
    use super::*;

    #[test]
    fn prisma_parameters_size_the_pool() {
        let e = env(&[(
            "DATABASE_URL",
            "postgres://postgres.ref:s3cret@aws-0-eu.pooler.supabase.com:6543/postgres?pgbouncer=true&connection_limit=3&pool_timeout=7&sslmode=require",
        )]);
        let s = DbSettings::for_function(&e, "chat", ONE).unwrap();
        assert_eq!(s.pool_max_size, 3);
        assert_eq!(s.pool_wait_timeout, Duration::from_secs(7));
        assert_eq!(s.ssl_mode, SslMode::Require);
        assert_eq!(s.port, 6543);
        assert_eq!(s.user, "postgres.ref");
        assert_eq!(s.dbname, "postgres");
    }

    #[test]
    fn malformed_settings_are_named_and_never_echo_the_password() {
        let cases = [
            ("DATABASE_URL", "postgres://u:hunter2@h:notaport/db", "DATABASE_URL"),
            ("DATABASE_URL", "mysql://u:hunter2@h/db", "DATABASE_URL"),
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?connection_limit=0",
                "connection_limit",
            ),
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?connection_limit=abc",
                "connection_limit",
            ),
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?pool_timeout=0",
                "pool_timeout",
            ),
            ("DATABASE_URL", "postgres://u:hunter2@h/db?sslmode=maybe", "sslmode"),
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?options=-c%20statement_timeout%3D5",
                "options",
            ),
            ("DATABASE_URL", "postgres://u:hunter2@h/db?colour=blue", "colour"),
            ("DATABASE_URL", "postgres://:hunter2@h/db", "user name"),
        ];
        for (var, value, named) in cases {
            let err = DbSettings::for_function(&env(&[(var, value)]), "chat", ONE).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(named), "{msg:?} should name {named}");
            assert!(!msg.contains("hunter2"), "{msg:?} leaks the password");
        }
    }

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        let e = env(&[("DATABASE_URL", "postgres://us%40er:p%2Fw@h:6543/my%20db")]);
        let s = DbSettings::for_function(&e, "chat", ONE).unwrap();
        assert_eq!(s.user, "us@er");
        assert_eq!(s.password.as_deref(), Some("p/w"));
        assert_eq!(s.dbname, "my db");
    }
}
