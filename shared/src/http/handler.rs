//! The one Lambda handler wrapper of the HTTP functions: a request id, the in-flight mark that
//! lets a shutdown wait for the request, idle connections released at its end (release mode),
//! one metrics line per request, and every error turned into its JSON response.

use std::future::Future;

use lambda_http::{Body, Request, RequestExt, Response};

use super::ApiError;
use crate::db::Db;
use crate::metrics::{Metric, Metrics};

/// What a route answered, and metrics it wants in the request's metrics line.
pub struct Reply {
    pub result: Result<Response<Body>, ApiError>,
    pub metrics: Vec<Metric>,
}

impl From<Result<Response<Body>, ApiError>> for Reply {
    fn from(result: Result<Response<Body>, ApiError>) -> Self {
        Self {
            result,
            metrics: Vec::new(),
        }
    }
}

/// The invocation's request id (Lambda's), or a fresh one when the runtime gave none.
pub fn request_id(request: &Request) -> String {
    request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Runs `respond` for one request; never fails (every error is an HTTP answer).
pub async fn serve<F, Fut, R>(
    db: &Db,
    metrics: &Metrics,
    request: Request,
    respond: F,
) -> Result<Response<Body>, std::convert::Infallible>
where
    F: FnOnce(Request, String) -> Fut,
    Fut: Future<Output = R>,
    R: Into<Reply>,
{
    let _in_flight = db.begin_request();
    let id = request_id(&request);
    let reply: Reply = respond(request, id.clone()).await.into();
    // Between requests an instance holds no pooler client (release mode).
    db.release_idle();
    metrics.flush_db(db, &reply.metrics);
    Ok(reply.result.unwrap_or_else(|e| e.into_response(&id)))
}
