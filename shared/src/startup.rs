//! The init phase shared by every function: settings from the environment, the pool built and
//! warmed once, the shutdown hook registered.

use crate::config::{process_env, ConfigError, DbSettings, PoolDefaults};
use crate::db::Db;

/// Reads `DATABASE_URL` (and `DB_*` overrides), builds and warms the pool, and registers the
/// graceful-shutdown hook that closes it. A missing or malformed setting fails here, naming it.
pub async fn database(function: &str, defaults: PoolDefaults) -> Result<Db, ConfigError> {
    let settings = DbSettings::for_function(&process_env(), function, defaults)?;
    tracing::info!(database = %settings, "init");
    let db = Db::new(&settings)?;
    db.warm().await;
    crate::shutdown::close_pool_on_shutdown(db.clone()).await;
    Ok(db)
}
