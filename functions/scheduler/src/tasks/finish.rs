//! Recording finished tasks: their outcomes, their usage, their series' next occurrences and
//! their owners' live connections, a whole batch in one statement.

use shared::db::{column, DbError, Param, Sql, Type};
use shared::model::Usage;
use shared::tasks::series::Next;
use shared::tasks::{NextColumns, INSERT_NEXT};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{next_params, TaskStatus};

/// How one claimed task ended in this invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed {
        result: String,
        /// What the run cost (`None`: the provider reported nothing) and the model that ran it.
        usage: Option<Usage>,
        model: Option<String>,
    },
    /// Failed with attempts left: pending again after `delay_secs`.
    Retry { error: String, delay_secs: f64 },
    /// Failed for good (`max_attempts` reached).
    Failed { error: String },
    /// Never started (the deadline came first): pending again, the attempt not counted.
    Release,
    /// The model provider throttled: pending again after `delay_secs`, the attempt not counted.
    Throttled { delay_secs: f64 },
    /// The agent's run waits for a person to approve or reject a tool call: off the queue until
    /// a decision makes it pending again, the attempt not counted.
    AwaitingApproval,
}

impl Outcome {
    /// The status the task is left in.
    pub fn status(&self) -> TaskStatus {
        match self {
            Outcome::Completed { .. } => TaskStatus::Completed,
            Outcome::Failed { .. } => TaskStatus::Failed,
            Outcome::AwaitingApproval => TaskStatus::AwaitingApproval,
            Outcome::Retry { .. } | Outcome::Release | Outcome::Throttled { .. } => TaskStatus::Pending,
        }
    }

    /// The result to store (completed tasks only).
    fn result(&self) -> Option<&str> {
        match self {
            Outcome::Completed { result, .. } => Some(result),
            _ => None,
        }
    }

    /// The error to store (retried and failed tasks; a completed task's error is cleared).
    fn error(&self) -> Option<&str> {
        match self {
            Outcome::Retry { error, .. } | Outcome::Failed { error } => Some(error),
            Outcome::Completed { .. } | Outcome::Release | Outcome::Throttled { .. } | Outcome::AwaitingApproval => {
                None
            }
        }
    }

    /// Seconds until a retried task is due again.
    fn delay_secs(&self) -> Option<f64> {
        match self {
            Outcome::Retry { delay_secs, .. } | Outcome::Throttled { delay_secs } => Some(*delay_secs),
            _ => None,
        }
    }

    /// A released task never started, a throttled one was refused by the provider, a paused
    /// one waits for a person: none of those attempts is counted.
    fn uncounts_attempt(&self) -> bool {
        matches!(
            self,
            Outcome::Release | Outcome::Throttled { .. } | Outcome::AwaitingApproval
        )
    }

    /// The run's usage and model (completed tasks only).
    fn usage(&self) -> (Option<Usage>, Option<&str>) {
        match self {
            Outcome::Completed { usage, model, .. } => (*usage, model.as_deref()),
            _ => (None, None),
        }
    }

    /// Whether this outcome ends the occurrence (a recurring task's next one is then created).
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Completed { .. } | Outcome::Failed { .. })
    }
}

/// One finished task: its outcome and, for a recurring task that reached a final state, when
/// its next occurrence is due.
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: Uuid,
    pub outcome: Outcome,
    /// The series' next occurrence, for a recurring task that reached a final state.
    pub next: Option<Next>,
    /// A recurring task ended but its series could not go on (its cron or time zone no longer
    /// evaluates): counted and logged, never silent.
    pub series_ended: bool,
}

impl Finished {
    /// A task handed back unstarted: pending again, its attempt uncounted.
    pub fn released(id: Uuid) -> Self {
        Self {
            id,
            outcome: Outcome::Release,
            next: None,
            series_ended: false,
        }
    }
}

/// Records a whole batch in one statement: completed, retried, failed and released tasks, and
/// the next occurrence of recurring ones (at most once each, by the occurrence unique key).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn finish<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: &str,
    batch: &[Finished],
) -> Result<FinishCounts, DbError> {
    if batch.is_empty() {
        return Ok(FinishCounts::default());
    }
    let ids: Vec<Uuid> = batch.iter().map(|f| f.id).collect();
    let statuses: Vec<&str> = batch.iter().map(|f| f.outcome.status().as_str()).collect();
    let results: Vec<Option<&str>> = batch.iter().map(|f| f.outcome.result()).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|f| f.outcome.error()).collect();
    let delays: Vec<Option<f64>> = batch.iter().map(|f| f.outcome.delay_secs()).collect();
    let uncount: Vec<bool> = batch.iter().map(|f| f.outcome.uncounts_attempt()).collect();
    let nexts: Vec<Option<&Next>> = batch
        .iter()
        .map(|f| f.next.as_ref().filter(|_| f.outcome.is_final()))
        .collect();
    let next = NextColumns::of(&nexts);
    let inputs: Vec<Option<i64>> = batch
        .iter()
        .map(|f| f.outcome.usage().0.map(|u| u.input_tokens))
        .collect();
    let outputs: Vec<Option<i64>> = batch
        .iter()
        .map(|f| f.outcome.usage().0.map(|u| u.output_tokens))
        .collect();
    let models: Vec<Option<&str>> = batch.iter().map(|f| f.outcome.usage().1).collect();
    let lease: [Param<'_>; 2] = [(&owner, Type::TEXT), (&ids, Type::UUID_ARRAY)];
    let outcomes: [Param<'_>; 5] = [
        (&statuses, Type::TEXT_ARRAY),
        (&results, Type::TEXT_ARRAY),
        (&errors, Type::TEXT_ARRAY),
        (&delays, Type::FLOAT8_ARRAY),
        (&uncount, Type::BOOL_ARRAY),
    ];
    let usage: [Param<'_>; 3] = [
        (&inputs, Type::INT8_ARRAY),
        (&outputs, Type::INT8_ARRAY),
        (&models, Type::TEXT_ARRAY),
    ];
    let row = sql
        .query_one(
            &("WITH o AS (
                 SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::float8[],
                                      $7::bool[], $8::timestamptz[], $9::text[], $10::int4[], $11::text[],
                                      $12::int8[], $13::int8[], $14::text[])
                     AS o(id, status, result, error, delay_secs, uncount, next_at, next_approval,
                          next_failures, next_note, input_tokens, output_tokens, model)
             ), fin AS (
                 -- Guarded by the lease: a stale instance (lease expired, or taken over) writes nothing.
                 UPDATE agent_tasks t
                    SET status = o.status,
                        result = coalesce(o.result, t.result),
                        last_error = CASE WHEN o.status = 'completed' THEN NULL
                                          ELSE coalesce(o.error, t.last_error) END,
                        scheduled_for = coalesce(now() + make_interval(secs => o.delay_secs), t.scheduled_for),
                        attempts = CASE WHEN o.uncount THEN greatest(t.attempts - 1, 0) ELSE t.attempts END,
                        input_tokens = CASE WHEN o.status = 'completed' THEN o.input_tokens ELSE t.input_tokens END,
                        output_tokens = CASE WHEN o.status = 'completed' THEN o.output_tokens ELSE t.output_tokens END,
                        model = CASE WHEN o.status = 'completed' THEN o.model ELSE t.model END,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                   FROM o
                  WHERE t.id = o.id AND t.lease_owner = $1 AND t.status = 'running'
                    AND t.lease_expires_at >= now()
              RETURNING t.id, t.user_id, t.agent_id, o.status AS outcome, o.input_tokens, o.output_tokens, o.model,
                        o.next_at, o.next_approval, o.next_failures, o.next_note
             ), used AS (
                 -- The batch's runs added to their owners' days, one row per (user, agent, model).
                 INSERT INTO usage_daily AS u (day, user_id, agent_id, model, input_tokens, output_tokens, calls)
                 SELECT (now() AT TIME ZONE 'UTC')::date,
                        coalesce(f.user_id, '00000000-0000-0000-0000-000000000000'::uuid), f.agent_id,
                        coalesce(f.model, 'unknown'), sum(coalesce(f.input_tokens, 0)),
                        sum(coalesce(f.output_tokens, 0)), count(*)
                   FROM fin f
                  WHERE f.outcome = 'completed'
                  GROUP BY 2, 3, 4
                     ON CONFLICT (day, user_id, agent_id, model) DO UPDATE
                    SET input_tokens = u.input_tokens + EXCLUDED.input_tokens,
                        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
                        calls = u.calls + EXCLUDED.calls
                 RETURNING 1
             ), nxt AS ("
                .to_string()
                + INSERT_NEXT
                + "), conns AS MATERIALIZED (
                 -- The owners' live connections, for the task.updated events pushed after commit:
                 -- one probe per owner in the batch (not per task), and the batch read again only
                 -- for the owners who have one.
                 SELECT c.user_id, c.connection_id, c.expires_at > now() AS open
                   FROM live_connections c
                  WHERE c.user_id = ANY(ARRAY(SELECT DISTINCT user_id FROM fin WHERE user_id IS NOT NULL))
             ), live AS (
                 SELECT f.id AS task_id, f.outcome, c.connection_id, c.open
                   FROM conns c JOIN fin f ON f.user_id = c.user_id
             )
             SELECT (SELECT count(*) FROM fin) AS finished,
                    (SELECT count(*) FROM nxt WHERE suspended) AS suspended,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', task_id, 'status', outcome,
                                                                  'connectionId', connection_id, 'open', open,
                                                                  'at', now())),
                                     '[]'::jsonb) FROM live) AS live"),
            &[&lease[..], &outcomes, &next_params(&next), &usage].concat(),
        )
        .await?;
    let live: serde_json::Value = column(&row, "live")?;
    Ok(by_name!(&row, FinishCounts {
        finished, suspended;
        live: serde_json::from_value(live).map_err(|e| DbError::decode_column("live", e))?
    }))
}

/// What a finish statement recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishCounts {
    /// Rows this instance still held a live lease of and updated.
    pub finished: i64,
    /// Series suspended by this batch (their next occurrence waits for approval).
    pub suspended: i64,
    /// A connection of the owner of each task recorded: its `task.updated` event goes there.
    pub live: Vec<TaskConnection>,
}

/// One recorded task and one live connection of its owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskConnection {
    pub task_id: Uuid,
    /// The status the task was left in.
    #[serde(deserialize_with = "stored_status")]
    pub status: TaskStatus,
    pub connection_id: String,
    /// Within its token's lifetime (else it gets no event and is closed).
    pub open: bool,
    /// When the task was recorded (the statement's `now()`, its `updated_at`).
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A status as the statement stores it, or an error naming it.
fn stored_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TaskStatus, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    TaskStatus::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown task status {text:?}")))
}
