-- V7: hardening (issue 25).

-- A user's active tasks (pending or running) are counted at every creation
-- (TASKS_MAX_ACTIVE_PER_USER): one small index range per user.
CREATE INDEX agent_tasks_user_active_idx ON agent_tasks (user_id)
    WHERE status IN ('pending', 'running');

-- Closed by default: on Supabase, what the migrating role creates in `public` is granted to
-- `anon` and `authenticated` (ALTER DEFAULT PRIVILEGES ... GRANT ALL ...), so a table added
-- later would be served by the Data API until someone remembered to revoke it. Those defaults
-- are revoked for the migrating role; functions lose PUBLIC's default EXECUTE too (PostgREST
-- serves functions as RPC, and anon inherits PUBLIC).
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The Data API does not tell a user who owns an agent (another user's id): a signed-in user
-- still reads the agents they may use, without `owner_id`.
REVOKE SELECT (owner_id) ON agents FROM authenticated;

-- Reading every session's activity (`pg_read_all_stats`) belongs to the health function alone:
-- a role of its own, `agent_monitor`, not the role every public function uses.
CREATE OR REPLACE FUNCTION pg_temp.cluster_step(done_check text, step text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    done boolean;
BEGIN
    FOR attempt IN 1..20 LOOP
        EXECUTE done_check INTO done;
        IF done THEN
            RETURN;
        END IF;
        BEGIN
            EXECUTE step;
            RETURN;
        EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN
            PERFORM pg_sleep(0.02 * attempt * random());
        END;
    END LOOP;
    RAISE EXCEPTION 'could not apply: %', step;
END
$$;

SELECT pg_temp.cluster_step('SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ''agent_monitor'')',
                            'CREATE ROLE agent_monitor NOLOGIN');
SELECT pg_temp.cluster_step(
           format('SELECT EXISTS (SELECT 1 FROM pg_db_role_setting d JOIN pg_roles r ON r.oid = d.setrole
                                   WHERE r.rolname = ''agent_monitor'' AND d.setdatabase = 0
                                     AND %L = ANY (d.setconfig))', name || '=' || value),
           format('ALTER ROLE agent_monitor SET %I = %L', name, value))
  FROM (VALUES ('statement_timeout', '5s'),
               ('idle_in_transaction_session_timeout', '15s'),
               ('lock_timeout', '2s')) AS s(name, value);

DO $$
BEGIN
    PERFORM pg_temp.cluster_step(
        'SELECT pg_has_role(''agent_monitor'', ''pg_read_all_stats'', ''MEMBER'')',
        'GRANT pg_read_all_stats TO agent_monitor');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_read_all_stats not granted to agent_monitor: %', SQLERRM;
END
$$;
DO $$
BEGIN
    PERFORM pg_temp.cluster_step(
        'SELECT NOT pg_has_role(''agent_backend'', ''pg_read_all_stats'', ''MEMBER'')',
        'REVOKE pg_read_all_stats FROM agent_backend');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_read_all_stats not revoked from agent_backend: %', SQLERRM;
END
$$;
