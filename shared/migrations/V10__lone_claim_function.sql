-- V10: the lone claim as a function (issue 21).
--
-- Through the transaction-mode pooler nothing can be prepared, so every statement the scheduler
-- sends is planned anew; the lone claim (one user's due tasks, the single-user drain's every
-- claim) spent as long planning as the strict claim before it spent executing. A PL/pgSQL
-- function keeps its statements' plans for the life of the server connection, which the pooler
-- keeps: planned once per connection, not once per claim.
--
-- In a schema of its own that the Data API does not expose, executable by the functions' role
-- alone (V7 revoked PUBLIC's default EXECUTE; revoked here again, explicitly).

CREATE SCHEMA IF NOT EXISTS agent_private;
REVOKE ALL ON SCHEMA agent_private FROM PUBLIC;
GRANT USAGE ON SCHEMA agent_private TO agent_backend;

-- Parameters: $1 lease owner, $2 lease seconds, $3 most tasks, $4 the agent-unavailable error,
-- $5 the lone user (the nil uuid: the operator), $6 the user's daily tokens (0: unlimited).
-- Takes the user's oldest due tasks unless anyone else has due tasks (two index probes, one each
-- side of the user): then nothing, and the scheduler runs the fair claim. Cancels a task whose
-- owner may no longer use its agent, defers one over its user's or agent's budget to the next
-- 00:00 UTC, attempts untouched; leases the rest, counting the attempt.
CREATE FUNCTION agent_private.lone_claim(text, float8, int8, text, uuid, int8)
RETURNS TABLE (id uuid, status text, over_budget boolean, prompt text, instructions text,
               attempts integer, max_attempts integer, cron text, time_zone text,
               scheduled_for timestamptz, approval_status text, series_failures integer,
               user_id uuid, agent_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE agent_tasks t
            SET status = CASE WHEN NOT (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN 'cancelled' WHEN ab.over THEN 'pending' ELSE 'running' END,
                lease_owner = CASE WHEN ((t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) AND NOT ab.over) THEN $1 END,
                lease_expires_at = CASE WHEN ((t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) AND NOT ab.over) THEN now() + make_interval(secs => $2) END,
                attempts = CASE WHEN ((t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) AND NOT ab.over) THEN t.attempts + 1 ELSE t.attempts END,
                last_error = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) THEN t.last_error ELSE $4 END,
                scheduled_for = CASE WHEN (t.user_id IS NULL OR a.visibility = 'public' OR a.owner_id = t.user_id) AND ab.over
                                     THEN (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
                                     ELSE t.scheduled_for END,
                updated_at = now()
           FROM agents a
                CROSS JOIN LATERAL (
                    SELECT ($6::int8 > 0 AND $5 <> '00000000-0000-0000-0000-000000000000'::uuid
                            AND coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                           WHERE day = (now() AT TIME ZONE 'UTC')::date AND user_id = $5), 0) >= $6)
                        OR (a.daily_token_budget IS NOT NULL
                            AND coalesce((SELECT sum(input_tokens + output_tokens) FROM usage_daily
                                           WHERE day = (now() AT TIME ZONE 'UTC')::date AND agent_id = a.id), 0)
                                >= a.daily_token_budget) AS over
                    OFFSET 0) ab
          WHERE a.id = t.agent_id
            AND t.id = ANY(ARRAY(
                SELECT id FROM agent_tasks
                 WHERE coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid) = $5
                   AND status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                   -- Anyone else with due tasks: take nothing (two index probes, one each side
                   -- of the user, in the due-by-user index's order: one descent each).
                   AND (SELECT 1 FROM agent_tasks
                         WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                           AND coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid) < $5
                         ORDER BY coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid) DESC, scheduled_for DESC, id DESC LIMIT 1) IS NULL
                   AND (SELECT 1 FROM agent_tasks
                         WHERE status = 'pending' AND approval_status = 'approved' AND scheduled_for <= now()
                           AND coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid) > $5
                         ORDER BY coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), scheduled_for, id LIMIT 1) IS NULL
                 ORDER BY coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), scheduled_for, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED))
      RETURNING t.id, t.status, t.status = 'pending' AS over_budget, t.prompt, a.instructions, t.attempts,
                t.max_attempts, t.cron, t.time_zone, t.scheduled_for, t.approval_status, t.series_failures,
                t.user_id, t.agent_id;
END
$fn$;

REVOKE ALL ON FUNCTION agent_private.lone_claim(text, float8, int8, text, uuid, int8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_private.lone_claim(text, float8, int8, text, uuid, int8) TO agent_backend;
