"""Schema migrations on PostgreSQL: a database of the previous version, with data in it, is
upgraded at start without losing or changing anything; `streamer migrate --check` tells a deploy
pipeline whether migrations are pending."""

import subprocess
import sys

import asyncpg
import pytest

from streamer.store import migrations
from streamer.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore, PostgresStoreError

import pg
from conftest import REPO
from support.outbox import NOW

PREVIOUS = 1  # the schema version released before this one


@pytest.fixture
async def db_url(postgres_url):
    return await pg.create_database(postgres_url)


async def _previous_schema_with_data(url: str) -> None:
    """What a streamer of the previous version left behind: every table holds rows, one email is
    mid-send (claimed by a replica of that version), one event pending."""
    conn = await asyncpg.connect(url)
    try:
        for migration in MIGRATIONS[:PREVIOUS]:
            await conn.execute(migration.sql)
        await conn.execute("""
INSERT INTO events(tenant, log_id, type, user_id, body, received_at, next_attempt_at, state, processed_at)
VALUES ('acme', 'l1', 'ss', 'u1', '{"log_id": "l1", "type": "ss"}', 1, 1, 'done', 2),
       ('acme', 'l2', 'ss', 'u2', '{"log_id": "l2", "type": "ss"}', 1, 1, 'pending', NULL);
INSERT INTO checkpoints(tenant, log_id, updated_at) VALUES ('acme', 'l2', 3);
INSERT INTO once_keys(key, at) VALUES ('acme/verify/user/u1', 2);
INSERT INTO outbox(key, tenant, rule, template, user_id, log_id, recipient, locale, state, attempts,
                   next_attempt_at, lease_until, created_at, updated_at, sent_at, accepted_at, context)
VALUES ('k-sent', 'acme', 'verify', 'verify_email', 'u1', 'l1', 'a@example.com', 'fr', 'sent', 1, 2, NULL, 2, 3, 3, 1, '{}'),
       ('k-sending', 'acme', 'verify', 'verify_email', 'u3', 'l3', 'b@example.com', 'en', 'sending', 1, 2, 302, 2, 2,
        NULL, 1, '{"user": {"email": "b@example.com"}}');
""")  # noqa: E501
    finally:
        await conn.close()


async def test_the_previous_schema_with_data_is_upgraded_and_keeps_working(db_url):
    await _previous_schema_with_data(db_url)
    store = PostgresStore(db_url)
    await store.open()
    try:
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
            ran = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
            assert ran == list(range(PREVIOUS + 1, SCHEMA_VERSION + 1))  # only what was missing
        finally:
            await conn.close()
        assert await store.get_checkpoint("acme") == "l2"
        sent = await store.list_emails(states=None)
        assert [(e.key, e.state.value, e.recipient) for e in sent] == [
            ("k-sending", "sending", "b@example.com"),
            ("k-sent", "sent", "a@example.com"),
        ]
        # The pending event is evaluated; the once ledger still holds u1's key.
        (event,) = await store.claim_events(limit=10, now=NOW, lease_s=60)
        assert (event.log_id, event.event["type"]) == ("l2", "ss")
        # The email a previous-version replica was sending comes back by its lease, as that version promised.
        assert await store.requeue_stale(now=303) == 1
        (email,) = await store.claim_emails(limit=5, now=NOW, lease_s=300)
        assert (email.key, email.attempts, email.context) == ("k-sending", 2, {"user": {"email": "b@example.com"}})
    finally:
        await store.close()
    again = PostgresStore(db_url)  # a second start finds nothing to do
    await again.open()
    await again.close()


async def test_a_database_newer_than_this_streamer_is_refused(db_url):
    store = PostgresStore(db_url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("UPDATE meta SET value = $1 WHERE key = 'schema_version'", str(SCHEMA_VERSION + 1))
    finally:
        await conn.close()
    with pytest.raises(PostgresStoreError, match="newer than this streamer's"):
        await PostgresStore(db_url).open()


def test_the_shipped_migrations_are_numbered_without_gaps_and_a_gap_is_refused(tmp_path, monkeypatch):
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert migrations.pending(MIGRATIONS, 1) == MIGRATIONS[1:]
    assert migrations.pending(MIGRATIONS, SCHEMA_VERSION) == []
    folder = REPO / "streamer" / "store" / "test_tmp_migrations"
    folder.mkdir()
    try:
        (folder / "0001_a.sql").write_text("SELECT 1;")
        (folder / "0003_c.sql").write_text("SELECT 1;")
        with pytest.raises(migrations.MigrationSetError, match="0001_a, 0003_c"):
            migrations.load("test_tmp_migrations")
    finally:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()


def _migrate(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "streamer.yaml"
    text = (REPO / "config" / "streamer.example.yaml").read_text()
    config.write_text(text.replace('store: "sqlite:///streamer.db"', f'store: "{url}"'))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "ACME_CLIENT_ID": "x",
        "ACME_CLIENT_SECRET": "x",
        "ACME_WEBHOOK_TOKEN": "x",
    }
    return subprocess.run(
        [sys.executable, "-m", "streamer", "migrate", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_migrate_check_exit_code_tells_a_pipeline_whether_migrations_are_pending(tmp_path, db_url):
    await _previous_schema_with_data(db_url)
    pending = _migrate(tmp_path, db_url, "--check")
    assert pending.returncode == 3, pending.stderr
    assert f"schema version {PREVIOUS}" in pending.stdout and str(MIGRATIONS[-1]) in pending.stdout
    applied = _migrate(tmp_path, db_url)
    assert applied.returncode == 0, applied.stderr
    assert str(MIGRATIONS[-1]) in applied.stdout
    current = _migrate(tmp_path, db_url, "--check")
    assert (current.returncode, current.stdout.strip()) == (0, f"ok: schema version {SCHEMA_VERSION} is current")
    unreachable = _migrate(tmp_path, "postgresql://streamer:hunter2@127.0.0.1:1/nowhere", "--check")
    assert unreachable.returncode == 1 and "hunter2" not in unreachable.stderr + unreachable.stdout
