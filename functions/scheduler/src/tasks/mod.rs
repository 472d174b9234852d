//! The scheduler's SQL: set-based, one statement per step and batch, every write guarded by the
//! lease owner so a stale instance cannot overwrite a newer run. Each function takes a client
//! (through [`Sql`](shared::db::Sql)), decodes rows by column name and is traced.
//!
//! - [`claim`](mod@claim): the fair claim of due tasks ([`claim_sql`]).
//! - [`finish`](mod@finish): a batch of finished tasks recorded in one statement.
//! - [`rescue`](mod@rescue): expired leases, orphaned claims and the due backlog.
//! - [`expire`](mod@expire): runs that waited for an approval too long.

/// `Type { field: column(row, "field")?, …; other: value, … }`: a row decoded by column name,
/// each column named once, as the field it fills; the fields after `;` are decoded otherwise.
macro_rules! by_name {
    ($row:expr, $ty:ident { $($field:ident),* $(; $($other:ident: $value:expr),* $(,)?)? }) => {
        $ty {
            $($field: shared::db::column($row, stringify!($field))?,)*
            $($($other: $value,)*)?
        }
    };
}

pub mod claim;
pub mod expire;
pub mod finish;
pub mod rescue;

use shared::db::{Param, Type};
use shared::tasks::NextColumns;

pub use claim::{claim, claim_sql, lone_claim_sql, ClaimPolicy, Claimed, ClaimedTask, AGENT_UNAVAILABLE};
pub use expire::{expire, expiring_occurrences, Expired, APPROVAL_EXPIRED};
pub use finish::{finish, FinishCounts, Finished, Outcome, TaskConnection};
pub use rescue::{due_counts, expired_last_occurrences, release_orphans, rescue, ExpiredOccurrence, Rescued};
pub use shared::tasks::{decide, task_state, Decision, TaskState, TaskStatus};

/// The parameters of next occurrences, in the order the statements around
/// [`INSERT_NEXT`](shared::tasks::INSERT_NEXT) number them: at, approval, failures, note.
fn next_params<'a>(next: &'a NextColumns<'_>) -> [Param<'a>; 4] {
    [
        (&next.at, Type::TIMESTAMPTZ_ARRAY),
        (&next.approval, Type::TEXT_ARRAY),
        (&next.failures, Type::INT4_ARRAY),
        (&next.note, Type::TEXT_ARRAY),
    ]
}
