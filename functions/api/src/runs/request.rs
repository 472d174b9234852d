//! What a run route asks: the run (a path id) and, for a decision, the call and what is decided.

use shared::agent::run::Decision;

/// A person's decision on a call that waits for approval, as its route names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    /// As `agent_run_decisions.decision` stores it.
    pub fn as_stored(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        }
    }

    /// What the run's loop reads.
    pub fn decision(self) -> Decision {
        match self {
            Verdict::Approve => Decision::Approved,
            Verdict::Reject => Decision::Rejected,
        }
    }
}

/// Longest call id (the table's own bound); a longer one names no call.
pub const MAX_TOOL_CALL_ID_CHARS: usize = 200;

/// A call id from the path: `None` when it cannot name a stored call (empty, too long, or with
/// a control character, which the database would refuse as text).
pub fn tool_call_id(text: &str) -> Option<&str> {
    (!text.is_empty() && text.chars().count() <= MAX_TOOL_CALL_ID_CHARS && !text.chars().any(char::is_control))
        .then_some(text)
}
