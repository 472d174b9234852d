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

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::json;

/// An invoke that has not been accepted by then is given up (the schedule's tick comes anyway):
/// it must not eat the rest of the invocation's time.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the next invocation did not start.
#[derive(Debug, thiserror::Error)]
pub enum ContinueError {
    /// Lambda did not accept the invoke in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The invoke failed (refused, or never sent); the SDK's error is the cause.
    #[error("asynchronous invoke failed")]
    Invoke(#[source] Box<SdkError<InvokeError>>),
    /// Lambda answered, but not with "accepted".
    #[error("asynchronous invoke answered {0}, not 202")]
    Status(i32),
}

/// Starts the next invocation.
#[async_trait]
pub trait Continue: Send + Sync {
    /// Invokes the scheduler asynchronously with `{"continuation": link}`.
    async fn invoke(&self, link: u32) -> Result<(), ContinueError>;
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
    async fn invoke(&self, link: u32) -> Result<(), ContinueError> {
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
            .map_err(|_| ContinueError::Timeout(INVOKE_TIMEOUT))?
            .map_err(|e| ContinueError::Invoke(Box::new(e)))?;
        match out.status_code() {
            202 => Ok(()),
            other => Err(ContinueError::Status(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::telemetry::Chain;

    #[test]
    fn the_reason_is_in_the_message() {
        assert_eq!(
            ContinueError::Status(500).to_string(),
            "asynchronous invoke answered 500, not 202"
        );
        assert_eq!(
            Chain(&ContinueError::Timeout(INVOKE_TIMEOUT)).to_string(),
            "no answer within 5s"
        );
    }
}
