-- Migration 0002: claims name the replica that holds them, so that a dead replica's claims come
-- back as soon as its liveness lock is free (see PostgresStore.reclaim_dead), not after the lease.
-- Additive only: replicas still running the previous version keep working (they leave the new
-- columns NULL, and their claims come back by lease as before).

-- One id per running store (PostgresStore.open takes the next one); it also names the session
-- advisory lock (namespace "STRO", id) the replica holds while it lives. int4: the lock key's width.
CREATE SEQUENCE IF NOT EXISTS replica_ids AS integer MINVALUE 1 CYCLE;

ALTER TABLE outbox ADD COLUMN IF NOT EXISTS claimed_by integer;
ALTER TABLE events ADD COLUMN IF NOT EXISTS claimed_by integer;
