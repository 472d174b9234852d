use lambda_http::{run, service_fn, Error};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    shared::telemetry::init(&env)?;
    let env = shared::secrets::resolve(env).await?;
    let chat = chat::Chat::from_env(&env, "chat").await?;
    run(service_fn(|request| chat::handle(&chat, request))).await
}
