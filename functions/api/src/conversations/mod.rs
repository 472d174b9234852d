//! `GET /api/conversations` and `GET /api/conversations/{id}/messages`: the caller's history,
//! one statement per request, keyset pages. [`store`] reads them, [`view`] shows them.

pub mod store;
pub mod view;

pub use store::{messages, page, Conversation, Message, MESSAGES, PAGE};
pub use view::{ConversationView, MessageView};
