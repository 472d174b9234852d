//! Lambda's `Invoke` API, as the scheduler's continuation calls it.

use std::time::Duration;

use serde_json::json;

use super::{FakeServer, Mode};

impl FakeServer {
    /// `POST /2015-03-31/functions/{name}/invocations`: an asynchronous invoke
    /// (`X-Amz-Invocation-Type: Event`) is accepted with 202 and recorded, not run
    /// (`Mode::HttpError`: refused for the function's reserved concurrency, 429).
    pub async fn lambda() -> FakeServer {
        Self::start(|mode, path, _| {
            if !(path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations")) {
                return (404, vec![], "{}".into(), Duration::ZERO);
            }
            if mode == Mode::HttpError {
                return (
                    429,
                    vec![("x-amzn-errortype", "TooManyRequestsException".to_string())],
                    json!({"message": "Rate Exceeded.", "Type": "User", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}).to_string(),
                    Duration::ZERO,
                );
            }
            (202, vec![], String::new(), Duration::ZERO)
        })
        .await
    }
}
