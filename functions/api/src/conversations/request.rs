//! What a caller asks of the history: the query parameters of both listings, parsed.

use lambda_http::Request;
use shared::http::ApiError;
use uuid::Uuid;

use crate::cursor::PageRequest;
use crate::query::Query;
use crate::settings::Settings;

/// `GET /api/conversations?agentId&limit&before`.
#[derive(Debug, Clone, Copy)]
pub struct ConversationsQuery {
    /// Only this agent's conversations.
    pub agent: Option<Uuid>,
    pub page: PageRequest,
}

impl ConversationsQuery {
    pub fn of(request: &Request, settings: &Settings) -> Result<Self, ApiError> {
        let q = Query::of(request, &["agentId", "limit", "before"])?;
        Ok(Self {
            agent: q.uuid("agentId")?,
            page: q.page(settings)?,
        })
    }
}

/// `GET /api/conversations/{id}/messages?limit&before`.
#[derive(Debug, Clone, Copy)]
pub struct MessagesQuery {
    pub page: PageRequest,
}

impl MessagesQuery {
    pub fn of(request: &Request, settings: &Settings) -> Result<Self, ApiError> {
        let q = Query::of(request, &["limit", "before"])?;
        Ok(Self {
            page: q.page(settings)?,
        })
    }
}
