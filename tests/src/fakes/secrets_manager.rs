//! Secrets Manager and the Lambda Parameters and Secrets extension in front of it. Secrets
//! Manager itself is moto in server mode (the real AWS JSON 1.1 wire protocol, installed into
//! `.venv` by scripts/tools); the extension is a stand-in for its local endpoint that forwards to
//! moto, as the real extension forwards to AWS.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::runtime::{body_bytes, serve_http, HyperResponse};
use crate::wait::{eventually, free_port};

/// moto's Secrets Manager on a free loopback port, stopped on drop.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start() -> Moto {
        let port = free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (scripts/tools installs moto[server] into .venv)");
        let up = eventually(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        assert!(up, "moto_server did not start");
        Moto { port, child }
    }

    /// One Secrets Manager API call (JSON 1.1 protocol).
    pub async fn call(&self, action: &str, body: &Value) -> Value {
        call_secrets_manager(self.port, action, body)
            .await
            .expect("moto answers")
    }
}

async fn call_secrets_manager(port: u16, action: &str, body: &Value) -> Result<Value, String> {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("secretsmanager.{action}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20261127/us-east-1/secretsmanager/aws4_request, \
             SignedHeaders=content-type;host;x-amz-target, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{action}: HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The Parameters and Secrets extension's local endpoint (`GET /secretsmanager/get?secretId=…`
/// with the instance's `X-Aws-Parameters-Secrets-Token`), forwarding to `moto`. Its port, and a
/// count of the secrets fetched.
pub async fn secrets_extension(moto: &Moto, session_token: &str) -> (u16, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let (counter, moto_port, token) = (fetches.clone(), moto.port, session_token.to_string());
    let addr = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (counter, token) = (counter.clone(), token.clone());
        async move {
            let reply = |status: u16, body: String| -> HyperResponse {
                hyper::Response::builder()
                    .status(status)
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    .expect("response")
            };
            if req
                .headers()
                .get("x-aws-parameters-secrets-token")
                .and_then(|v| v.to_str().ok())
                != Some(token.as_str())
            {
                return reply(401, "missing or wrong X-Aws-Parameters-Secrets-Token".into());
            }
            let query = req.uri().query().unwrap_or("").to_string();
            body_bytes(req.into_body()).await;
            let Some(id) = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "secretId")
                .map(|(_, v)| v.into_owned())
            else {
                return reply(400, "secretId is required".into());
            };
            counter.fetch_add(1, Ordering::SeqCst);
            match call_secrets_manager(moto_port, "GetSecretValue", &json!({ "SecretId": id })).await {
                Ok(v) => reply(200, v.to_string()),
                Err(e) => reply(400, e),
            }
        }
    })
    .await;
    (addr.port(), fetches)
}
