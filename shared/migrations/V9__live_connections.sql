-- V9: live updates (issue 23). One row per open WebSocket connection of the API Gateway
-- WebSocket API, written by the `live` function at $connect (the per-user limit checked in the
-- same statement) and deleted at $disconnect; the publishers read a user's rows in the
-- statement that made a change, push after commit, and delete a row the gateway answers 410 for.

CREATE TABLE live_connections (
    -- API Gateway's connection id (e.g. `L0SM9cOFvHcCIhw=`).
    connection_id text PRIMARY KEY CHECK (length(connection_id) BETWEEN 1 AND 128),
    user_id       uuid NOT NULL,
    -- The access token's `exp`: no event past it, and the connection is closed.
    expires_at    timestamptz NOT NULL,
    connected_at  timestamptz NOT NULL DEFAULT now()
);
-- A user's connections (the publishers' lookup and the $connect limit).
CREATE INDEX live_connections_user_idx ON live_connections (user_id, expires_at);

-- Not part of the Data API: RLS on, no policy and no grant for anon or authenticated (V7 already
-- revoked the default privileges; this says it for this table too).
ALTER TABLE live_connections ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON live_connections FROM anon, authenticated, PUBLIC;
-- The functions' role: the live function inserts and deletes; publishers read and delete (410).
GRANT SELECT, INSERT, DELETE ON live_connections TO agent_backend;
CREATE POLICY live_connections_backend ON live_connections FOR ALL TO agent_backend USING (true) WITH CHECK (true);
