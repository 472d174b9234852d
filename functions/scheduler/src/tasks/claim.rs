//! Claiming due tasks: the fair claim statement ([`claim_sql`], performance-tuned: change it only
//! with the fairness bench's `EXPLAIN` in hand) and what it returns.

use std::sync::LazyLock;

use shared::db::{column, DbError, FromRow, Param, Row, Sql, Type};
use shared::tasks::Schedule;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::TaskStatus;

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
        Ok(by_name!(row, Self {
            id, user_id, agent_id, prompt, instructions, attempts, max_attempts;
            schedule: Schedule::from_row(row)?
        }))
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
    /// The lone claim came back empty (someone else has due tasks, or the user has none left)
    /// and the fair claim ran in its place.
    pub fell_back: bool,
}

impl Claimed {
    /// The one user (nil: the operator) of a full claim whose tasks are all theirs: a lone user,
    /// as far as this claim can tell.
    pub fn lone_user(&self, limit: usize) -> Option<Uuid> {
        if self.tasks.len() < limit.max(1) {
            return None;
        }
        let key = |t: &ClaimedTask| t.user_id.unwrap_or(Uuid::nil());
        let first = key(self.tasks.first()?);
        self.tasks.iter().all(|t| key(t) == first).then_some(first)
    }
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
    /// The one user (the nil uuid: the operator) the last claims found with due tasks: try
    /// [`lone_claim_sql`] first, the fair claim when anyone else has due tasks.
    pub lone: Option<Uuid>,
}

impl ClaimPolicy {
    /// Up to `limit` tasks, no budget, every user's share the whole limit.
    pub fn up_to(limit: i64) -> Self {
        Self {
            limit,
            per_user: limit,
            start: Uuid::nil(),
            user_daily_tokens: 0,
            lone: None,
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

/// What every claim does with the tasks it chose (`chosen`: id, user_id, agent_id): runs the
/// usable ones within budget, cancels those whose owner may no longer use their agent, defers
/// those over budget to the next 00:00 UTC; `TOKENS` is the user daily tokens' parameter.
const CLAIMED: &str = "flags AS MATERIALIZED (
             -- Materialized: inlined, each use of over_budget below would plan its own copy of
             -- the budget subqueries (planned anew on every claim, nothing being prepared).
             SELECT c.id, a.instructions,
                    coalesce(c.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = c.user_id, false) AS usable,
                    ((TOKENS::int8 > 0 AND c.user_id IS NOT NULL
                      AND coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                     WHERE day = (now() AT TIME ZONE 'UTC')::date AND user_id = c.user_id), 0) >= TOKENS)
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
                t.time_zone, t.scheduled_for, t.approval_status, t.series_failures, t.user_id, t.agent_id";

/// The claim statement [`claim`] sends (parameters: `$1` owner, `$2` lease seconds, `$3` limit,
/// `$4` the agent-unavailable error, `$5` per-user share, `$6` start uuid, `$7` user daily
/// tokens), for the benchmarks' `EXPLAIN`.
pub fn claim_sql() -> String {
    FAIR_CLAIM.clone()
}

/// The fair claim's text, built once per instance (every claim sends it).
static FAIR_CLAIM: LazyLock<String> = LazyLock::new(|| {
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
         ), {CLAIMED}"
    )
    .replace("TOKENS", "$7")
    .replace("NIL", "'00000000-0000-0000-0000-000000000000'::uuid")
});

/// The claim of a lone user's tasks (parameters: `$1` to `$4` as [`claim_sql`], `$5` the user
/// (nil: the operator), `$6` user daily tokens): their oldest due tasks, up to the limit, read in
/// the index's order, unless anyone else has due tasks (two index probes, one each side of the
/// user): then it takes nothing, and the fair claim runs in its place. The same outcome as the
/// fair claim for a lone user (who takes the whole limit there too). It is the function
/// `agent_private.lone_claim` (migration V10): through the pooler nothing is prepared, so a
/// statement sent is planned on every claim, where a PL/pgSQL function's plan lasts as long as
/// the server connection.
pub fn lone_claim_sql() -> &'static str {
    LONE_CLAIM
}

const LONE_CLAIM: &str = "SELECT * FROM agent_private.lone_claim($1, $2, $3, $4, $5, $6)";

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
/// With `policy.lone`, [`lone_claim_sql`] runs first and the fair claim only when it takes
/// nothing (a second round trip, on the claim where another user's tasks come due).
#[tracing::instrument(skip_all, level = "debug")]
pub async fn claim<C: GenericClient + Sync>(
    sql: &Sql<'_, C>,
    owner: &str,
    lease_secs: f64,
    policy: ClaimPolicy,
) -> Result<Claimed, DbError> {
    // $1 to $4: the lease, how many, the error of tasks cancelled unrun.
    let lease: [Param<'_>; 4] = [
        (&owner, Type::TEXT),
        (&lease_secs, Type::FLOAT8),
        (&policy.limit, Type::INT8),
        (&AGENT_UNAVAILABLE, Type::TEXT),
    ];
    let mut fell_back = false;
    if let Some(user) = &policy.lone {
        // $5, $6: the lone user, the user daily tokens.
        let alone: [Param<'_>; 2] = [(user, Type::UUID), (&policy.user_daily_tokens, Type::INT8)];
        let rows = sql.query(LONE_CLAIM, &[&lease[..], &alone].concat()).await?;
        if !rows.is_empty() {
            // The function returns its rows in the table's order: started oldest first.
            let mut claimed = decode(&rows, false)?;
            claimed.tasks.sort_by_key(|t| (t.schedule.scheduled_for, t.id));
            return Ok(claimed);
        }
        fell_back = true;
    }
    // $5 to $7: how the claim shares the provider between users.
    let share: [Param<'_>; 3] = [
        (&policy.per_user, Type::INT8),
        (&policy.start, Type::UUID),
        (&policy.user_daily_tokens, Type::INT8),
    ];
    let rows = sql.query(&FAIR_CLAIM, &[&lease[..], &share].concat()).await?;
    decode(&rows, fell_back)
}

/// A claim's rows, by what happened to each task.
fn decode(rows: &[Row], fell_back: bool) -> Result<Claimed, DbError> {
    let mut claimed = Claimed {
        fell_back,
        ..Claimed::default()
    };
    for row in rows {
        match column::<TaskStatus>(row, "status")? {
            TaskStatus::Running => claimed.tasks.push(ClaimedTask::from_row(row)?),
            TaskStatus::Cancelled => claimed.agent_unavailable.push(column(row, "id")?),
            TaskStatus::Pending => {
                if column::<bool>(row, "over_budget")? {
                    claimed.deferred += 1;
                }
            }
            ended @ (TaskStatus::Completed | TaskStatus::Failed | TaskStatus::AwaitingApproval) => {
                return Err(DbError::decode(format!(
                    "column status: a claim never leaves a task {}",
                    ended.as_str()
                )));
            }
        }
    }
    Ok(claimed)
}
