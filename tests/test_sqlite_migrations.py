"""SQLite schema changes after version 2 are numbered files too (streamer/store/sqlite_migrations/,
from 0003): applied once at open, each in one transaction, a newer file refused."""

import sqlite3

import pytest

from streamer.store import sqlite as sqlite_module
from streamer.store.migrations import Migration
from streamer.store.sqlite import SqliteStore

from support.outbox import NOW, due

EXAMPLE = Migration(3, "example_list", "CREATE TABLE example_list(address TEXT PRIMARY KEY, at REAL NOT NULL);")


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
    assert _version(path) == "2"
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [EXAMPLE])
    for _ in range(2):  # the second open must not apply it again (CREATE TABLE would fail)
        store = SqliteStore(path)
        await store.open()
        try:
            assert [e.recipient for e in await store.list_emails(states=None)] == ["ana@example.com"]
        finally:
            await store.close()
    assert _version(path) == "3"
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO example_list VALUES ('x@example.com', 1)")


async def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    await _store_with_an_email(path)
    broken = Migration(3, "broken", "CREATE TABLE half(a TEXT); INSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [broken])
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await SqliteStore(path).open()
    assert _version(path) == "2"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


async def test_a_store_newer_than_this_streamer_is_refused(tmp_path):
    path = tmp_path / "store.db"
    await _store_with_an_email(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer than this streamer's"):
        await SqliteStore(path).open()
