//! The health function's handler: `GET /api/health`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use crate::db::{Db, DbError};
use crate::http_error::{json_response, ApiError};

/// Liveness: one trivial statement within the database bounds.
#[tracing::instrument(skip_all)]
pub async fn ping(db: &Db) -> Result<(), DbError> {
    let conn = db.conn().await?;
    conn.sql().simple("SELECT 1").await?;
    Ok(())
}

pub async fn handle(db: &Db, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let path = request.raw_http_path().trim_end_matches('/').to_string();
    let result = match (request.method(), path.as_str()) {
        (&Method::GET, "/api/health") => match ping(db).await {
            Ok(()) => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}), &request_id)),
            Err(e) => {
                tracing::warn!(request_id, error = %e, "health: database unavailable");
                let mut r = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "unavailable", "reason": ApiError::Database(e).public_message()}),
                    &request_id,
                );
                r.headers_mut().insert("retry-after", 1.into());
                Ok(r)
            }
        },
        (_, "/api/health") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    };
    Ok(result.unwrap_or_else(|e| e.into_response(&request_id)))
}
