-- New passwords waiting for their owner's click (password_reset.new_password).
-- IF NOT EXISTS: databases made before the tables moved out of sqlite.py's SCHEMA have them already.
CREATE TABLE IF NOT EXISTS pending_passwords(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user_id TEXT NOT NULL, connection TEXT NOT NULL,
  state TEXT NOT NULL, sealed BLOB, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  updated_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_passwords_user ON pending_passwords(tenant, user_id) WHERE state = 'pending';
