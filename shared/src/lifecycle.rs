//! The init phase every function shares — the pool built from the settings and warmed once — and
//! graceful shutdown. Lambda sends SIGTERM before it shuts an instance down when an extension is
//! registered; the runtime's helper registers a no-op internal extension for that and also
//! handles SIGINT (Ctrl-C locally). A request in progress finishes first, then the pool is
//! closed so the pooler sees the client leave.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Env, Setting};
use crate::db::{Db, DbSettings, PoolDefaults};
use crate::secrets::{SecretStore, DATABASE_URL_SECRET_ARN};

pub const SHUTDOWN_GRACE_MS: Setting = Setting::millis(
    "SHUTDOWN_GRACE_MS",
    0,
    60_000,
    350,
    "time a request in progress gets to finish on SIGTERM before the pool closes (Lambda allows about 500 ms in all)",
);

pub const SETTINGS: &[&Setting] = &[&SHUTDOWN_GRACE_MS];

/// Time given to connection tasks to send `Terminate` after the pool closes.
const DRAIN: Duration = Duration::from_millis(100);

/// Reads the database settings, builds and warms the pool, and registers the graceful-shutdown
/// hook that closes it. A missing or malformed setting fails here, naming it. When
/// `DATABASE_URL` comes from Secrets Manager, the secret is read again when the database
/// rejects the password (a rotation).
pub async fn database(env: &Env, function: &str, defaults: PoolDefaults) -> Result<Db, ConfigError> {
    let settings = DbSettings::for_function(env, function, defaults)?;
    let grace = env.duration(&SHUTDOWN_GRACE_MS)?;
    tracing::info!(database = %settings, "init");
    let mut db = Db::new(&settings)?;
    if let Some(arn) = env.text(&DATABASE_URL_SECRET_ARN) {
        let store = SecretStore::from_env(env)?;
        let (env, function) = (env.clone(), function.to_string());
        db = db.with_credentials(Arc::new(move || {
            let (env, store, arn, function) = (env.clone(), store.clone(), arn.clone(), function.clone());
            Box::pin(async move {
                let url = store.fetch("DATABASE_URL", &arn).await?.ok_or_else(|| {
                    crate::config::invalid(
                        DATABASE_URL_SECRET_ARN.name,
                        "the secret has no DATABASE_URL key (a JSON secret must name it)",
                    )
                })?;
                DbSettings::for_function(&env.with("DATABASE_URL", &url), &function, defaults)
            })
        }));
    }
    db.warm().await;
    close_pool_on_shutdown(db.clone(), grace).await;
    Ok(db)
}

/// Registers the shutdown hook. Call in `main`, before `run`.
pub async fn close_pool_on_shutdown(db: Db, grace: Duration) {
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        // A request in progress finishes first: its writes are not cut in half.
        let drained = db.wait_for_requests(grace).await;
        let before = db.status();
        db.close();
        if !drained {
            tracing::warn!("shutdown: a request was still running; closing the pool anyway");
        }
        tokio::time::sleep(DRAIN).await;
        tracing::info!(connections = before.size, "shutdown: database pool closed");
    })
    .await;
}
