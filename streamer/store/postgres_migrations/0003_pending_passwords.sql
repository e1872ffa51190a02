-- Migration 0003: new passwords waiting for their owner's click (password_reset.new_password).
-- `sealed` is AES-GCM ciphertext whose key only the emailed link carries; NULL once used,
-- replaced or expired. Additive only.
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
