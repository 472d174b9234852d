use std::sync::Arc;

use lambda_http::{run_with_streaming_response, service_fn, Error};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let chat = Arc::new(chat::Chat::from_env(&env, "chat-stream").await?);
    run_with_streaming_response(service_fn(move |request| chat::handle_stream(chat.clone(), request))).await
}
