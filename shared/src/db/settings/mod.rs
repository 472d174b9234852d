//! Database settings: `DATABASE_URL` (the transaction pooler; Supabase: port 6543) and
//! `DIRECT_URL` (the session connection for migrations). Like Prisma, the URL may carry
//! `connection_limit` (pool max size) and `pool_timeout` (seconds to wait for a pooled
//! connection); like libpq, `connect_timeout`, `sslmode` and `sslrootcert`. Explicit `DB_*`
//! variables override the URL. Secrets never reach a log line or an error message: errors name
//! the setting, never echo the URL.

mod ssl;
mod url;

use std::fmt;
use std::time::Duration;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

use self::ssl::tls_mode;
use self::url::parse_url;

pub(crate) use self::ssl::ROOT_CERT_SETTING;
pub use self::ssl::{effective_ssl_mode, RootCert, SslMode};

pub const DATABASE_URL: Setting = Setting::secret(
    "DATABASE_URL",
    "the transaction pooler (Supabase: port 6543); may carry `connection_limit`, `pool_timeout`, `connect_timeout`, `sslmode`, `sslrootcert`",
);
pub const DIRECT_URL: Setting = Setting::secret("DIRECT_URL", "the direct session connection, used only by `migrate`");
pub const DB_POOL_MAX_SIZE: Setting = Setting::optional_number(
    "DB_POOL_MAX_SIZE",
    1,
    MAX_POOL_SIZE as u64,
    Unit::Plain,
    "pool size per instance (else the URL's `connection_limit`, else the function's own: 1, scheduler 2)",
);
pub const DB_POOL_TIMEOUT_MS: Setting = bound_ms(
    "DB_POOL_TIMEOUT_MS",
    2000,
    "longest wait for a pooled connection (else the URL's `pool_timeout`): 503 past it",
);
pub const DB_CONNECT_TIMEOUT_MS: Setting = bound_ms(
    "DB_CONNECT_TIMEOUT_MS",
    3000,
    "bound on opening a connection (else the URL's `connect_timeout`)",
);
pub const DB_STATEMENT_TIMEOUT_MS: Setting = bound_ms(
    "DB_STATEMENT_TIMEOUT_MS",
    5000,
    "bound on each statement; past it the statement is cancelled on the server (504)",
);
pub const DB_SSLMODE: Setting = Setting::choice(
    "DB_SSLMODE",
    &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
    "require",
    "TLS to the database, libpq's meanings (else the URL's `sslmode`); `prefer` only on loopback, upgraded to `require` elsewhere; plaintext to a remote host only with an explicit `disable`",
);
pub const DB_SSL_ROOT_CERT: Setting = Setting::text(
    "DB_SSL_ROOT_CERT",
    None,
    "the only CA trusted for `verify-ca`/`verify-full` (which need it; with `require` it means `verify-ca`): a PEM file's path, or the PEM text itself (line breaks may be spaces), or `system` for the public web roots with `verify-full`; else the URL's `sslrootcert`",
);

pub const DB_CONNECTION_MODE: Setting = Setting::choice(
    "DB_CONNECTION_MODE",
    &["release", "warm"],
    "release",
    "`release`: a pooler client is held only while statements run (idle ones closed before a model call and at the end of each request); `warm`: kept open for the instance's life",
);

/// Whether connections outlive their use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// Idle connections closed before waiting on a model and at the end of each request: a
    /// pooler client only while statements run.
    Release,
    /// Kept in the pool for the instance's life (one connect per instance).
    Warm,
}

/// Every database setting, in the README's order.
pub const SETTINGS: &[&Setting] = &[
    &DATABASE_URL,
    &DIRECT_URL,
    &DB_POOL_MAX_SIZE,
    &DB_POOL_TIMEOUT_MS,
    &DB_CONNECT_TIMEOUT_MS,
    &DB_STATEMENT_TIMEOUT_MS,
    &DB_SSLMODE,
    &DB_SSL_ROOT_CERT,
    &DB_CONNECTION_MODE,
];

/// Everything needed to open connections and size the pool of one Lambda instance.
#[derive(Clone)]
pub struct DbSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<RootCert>,
    /// `application_name`, set to the function name so server-side views show who is connected.
    pub application_name: String,
    pub pool_max_size: usize,
    pub pool_wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub keepalive_idle: Duration,
    pub connection_mode: ConnectionMode,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("application_name", &self.application_name)
            .field("pool_max_size", &self.pool_max_size)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("connection_mode", &self.connection_mode)
            .finish()
    }
}

impl fmt::Display for DbSettings {
    /// A loggable form of the target: no password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{} (sslmode {:?}, pool {}, wait {:?}, statement {:?}, connections {:?})",
            self.user,
            self.host,
            self.port,
            self.dbname,
            self.ssl_mode,
            self.pool_max_size,
            self.pool_wait_timeout,
            self.statement_timeout,
            self.connection_mode
        )
    }
}

/// Defaults that depend on the function (chat and health serve one request at a time per
/// instance: one connection; the scheduler overlaps claim and finish: two).
#[derive(Debug, Clone, Copy)]
pub struct PoolDefaults {
    pub max_size: usize,
}

const MAX_POOL_SIZE: usize = 32;
const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// A database bound in milliseconds: 1 ms to [`MAX_TIMEOUT_MS`] (no unbounded waits).
const fn bound_ms(name: &'static str, default: u64, doc: &'static str) -> Setting {
    Setting::millis(name, 1, MAX_TIMEOUT_MS, default, doc)
}

impl DbSettings {
    /// Settings for a function's pool: `DATABASE_URL` plus `DB_*` overrides.
    pub fn for_function(env: &Env, application_name: &str, defaults: PoolDefaults) -> Result<Self, ConfigError> {
        Self::from_url_var(env, &DATABASE_URL, application_name, defaults)
    }

    /// Settings for the direct (session) connection used by migrations: `DIRECT_URL`.
    pub fn direct(env: &Env, application_name: &str) -> Result<Self, ConfigError> {
        Self::from_url_var(env, &DIRECT_URL, application_name, PoolDefaults { max_size: 1 })
    }

    fn from_url_var(
        env: &Env,
        var: &Setting,
        application_name: &str,
        defaults: PoolDefaults,
    ) -> Result<Self, ConfigError> {
        let raw = env.required(var)?;
        let url = parse_url(var.name, &raw)?;

        let pool_max_size = match env.given_number(&DB_POOL_MAX_SIZE)? {
            Some(n) => usize::try_from(n).unwrap_or(MAX_POOL_SIZE),
            None => url.connection_limit.unwrap_or(defaults.max_size),
        };
        let explicit = match env.text(&DB_SSLMODE) {
            Some(v) => Some(SslMode::parse(DB_SSLMODE.name, &v)?),
            None => url.ssl_mode,
        };
        let ssl_root_cert = env
            .text(&DB_SSL_ROOT_CERT)
            .map(|v| RootCert::parse(&v))
            .or(url.ssl_root_cert);
        if let Some(RootCert::File(path)) = &ssl_root_cert {
            if !path.is_file() {
                return Err(invalid(ROOT_CERT_SETTING, format!("no file at {}", path.display())));
            }
        }
        let ssl_mode = tls_mode(&url.host, explicit, ssl_root_cert.as_ref())?;
        let or_default = |given: Option<Duration>, url: Option<Duration>, s: &Setting| {
            given.or(url).or(s.default_duration()).unwrap_or(Duration::from_secs(1))
        };
        Ok(Self {
            host: url.host,
            port: url.port,
            user: url.user,
            password: url.password,
            dbname: url.dbname,
            ssl_mode,
            ssl_root_cert,
            application_name: application_name.to_string(),
            pool_max_size,
            pool_wait_timeout: or_default(
                env.given_duration(&DB_POOL_TIMEOUT_MS)?,
                url.pool_timeout,
                &DB_POOL_TIMEOUT_MS,
            ),
            connect_timeout: or_default(
                env.given_duration(&DB_CONNECT_TIMEOUT_MS)?,
                url.connect_timeout,
                &DB_CONNECT_TIMEOUT_MS,
            ),
            statement_timeout: or_default(
                env.given_duration(&DB_STATEMENT_TIMEOUT_MS)?,
                None,
                &DB_STATEMENT_TIMEOUT_MS,
            ),
            keepalive_idle: Duration::from_secs(30),
            connection_mode: if env.choice(&DB_CONNECTION_MODE)? == "warm" {
                ConnectionMode::Warm
            } else {
                ConnectionMode::Release
            },
        })
    }

    /// The same target under another `application_name` (a probe shows up as itself).
    #[must_use]
    pub fn with_application_name(mut self, name: &str) -> Self {
        self.application_name = name.to_string();
        self
    }

    /// The same target under another database name (tests give each test its own database).
    pub fn with_dbname(mut self, dbname: &str) -> Self {
        self.dbname = dbname.to_string();
        self
    }

    /// The tokio-postgres configuration. No startup `options`: the pooler would reject them.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(self.keepalive_idle)
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            cfg.password(password);
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    pub(super) const ONE: PoolDefaults = PoolDefaults { max_size: 1 };

    #[test]
    fn explicit_variables_override_the_url() {
        let e = env(&[
            ("DATABASE_URL", "postgres://u:p@h/db?connection_limit=3&pool_timeout=7"),
            ("DB_POOL_MAX_SIZE", "2"),
            ("DB_POOL_TIMEOUT_MS", "250"),
            ("DB_STATEMENT_TIMEOUT_MS", "900"),
            ("DB_SSLMODE", "disable"),
        ]);
        let s = DbSettings::for_function(&e, "scheduler", ONE).unwrap();
        assert_eq!(s.pool_max_size, 2);
        assert_eq!(s.pool_wait_timeout, Duration::from_millis(250));
        assert_eq!(s.statement_timeout, Duration::from_millis(900));
        assert_eq!(s.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn function_default_applies_without_url_or_variable() {
        let e = env(&[("DATABASE_URL", "postgresql://u@localhost/db")]);
        let s = DbSettings::for_function(&e, "scheduler", PoolDefaults { max_size: 2 }).unwrap();
        assert_eq!(s.pool_max_size, 2);
        assert_eq!(s.ssl_mode, SslMode::Prefer);
        assert_eq!(s.port, 5432);
    }

    #[test]
    fn missing_database_url_is_named() {
        let err = DbSettings::for_function(&env(&[]), "chat", ONE).unwrap_err();
        assert_eq!(err.to_string(), "DATABASE_URL is not set");
    }

    #[test]
    fn malformed_overrides_are_named() {
        let base = ("DATABASE_URL", "postgres://u:p@h/db");
        for (var, value) in [
            ("DB_POOL_MAX_SIZE", "0"),
            ("DB_POOL_MAX_SIZE", "many"),
            ("DB_POOL_TIMEOUT_MS", "-1"),
            ("DB_CONNECT_TIMEOUT_MS", "0"),
            ("DB_STATEMENT_TIMEOUT_MS", "1e3"),
            ("DB_SSLMODE", "on"),
            ("DB_SSL_ROOT_CERT", "/nonexistent/ca.pem"),
        ] {
            let err = DbSettings::for_function(&env(&[base, (var, value)]), "chat", ONE).unwrap_err();
            assert!(err.to_string().contains(var), "{err} should name {var}");
        }
    }

    #[test]
    fn debug_and_display_redact_the_password() {
        let e = env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")]);
        let s = DbSettings::for_function(&e, "chat", ONE).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!format!("{:?}", s.pg_config()).contains("hunter2"));
    }
}
