//! The chat path's SQL: two round trips per message, one before the model call (`begin`: round
//! trip 1) and one after (`end`: round trip 2, or the release after a failure), with no
//! connection held in between. From this crate it imports only `turn`, whose row round trip 1
//! decodes into.

mod begin;
mod end;

/// At its former path: the type lives in [`crate::turn`], which imports nothing from the crate.
pub use crate::turn::StoredReply;
pub use begin::{begin_turn, TurnLimits, TurnRequest};
pub use end::{release_turn, store_reply, ReplyToStore, TurnKeys};
