//! TLS to the database: the mode ([`SslMode`], libpq's meanings), the trusted roots
//! ([`RootCert`]) and the rules that combine them with the host ([`effective_ssl_mode`], and
//! `tls_mode`, which refuses a verified mode without a root certificate).

use std::fmt;
use std::path::PathBuf;

use crate::config::{invalid, ConfigError};

/// How errors about the root certificate name the setting.
pub(crate) const ROOT_CERT_SETTING: &str = "DB_SSL_ROOT_CERT (or sslrootcert)";

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

    pub(super) fn parse(name: &str, value: &str) -> Result<Self, ConfigError> {
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
pub(super) fn tls_mode(host: &str, explicit: Option<SslMode>, root: Option<&RootCert>) -> Result<SslMode, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{env, ONE};
    use super::super::DbSettings;
    use super::*;

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
}
