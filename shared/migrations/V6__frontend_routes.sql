-- V6: what the frontend routes need (issue 11).
--
-- Tasks created through `POST /api/tasks` honour an Idempotency-Key per user, bound to the
-- request it was first used with (a hash of the validated request: another request with the
-- same key is a 422).
ALTER TABLE agent_tasks
    ADD COLUMN idempotency_key text CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN request_hash text;
CREATE UNIQUE INDEX agent_tasks_user_idempotency_uq ON agent_tasks (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Keyset pagination, newest first, one index range per page:
-- the caller's tasks (`GET /api/tasks`), by creation;
CREATE INDEX agent_tasks_user_recent_idx ON agent_tasks (user_id, created_at DESC, id DESC)
    WHERE user_id IS NOT NULL;
-- the caller's conversations (`GET /api/conversations`), by last activity, all or for one agent.
CREATE INDEX conversations_user_recent_idx ON conversations (user_id, updated_at DESC, id DESC);
CREATE INDEX conversations_user_agent_recent_idx ON conversations (user_id, agent_id, updated_at DESC, id DESC);
DROP INDEX conversations_user_idx;
