-- V11: tools as data (issue 22, point 1), and agents made and edited through the API.

-- An agent's tools: what the model is told (name, description, a JSON Schema of the arguments)
-- and where the call goes (url, its timeout, whether a person approves each call first). The
-- checks mirror the API's rules: a name valid as an OpenAI function name and a Bedrock toolSpec
-- name, without `__` (kept for namespaced tools later: `<source>__<tool>`); an object schema.
CREATE TABLE agent_tools (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id          uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name              text NOT NULL
                      CHECK (name ~ '^[A-Za-z][A-Za-z0-9_-]{0,63}$' AND position('__' IN name) = 0),
    description       text NOT NULL CHECK (length(description) BETWEEN 1 AND 1024),
    parameters        jsonb NOT NULL
                      -- The API takes at most 16 KiB of compact JSON; stored as text it is longer (`": "`, `", "`).
                      CHECK (jsonb_typeof(parameters) = 'object' AND octet_length(parameters::text) <= 65536),
    url               text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    requires_approval boolean NOT NULL DEFAULT false,
    timeout_ms        integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 1 AND 30000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, name)
);

-- Nothing of it through the Data API (a tool's url and schema are the owner's business only);
-- the functions' role reads and replaces an agent's set.
ALTER TABLE agent_tools ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON agent_tools FROM anon, authenticated, PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON agent_tools TO agent_backend;
CREATE POLICY agent_tools_backend ON agent_tools FOR ALL TO agent_backend USING (true) WITH CHECK (true);

-- The API creates a user's agents and edits them: the functions' role may insert an agent that
-- is private and owned, and edit an owned agent's own fields, never its owner nor its
-- visibility (public agents stay the operator's, set by SQL), and delete none.
GRANT INSERT (name, description, instructions, model, daily_token_budget, owner_id, visibility)
    ON agents TO agent_backend;
GRANT UPDATE (name, description, instructions, model, daily_token_budget, updated_at)
    ON agents TO agent_backend;
CREATE POLICY agents_backend_insert ON agents FOR INSERT TO agent_backend
    WITH CHECK (owner_id IS NOT NULL AND visibility = 'private');
CREATE POLICY agents_backend_update ON agents FOR UPDATE TO agent_backend
    USING (owner_id IS NOT NULL) WITH CHECK (owner_id IS NOT NULL);
