//! HTTP plumbing of the API Gateway functions: one error enum and its status map, response
//! builders, typed request bodies, request checks and the handler wrapper.

mod body;
mod error;
mod handler;
mod request;
mod response;

pub use crate::time::Timestamp;
pub use body::{parse_json, Flag, Id, Text, WholeNumber};
pub use error::{db_public_message, ApiError};
pub use handler::{request_id, serve, Reply};
pub use request::{check_content_type, idempotency_key, idempotency_key_of, json_body};
pub use response::{set_request_id, view_response, with_retry_after, REQUEST_ID_HEADER, RETRY_AFTER_SECS};
