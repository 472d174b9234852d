use lambda_runtime::{run, service_fn, Error};
use shared::config::{process_env, PoolDefaults};
use shared::scheduler::{Scheduler, SchedulerConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = SchedulerConfig::from_env(&process_env())?;
    let model = shared::model::from_env(&process_env()).await?;
    let db = shared::startup::database("scheduler", PoolDefaults { max_size: 2 }).await?;
    let scheduler = Scheduler {
        db,
        model,
        config,
        metrics: shared::metrics::Metrics::new("scheduler"),
    };
    run(service_fn(|event| shared::scheduler::handle(&scheduler, event))).await
}
