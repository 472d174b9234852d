-- V14: tools from MCP servers (issue 27). An agent's tool sources (a Model Context Protocol
-- server each), and the state of a run's calls that the database must remember across attempts.

-- A source: the server's Streamable HTTP endpoint, its auth header sealed by the functions
-- (AES-256-GCM under AGENT_MCP_ENCRYPTION_KEY, never returned), which of its tools the agent may
-- use (NULL: all), and when a person approves a call ('destructive': unless the tool says
-- `readOnlyHint`). The name prefixes the source's tools for the model (`<name>__<tool>`): a
-- letter, then letters, digits or `-`, so the first `__` of a tool's name is the separator.
CREATE TABLE agent_tool_sources (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id      uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    kind          text NOT NULL DEFAULT 'mcp' CHECK (kind = 'mcp'),
    name          text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9-]{0,23}$'),
    url           text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    auth_header   bytea CHECK (octet_length(auth_header) <= 8192),
    allowed_tools text[] CHECK (allowed_tools IS NULL OR cardinality(allowed_tools) <= 256),
    approval      text NOT NULL DEFAULT 'destructive' CHECK (approval IN ('never', 'always', 'destructive')),
    timeout_ms    integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 1 AND 30000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, name)
);

ALTER TABLE agent_tool_sources ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON agent_tool_sources FROM anon, authenticated, PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON agent_tool_sources TO agent_backend;
CREATE POLICY agent_tool_sources_backend ON agent_tool_sources FOR ALL TO agent_backend
    USING (true) WITH CHECK (true);

-- What the database must know of a run's call between attempts:
-- 'started': a call that cannot be repeated safely (an MCP tool neither read-only nor
--   idempotent) was sent; found without a result by a later attempt, its outcome is unknown;
-- 'awaiting_approval': the run paused for a person to approve or reject it;
-- 'outcome_unknown': the run paused for a person to retry it (approve) or skip it (reject).
-- The routes that decide read the waiting calls from here (the tools' rules alone no longer say
-- which calls wait: an MCP tool's annotations come from its server).
CREATE TABLE agent_run_calls (
    run_id       uuid NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    tool_call_id text NOT NULL CHECK (length(tool_call_id) BETWEEN 1 AND 200),
    state        text NOT NULL CHECK (state IN ('started', 'awaiting_approval', 'outcome_unknown')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tool_call_id)
);

ALTER TABLE agent_run_calls ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON agent_run_calls FROM anon, authenticated, PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON agent_run_calls TO agent_backend;
CREATE POLICY agent_run_calls_backend ON agent_run_calls FOR ALL TO agent_backend
    USING (true) WITH CHECK (true);
-- A decision on an outcome-unknown call may be taken again after a later crash: the run
-- removes the earlier one when it pauses again.
GRANT DELETE ON agent_run_decisions TO agent_backend;

-- Runs paused before this migration: their waiting calls, as V12's rule named them.
INSERT INTO agent_run_calls (run_id, tool_call_id, state)
SELECT r.id, c->>'id', 'awaiting_approval'
  FROM agent_runs r
  JOIN messages a ON a.run_id = r.id AND a.role = 'assistant'
   AND a.step = (SELECT max(l.step) FROM messages l WHERE l.run_id = r.id AND l.role = 'assistant'),
       jsonb_array_elements(coalesce(a.tool_calls, '[]')) AS c
 WHERE r.status = 'awaiting_approval'
   AND EXISTS (SELECT 1 FROM agent_tools t
                WHERE t.agent_id = r.agent_id AND t.name = c->>'name' AND t.requires_approval)
   AND NOT EXISTS (SELECT 1 FROM messages x
                    WHERE x.run_id = r.id AND x.role = 'tool' AND x.tool_call_id = c->>'id')
ON CONFLICT DO NOTHING;
