use lambda_http::{run, service_fn, Error};
use shared::config::PoolDefaults;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let db = shared::startup::database("health", PoolDefaults { max_size: 1 }).await?;
    run(service_fn(|request| shared::health::handle(&db, request))).await
}
