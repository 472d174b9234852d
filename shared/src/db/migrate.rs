//! Schema migrations (refinery), applied over the direct session connection (`DIRECT_URL`),
//! never through the transaction pooler.

use super::tls;
use super::DbSettings;
use crate::config::Setting;

pub const AGENT_BACKEND_PASSWORD: Setting = Setting::secret(
    "AGENT_BACKEND_PASSWORD",
    "`migrate` only: sets the password of the functions' role `agent_backend` and lets it log in (unset: its login is left as it is)",
);

pub const AGENT_MONITOR_PASSWORD: Setting = Setting::secret(
    "AGENT_MONITOR_PASSWORD",
    "`migrate` only: sets the password of the health function's role `agent_monitor` (reads every session's activity) and lets it log in (unset: its login is left as it is)",
);

pub const SETTINGS: &[&Setting] = &[&AGENT_BACKEND_PASSWORD, &AGENT_MONITOR_PASSWORD];

/// The least-privilege role the migrations create for the functions.
pub const FUNCTIONS_ROLE: &str = "agent_backend";
/// The health function's role: `pg_read_all_stats`, nothing else.
pub const MONITOR_ROLE: &str = "agent_monitor";

/// Login passwords `migrate` sets after migrating (unset: that role's login is left as it is).
#[derive(Debug, Clone, Copy, Default)]
pub struct Passwords<'a> {
    pub functions: Option<&'a str>,
    pub monitor: Option<&'a str>,
}

refinery::embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("setting the password of {role}")]
    Password {
        role: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
}

/// Applies pending migrations; a no-op when the schema is current.
pub async fn run(settings: &DbSettings) -> Result<MigrationReport, MigrateError> {
    run_with(settings, Passwords::default()).await
}

/// Applies pending migrations, then lets the roles whose password is given log in with it. The
/// server never sees a password: only its SCRAM-SHA-256 verifier, computed here (as `psql`'s
/// `\password` does), so statement logs and `pg_stat_statements` cannot leak it.
#[tracing::instrument(skip_all, fields(db = %settings.dbname))]
pub async fn run_with(settings: &DbSettings, passwords: Passwords<'_>) -> Result<MigrationReport, MigrateError> {
    let tls = tls::connector(settings)?;
    let (mut client, connection) = settings
        .pg_config()
        .connect(tls)
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let mut report = migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .map_err(|e| MigrateError::Migration(with_causes(&e)));
    for (role, password) in [(FUNCTIONS_ROLE, passwords.functions), (MONITOR_ROLE, passwords.monitor)] {
        if let (Ok(_), Some(password)) = (&report, password) {
            if let Err(e) = set_password(&client, role, password).await {
                report = Err(e);
            }
        }
    }
    drop(client);
    let _ = driver.await;
    let report = report?;
    Ok(MigrationReport {
        applied: report
            .applied_migrations()
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
    })
}

async fn set_password(client: &tokio_postgres::Client, role: &'static str, password: &str) -> Result<(), MigrateError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    // A verifier is base64 and `$`/`:`/digits: nothing to escape; quoted with `'` all the same.
    let statement = format!(
        "ALTER ROLE {role} WITH LOGIN PASSWORD '{}'",
        verifier.replace('\'', "''")
    );
    client
        .batch_execute(&statement)
        .await
        .map_err(|source| MigrateError::Password { role, source })
}

/// An error and its causes in one line (refinery's own message stops at "db error").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
