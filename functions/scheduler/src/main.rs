//! The scheduler's Lambda binary: reads the environment once (settings, model, pool, metrics,
//! live updates, self-invocation), builds the [`scheduler::Scheduler`], and serves invocations
//! with [`scheduler::handle`].

use std::sync::Arc;

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
    let self_invoke = settings.self_invoke;
    let metrics = Metrics::new(&env, "scheduler");
    let live = shared::live::Publisher::from_env(&env, &metrics).await?;
    let mut scheduler = scheduler::Scheduler::new(db, model, settings, metrics).with_live(live);
    // Lambda names the function it runs; without a name (a local run) there is nothing to invoke.
    if let Some(function) = env.raw("AWS_LAMBDA_FUNCTION_NAME").filter(|_| self_invoke) {
        let next = scheduler::continuation::LambdaSelf::from_env(function.to_string()).await;
        scheduler = scheduler.with_continuation(Arc::new(next));
    }
    run(service_fn(|event| scheduler::handle(&scheduler, event))).await
}
