-- V12: durable agent runs (issue 22, points 3 to 5): a run per task occurrence (a chat turn's
-- later), its steps stored as messages as they complete, the decisions a person takes on the
-- calls that need approval, and a task paused for one.

-- A run: whose, for which task (or conversation), where it is. `paused_until`: when a run
-- awaiting approval expires.
CREATE TABLE agent_runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id        uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id         uuid,
    task_id         uuid REFERENCES agent_tasks (id) ON DELETE CASCADE,
    conversation_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'awaiting_approval', 'completed', 'failed', 'step_limit', 'expired')),
    last_error      text CHECK (length(last_error) <= 2000),
    paused_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(task_id, conversation_id) = 1)
);
-- One run per task occurrence: a retried attempt resumes it.
CREATE UNIQUE INDEX agent_runs_task_uq ON agent_runs (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX agent_runs_conversation_idx ON agent_runs (conversation_id) WHERE conversation_id IS NOT NULL;
CREATE INDEX agent_runs_paused_idx ON agent_runs (paused_until) WHERE status = 'awaiting_approval';

-- A person's decision on one call, taken once.
CREATE TABLE agent_run_decisions (
    run_id       uuid NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    tool_call_id text NOT NULL CHECK (length(tool_call_id) BETWEEN 1 AND 200),
    decision     text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tool_call_id)
);

-- A run's steps are messages: the assistant's (its text and `tool_calls`) and one `tool`
-- message per result. A task's run has no conversation: its messages belong to the run.
ALTER TABLE messages
    ADD COLUMN run_id uuid REFERENCES agent_runs (id) ON DELETE CASCADE,
    ADD COLUMN step integer CHECK (step >= 1),
    ADD COLUMN tool_calls jsonb CHECK (tool_calls IS NULL OR jsonb_typeof(tool_calls) = 'array'),
    ADD COLUMN tool_call_id text CHECK (tool_call_id IS NULL OR length(tool_call_id) BETWEEN 1 AND 200),
    ALTER COLUMN conversation_id DROP NOT NULL,
    DROP CONSTRAINT messages_role_check,
    ADD CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant', 'tool')),
    ADD CONSTRAINT messages_place_check CHECK (conversation_id IS NOT NULL OR run_id IS NOT NULL),
    ADD CONSTRAINT messages_tool_result_check CHECK ((role = 'tool') = (tool_call_id IS NOT NULL)),
    ADD CONSTRAINT messages_run_step_check CHECK ((run_id IS NULL) = (step IS NULL));
-- A step's assistant message and a call's result are stored once, whichever attempt stores them.
CREATE UNIQUE INDEX messages_run_step_uq ON messages (run_id, step) WHERE role = 'assistant';
CREATE UNIQUE INDEX messages_run_result_uq ON messages (run_id, tool_call_id) WHERE role = 'tool';

-- A task whose run waits for a person.
ALTER TABLE agent_tasks
    DROP CONSTRAINT agent_tasks_status_check,
    ADD CONSTRAINT agent_tasks_status_check
        CHECK (status IN ('pending', 'running', 'awaiting_approval', 'completed', 'failed', 'cancelled'));

-- Served by the functions only: no Data API grant.
ALTER TABLE agent_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_run_decisions ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON agent_runs, agent_run_decisions FROM anon, authenticated, PUBLIC;
GRANT SELECT, INSERT, UPDATE ON agent_runs, agent_run_decisions TO agent_backend;
CREATE POLICY agent_runs_backend ON agent_runs FOR ALL TO agent_backend USING (true) WITH CHECK (true);
CREATE POLICY agent_run_decisions_backend ON agent_run_decisions FOR ALL TO agent_backend
    USING (true) WITH CHECK (true);
