-- `outbox list --user` and the processor's cancel look up one user's emails.
-- IF NOT EXISTS: databases made before this file have it already.
CREATE INDEX IF NOT EXISTS outbox_user ON outbox(user_id);
