//! `GET /api/agents`: the agents the caller may use (public ones and their own), never their
//! instructions. [`store`] reads them, [`view`] shows them.

pub mod store;
pub mod view;

pub use store::{usable, Agent, USABLE};
pub use view::AgentsView;
