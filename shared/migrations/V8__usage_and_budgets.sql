-- V8: cost you can see and cap (issue 21).

-- What each reply and each task run cost, as the provider reported it: NULL when it reported
-- nothing (unknown, never 0).
ALTER TABLE messages
    ADD COLUMN input_tokens integer CHECK (input_tokens >= 0),
    ADD COLUMN output_tokens integer CHECK (output_tokens >= 0),
    ADD COLUMN model text CHECK (length(model) <= 200);
ALTER TABLE agent_tasks
    ADD COLUMN input_tokens integer CHECK (input_tokens >= 0),
    ADD COLUMN output_tokens integer CHECK (output_tokens >= 0),
    ADD COLUMN model text CHECK (length(model) <= 200);

-- An agent's daily token cap, across its users (NULL: unlimited).
ALTER TABLE agents
    ADD COLUMN daily_token_budget bigint CHECK (daily_token_budget IS NULL OR daily_token_budget >= 0);

-- Usage by UTC day, user, agent and model, updated by the statement that stores a reply or a
-- task result (one upsert, no extra round trip). Operator tasks (no user) count under the nil
-- uuid; a call whose usage is unknown counts in `calls` and adds no tokens, under its model or
-- 'unknown'.
CREATE TABLE usage_daily (
    day           date NOT NULL,
    user_id       uuid NOT NULL,
    agent_id      uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    model         text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    input_tokens  bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    calls         integer NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (day, user_id, agent_id, model)
);
-- An agent's day across its users (the agent budget).
CREATE INDEX usage_daily_agent_idx ON usage_daily (day, agent_id);
-- A user's last days (`GET /api/usage`).
CREATE INDEX usage_daily_user_idx ON usage_daily (user_id, day DESC);

ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON usage_daily FROM anon, authenticated, PUBLIC;
GRANT SELECT ON usage_daily TO authenticated;
CREATE POLICY usage_daily_own ON usage_daily FOR SELECT TO authenticated
    USING (user_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);
GRANT SELECT, INSERT, UPDATE ON usage_daily TO agent_backend;
CREATE POLICY usage_daily_backend ON usage_daily FOR ALL TO agent_backend USING (true) WITH CHECK (true);

-- The fair claim walks the users with due tasks (operator tasks, without a user, under the nil
-- uuid) and reads each one's oldest due tasks: one index range per user; and it counts each
-- user's tasks running.
CREATE INDEX agent_tasks_due_by_user_idx
    ON agent_tasks ((coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid)), scheduled_for, id)
    WHERE status = 'pending' AND approval_status = 'approved';
CREATE INDEX agent_tasks_running_by_user_idx
    ON agent_tasks ((coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid)))
    WHERE status = 'running';
