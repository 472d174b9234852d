use lambda_http::{run, service_fn, Error};
use shared::auth::{AuthConfig, Authenticator};
use shared::chat::{Chat, ChatConfig};
use shared::config::{process_env, PoolDefaults};
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = process_env();
    let config = ChatConfig::from_env(&env)?;
    let auth = Authenticator::new(AuthConfig::from_env(&env)?);
    let model = shared::model::from_env(&env).await?;
    let db = shared::startup::database("chat", PoolDefaults { max_size: 1 }).await?;
    let chat = Chat {
        db,
        auth,
        model,
        config,
        metrics: Metrics::new("chat"),
    };
    run(service_fn(|request| shared::chat::handle(&chat, request))).await
}
