//! `GET /api/conversations` and `GET /api/conversations/{id}/messages`: the caller's history,
//! one statement per request, keyset pages. [`request`] reads what is asked, [`store`] reads the
//! rows, [`view`] shows them.

pub mod request;
pub mod store;
pub mod view;

pub use request::{ConversationsQuery, MessagesQuery};
pub use store::{messages, page, Conversation, Message, MESSAGES, PAGE};
pub use view::{ConversationView, MessageView};
