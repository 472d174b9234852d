//! No idle gap between invocations: one its deadline stopped with due tasks left starts the next
//! at once, by invoking this function asynchronously (`InvocationType: Event`), instead of leaving
//! the backlog to the next five-minute tick.
//!
//! Bounded three ways: the chain stops when no backlog is left, when a run completed nothing (a
//! provider that throttles everything, a model that always fails: the tick comes back later), and
//! after `SCHEDULER_MAX_CONTINUATIONS` links. The platform bounds it too: the function's reserved
//! concurrency caps how many instances run, and the template's `EventInvokeConfig` drops a
//! continuation that could not start within five minutes (the tick has come by then) and never
//! retries one.

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::json;

/// An invoke that has not been accepted by then is given up (the schedule's tick comes anyway):
/// it must not eat the rest of the invocation's time.
const INVOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the next invocation.
#[async_trait]
pub trait Continue: Send + Sync {
    /// Invokes the scheduler asynchronously with `{"continuation": link}`.
    async fn invoke(&self, link: u32) -> Result<(), String>;
}

/// `lambda:InvokeFunction` on this function, asynchronously.
pub struct LambdaSelf {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaSelf {
    /// From the environment's AWS configuration (region, credentials, `AWS_ENDPOINT_URL_LAMBDA`).
    pub async fn from_env(function: String) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(shared::model::bedrock::http_client())
            .load()
            .await;
        Self::from_client(aws_sdk_lambda::Client::new(&config), function)
    }

    pub fn from_client(client: aws_sdk_lambda::Client, function: String) -> Self {
        Self { client, function }
    }
}

#[async_trait]
impl Continue for LambdaSelf {
    #[tracing::instrument(skip_all, fields(link))]
    async fn invoke(&self, link: u32) -> Result<(), String> {
        let payload = json!({ "continuation": link }).to_string();
        let call = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send();
        let out = tokio::time::timeout(INVOKE_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {INVOKE_TIMEOUT:?}"))?
            .map_err(|e| aws_sdk_lambda::error::DisplayErrorContext(e).to_string())?;
        match out.status_code() {
            202 => Ok(()),
            other => Err(format!("asynchronous invoke answered {other}, not 202")),
        }
    }
}
