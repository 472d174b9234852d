//! The `api` Lambda function: the instance's state built once from its environment (secrets
//! resolved), then [`api::handle`] for every request.

use lambda_http::{run, service_fn, Error};
use shared::auth::{AuthConfig, Authenticator};
use shared::config::Env;
use shared::db::PoolDefaults;
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let settings = api::Settings::from_env(&env)?;
    let auth = Authenticator::new(AuthConfig::from_env(&env)?)?;
    let db = shared::lifecycle::database(&env, "api", PoolDefaults { max_size: 1 }).await?;
    let metrics = Metrics::new(&env, "api");
    let live = shared::live::Publisher::from_env(&env, &metrics).await?;
    let api = api::Api {
        db,
        auth,
        settings,
        metrics,
        live,
    };
    run(service_fn(|request| api::handle(&api, request))).await
}
