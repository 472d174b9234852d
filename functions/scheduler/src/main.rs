use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::config::PoolDefaults;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let db = shared::startup::database("scheduler", PoolDefaults { max_size: 2 }).await?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let db = db.clone();
        async move { shared::scheduler::handle(&db, event).await }
    }))
    .await
}
