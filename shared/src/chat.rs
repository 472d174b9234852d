//! The chat function's handler: `POST /api/agents/chat` (see issue 4; not built yet).

use lambda_http::{Body, Request, RequestExt, Response};

use crate::db::Db;
use crate::http_error::ApiError;

pub async fn handle(_db: &Db, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    Ok(ApiError::NotImplemented("chat is not available yet".into()).into_response(&request_id))
}
