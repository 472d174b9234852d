//! TLS for Postgres connections with rustls (ring), following libpq's `sslmode` meanings:
//!
//! - `prefer`/`require`: encrypted, the certificate not checked (a passive eavesdropper is kept
//!   out, an active man in the middle is not); `require` with a root certificate is `verify-ca`.
//! - `verify-ca`: the chain must lead to the configured root, and only to it; the name is not
//!   checked.
//! - `verify-full`: the chain as for `verify-ca`, and the certificate must name the host (a DNS
//!   name against its DNS names, an IP address against its IP addresses).
//!
//! The configured root is the only one trusted: the public web roots only with libpq 16's
//! `sslrootcert=system` (then `verify-full` is forced, in settings). Supabase signs its database
//! certificates with its own CA (`prod-ca-2021.crt`): give it as `DB_SSL_ROOT_CERT` (a path or
//! the PEM text) with `verify-full`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::settings::{DbSettings, RootCert, SslMode, ROOT_CERT_SETTING};
use crate::config::ConfigError;

pub type Tls = MakeRustlsConnect;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: ROOT_CERT_SETTING.into(),
        reason: reason.into(),
    }
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificates of a PEM text with their line breaks restored: a CloudFormation parameter or
/// an environment variable often carries a PEM with spaces for line breaks (or CRLFs), which a
/// PEM reader does not take. Only `CERTIFICATE` blocks are kept; each body is re-wrapped at 64.
fn normalised_pem(text: &str, source: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after
            .find(END)
            .ok_or_else(|| tls_error(format!("a certificate in {source} has no END line")))?;
        let body: Vec<char> = after[..end].chars().filter(|c| !c.is_whitespace()).collect();
        out.push_str(BEGIN);
        out.push('\n');
        for line in body.chunks(64) {
            out.extend(line);
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        rest = &after[end + END.len()..];
    }
    Ok(out)
}

/// The certificates of a PEM text (with line breaks or spaces), at least one.
fn pem_certificates(text: &str, source: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = normalised_pem(text, source)?;
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("bad PEM in {source}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("no certificate in {source}")));
    }
    Ok(certs)
}

/// The roots a verified connection trusts: exactly the configured ones; the public web roots
/// only for `system`.
fn root_store(root: &RootCert) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    let (certs, source) = match root {
        RootCert::System => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(roots);
        }
        RootCert::File(path) => {
            let source = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|e| tls_error(format!("cannot read {source}: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| tls_error(format!("{source} is not PEM text")))?;
            (pem_certificates(&text, &source)?, source)
        }
        RootCert::Pem(text) => {
            let source = "the inline PEM".to_string();
            (pem_certificates(text, &source)?, source)
        }
    };
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("bad certificate in {source}: {e}")))?;
    }
    Ok(roots)
}

/// The connector for the configured `sslmode`.
pub fn connector(settings: &DbSettings) -> Result<Tls, ConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?;
    // libpq: `require` with a root certificate verifies the chain, as `verify-ca`.
    let verify = match (settings.ssl_mode, &settings.ssl_root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::Require | SslMode::VerifyCa, Some(root)) => Some((root, false)),
        (SslMode::VerifyFull, Some(root)) => Some((root, true)),
        (mode @ (SslMode::VerifyCa | SslMode::VerifyFull), None) => {
            return Err(tls_error(format!(
                "sslmode {} needs a root certificate to verify the server against",
                mode.as_str()
            )))
        }
    };
    let config = match verify {
        Some((root, check_name)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(root)?), provider())
                .build()
                .map_err(|e| tls_error(e.to_string()))?;
            if check_name {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca`: the chain must be trusted; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The name is checked after the chain: this error means the chain is trusted.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a root certificate: encrypted, certificate not checked (libpq).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::db::settings::PoolDefaults;

    /// A private CA's certificate, as PEM.
    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.self_signed(&key).unwrap().pem()
    }

    fn file_with(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("{name}-{}-{}.pem", std::process::id(), unique_suffix()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn unique_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    fn is_public_root(anchor: &rustls::pki_types::TrustAnchor<'_>) -> bool {
        webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .any(|public| public.subject_public_key_info == anchor.subject_public_key_info)
    }

    #[test]
    fn a_configured_root_is_the_only_root_trusted() {
        let pem = ca_pem("Private CA");
        let path = file_with("ca", &pem);
        for root in [RootCert::Pem(pem.clone()), RootCert::File(path.clone())] {
            let store = root_store(&root).unwrap();
            assert_eq!(
                store.len(),
                1,
                "{root:?}: exactly the configured root, no public web root beside it"
            );
            assert!(!store.roots.iter().any(is_public_root), "{root:?}");
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn sslrootcert_system_trusts_the_public_web_roots() {
        let store = root_store(&RootCert::System).unwrap();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(store.roots.iter().all(is_public_root));
    }

    #[test]
    fn inline_pem_may_carry_spaces_or_crlfs_for_line_breaks_and_hold_several_roots() {
        let (a, b) = (ca_pem("CA A"), ca_pem("CA B"));
        for (text, roots) in [
            (a.replace('\n', " "), 1),
            (a.replace('\n', "\r\n"), 1),
            (format!("{a}{b}").replace('\n', " "), 2),
            (format!("  {a}\n\n{b}  "), 2),
        ] {
            let store = root_store(&RootCert::Pem(text.clone())).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(store.len(), roots, "{text:?}");
        }
        // The same text as one line is what the template's parameter carries.
        let one_line = a.replace('\n', " ");
        assert!(!one_line.contains('\n'));
        let from_env = DbSettings::for_function(
            &Env::from_pairs([
                ("DATABASE_URL", "postgres://u:p@db.example.supabase.co:6543/postgres"),
                ("DB_SSLMODE", "verify-full"),
                ("DB_SSL_ROOT_CERT", one_line.as_str()),
            ]),
            "chat",
            PoolDefaults { max_size: 1 },
        )
        .unwrap();
        connector(&from_env).unwrap();
    }

    #[test]
    fn a_root_certificate_that_is_no_certificate_is_refused_and_named() {
        let truncated = ca_pem("CA").lines().take(3).collect::<Vec<_>>().join(" ");
        let not_a_file = file_with("empty", "not a certificate\n");
        for root in [
            RootCert::Pem(truncated),
            RootCert::Pem("-----BEGIN PRIVATE KEY----- MC4CAQAwBQYDK2VwBCIEIA== -----END PRIVATE KEY-----".into()),
            RootCert::Pem("-----BEGIN CERTIFICATE----- bm90IGEgY2VydA== -----END CERTIFICATE-----".into()),
            RootCert::Pem("-----BEGIN CERTIFICATE----- !!! -----END CERTIFICATE-----".into()),
            RootCert::File(not_a_file.clone()),
            RootCert::File("/nonexistent/ca.pem".into()),
        ] {
            let err = root_store(&root).map(|s| s.len()).unwrap_err().to_string();
            assert!(err.contains("DB_SSL_ROOT_CERT"), "{root:?}: {err:?}");
        }
        let _ = std::fs::remove_file(not_a_file);
    }

    #[test]
    fn the_connector_refuses_verify_modes_without_a_root() {
        let mut s = DbSettings::for_function(
            &Env::from_pairs([("DATABASE_URL", "postgres://u:p@db.example.supabase.co:6543/postgres")]),
            "chat",
            PoolDefaults { max_size: 1 },
        )
        .unwrap();
        assert!(connector(&s).is_ok(), "require without a root: encrypted, unverified");
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            s.ssl_mode = mode;
            let err = connector(&s).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("DB_SSL_ROOT_CERT"), "{mode:?}: {err:?}");
        }
    }
}
