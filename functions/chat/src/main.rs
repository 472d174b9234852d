use lambda_http::{run, service_fn, Error};
use shared::config::PoolDefaults;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let db = shared::startup::database("chat", PoolDefaults { max_size: 1 }).await?;
    run(service_fn(|request| shared::chat::handle(&db, request))).await
}
