use lambda_runtime::{run, service_fn, Error};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let live = live::Live::from_env(&env, "live").await?;
    run(service_fn(|event| live::handle(&live, event))).await
}
