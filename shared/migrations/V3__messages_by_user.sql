-- The chat path reads and writes by user: the per-user rate limit counts a user's recent
-- messages, and an Idempotency-Key is unique per user (a retried first message must not create
-- a second conversation). Both are index lookups with messages.user_id.
ALTER TABLE messages ADD COLUMN user_id uuid;
UPDATE messages m SET user_id = c.user_id FROM conversations c WHERE c.id = m.conversation_id;
ALTER TABLE messages ALTER COLUMN user_id SET NOT NULL;
CREATE INDEX messages_user_recent_idx ON messages (user_id, created_at) WHERE role = 'user';
CREATE UNIQUE INDEX messages_user_idempotency_uq ON messages (user_id, role, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX messages_idempotency_key_uq;
