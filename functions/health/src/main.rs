use lambda_http::{run, service_fn, Error};
use shared::config::{process_env, PoolDefaults};
use shared::health::{Health, HealthConfig};
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = HealthConfig::from_env(&process_env())?;
    let db = shared::startup::database("health", PoolDefaults { max_size: 1 }).await?;
    let health = Health {
        db,
        config,
        metrics: Metrics::new("health"),
    };
    run(service_fn(|request| shared::health::handle(&health, request))).await
}
