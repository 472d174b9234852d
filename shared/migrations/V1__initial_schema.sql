-- Data model of ../shared/DESIGN.md. States are text with CHECK constraints (no Postgres enums:
-- a custom type makes tokio-postgres prepare a named type-lookup statement, which the
-- transaction pooler breaks).

CREATE TABLE agents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    instructions   text NOT NULL DEFAULT '',
    model          text,
    model_settings jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(model_settings) = 'object'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL,
    agent_id   uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_user_idx ON conversations (user_id, updated_at DESC);
CREATE INDEX conversations_agent_idx ON conversations (agent_id);

CREATE TABLE messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL,
    -- A client-chosen key (the Idempotency-Key header): a retried request finds its earlier
    -- rows instead of writing twice.
    idempotency_key text CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX messages_history_idx ON messages (conversation_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX messages_idempotency_key_uq
    ON messages (conversation_id, role, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE agent_tasks (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id         uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id          uuid,
    prompt           text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    approval_status  text NOT NULL DEFAULT 'pending'
                     CHECK (approval_status IN ('pending', 'approved', 'rejected')),
    scheduled_for    timestamptz NOT NULL DEFAULT now(),
    -- Optional recurrence: a cron expression evaluated in time_zone (IANA name, UTC when null).
    cron             text CHECK (cron IS NULL OR length(cron) BETWEEN 1 AND 200),
    time_zone        text CHECK (time_zone IS NULL OR length(time_zone) BETWEEN 1 AND 64),
    -- The recurring series an occurrence belongs to (the id of its first task).
    series_id        uuid,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    result           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_tasks_running_has_lease
        CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The due-task query: pending, approved, scheduled_for <= now(), oldest first.
CREATE INDEX agent_tasks_due_idx ON agent_tasks (scheduled_for, id)
    WHERE status = 'pending' AND approval_status = 'approved';
-- Rescue of expired leases.
CREATE INDEX agent_tasks_lease_idx ON agent_tasks (lease_expires_at)
    WHERE status = 'running';
-- A recurring occurrence exists at most once, even when two instances race to create it.
CREATE UNIQUE INDEX agent_tasks_occurrence_uq ON agent_tasks (series_id, scheduled_for)
    WHERE series_id IS NOT NULL;
CREATE INDEX agent_tasks_agent_idx ON agent_tasks (agent_id);
