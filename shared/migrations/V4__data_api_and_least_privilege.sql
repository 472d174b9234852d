-- Safe on a Supabase project: nothing reachable through the Data API (PostgREST) unless meant to
-- be, and a least-privilege role for the functions.
--
-- On Supabase, tables that `postgres` creates in `public` get default grants to `anon` and
-- `authenticated` (ALTER DEFAULT PRIVILEGES … GRANT ALL ON TABLES TO anon, authenticated), and
-- PostgREST serves them. Here: row level security on every table, those grants revoked, and
-- read-only policies so a signed-in user reads exactly their own conversations, messages and
-- tasks and the agents they may use (never an agent's instructions). PostgREST sets the role
-- with `SET LOCAL ROLE` and the verified token's claims in `request.jwt.claims`; the policies
-- read the `sub` claim from there, not from the `auth` schema (plain Postgres has none).
-- On plain Postgres the roles are created when missing (NOLOGIN, as on Supabase).

-- Roles and role settings are cluster-wide: migrations of several databases at once may race on
-- them ("tuple concurrently updated"), so each is applied when missing, with a few retries.
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

SELECT pg_temp.cluster_step(format('SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %L)', r),
                            format('CREATE ROLE %I NOLOGIN', r))
  FROM unnest(ARRAY['anon', 'authenticated', 'agent_backend']) AS r;

-- Agents have an owner (null: the operator's) and a visibility; a short description is what
-- users see, the instructions (system prompt) only the backend.
ALTER TABLE agents
    ADD COLUMN owner_id uuid,
    ADD COLUMN visibility text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    ADD COLUMN description text NOT NULL DEFAULT '' CHECK (length(description) <= 500);
CREATE INDEX agents_owner_idx ON agents (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX agents_public_idx ON agents (name, id) WHERE visibility = 'public';
-- Agents that existed before were usable by every signed-in user: they stay so (public); new
-- agents are private unless made public. Review them after upgrading.
UPDATE agents SET visibility = 'public';

-- Chat admission, one row per user, updated by one atomic upsert per message: a fixed-window
-- rate limit, and the leases of the user's model calls in flight (each expires on its own, so a
-- call that never released its slot costs it for one lease at most).
CREATE TABLE chat_usage (
    user_id      uuid PRIMARY KEY,
    window_start timestamptz NOT NULL,
    window_count integer NOT NULL CHECK (window_count >= 0),
    in_flight    timestamptz[] NOT NULL DEFAULT '{}'
);

-- At most one model call in flight per Idempotency-Key: the user's message carries a lease
-- while it is being answered.
ALTER TABLE messages ADD COLUMN answering_until timestamptz;

-- Row level security everywhere, the Data API roles' grants revoked (including the migration
-- history, which refinery keeps in this schema).
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE refinery_schema_history ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON agents, conversations, messages, agent_tasks, chat_usage, refinery_schema_history
    FROM anon, authenticated, PUBLIC;

-- Signed-in users read their own rows through the Data API; nobody writes through it.
GRANT SELECT (id, name, description, visibility, owner_id, created_at, updated_at)
    ON agents TO authenticated;
GRANT SELECT ON conversations, messages, agent_tasks TO authenticated;

CREATE POLICY agents_usable ON agents FOR SELECT TO authenticated
    USING (visibility = 'public'
           OR owner_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);
CREATE POLICY conversations_own ON conversations FOR SELECT TO authenticated
    USING (user_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);
CREATE POLICY messages_own ON messages FOR SELECT TO authenticated
    USING (user_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);
CREATE POLICY agent_tasks_own ON agent_tasks FOR SELECT TO authenticated
    USING (user_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);

-- The functions' role: exactly what they do, nothing more; it bypasses no policy but has its own.
GRANT USAGE ON SCHEMA public TO agent_backend;
GRANT SELECT ON agents TO agent_backend;
GRANT SELECT, INSERT, UPDATE ON conversations, messages, agent_tasks, chat_usage TO agent_backend;
CREATE POLICY agents_backend ON agents FOR SELECT TO agent_backend USING (true);
CREATE POLICY conversations_backend ON conversations FOR ALL TO agent_backend USING (true) WITH CHECK (true);
CREATE POLICY messages_backend ON messages FOR ALL TO agent_backend USING (true) WITH CHECK (true);
CREATE POLICY agent_tasks_backend ON agent_tasks FOR ALL TO agent_backend USING (true) WITH CHECK (true);
CREATE POLICY chat_usage_backend ON chat_usage FOR ALL TO agent_backend USING (true) WITH CHECK (true);

-- A frozen or killed instance cannot leave a query or an open transaction on the server. Role
-- settings reach the server session whoever pools it (they apply at connection start).
SELECT pg_temp.cluster_step(
           format('SELECT EXISTS (SELECT 1 FROM pg_db_role_setting d JOIN pg_roles r ON r.oid = d.setrole
                                   WHERE r.rolname = ''agent_backend'' AND d.setdatabase = 0
                                     AND %L = ANY (d.setconfig))', name || '=' || value),
           format('ALTER ROLE agent_backend SET %I = %L', name, value))
  FROM (VALUES ('statement_timeout', '10s'),
               ('idle_in_transaction_session_timeout', '15s'),
               ('lock_timeout', '5s')) AS s(name, value);

-- The health function reads pg_stat_activity for every session (where the migrating role may
-- grant it; elsewhere it sees its own sessions in full and the others' counts).
DO $$
BEGIN
    PERFORM pg_temp.cluster_step(
        'SELECT pg_has_role(''agent_backend'', ''pg_read_all_stats'', ''MEMBER'')',
        'GRANT pg_read_all_stats TO agent_backend');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_read_all_stats not granted to agent_backend: %', SQLERRM;
END
$$;
