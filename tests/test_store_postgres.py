"""PostgreSQL-only behaviour: several replicas (= several PostgresStore pools) on one database."""

import asyncio
import traceback

import asyncpg
import pytest

from streamer.store import open_store
from streamer.store.postgres import SCHEMA_VERSION, PostgresStore, PostgresStoreError

import pg
from conftest import sample_event
from support.outbox import NOW, due

SECRET = "s3cr3t-Pa55"


@pytest.fixture
async def db_url(postgres_url):
    return await pg.create_database(postgres_url)


@pytest.fixture
async def replicas(db_url):
    stores = [PostgresStore(db_url), PostgresStore(db_url)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def _drain(store, claim, workers=4, limit=7):
    got = []

    async def worker():
        while batch := await claim(store, limit):
            got.extend(batch)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return got


async def test_replicas_never_claim_the_same_email_and_together_claim_all(replicas):
    a, b = replicas
    queued = await a.settle_events([], [due(f"L{i}", user=f"u{i}") for i in range(500)], now=NOW)
    assert len(queued) == 500

    async def claim(store, limit):
        return await store.claim_emails(limit=limit, now=NOW, lease_s=60)

    got_a, got_b = await asyncio.gather(_drain(a, claim), _drain(b, claim))
    ids_a, ids_b = [e.id for e in got_a], [e.id for e in got_b]
    assert len(set(ids_a)) == len(ids_a) and len(set(ids_b)) == len(ids_b)
    assert not set(ids_a) & set(ids_b)
    assert len(ids_a) + len(ids_b) == 500 and ids_a and ids_b
    assert all(e.attempts == 1 for e in got_a + got_b)
    assert (await a.stats(now=NOW))["outbox"]["sending"] == 500


async def test_replicas_never_claim_the_same_event_and_together_claim_all(replicas):
    a, b = replicas
    result = await a.add_events("acme", [sample_event("ss", log_id=f"9{i:05d}") for i in range(500)], now=NOW)
    assert result.new == 500

    async def claim(store, limit):
        return await store.claim_events(limit=limit, now=NOW, lease_s=60)

    got_a, got_b = await asyncio.gather(_drain(a, claim), _drain(b, claim))
    keys_a, keys_b = [(e.tenant, e.log_id) for e in got_a], [(e.tenant, e.log_id) for e in got_b]
    assert not set(keys_a) & set(keys_b)
    assert len(set(keys_a) | set(keys_b)) == len(keys_a) + len(keys_b) == 500
    assert all(e.attempts == 1 for e in got_a + got_b)


async def test_concurrent_settle_of_one_once_key_queues_exactly_one_email(replicas):
    a, b = replicas
    rounds = 40
    results = await asyncio.gather(
        *(
            store.settle_events([], [due(f"{name}{i}", user=f"u{i}")], now=NOW)
            for i in range(rounds)
            for store, name in ((a, "A"), (b, "B"))
        )
    )
    assert sum(len(r) for r in results) == rounds
    for i in range(rounds):  # per once_key: one of the two replicas won
        assert len(results[2 * i]) + len(results[2 * i + 1]) == 1
    assert (await a.stats(now=NOW))["outbox"]["queued"] == rounds


async def test_concurrent_cooldown_settles_queue_one_email(replicas):
    a, b = replicas

    def cool(log_id):
        return due(log_id, rule="reset", cooldown=300, key=f"acme/reset/user/auth0|1/{log_id}")

    for window, now in enumerate((NOW, NOW + 301, NOW + 602)):
        results = await asyncio.gather(
            *(
                store.settle_events([], [cool(f"{window}{name}{n}")], now=now)
                for n in range(5)
                for store, name in ((a, "A"), (b, "B"))
            )
        )
        assert sum(len(r) for r in results) == 1, window
    assert (await a.stats(now=NOW))["outbox"]["queued"] == 3


async def test_overlapping_batches_in_opposite_orders_settle_without_losing_or_doubling(replicas):
    a, b = replicas
    emails = [due(f"L{i}", user=f"u{i}") for i in range(60)]
    await a.add_events("acme", [sample_event("ss", log_id=f"9{i:05d}") for i in range(60)], now=NOW)
    keys = [("acme", f"9{i:05d}") for i in range(60)]
    first, second = await asyncio.gather(
        a.settle_events(keys, emails, now=NOW), b.settle_events(keys[::-1], emails[::-1], now=NOW)
    )
    assert len(first) + len(second) == 60
    assert {e.once_key for e in first} | {e.once_key for e in second} == {e.once_key for e in emails}
    stats = await a.stats(now=NOW)
    assert stats["outbox"]["queued"] == 60 and stats["inbox_pending"] == 0


async def test_concurrent_ingest_of_the_same_events_counts_each_once(replicas):
    a, b = replicas
    batch = [sample_event("ss", log_id=f"9{i:05d}") for i in range(200)]
    results = await asyncio.gather(
        *(store.add_events("acme", batch[::step], now=NOW) for store in (a, b) for step in (1, -1))
    )
    assert sum(r.new for r in results) == 200
    assert sum(r.new + r.duplicate for r in results) == 800


async def test_try_lead_is_exclusive_across_replicas_and_released_on_close(db_url):
    a, b = PostgresStore(db_url), PostgresStore(db_url)
    await a.open()
    await b.open()
    try:
        assert await a.try_lead("poll:acme") is True
        assert await b.try_lead("poll:acme") is False
        assert await a.try_lead("poll:acme") is True  # confirmed, still ours
        assert await b.try_lead("poll:globex") is True
        assert await a.try_lead("poll:globex") is False
        await a.release_lead("poll:acme")
        assert await b.try_lead("poll:acme") is True
        assert await a.try_lead("poll:acme") is False
        await b.close()
        assert await a.try_lead("poll:acme") is True
        assert await a.try_lead("poll:globex") is True
    finally:
        await a.close()
        await b.close()
    c = PostgresStore(db_url)
    await c.open()
    try:
        assert await c.try_lead("poll:acme") is True  # a's close released its session locks
    finally:
        await c.close()


async def test_a_lost_lead_session_is_noticed_and_taken_over(db_url):
    a, b = PostgresStore(db_url), PostgresStore(db_url)
    await a.open()
    await b.open()
    try:
        assert await a.try_lead("poll:acme") is True
        admin = await asyncpg.connect(db_url)
        try:  # PostgreSQL drops a's lead session (e.g. a network partition, idle timeout)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                f"streamer-lead-{a.replica_id}",
            )
            for _ in range(600):  # pg_terminate_backend only signals: wait until the session has ended
                if not await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", f"streamer-lead-{a.replica_id}"
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            await admin.close()
        assert killed == 1
        assert await b.try_lead("poll:acme") is True
        assert await a.try_lead("poll:acme") is False  # a notices and does not keep polling
    finally:
        await a.close()
        await b.close()


async def test_a_lead_session_asyncpg_can_no_longer_use_is_replaced_not_raised(db_url, monkeypatch):
    """asyncpg may answer a call on a session PostgreSQL terminated with InternalClientError
    ("another operation is in progress"), seen in CI: try_lead must treat it as a lost session,
    as it promises never to raise for an unreachable database."""
    store = PostgresStore(db_url)
    await store.open()
    try:
        assert await store.try_lead("poll:acme") is True
        broken, fetchval = store._lead_conn, asyncpg.Connection.fetchval

        async def unusable_on_the_old_session(conn, *args, **kwargs):
            if conn is broken:
                raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
            return await fetchval(conn, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, "fetchval", unusable_on_the_old_session)
        assert await store.try_lead("poll:acme") is True  # a new session took the lock again
        assert store._lead_conn is not broken
    finally:
        await store.close()


async def test_concurrent_first_open_creates_the_schema_once(db_url):
    stores = [PostgresStore(db_url) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
            applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
            assert applied == list(range(1, SCHEMA_VERSION + 1))  # each once, though five replicas started
        finally:
            await conn.close()
        assert (await stores[0].add_events("acme", [sample_event("ss")], now=NOW)).new == 1
    finally:
        for s in stores:
            await s.close()


def _leaks(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    return SECRET in text


@pytest.mark.parametrize("bad", ["database", "port", "syntax"])
async def test_the_password_is_masked_in_errors_and_reprs(postgres_url, bad):
    host = postgres_url.split("@", 1)[1].split("/", 1)[0]
    url = {
        "database": f"postgresql://streamer:{SECRET}@{host}/no_such_database",
        "port": f"postgresql://streamer:{SECRET}@127.0.0.1:1/streamer",
        "syntax": f"postgresql://streamer:{SECRET}@127.0.0.1:notaport/streamer?password={SECRET}",
    }[bad]
    store = open_store(url)
    assert SECRET not in repr(store) and SECRET not in store.url and "***" in store.url
    with pytest.raises(PostgresStoreError) as caught:
        await store.open()
    assert not _leaks(caught.value), "".join(traceback.format_exception(caught.value))
    assert "***" in str(caught.value)
    await store.close()


async def test_text_postgres_cannot_hold_is_stored_not_refused(store):
    """NUL in attacker-controlled fields (e.g. a failed login's user_id) must not make a batch fail
    forever (Auth0 would retry it for ever): SQLite stores it, PostgreSQL replaces it."""
    event = sample_event("ss", user_id="auth0|\x00evil", details={"body": {"note": "a\x00b"}})
    assert (await store.add_events("acme", [event], now=NOW)).new == 1
    [claimed] = await store.claim_events(limit=1, now=NOW, lease_s=60)
    assert claimed.event["details"]["body"]["note"] == "a\x00b"
    assert claimed.user_id.startswith("auth0|") and claimed.user_id.endswith("evil")
    email = due(claimed.log_id, user=claimed.user_id)
    assert len(await store.settle_events([(claimed.tenant, claimed.log_id)], [email], now=NOW)) == 1


async def test_duplicates_within_one_batch_count_as_duplicates(store):
    result = await store.add_events("acme", [sample_event("ss"), sample_event("ss")], now=NOW)
    assert (result.new, result.duplicate) == (1, 1)


async def test_a_database_from_before_the_suppression_tables_gets_them_and_the_new_state(db_url):
    from streamer.store.postgres import MIGRATIONS
    from streamer.suppression.policy import Reason

    conn = await asyncpg.connect(db_url)  # the schema as an older streamer left it (before 0004)
    for migration in MIGRATIONS:
        if "suppression" in migration.name:
            break
        await conn.execute(migration.sql)
    await conn.execute("UPDATE meta SET value = $1 WHERE key = 'schema_version'", str(migration.version - 1))
    await conn.close()
    store = PostgresStore(db_url)
    await store.open()
    try:
        await store.settle_events([], [due("L1")], now=NOW)
        [email] = await store.claim_emails(limit=1, now=NOW, lease_s=60)
        await store.mark_suppressed(email.id, error="recipient suppressed", now=NOW)  # the CHECK allows it now
        assert await store.suppress("acme", "a@example.com", reason=Reason.MANUAL, source="cli", detail="", now=NOW)
    finally:
        await store.close()
    again = PostgresStore(db_url)  # a second start runs no DDL and keeps the list
    await again.open()
    try:
        assert list(await again.get_suppressions("acme", ["A@example.com"])) == ["a@example.com"]
    finally:
        await again.close()
