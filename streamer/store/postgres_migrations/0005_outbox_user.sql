-- Migration 0005: an index on outbox.user_id. An `sv` or `sdu` event looks up that user's queued
-- emails to cancel the ones no longer due, and `streamer outbox list --user` reads them too.
-- Additive only.
CREATE INDEX IF NOT EXISTS outbox_user ON outbox(user_id);
