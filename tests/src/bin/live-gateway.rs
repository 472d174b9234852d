//! `scripts/dev`'s local WebSocket gateway (a dev and test tool, not deployed): API Gateway's
//! WebSocket contract on `127.0.0.1:$DEV_WS_PORT` (9001), the `live` function invoked through
//! `cargo lambda watch` (`$LIVE_FUNCTION_URL`, default
//! `http://127.0.0.1:$DEV_PORT/2015-03-31/functions/live/invocations`), and the Management API
//! the publishers call at `LIVE_ENDPOINT=http://127.0.0.1:$DEV_WS_PORT`.

use std::net::SocketAddr;

use integration_tests::live_gateway::{Invoker, LiveGateway};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("DEV_WS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9001);
    let functions: u16 = std::env::var("DEV_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9000);
    let url = std::env::var("LIVE_FUNCTION_URL")
        .unwrap_or_else(|_| format!("http://127.0.0.1:{functions}/2015-03-31/functions/live/invocations"));
    let gateway = LiveGateway::start(SocketAddr::from(([127, 0, 0, 1], port)), Invoker::Http(url.clone())).await?;
    eprintln!(
        "live-gateway: WebSocket {} (Management API {}/@connections/{{id}}), events to {url}",
        gateway.ws_url(),
        gateway.endpoint()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
