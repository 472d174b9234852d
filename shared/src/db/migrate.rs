//! Schema migrations (refinery), applied over the direct session connection (`DIRECT_URL`),
//! never through the transaction pooler.

use super::tls;
use super::DbSettings;

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
#[tracing::instrument(skip_all, fields(db = %settings.dbname))]
pub async fn run(settings: &DbSettings) -> Result<MigrationReport, MigrateError> {
    let tls = tls::connector(settings)?;
    let (mut client, connection) = settings
        .pg_config()
        .connect(tls)
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let report = migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .map_err(|e| MigrateError::Migration(e.to_string()));
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
