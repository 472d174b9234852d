//! The database connection authenticates the server as libpq does: `verify-ca` trusts only the
//! configured root and checks the chain, `verify-full` also checks that the certificate names the
//! host (a DNS name, or an IP address against its IP addresses). The certificates are made here:
//! two private CAs (A and B), a server certificate for localhost and 127.0.0.1 and one for
//! `db.other.example` only, both signed by A, each presented by a TLS-only private pgbouncer in
//! front of the shared Postgres; the product's `Db` connects through it.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use shared::config::Env;
use shared::db::{DbSettings, PoolDefaults};

use crate::helpers::{runs_a_statement, PrivateBouncer, TestDb};

/// A private certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA, and its
    /// key, as PEM.
    fn server(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let sans: Vec<String> = names.iter().map(ToString::to_string).collect();
        let mut params = CertificateParams::new(sans).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The two CAs, and A's root also as a file (the URL's `sslrootcert`) with its cleanup.
struct Pki {
    a: Ca,
    b: Ca,
    a_file: PathBuf,
    b_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let (a, b) = (Ca::new("Test CA A"), Ca::new("Test CA B"));
        let dir = std::env::temp_dir();
        let tag = uuid::Uuid::new_v4().simple();
        let (a_file, b_file) = (dir.join(format!("ca-a-{tag}.pem")), dir.join(format!("ca-b-{tag}.pem")));
        std::fs::write(&a_file, a.pem()).expect("write CA A");
        std::fs::write(&b_file, b.pem()).expect("write CA B");
        Pki { a, b, a_file, b_file }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.a_file);
        let _ = std::fs::remove_file(&self.b_file);
    }
}

/// How the root reaches the settings.
#[derive(Clone, Copy)]
enum Root<'a> {
    /// None configured.
    None,
    /// A file, through the URL's `sslrootcert`.
    File(&'a std::path::Path),
    /// PEM text with its line breaks as spaces, through `DB_SSL_ROOT_CERT`: what the template passes.
    Inline(&'a str),
    /// libpq 16's `sslrootcert=system`.
    System,
}

impl std::fmt::Debug for Root<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Root::None => f.write_str("none"),
            Root::File(path) => write!(f, "file {}", path.display()),
            Root::Inline(_) => f.write_str("inline PEM"),
            Root::System => f.write_str("system"),
        }
    }
}

/// Settings for `db` through `bouncer`, reached as `host`, with this `sslmode` and root.
fn settings(
    bouncer: &PrivateBouncer,
    db: &TestDb,
    host: &str,
    sslmode: &str,
    root: Root<'_>,
) -> Result<DbSettings, shared::config::ConfigError> {
    settings_at(&bouncer.url(db), host, sslmode, root)
}

/// Settings for the pooler URL `base`, reached as `host`, with this `sslmode` and root.
fn settings_at(
    base: &str,
    host: &str,
    sslmode: &str,
    root: Root<'_>,
) -> Result<DbSettings, shared::config::ConfigError> {
    let mut url = url::Url::parse(base).expect("pooler url");
    url.set_host(Some(host)).expect("host settable");
    url.query_pairs_mut().append_pair("sslmode", sslmode);
    let mut env = Env::default()
        .with("DB_CONNECT_TIMEOUT_MS", "3000")
        .with("DB_POOL_MAX_SIZE", "1");
    match root {
        Root::None => {}
        Root::File(path) => {
            url.query_pairs_mut()
                .append_pair("sslrootcert", &path.display().to_string());
        }
        Root::Inline(pem) => env = env.with("DB_SSL_ROOT_CERT", &pem.replace('\n', " ")),
        Root::System => {
            url.query_pairs_mut().append_pair("sslrootcert", "system");
        }
    }
    let env = env.with("DATABASE_URL", url.as_str());
    DbSettings::for_function(&env, "tls-test", PoolDefaults { max_size: 1 })
}

/// Whether a statement runs through the product's pool with these settings; the error text else.
async fn connects(settings: Result<DbSettings, shared::config::ConfigError>) -> Result<(), String> {
    runs_a_statement(&settings.map_err(|e| e.to_string())?).await
}

/// rustls's word for a chain that leads to no trusted root.
const UNKNOWN_ISSUER: &str = "invalid peer certificate: UnknownIssuer";
/// rustls's word for a certificate that does not name the host.
const NOT_FOR_THIS_NAME: &str = "invalid peer certificate: certificate not valid for name";

/// The connection is refused for `reason` (the server's certificate, not a timeout or a password).
async fn refused(what: &str, reason: &str, settings: Result<DbSettings, shared::config::ConfigError>) {
    match connects(settings).await {
        Ok(()) => panic!("{what}: connected"),
        Err(e) => assert!(e.contains(reason), "{what}: refused, but not with {reason:?}: {e}"),
    }
}

#[tokio::test]
async fn verify_full_accepts_a_certificate_from_the_configured_ca_that_names_the_host_or_its_ip() {
    let pki = Pki::new();
    let (cert, key) = pki.a.server(&["localhost", "127.0.0.1"]);
    let bouncer = PrivateBouncer::with_tls_certificate(2, &cert, &key).await;
    let db = TestDb::new().await;
    let a_inline = pki.a.pem();
    for host in ["localhost", "127.0.0.1"] {
        for (mode, root) in [
            ("verify-full", Root::File(&pki.a_file)),
            ("verify-full", Root::Inline(&a_inline)),
            ("verify-ca", Root::File(&pki.a_file)),
            ("require", Root::Inline(&a_inline)),
        ] {
            connects(settings(&bouncer, &db, host, mode, root))
                .await
                .unwrap_or_else(|e| panic!("{host} sslmode={mode} root={root:?}: {e}"));
        }
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_under_verify_ca_and_verify_full() {
    let pki = Pki::new();
    let (cert, key) = pki.a.server(&["localhost", "127.0.0.1"]);
    let bouncer = PrivateBouncer::with_tls_certificate(2, &cert, &key).await;
    let db = TestDb::new().await;
    let b_inline = pki.b.pem();
    for host in ["localhost", "127.0.0.1"] {
        for (mode, root) in [
            ("verify-full", Root::File(&pki.b_file)),
            ("verify-full", Root::Inline(&b_inline)),
            ("verify-ca", Root::File(&pki.b_file)),
            ("verify-ca", Root::Inline(&b_inline)),
            // libpq: require with a root certificate verifies the chain, as verify-ca.
            ("require", Root::File(&pki.b_file)),
            // The public web roots (sslrootcert=system) do not vouch for a private CA.
            ("verify-full", Root::System),
        ] {
            refused(
                &format!("{host} sslmode={mode} root={root:?}"),
                UNKNOWN_ISSUER,
                settings(&bouncer, &db, host, mode, root),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_under_verify_full_and_passes_verify_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.a.server(&["db.other.example"]);
    let bouncer = PrivateBouncer::with_tls_certificate(2, &cert, &key).await;
    let db = TestDb::new().await;
    let a_inline = pki.a.pem();
    for host in ["localhost", "127.0.0.1"] {
        for root in [Root::File(&pki.a_file), Root::Inline(&a_inline)] {
            refused(
                &format!("{host} verify-full root={root:?}"),
                NOT_FOR_THIS_NAME,
                settings(&bouncer, &db, host, "verify-full", root),
            )
            .await;
            // verify-ca checks the chain only: the name is not its business (libpq).
            connects(settings(&bouncer, &db, host, "verify-ca", root))
                .await
                .unwrap_or_else(|e| panic!("{host} verify-ca root={root:?}: {e}"));
        }
        refused(
            &format!("{host} verify-ca root=B"),
            UNKNOWN_ISSUER,
            settings(&bouncer, &db, host, "verify-ca", Root::File(&pki.b_file)),
        )
        .await;
    }
}

#[test]
fn verify_modes_without_a_root_certificate_are_refused_at_init() {
    let (pooled, _) = crate::helpers::urls();
    for mode in ["verify-ca", "verify-full"] {
        let err = settings_at(&pooled, "127.0.0.1", mode, Root::None)
            .map(|_| ())
            .expect_err("a verify mode without a root");
        let err = err.to_string();
        assert!(
            err.contains("DB_SSL_ROOT_CERT") && err.contains("sslrootcert"),
            "{mode}: {err}"
        );
    }
    // libpq 16: sslrootcert=system is for verify-full only.
    let err = settings_at(&pooled, "127.0.0.1", "verify-ca", Root::System)
        .map(|_| ())
        .expect_err("system under verify-ca");
    assert!(err.to_string().contains("verify-full"), "{err}");
}

/// A stand-in for a CA in the environment: Supabase's `prod-ca-2021.crt` is under 1.5 KB.
const CA_BYTES: usize = 2048;
/// A stand-in for any other reference (an ARN, a URL, a model id).
const REFERENCE_BYTES: usize = 128;

/// The bytes a variable's value may take in a function's environment.
fn value_bytes(v: &serde_norway::Value) -> usize {
    use serde_norway::Value;
    match v {
        Value::String(s) => s.len(),
        Value::Number(n) => n.to_string().len(),
        Value::Bool(b) => b.to_string().len(),
        other if serde_norway::to_string(other).is_ok_and(|s| s.contains("DatabaseCaCertificate")) => CA_BYTES,
        // `!Ref AWS::NoValue`: the variable is left out.
        Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some("AWS::NoValue") => 0,
        // `!If [condition, a, b]`: the larger of its two branches.
        Value::Tagged(t) if t.tag == "If" => match t.value.as_sequence().map(Vec::as_slice) {
            Some([_, a, b]) => value_bytes(a).max(value_bytes(b)),
            _ => REFERENCE_BYTES,
        },
        _ => REFERENCE_BYTES,
    }
}

#[test]
fn the_template_verifies_the_database_against_the_given_ca_alone_and_keeps_each_environment_under_4_kb() {
    use serde_norway::Value;
    let yaml = |text: &str| serde_norway::from_str::<Value>(text).expect("yaml");
    let t = yaml(include_str!("../../template.yaml"));
    assert_eq!(
        t["Parameters"]["DatabaseCaCertificate"]["Default"].as_str(),
        Some(""),
        "no CA by default: the functions keep DatabaseSslMode (require)"
    );
    assert_eq!(
        t["Conditions"]["HasDatabaseCa"],
        yaml(r#"!Not [!Equals [!Ref DatabaseCaCertificate, ""]]"#)
    );
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        globals["DB_SSLMODE"],
        yaml("!If [HasDatabaseCa, verify-full, !Ref DatabaseSslMode]"),
        "with the CA, verify-full"
    );
    assert_eq!(
        globals["DB_SSL_ROOT_CERT"],
        yaml("!If [HasDatabaseCa, !Ref DatabaseCaCertificate, !Ref AWS::NoValue]"),
        "the CA itself, as text: a function cannot be handed a file"
    );
    let resources = t["Resources"].as_mapping().expect("Resources");
    let mut functions = 0;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let own = &resource["Properties"]["Environment"]["Variables"];
        for setting in ["DB_SSLMODE", "DB_SSL_ROOT_CERT"] {
            assert!(own.get(setting).is_none(), "{name:?} overrides {setting}");
        }
        // Lambda refuses an environment over 4 KB (names and values together).
        let mut vars: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for map in [globals, own] {
            for (k, v) in map.as_mapping().into_iter().flatten() {
                vars.insert(k.as_str().unwrap_or_default().to_string(), value_bytes(v));
            }
        }
        let bytes: usize = vars.iter().map(|(k, v)| k.len() + v).sum();
        assert!(
            bytes < 4096,
            "{name:?}: an environment of up to {bytes} bytes with the CA"
        );
    }
    assert!(functions >= 4, "the functions were found");
}
