use lambda_runtime::{run, service_fn, Error};
use shared::config::Env;
use shared::db::PoolDefaults;
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let settings = scheduler::Settings::from_env(&env)?;
    let model = shared::model::from_env(&env).await?;
    let db = shared::lifecycle::database(&env, "scheduler", PoolDefaults { max_size: 2 }).await?;
    let scheduler = scheduler::Scheduler {
        db,
        model,
        settings,
        metrics: Metrics::new(&env, "scheduler"),
    };
    run(service_fn(|event| scheduler::handle(&scheduler, event))).await
}
