//! One push, bounded: `PostToConnection` or `DeleteConnection` through the Management API, its
//! failure classified ([`PushError`]; `410 Gone` apart), and the one statement that deletes the
//! rows of connections found gone or closed.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

use crate::db::{Db, DbError, Type};

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the connection is gone (410)")]
    Gone,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the Management API refused the push: {0}")]
    Refused(String),
}

/// One push.
pub(super) enum Job {
    Post(String, std::sync::Arc<Vec<u8>>),
    Close(String),
}

/// `PostToConnection`, bounded.
pub(super) async fn post(client: &Client, id: &str, payload: Vec<u8>, bound: Duration) -> Result<(), PushError> {
    let call = client
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new(payload))
        .send();
    match tokio::time::timeout(bound, call).await {
        Err(_) => Err(PushError::Timeout(bound)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(sdk_error(e)),
    }
}

/// `DeleteConnection`, bounded.
pub(super) async fn close(client: &Client, id: &str, bound: Duration) -> Result<(), PushError> {
    let call = client.delete_connection().connection_id(id).send();
    match tokio::time::timeout(bound, call).await {
        Err(_) => Err(PushError::Timeout(bound)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(sdk_error(e)),
    }
}

fn sdk_error<E>(e: SdkError<E, HttpResponse>) -> PushError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if e.raw_response().is_some_and(|r| r.status().as_u16() == 410) {
        return PushError::Gone;
    }
    match e {
        SdkError::TimeoutError(_) => PushError::Refused("timed out".into()),
        other => PushError::Refused(aws_sdk_apigatewaymanagement::error::DisplayErrorContext(other).to_string()),
    }
}

/// Deletes connections found gone or closed: one bounded statement.
pub(super) async fn forget(db: &Db, ids: &[String], bound: Duration) -> Result<(), DbError> {
    let conn = db.conn().await?;
    conn.sql()
        .with_bound(bound)
        .execute(
            "DELETE FROM live_connections WHERE connection_id = ANY($1)",
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(())
}
