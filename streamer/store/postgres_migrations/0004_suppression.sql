-- Migration 0004: the suppression list, VERP return paths and unsubscribes. Never purged: these
-- tables outlive outbox retention. Additive (a wider CHECK, new tables).

-- The outbox gains the state 'suppressed' (recipient on the list; nothing sent).
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_state_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_state_check
  CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead', 'cancelled', 'suppressed'));

CREATE TABLE IF NOT EXISTS suppressions(
  tenant text COLLATE "C" NOT NULL,
  address text COLLATE "C" NOT NULL,          -- lower case
  reason text NOT NULL CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'manual')),
  source text NOT NULL,
  detail text NOT NULL,
  created_at double precision NOT NULL,
  updated_at double precision NOT NULL,
  PRIMARY KEY (tenant, address));
CREATE INDEX IF NOT EXISTS suppressions_recent ON suppressions(updated_at);

CREATE TABLE IF NOT EXISTS soft_bounces(
  tenant text COLLATE "C" NOT NULL,
  address text COLLATE "C" NOT NULL,
  at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS soft_bounces_address ON soft_bounces(tenant, address, at);

CREATE TABLE IF NOT EXISTS return_paths(
  token text COLLATE "C" PRIMARY KEY,
  tenant text NOT NULL,
  address text NOT NULL,
  created_at double precision NOT NULL);

CREATE TABLE IF NOT EXISTS unsubscribes(
  tenant text COLLATE "C" NOT NULL,
  user_id text COLLATE "C" NOT NULL,
  rule text COLLATE "C" NOT NULL,
  created_at double precision NOT NULL,
  PRIMARY KEY (tenant, user_id, rule));
