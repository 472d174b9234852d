use std::sync::Arc;

use lambda_http::{run_with_streaming_response, service_fn, Error};
use shared::auth::{AuthConfig, Authenticator};
use shared::config::Env;
use shared::db::PoolDefaults;
use shared::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let settings = chat::Settings::from_env(&env)?;
    let auth = Authenticator::new(AuthConfig::from_env(&env)?);
    let model = shared::model::from_env(&env).await?;
    let db = shared::lifecycle::database(&env, "chat-stream", PoolDefaults { max_size: 1 }).await?;
    let chat = Arc::new(chat::Chat {
        db,
        auth,
        model,
        settings,
        metrics: Metrics::new(&env, "chat-stream"),
    });
    run_with_streaming_response(service_fn(move |request| chat::handle_stream(chat.clone(), request))).await
}
