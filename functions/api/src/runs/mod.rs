//! `/api/runs`: an agent run of the caller's (its steps, the calls waiting for a person), and
//! the approval or rejection of one waiting call. A decision is one guarded statement, taken
//! with the run's row locked so that decisions on the calls of one run follow each other: the
//! last one resumes the run and its task. [`request`] names what is asked, [`store`] runs the
//! statements, [`view`] shows a run; this module says what a refused decision means.

pub mod request;
pub mod store;
pub mod view;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use shared::db::{DbError, Sql};
use shared::http::ApiError;

pub use request::{tool_call_id, Verdict};
pub use store::{lock, one, Decided, Run};
pub use view::RunView;

/// The primary key of `agent_run_decisions`: one decision per call.
const DECISION_KEY: &str = "agent_run_decisions_pkey";

/// Takes `verdict` on call `call` of run `id` of `user`, in the caller's transaction (`sql`):
/// the run locked, then one guarded statement. 404 for a run that is not the caller's or a call
/// that does not wait for a decision; 409 naming why a decision no longer applies.
#[tracing::instrument(skip_all)]
pub async fn decide<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    user: Uuid,
    id: Uuid,
    call: &str,
    verdict: Verdict,
) -> Result<Decided, ApiError> {
    if !lock(sql, user, id).await? {
        return Err(ApiError::NotFoundWith("run not found"));
    }
    let decided = match store::decide(sql, user, id, call, verdict).await {
        Ok(decided) => decided,
        // Only without the lock (it serialises decisions), but never a 500.
        Err(DbError::Constraint { constraint, .. }) if constraint == DECISION_KEY => {
            return Err(ApiError::Conflict("the tool call was already decided".into()))
        }
        Err(e) => return Err(e.into()),
    };
    refusal(&decided).map_or(Ok(decided), Err)
}

/// Why a decision statement stored nothing (`None`: it stored the decision).
fn refusal(d: &Decided) -> Option<ApiError> {
    if d.decided {
        return None;
    }
    let Some(status) = &d.run_status else {
        return Some(ApiError::NotFoundWith("run not found"));
    };
    if let Some(prior) = &d.prior {
        return Some(ApiError::Conflict(format!("the tool call was already {prior}")));
    }
    if !d.open {
        return Some(ApiError::NotFoundWith("tool call not found"));
    }
    Some(ApiError::Conflict(format!("the run is {status}")))
}
