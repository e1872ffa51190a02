"""SQLite schema changes after version 2 are numbered files too (streamer/store/sqlite_migrations/,
from 0003): applied once at open, each in one transaction, a newer file refused."""

import sqlite3

import pytest

from streamer.store import sqlite as sqlite_module
from streamer.store.migrations import Migration
from streamer.store.sqlite import SqliteStore
from streamer.suppression.policy import Reason

from support.outbox import NOW, due

SHIPPED = sqlite_module.MIGRATIONS
LATEST = SHIPPED[-1].version
EXAMPLE = Migration(
    LATEST + 1, "example_list", "CREATE TABLE example_list(address TEXT PRIMARY KEY, at REAL NOT NULL);"
)


def _version(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


async def _store_with_an_email(path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.settle_events([], [due()], now=NOW)
    await store.close()


async def test_a_new_numbered_file_is_applied_once_and_the_data_stays(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    await _store_with_an_email(path)
    assert _version(path) == str(LATEST)
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*SHIPPED, EXAMPLE])
    for _ in range(2):  # the second open must not apply it again (CREATE TABLE would fail)
        store = SqliteStore(path)
        await store.open()
        try:
            assert [e.recipient for e in await store.list_emails(states=None)] == ["ana@example.com"]
        finally:
            await store.close()
    assert _version(path) == str(LATEST + 1)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO example_list VALUES ('x@example.com', 1)")


async def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    await _store_with_an_email(path)
    broken = Migration(LATEST + 1, "broken", "CREATE TABLE half(a TEXT); INSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*SHIPPED, broken])
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await SqliteStore(path).open()
    assert _version(path) == str(LATEST)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


async def test_a_store_newer_than_this_streamer_is_refused(tmp_path):
    path = tmp_path / "store.db"
    await _store_with_an_email(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer than this streamer's"):
        await SqliteStore(path).open()


def _schema(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return sorted(
            conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        )


#: What sqlite.py's SCHEMA and SUPPRESSION_SCHEMA created, at version 2, before these tables moved
#: to numbered files (databases made then exist: they must upgrade to exactly what a new one is).
SCHEMA_2_WITH_THE_TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, body BLOB NOT NULL, events INTEGER NOT NULL,
  received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS seen(tenant TEXT NOT NULL, log_id TEXT NOT NULL, at REAL NOT NULL,
  PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retries(
  tenant TEXT NOT NULL, log_id TEXT NOT NULL, body BLOB NOT NULL, received_at REAL NOT NULL,
  attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL, last_error TEXT,
  PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retries_due ON retries(next_attempt_at);
CREATE TABLE IF NOT EXISTS checkpoints(tenant TEXT PRIMARY KEY, log_id TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS once_keys(key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, rule TEXT NOT NULL,
  template TEXT NOT NULL, user_id TEXT NOT NULL, log_id TEXT NOT NULL, recipient TEXT NOT NULL,
  locale TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL, lease_until REAL, last_error TEXT, created_at REAL NOT NULL,
  updated_at REAL NOT NULL, sent_at REAL, accepted_at REAL NOT NULL, context TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt_at) WHERE state IN ('queued', 'failed');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, id);
CREATE INDEX IF NOT EXISTS outbox_leased ON outbox(lease_until) WHERE state = 'sending';
CREATE TABLE IF NOT EXISTS pending_passwords(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user_id TEXT NOT NULL, connection TEXT NOT NULL,
  state TEXT NOT NULL, sealed BLOB, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  updated_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_passwords_user ON pending_passwords(tenant, user_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_user ON outbox(user_id);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '2'), ('inbox_done', '0'), ('inbox_done_at', '0');

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
"""
#: The tables and indexes that moved to numbered files.
MOVED = (
    "pending_passwords",
    "pending_passwords_user",
    "suppressions",
    "suppressions_recent",
    "soft_bounces",
    "soft_bounces_address",
    "return_paths",
    "unsubscribes",
    "outbox_user",
)


@pytest.mark.parametrize("had_them", [False, True], ids=["version-2-without-the-moved-tables", "version-2-with-them"])
async def test_an_existing_version_2_database_upgrades_to_what_a_new_one_is(tmp_path, had_them):
    """Databases at schema 2 exist with and without the tables that SCHEMA used to create: both end
    as a new database is, their data kept."""
    fresh = tmp_path / "fresh.db"
    await (store := SqliteStore(fresh)).open()
    await store.close()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(SCHEMA_2_WITH_THE_TABLES if had_them else sqlite_module.SCHEMA)
        conn.execute("INSERT INTO once_keys(key, at) VALUES ('acme/verify/user/auth0|1', 1)")
        if not had_them:
            assert not {name for _, name, _, _ in _schema(old)} & set(MOVED)
    assert _version(old) == "2"
    store = SqliteStore(old)
    await store.open()
    try:
        assert await store.settle_events([], [due()], now=NOW) == []  # the once ledger survived
        assert await store.suppress("acme", "ana@example.com", reason=Reason.MANUAL, source="test", detail="", now=NOW)
    finally:
        await store.close()
    assert _version(old) == _version(fresh) == str(LATEST)
    assert _schema(old) == _schema(fresh)


async def test_a_new_database_says_once_that_it_was_created_at_the_latest_version(tmp_path):
    """Not one `store_migrated` per file: a new database has nothing to migrate."""
    import io

    from structlog.testing import capture_logs

    from streamer import logs as streamer_logs

    streamer_logs.configure("info", stream=io.StringIO())  # conftest leaves "warning": info would be dropped
    path = tmp_path / "store.db"
    with capture_logs() as logs:
        await _store_with_an_email(path)
        await _store_with_an_email(path)  # opened again: nothing to say
    said = [(e["event"], e.get("version")) for e in logs if e["event"].startswith("store_")]
    assert said == [("store_created", LATEST)]
    assert _version(path) == str(LATEST)


async def test_emails_queued_before_the_context_moved_out_keep_it_and_retention_takes_it_along(tmp_path):
    """0006 moves each email's context out of `outbox` (whose rows change state and must stay small)
    into `outbox_context`: an email queued at version 5 is read, claimed and purged whole."""
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(sqlite_module.SCHEMA)
        for migration in SHIPPED:
            if migration.version <= 5:
                conn.executescript(migration.sql)
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
        for email_id, state in ((1, "sent"), (2, "queued")):
            conn.execute(
                "INSERT INTO outbox(id, key, tenant, rule, template, user_id, log_id, recipient, locale, state, "
                "next_attempt_at, created_at, updated_at, accepted_at, context) "
                "VALUES (?, ?, 'acme', 'verify', 'verify_email', 'auth0|1', ?, 'ana@example.com', 'fr', ?, "
                "?, ?, ?, ?, ?)",
                (email_id, f"k{email_id}", f"L{email_id}", state, NOW, NOW, NOW, NOW, f'{{"n": {email_id}}}'),
            )
    store = SqliteStore(path)
    await store.open()
    try:
        assert (await store.get_email(1)).context == {"n": 1}
        [claimed] = await store.claim_emails(limit=5, now=NOW + 1, lease_s=60)
        assert (claimed.id, claimed.context) == (2, {"n": 2})
        assert [e.context for e in await store.list_emails(states=None)] == [{"n": 2}, {"n": 1}]
        assert await store.purge(before=NOW + 10) == 1  # the sent one
        assert await store.get_email(1) is None
    finally:
        await store.close()
    assert _version(path) == str(LATEST)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM outbox_context").fetchall() == [(2,)]
        assert "context" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
