//! Schema migrations (refinery), applied over the direct session connection (`DIRECT_URL`),
//! never through the transaction pooler.

use super::tls;
use super::DbSettings;
use crate::config::Setting;

pub const AGENT_BACKEND_PASSWORD: Setting = Setting::secret(
    "AGENT_BACKEND_PASSWORD",
    "`migrate` only: sets the password of the functions' role `agent_backend` and lets it log in (unset: its login is left as it is)",
);

pub const SETTINGS: &[&Setting] = &[&AGENT_BACKEND_PASSWORD];

/// The least-privilege role the migrations create for the functions.
pub const FUNCTIONS_ROLE: &str = "agent_backend";

refinery::embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
}

/// Applies pending migrations; a no-op when the schema is current.
pub async fn run(settings: &DbSettings) -> Result<MigrationReport, MigrateError> {
    run_with(settings, None).await
}

/// Applies pending migrations, then, when `functions_password` is given, lets the functions'
/// role log in with it. The password is quoted by the server (`format('%L')`), never spliced
/// into SQL text here, and never logged.
#[tracing::instrument(skip_all, fields(db = %settings.dbname))]
pub async fn run_with(
    settings: &DbSettings,
    functions_password: Option<&str>,
) -> Result<MigrationReport, MigrateError> {
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
    if let (Ok(_), Some(password)) = (&report, functions_password) {
        if let Err(e) = set_password(&client, password).await {
            report = Err(e);
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

async fn set_password(client: &tokio_postgres::Client, password: &str) -> Result<(), MigrateError> {
    let failed =
        |e: tokio_postgres::Error| MigrateError::Migration(format!("setting the password of {FUNCTIONS_ROLE}: {e}"));
    let statement: String = client
        .query_one(
            "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
            &[&FUNCTIONS_ROLE, &password],
        )
        .await
        .map_err(failed)?
        .try_get(0)
        .map_err(failed)?;
    client.batch_execute(&statement).await.map_err(failed)
}

/// An error and its causes in one line (refinery's own message stops at "db error").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
