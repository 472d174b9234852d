//! The scheduler's SQL: set-based, one statement per step and batch, every write guarded by the
//! lease owner so a stale instance cannot overwrite a newer run.

use shared::db::{column, DbError, FromRow, Row, Sql, Type};
use shared::model::Usage;
use shared::tasks::series::Next;
use shared::tasks::{NextColumns, Schedule, INSERT_NEXT};
use tokio_postgres::GenericClient;
use uuid::Uuid;

pub use shared::tasks::{decide, task_state, Decision, TaskState, TaskStatus};

/// A task this invocation holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: Uuid,
    /// The task's owner (`None`: the operator's) and agent: whose usage the run adds to.
    pub user_id: Option<Uuid>,
    pub agent_id: Uuid,
    pub prompt: String,
    pub instructions: String,
    /// Attempts including this one.
    pub attempts: i32,
    pub max_attempts: i32,
    pub schedule: Schedule,
}

impl FromRow for ClaimedTask {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            user_id: column(row, "user_id")?,
            agent_id: column(row, "agent_id")?,
            prompt: column(row, "prompt")?,
            instructions: column(row, "instructions")?,
            attempts: column(row, "attempts")?,
            max_attempts: column(row, "max_attempts")?,
            schedule: Schedule::from_row(row)?,
        })
    }
}

/// What a claim took: the tasks to run, those ended unrun because their owner may no longer
/// use their agent, and those deferred to their budget's reset.
#[derive(Debug, Default)]
pub struct Claimed {
    pub tasks: Vec<ClaimedTask>,
    /// Cancelled by the claim (the agent was made private or given to another owner): never run,
    /// and their series stop (no next occurrence).
    pub agent_unavailable: Vec<Uuid>,
    /// Over their owner's or their agent's daily tokens: due again at the next 00:00 UTC, their
    /// attempts untouched.
    pub deferred: u64,
}

/// What `last_error` says of a task ended because its agent is no longer available to its owner.
pub const AGENT_UNAVAILABLE: &str =
    "agent_unavailable: the task's owner may no longer use its agent (made private or given to another owner); not run, and its series stops";

/// How a claim shares the provider between users.
#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    /// Tasks claimed at most.
    pub limit: i64,
    /// A user's tasks in flight (running, across instances) that the fair share admits; capacity
    /// no user's share takes goes to the oldest due tasks, whoever's.
    pub per_user: i64,
    /// Where this claim starts walking the users (a random uuid: with more users than a claim
    /// takes, each gets an equal chance to come first).
    pub start: Uuid,
    /// `USAGE_USER_DAILY_TOKENS` (0: unlimited).
    pub user_daily_tokens: i64,
}

impl ClaimPolicy {
    /// Up to `limit` tasks, no budget, every user's share the whole limit.
    pub fn up_to(limit: i64) -> Self {
        Self {
            limit,
            per_user: limit,
            start: Uuid::nil(),
            user_daily_tokens: 0,
        }
    }
}

/// The users with due tasks, from `$6` on and round again (the operator's tasks under the nil
/// uuid), at most `$3` of them: an index skip scan, one probe per user, which also gives the
/// user's oldest due task (`sf`, `id`): their share is read from there on, past the index entries
/// of tasks already claimed (dead until vacuumed) that only the probe steps over.
const DUE_USERS: &str = "
    users(k, sf, id, wrapped, depth) AS (
        SELECT f.k, f.sf, f.id, f.wrapped, 1 FROM (
            (SELECT coalesce(user_id, NIL) AS k, scheduled_for AS sf, id, false AS wrapped
               FROM agent_tasks
              WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                AND coalesce(user_id, NIL) >= $6
              ORDER BY 1, 2, 3 LIMIT 1)
            UNION ALL
            (SELECT coalesce(user_id, NIL), scheduled_for, id, true
               FROM agent_tasks
              WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                AND coalesce(user_id, NIL) < $6
              ORDER BY 1, 2, 3 LIMIT 1)
            LIMIT 1) f
        UNION ALL
        SELECT nx.k, nx.sf, nx.id, nx.wrapped, u.depth + 1 FROM users u CROSS JOIN LATERAL (
            (SELECT coalesce(user_id, NIL) AS k, scheduled_for AS sf, id, u.wrapped AS wrapped
               FROM agent_tasks
              WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                AND coalesce(user_id, NIL) > u.k
                AND (NOT u.wrapped OR coalesce(user_id, NIL) < $6)
              ORDER BY 1, 2, 3 LIMIT 1)
            UNION ALL
            (SELECT coalesce(user_id, NIL), scheduled_for, id, true
               FROM agent_tasks
              WHERE NOT u.wrapped AND status = 'pending' AND approval_status = 'approved'
                AND scheduled_for <= now()
                AND coalesce(user_id, NIL) < $6
              ORDER BY 1, 2, 3 LIMIT 1)
            LIMIT 1) nx
        WHERE u.depth < $3
    )";

/// The claim statement [`claim`] sends (parameters: `$1` owner, `$2` lease seconds, `$3` limit,
/// `$4` the agent-unavailable error, `$5` per-user share, `$6` start uuid, `$7` user daily
/// tokens), for the benchmarks' `EXPLAIN`.
pub fn claim_sql() -> String {
    format!(
        "WITH RECURSIVE {DUE_USERS},
         shares AS (
             SELECT c.id, c.scheduled_for, row_number() OVER (PARTITION BY u.k ORDER BY c.scheduled_for, c.id) AS turn,
                    c.user_id, c.agent_id
               FROM users u CROSS JOIN LATERAL (
                 SELECT t.id, t.scheduled_for, t.user_id, t.agent_id FROM agent_tasks t
                  WHERE coalesce(t.user_id, NIL) = u.k
                    AND (t.scheduled_for, t.id) >= (u.sf, u.id)
                    AND t.status = 'pending' AND t.approval_status = 'approved' AND t.scheduled_for <= now()
                  ORDER BY coalesce(t.user_id, NIL), t.scheduled_for, t.id
                  -- A user alone takes the whole claim (no one to share with: their tasks
                  -- running are not counted).
                  LIMIT CASE WHEN (SELECT count(*) FROM users) > 1 THEN greatest(0, least(
                      $5 - (SELECT count(*) FROM agent_tasks r
                             WHERE coalesce(r.user_id, NIL) = u.k AND r.status = 'running'),
                      ceil($3::numeric / (SELECT count(*) FROM users))::int8)) ELSE $3 END
                  FOR UPDATE OF t SKIP LOCKED) c
         ), rest AS (
             -- Read only when the shares leave part of the claim (a CTE runs as far as it is read).
             SELECT t.id, t.scheduled_for, NULL::int8 AS turn, t.user_id, t.agent_id FROM agent_tasks t
              WHERE t.status = 'pending' AND t.approval_status = 'approved' AND t.scheduled_for <= now()
                AND t.id NOT IN (SELECT id FROM shares)
              ORDER BY t.scheduled_for, t.id
              LIMIT $3
              FOR UPDATE SKIP LOCKED
         ), chosen AS (
             -- Every user's first, then every user's second ..., then the oldest due.
             SELECT id, user_id, agent_id FROM (
                 (SELECT * FROM shares ORDER BY turn, scheduled_for, id)
                 UNION ALL
                 SELECT * FROM rest) both_parts
              LIMIT $3
         ), flags AS (
             SELECT c.id, a.instructions,
                    coalesce(c.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = c.user_id, false) AS usable,
                    (($7::int8 > 0 AND c.user_id IS NOT NULL
                      AND coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                     WHERE day = (now() AT TIME ZONE 'UTC')::date AND user_id = c.user_id), 0) >= $7)
                     OR (a.daily_token_budget IS NOT NULL
                      AND coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                     WHERE day = (now() AT TIME ZONE 'UTC')::date AND agent_id = a.id), 0)
                          >= a.daily_token_budget)) AS over_budget
               FROM chosen c JOIN agents a ON a.id = c.agent_id
         )
         UPDATE agent_tasks t
            SET status = CASE WHEN NOT f.usable THEN 'cancelled' WHEN f.over_budget THEN 'pending' ELSE 'running' END,
                lease_owner = CASE WHEN f.usable AND NOT f.over_budget THEN $1 END,
                lease_expires_at = CASE WHEN f.usable AND NOT f.over_budget THEN now() + make_interval(secs => $2) END,
                attempts = CASE WHEN f.usable AND NOT f.over_budget THEN t.attempts + 1 ELSE t.attempts END,
                last_error = CASE WHEN f.usable THEN t.last_error ELSE $4 END,
                scheduled_for = CASE WHEN f.usable AND f.over_budget
                                     THEN (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
                                     ELSE t.scheduled_for END,
                updated_at = now()
           FROM flags f
          WHERE t.id = f.id
      RETURNING t.id, t.status, f.over_budget, t.prompt, f.instructions, t.attempts, t.max_attempts, t.cron,
                t.time_zone, t.scheduled_for, t.approval_status, t.series_failures, t.user_id, t.agent_id"
    )
    .replace("NIL", "'00000000-0000-0000-0000-000000000000'::uuid")
}

/// Claims up to `limit` due, approved, pending tasks with a lease of `lease_secs`, counting the
/// attempt, in one statement that is fair between users: each user with due tasks gets their
/// oldest ones first, up to their share of tasks in flight (`per_user` minus those running),
/// interleaved (every user's first, then every user's second …), and what is left of the limit
/// goes to the oldest due tasks, whoever's (no capacity idles while anyone has work; read only
/// when the shares leave part of the limit). A user's rows are locked only as deep as the
/// interleaving can reach (`ceil(limit / users walked)` turns), read in their index's order from
/// the oldest one the walk found; a user alone takes the whole limit. Rows
/// another instance holds are skipped. In the same statement, a task whose owner may no longer
/// use its agent (private and not theirs; operator tasks may always) is cancelled, and one whose
/// owner or agent spent its daily tokens is deferred to the next 00:00 UTC, attempts untouched.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn claim<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: &str,
    lease_secs: f64,
    policy: ClaimPolicy,
) -> Result<Claimed, DbError> {
    let statement = claim_sql();
    let rows = sql
        .query(
            &statement,
            &[
                (&owner, Type::TEXT),
                (&lease_secs, Type::FLOAT8),
                (&policy.limit, Type::INT8),
                (&AGENT_UNAVAILABLE, Type::TEXT),
                (&policy.per_user, Type::INT8),
                (&policy.start, Type::UUID),
                (&policy.user_daily_tokens, Type::INT8),
            ],
        )
        .await?;
    let mut claimed = Claimed::default();
    for row in &rows {
        let status: String = column(row, "status")?;
        if status == TaskStatus::Running.as_str() {
            claimed.tasks.push(ClaimedTask::from_row(row)?);
        } else if status == TaskStatus::Cancelled.as_str() {
            claimed.agent_unavailable.push(column(row, "id")?);
        } else if column::<bool>(row, "over_budget")? {
            claimed.deferred += 1;
        }
    }
    Ok(claimed)
}

/// Hands back every task still leased to `owner` (a run that has recorded or handed back all
/// it knew of): pending again, the attempt uncounted. One statement.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn release_orphans<C: GenericClient + Sync>(sql: &Sql<'_, C>, owner: &str) -> Result<u64, DbError> {
    sql.execute(
        "UPDATE agent_tasks
            SET status = 'pending', attempts = greatest(attempts - 1, 0),
                lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          WHERE status = 'running' AND lease_owner = $1",
        &[(&owner, Type::TEXT)],
    )
    .await
}

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
}

impl Outcome {
    /// The status the task is left in.
    pub fn status(&self) -> TaskStatus {
        match self {
            Outcome::Completed { .. } => TaskStatus::Completed,
            Outcome::Failed { .. } => TaskStatus::Failed,
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
            Outcome::Completed { .. } | Outcome::Release | Outcome::Throttled { .. } => None,
        }
    }

    /// Seconds until a retried task is due again.
    fn delay_secs(&self) -> Option<f64> {
        match self {
            Outcome::Retry { delay_secs, .. } | Outcome::Throttled { delay_secs } => Some(*delay_secs),
            _ => None,
        }
    }

    /// A released task never started, a throttled one was refused by the provider: neither
    /// attempt is counted.
    fn uncounts_attempt(&self) -> bool {
        matches!(self, Outcome::Release | Outcome::Throttled { .. })
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
                + "), live AS (
                 -- The owners' live connections, for the task.updated events pushed after commit.
                 SELECT f.id AS task_id, f.outcome, c.connection_id, c.expires_at > now() AS open
                   FROM fin f JOIN live_connections c ON c.user_id = f.user_id
             )
             SELECT (SELECT count(*) FROM fin) AS finished,
                    (SELECT count(*) FROM nxt WHERE suspended) AS suspended,
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', task_id, 'status', outcome,
                                                                  'connectionId', connection_id, 'open', open,
                                                                  'at', now())),
                                     '[]'::jsonb) FROM live) AS live"),
            &[
                (&owner, Type::TEXT),
                (&ids, Type::UUID_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&results, Type::TEXT_ARRAY),
                (&errors, Type::TEXT_ARRAY),
                (&delays, Type::FLOAT8_ARRAY),
                (&uncount, Type::BOOL_ARRAY),
                (&next.at, Type::TIMESTAMPTZ_ARRAY),
                (&next.approval, Type::TEXT_ARRAY),
                (&next.failures, Type::INT4_ARRAY),
                (&next.note, Type::TEXT_ARRAY),
                (&inputs, Type::INT8_ARRAY),
                (&outputs, Type::INT8_ARRAY),
                (&models, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    let live: serde_json::Value = column(&row, "live")?;
    Ok(FinishCounts {
        finished: column(&row, "finished")?,
        suspended: column(&row, "suspended")?,
        live: serde_json::from_value(live).map_err(|e| DbError::Decode(format!("column live: {e}")))?,
    })
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
    pub status: String,
    pub connection_id: String,
    /// Within its token's lifetime (else it gets no event and is closed).
    pub open: bool,
    /// When the task was recorded (the statement's `now()`, its `updated_at`).
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Back to `pending`.
    pub pending: i64,
    /// `failed`: the expired attempt was the last one.
    pub failed: i64,
    /// Series suspended by a failure found here.
    pub suspended: i64,
}

/// A recurring task on its last attempt whose lease expired: the rescue will fail it, and its
/// series needs its next occurrence from the same statement.
#[derive(Debug, Clone)]
pub struct ExpiredOccurrence {
    pub id: Uuid,
    pub schedule: Schedule,
}

impl FromRow for ExpiredOccurrence {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: column(row, "id")?,
            schedule: Schedule::from_row(row)?,
        })
    }
}

/// The recurring tasks the next rescue will fail (read, so their next occurrences can be computed).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn expired_last_occurrences<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
) -> Result<Vec<ExpiredOccurrence>, DbError> {
    let rows = sql
        .query(
            "SELECT id, cron, time_zone, scheduled_for, approval_status, series_failures FROM agent_tasks
              WHERE status = 'running' AND lease_expires_at < now()
                AND cron IS NOT NULL AND attempts >= max_attempts
              ORDER BY lease_expires_at
              LIMIT $1",
            &[(&limit, Type::INT8)],
        )
        .await?;
    ExpiredOccurrence::from_rows(&rows)
}

/// Tasks whose lease expired (their instance crashed or timed out) go back to `pending`, or to
/// `failed` when that was their last attempt (the attempt was counted when claimed); a recurring
/// one that fails here gets its next occurrence (`planned`, from [`expired_last_occurrences`])
/// in the same statement. A recurring task on its last attempt that is not planned is left for
/// the next rescue, so its series is never cut.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn rescue<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    limit: i64,
    planned: &[(Uuid, Option<Next>)],
) -> Result<Rescued, DbError> {
    let ids: Vec<Uuid> = planned.iter().map(|(id, _)| *id).collect();
    let nexts: Vec<Option<&Next>> = planned.iter().map(|(_, n)| n.as_ref()).collect();
    let next = NextColumns::of(&nexts);
    let row = sql
        .query_one(
            &("WITH plan AS (
                 SELECT * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::int4[], $6::text[])
                     AS p(id, next_at, next_approval, next_failures, next_note)
             ), done AS (
                 UPDATE agent_tasks t
                    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                        last_error = 'lease expired: the instance running it stopped before finishing',
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                  WHERE t.id = ANY(ARRAY(SELECT id FROM agent_tasks
                                          WHERE status = 'running' AND lease_expires_at < now()
                                            AND (cron IS NULL OR attempts < max_attempts OR id = ANY($2))
                                          ORDER BY lease_expires_at
                                          LIMIT $1
                                          FOR UPDATE SKIP LOCKED))
                    AND t.status = 'running'
              RETURNING t.id, t.status
             ), fin AS (
                 SELECT d.id, p.next_at, p.next_approval, p.next_failures, p.next_note
                   FROM done d JOIN plan p ON p.id = d.id
                  WHERE d.status = 'failed'
             ), nxt AS ("
                .to_string()
                + INSERT_NEXT
                + ")
             SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    (SELECT count(*) FROM nxt WHERE suspended) AS suspended
               FROM done"),
            &[
                (&limit, Type::INT8),
                (&ids, Type::UUID_ARRAY),
                (&next.at, Type::TIMESTAMPTZ_ARRAY),
                (&next.approval, Type::TEXT_ARRAY),
                (&next.failures, Type::INT4_ARRAY),
                (&next.note, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(Rescued {
        pending: column(&row, "pending")?,
        failed: column(&row, "failed")?,
        suspended: column(&row, "suspended")?,
    })
}

/// Due, approved, pending tasks not yet claimed, and running tasks whose lease has expired.
#[tracing::instrument(skip_all, level = "debug")]
pub async fn due_counts<C: GenericClient + Sync>(sql: &Sql<'_, C>) -> Result<(i64, i64), DbError> {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM agent_tasks
                      WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now())
                        AS due,
                    (SELECT count(*) FROM agent_tasks
                      WHERE status = 'running' AND lease_expires_at < now()) AS expired",
            &[],
        )
        .await?;
    Ok((column(&row, "due")?, column(&row, "expired")?))
}
