-- The suppression list, VERP return paths and unsubscribes. Never purged: they must outlive the
-- outbox's retention. IF NOT EXISTS: databases made before this file have them already.
CREATE TABLE IF NOT EXISTS suppressions(
  tenant TEXT NOT NULL, address TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (tenant, address)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressions_recent ON suppressions(updated_at);
CREATE TABLE IF NOT EXISTS soft_bounces(tenant TEXT NOT NULL, address TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS soft_bounces_address ON soft_bounces(tenant, address, at);
CREATE TABLE IF NOT EXISTS return_paths(
  token TEXT PRIMARY KEY, tenant TEXT NOT NULL, address TEXT NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unsubscribes(
  tenant TEXT NOT NULL, user_id TEXT NOT NULL, rule TEXT NOT NULL, created_at REAL NOT NULL,
  PRIMARY KEY (tenant, user_id, rule)) WITHOUT ROWID;
