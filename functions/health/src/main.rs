use lambda_http::{run, service_fn, Error};
use shared::config::Env;
use shared::db::PoolDefaults;
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let settings = health::Settings::from_env(&env)?;
    let db = shared::lifecycle::database(&env, "health", PoolDefaults { max_size: 1 }).await?;
    let health = health::Health {
        db,
        settings,
        metrics: Metrics::new(&env, "health"),
    };
    run(service_fn(|request| health::handle(&health, request))).await
}
