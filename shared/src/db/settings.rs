//! Database settings: `DATABASE_URL` (the transaction pooler; Supabase: port 6543) and
//! `DIRECT_URL` (the session connection for migrations). Like Prisma, the URL may carry
//! `connection_limit` (pool max size) and `pool_timeout` (seconds to wait for a pooled
//! connection); like libpq, `connect_timeout`, `sslmode` and `sslrootcert`. Explicit `DB_*`
//! variables override the URL. Secrets never reach a log line or an error message: errors name
//! the setting, never echo the URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

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
pub const DB_POOL_TIMEOUT_MS: Setting = Setting::millis(
    "DB_POOL_TIMEOUT_MS",
    1,
    MAX_TIMEOUT_MS,
    2000,
    "longest wait for a pooled connection (else the URL's `pool_timeout`): 503 past it",
);
pub const DB_CONNECT_TIMEOUT_MS: Setting = Setting::millis(
    "DB_CONNECT_TIMEOUT_MS",
    1,
    MAX_TIMEOUT_MS,
    3000,
    "bound on opening a connection (else the URL's `connect_timeout`)",
);
pub const DB_STATEMENT_TIMEOUT_MS: Setting = Setting::millis(
    "DB_STATEMENT_TIMEOUT_MS",
    1,
    MAX_TIMEOUT_MS,
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

/// How errors about the root certificate name the setting.
pub(crate) const ROOT_CERT_SETTING: &str = "DB_SSL_ROOT_CERT (or sslrootcert)";

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

/// How the connection is encrypted, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without certificate checks; plain otherwise (libpq default).
    Prefer,
    /// TLS required; the certificate is not checked unless a root certificate is configured,
    /// in which case this behaves like `VerifyCa` (as in libpq).
    Require,
    /// TLS required; the chain must lead to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS required; chain and host name are checked.
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(name: &str, value: &str) -> Result<Self, ConfigError> {
        match value {
            "disable" => Ok(Self::Disable),
            "allow" | "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(invalid(
                name,
                format!("unknown sslmode {other:?} (disable, prefer, require, verify-ca, verify-full)"),
            )),
        }
    }
}

/// The roots a verified connection trusts (`DB_SSL_ROOT_CERT`, else the URL's `sslrootcert`).
#[derive(Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (one or more certificates).
    File(PathBuf),
    /// PEM text given inline, its line breaks possibly replaced by spaces: how a CloudFormation
    /// parameter reaches a Lambda function, which cannot be handed a file.
    Pem(String),
    /// libpq 16's `sslrootcert=system`: the public web roots (Mozilla's, from `webpki-roots`);
    /// the default `sslmode` becomes `verify-full`, and a weaker one is refused.
    System,
}

impl RootCert {
    /// `system`, inline PEM text (it starts with `-----BEGIN`), else a path (a file named
    /// `system` is `./system`, as in libpq).
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        if value == "system" {
            Self::System
        } else if value.starts_with("-----BEGIN") {
            Self::Pem(value.to_string())
        } else {
            Self::File(PathBuf::from(value))
        }
    }
}

impl fmt::Debug for RootCert {
    /// The inline text is not repeated: only its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Pem(text) => write!(f, "Pem({} bytes)", text.len()),
            Self::System => f.write_str("System"),
        }
    }
}

/// The mode and roots in force: libpq's rules. `sslrootcert=system` makes `verify-full` the
/// default and refuses anything weaker; `verify-ca`/`verify-full` need a root certificate (never
/// a silent fallback to the public web roots, which would let any publicly certified host pass).
fn tls_mode(host: &str, explicit: Option<SslMode>, root: Option<&RootCert>) -> Result<SslMode, ConfigError> {
    let mode = match (root, explicit) {
        (Some(RootCert::System), None | Some(SslMode::VerifyFull)) => SslMode::VerifyFull,
        (Some(RootCert::System), Some(weaker)) => {
            return Err(invalid(
                ROOT_CERT_SETTING,
                format!(
                    "`system` (the public web roots) needs sslmode verify-full, as in libpq, not {}: any publicly certified host would pass a weaker check",
                    weaker.as_str()
                ),
            ))
        }
        _ => effective_ssl_mode(host, explicit),
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
        return Err(invalid(
            ROOT_CERT_SETTING,
            format!(
                "sslmode {} verifies the server against a root certificate, and none is set: give the CA (Supabase's prod-ca-2021.crt) as a PEM file's path or as PEM text, or `system` for the public web roots with verify-full",
                mode.as_str()
            ),
        ));
    }
    Ok(mode)
}

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

/// The TLS mode actually used. Never plaintext to a remote host unless `disable` is explicit,
/// never silently downgraded: a remote host gets `require` by default, and `prefer`/`allow`
/// (which fall back to plaintext) become `require`. On loopback the default is `prefer` (a
/// local pooler usually has no certificate).
pub fn effective_ssl_mode(host: &str, explicit: Option<SslMode>) -> SslMode {
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match (explicit, loopback) {
        (None, true) => SslMode::Prefer,
        (None | Some(SslMode::Prefer), false) => SslMode::Require,
        (Some(mode), _) => mode,
    }
}

/// Parts of a connection URL, before environment overrides.
struct ParsedUrl {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<RootCert>,
    connection_limit: Option<usize>,
    pool_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

fn parse_url(name: &str, raw: &str) -> Result<ParsedUrl, ConfigError> {
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

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    const ONE: PoolDefaults = PoolDefaults { max_size: 1 };

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
    fn a_remote_database_gets_tls_by_default_and_is_never_downgraded() {
        let remote = |extra: &str| {
            let url = format!("postgres://u:p@db.example.supabase.co:6543/postgres{extra}");
            DbSettings::for_function(&env(&[("DATABASE_URL", url.as_str())]), "chat", ONE)
                .unwrap()
                .ssl_mode
        };
        assert_eq!(remote(""), SslMode::Require);
        assert_eq!(remote("?sslmode=prefer"), SslMode::Require);
        assert_eq!(remote("?sslmode=allow"), SslMode::Require);
        assert_eq!(remote("?sslmode=verify-full&sslrootcert=system"), SslMode::VerifyFull);
        assert_eq!(
            remote("?sslmode=disable"),
            SslMode::Disable,
            "plaintext only when explicit"
        );
        let local =
            DbSettings::for_function(&env(&[("DATABASE_URL", "postgres://u@127.0.0.1:6543/db")]), "chat", ONE).unwrap();
        assert_eq!(local.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn verify_ca_and_verify_full_without_a_root_certificate_are_refused_at_init() {
        for (url, extra) in [
            (
                "postgres://u:p@db.example.supabase.co:6543/postgres?sslmode=verify-full",
                None,
            ),
            (
                "postgres://u:p@db.example.supabase.co:6543/postgres?sslmode=verify-ca",
                None,
            ),
            ("postgres://u:p@127.0.0.1:6543/db", Some(("DB_SSLMODE", "verify-full"))),
        ] {
            let mut pairs = vec![("DATABASE_URL", url)];
            pairs.extend(extra);
            let err = DbSettings::for_function(&env(&pairs), "chat", ONE)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("DB_SSL_ROOT_CERT") && err.contains("sslrootcert"),
                "{err:?} should name the setting"
            );
            assert!(!err.contains("p@"), "{err:?} leaks the URL");
        }
    }

    #[test]
    fn the_root_certificate_is_a_path_inline_pem_text_or_system() {
        assert_eq!(
            RootCert::parse("/opt/ca.pem"),
            RootCert::File(PathBuf::from("/opt/ca.pem"))
        );
        assert_eq!(RootCert::parse("./system"), RootCert::File(PathBuf::from("./system")));
        assert_eq!(RootCert::parse(" system "), RootCert::System);
        let pem = "-----BEGIN CERTIFICATE----- MIIB -----END CERTIFICATE-----";
        assert_eq!(RootCert::parse(pem), RootCert::Pem(pem.to_string()));
        // Inline text needs no file: the template hands the CA over as a parameter's value.
        let e = env(&[
            ("DATABASE_URL", "postgres://u:p@db.example.supabase.co:6543/postgres"),
            ("DB_SSLMODE", "verify-full"),
            ("DB_SSL_ROOT_CERT", pem),
        ]);
        let s = DbSettings::for_function(&e, "chat", ONE).unwrap();
        assert_eq!(s.ssl_mode, SslMode::VerifyFull);
        assert_eq!(s.ssl_root_cert, Some(RootCert::Pem(pem.to_string())));
        assert!(
            !format!("{s:?}").contains("MIIB"),
            "the PEM text is not repeated in logs"
        );
    }

    #[test]
    fn sslrootcert_system_means_the_public_roots_under_verify_full_only() {
        let with = |query: &str| {
            let url = format!("postgres://u:p@db.example.supabase.co:6543/postgres?{query}");
            DbSettings::for_function(&env(&[("DATABASE_URL", url.as_str())]), "chat", ONE)
        };
        let s = with("sslrootcert=system").unwrap();
        assert_eq!(
            s.ssl_mode,
            SslMode::VerifyFull,
            "libpq 16: system makes verify-full the default"
        );
        assert_eq!(s.ssl_root_cert, Some(RootCert::System));
        assert_eq!(
            with("sslrootcert=system&sslmode=verify-full").unwrap().ssl_mode,
            SslMode::VerifyFull
        );
        for weaker in ["verify-ca", "require", "prefer", "disable"] {
            let err = with(&format!("sslrootcert=system&sslmode={weaker}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("DB_SSL_ROOT_CERT") && err.contains("verify-full"),
                "{weaker}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_database_url_is_named() {
        let err = DbSettings::for_function(&env(&[]), "chat", ONE).unwrap_err();
        assert_eq!(err.to_string(), "DATABASE_URL is not set");
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

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        let e = env(&[("DATABASE_URL", "postgres://us%40er:p%2Fw@h:6543/my%20db")]);
        let s = DbSettings::for_function(&e, "chat", ONE).unwrap();
        assert_eq!(s.user, "us@er");
        assert_eq!(s.password.as_deref(), Some("p/w"));
        assert_eq!(s.dbname, "my db");
    }
}
