-- streamer's PostgreSQL schema, version 2 (see streamer/store/postgres.py; mirrors the SQLite one).
-- Applied idempotently by PostgresStore.open() under pg_advisory_xact_lock, so several replicas
-- may start at once. Times are UNIX epoch seconds (double precision), like the SQLite store.
-- Bodies are `json`, not `jsonb`: jsonb rejects "\u0000" and lone surrogates, which Auth0 log
-- events may carry (attacker-controlled request fields), and one such event must not block a batch.
-- Keys are COLLATE "C": byte order (= the Python str order SQLite uses), and cheaper to compare.

CREATE TABLE IF NOT EXISTS meta(
  key text PRIMARY KEY,
  value text NOT NULL);

CREATE TABLE IF NOT EXISTS events(
  tenant text COLLATE "C" NOT NULL,
  log_id text COLLATE "C" NOT NULL,
  type text NOT NULL,
  user_id text,
  body json NOT NULL,
  received_at double precision NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at double precision NOT NULL,
  last_error text,
  processed_at double precision,
  PRIMARY KEY (tenant, log_id));
CREATE INDEX IF NOT EXISTS events_pending ON events(next_attempt_at, log_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_processed ON events(processed_at) WHERE state = 'done';

CREATE TABLE IF NOT EXISTS checkpoints(
  tenant text COLLATE "C" PRIMARY KEY,
  log_id text NOT NULL,
  updated_at double precision NOT NULL);

-- The `once` ledger: never purged, so a purged email is not sent again.
CREATE TABLE IF NOT EXISTS once_keys(
  key text COLLATE "C" PRIMARY KEY,
  at double precision NOT NULL);

CREATE TABLE IF NOT EXISTS outbox(
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key text COLLATE "C" NOT NULL UNIQUE,
  tenant text COLLATE "C" NOT NULL,
  rule text NOT NULL,
  template text NOT NULL,
  user_id text NOT NULL,
  log_id text NOT NULL,
  recipient text NOT NULL,
  locale text NOT NULL,
  state text NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead', 'cancelled')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at double precision NOT NULL,
  lease_until double precision,
  last_error text,
  created_at double precision NOT NULL,
  updated_at double precision NOT NULL,
  sent_at double precision,
  accepted_at double precision NOT NULL,
  context json NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt_at, id) WHERE state IN ('queued', 'failed');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, id);
CREATE INDEX IF NOT EXISTS outbox_leased ON outbox(lease_until) WHERE state = 'sending';

-- Version 2: new passwords waiting for their owner's click (password_reset.new_password). `sealed`
-- is AES-GCM ciphertext whose key only the emailed link carries; NULL once used, replaced or expired.
CREATE TABLE IF NOT EXISTS pending_passwords(
  id text COLLATE "C" PRIMARY KEY,
  tenant text COLLATE "C" NOT NULL,
  user_id text COLLATE "C" NOT NULL,
  connection text NOT NULL,
  state text NOT NULL CHECK (state IN ('pending', 'used', 'replaced')),
  sealed bytea,
  created_at double precision NOT NULL,
  expires_at double precision NOT NULL,
  updated_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS pending_passwords_user ON pending_passwords(tenant, user_id) WHERE state = 'pending';

INSERT INTO meta(key, value) VALUES ('schema_version', '2') ON CONFLICT (key) DO UPDATE SET value = '2';
