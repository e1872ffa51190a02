"""A dead replica's claims come back to the survivors in seconds (PostgreSQL liveness locks), and
only when it is dead: a replica that lost its session for a moment keeps its claims."""

import asyncio

import asyncpg
import pytest

from streamer.store import liveness
from streamer.store.postgres import _LIVE_NAMESPACE as LIVE_NAMESPACE
from streamer.store.postgres import PostgresStore

import pg
from support.outbox import NOW, due
from support.waiting import wait_until

GRACE = liveness.GRACE_S


def test_judge_declares_dead_only_after_the_lock_stayed_free_for_the_grace():
    suspects, dead = liveness.judge({}, {7}, now=100.0)
    assert (suspects, dead) == ({7: 100.0}, set())
    suspects, dead = liveness.judge(suspects, {7, 9}, now=100.0 + GRACE - 0.1)
    assert (suspects, dead) == ({7: 100.0, 9: 100.0 + GRACE - 0.1}, set())
    suspects, dead = liveness.judge(suspects, {7, 9}, now=100.0 + GRACE)
    assert (suspects, dead) == ({9: 100.0 + GRACE - 0.1}, {7})


def test_judge_forgets_a_replica_seen_alive_again():
    suspects, _ = liveness.judge({}, {7}, now=100.0)
    suspects, dead = liveness.judge(suspects, set(), now=103.0)  # its lock is held again
    assert (suspects, dead) == ({}, set())
    suspects, dead = liveness.judge(suspects, {7}, now=100.0 + GRACE)  # free again: a new count starts
    assert (suspects, dead) == ({7: 100.0 + GRACE}, set())


@pytest.fixture
async def db_url(postgres_url):
    return await pg.create_database(postgres_url)


async def _queue(store, n: int, now: float = NOW) -> None:
    await store.add_events(
        "acme", [{"log_id": f"l{i:03d}", "type": "ss", "user_id": f"u{i}"} for i in range(n)], now=now
    )
    claimed = await store.claim_events(limit=n, now=now, lease_s=60)
    await store.settle_events(
        [(e.tenant, e.log_id) for e in claimed], [due(log_id=f"l{i:03d}", user=f"u{i}") for i in range(n)], now=now
    )


async def _until_lock_free(url: str, replica: int, timeout: float = 30) -> None:
    """PostgreSQL ends a dead client's session moments after its socket closes."""
    conn = await asyncpg.connect(url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::oid "  # noqa: E501
            "AND classid = $2::bigint::oid",
            replica,
            LIVE_NAMESPACE,
        ):
            assert asyncio.get_running_loop().time() < deadline, "the dead replica's session did not end"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_a_dead_replicas_emails_and_events_come_back_after_the_grace_not_the_lease(db_url):
    dead, survivor = PostgresStore(db_url), PostgresStore(db_url)
    await dead.open()
    await survivor.open()
    try:
        await _queue(dead, 5)
        await dead.add_events("acme", [{"log_id": "l900", "type": "ss", "user_id": "u900"}], now=NOW)
        emails = await dead.claim_emails(limit=3, now=NOW, lease_s=300)
        events = await dead.claim_events(limit=10, now=NOW, lease_s=120)
        assert len(emails) == 3 and [e.log_id for e in events] == ["l900"]
        assert dead.replica_id != survivor.replica_id
        assert await survivor.reclaim_dead(now=NOW + 1) == 0  # alive: nothing to take
        dead._pool.terminate()  # noqa: SLF001 - the process dies: its sessions end without goodbye
        dead._lead_conn.terminate()  # noqa: SLF001
        await _until_lock_free(db_url, dead.replica_id)
        assert await survivor.reclaim_dead(now=NOW + 2) == 0  # seen free once: suspect only
        assert await survivor.reclaim_dead(now=NOW + 2 + GRACE - 1) == 0
        assert await survivor.reclaim_dead(now=NOW + 2 + GRACE) == 4  # 3 emails + 1 event, long before the lease
        again = await survivor.claim_emails(limit=10, now=NOW + 2 + GRACE, lease_s=300)
        assert len(again) == 5 and {e.id for e in emails} <= {e.id for e in again}  # 3 reclaimed + 2 never claimed
        assert [e.log_id for e in await survivor.claim_events(limit=10, now=NOW + 2 + GRACE, lease_s=120)] == ["l900"]
        assert await survivor.reclaim_dead(now=NOW + 100) == 0  # the survivor's own claims stay its own
    finally:
        await dead.close()
        await survivor.close()


async def test_a_replica_that_loses_its_session_for_a_moment_keeps_its_claims(db_url):
    a, b = PostgresStore(db_url), PostgresStore(db_url)
    await a.open()
    await b.open()
    try:
        await _queue(a, 2)
        claimed = await a.claim_emails(limit=2, now=NOW, lease_s=300)
        assert len(claimed) == 2
        admin = await asyncpg.connect(db_url)
        try:  # only a's liveness session ends (a PostgreSQL restart, a proxy dropping idle connections)
            assert (
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                    f"streamer-lead-{a.replica_id}",
                )
                == 1
            )
        finally:
            await admin.close()
        assert await b.reclaim_dead(now=NOW + 1) == 0  # suspect
        assert await a.reclaim_dead(now=NOW + 2) == 0  # a takes its lock again
        assert await b.reclaim_dead(now=NOW + 1 + GRACE * 3) == 0  # alive: never reclaimed
        for email in claimed:
            assert (await b.get_email(email.id)).state.value == "sending"
    finally:
        await a.close()
        await b.close()


async def test_claims_from_before_the_upgrade_still_come_back_by_lease(db_url):
    """Rows claimed by a replica of the previous version carry no replica id: the lease decides."""
    store = PostgresStore(db_url)
    await store.open()
    try:
        await _queue(store, 1)
        (email,) = await store.claim_emails(limit=1, now=NOW, lease_s=300)
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("UPDATE outbox SET claimed_by = NULL")
        finally:
            await conn.close()
        assert await store.reclaim_dead(now=NOW + 1) == 0
        assert await store.reclaim_dead(now=NOW + 1 + GRACE) == 0
        assert await store.requeue_stale(now=NOW + 301) == 1
    finally:
        await store.close()


async def test_a_row_sent_by_an_old_version_replica_is_not_reclaimed_when_its_previous_claimer_dies(db_url):
    """Rolling upgrade: a replica of the previous version claims rows without naming itself. A row
    it claims after a new replica's failed attempt must not come back when that new replica dies."""
    new, survivor = PostgresStore(db_url), PostgresStore(db_url)
    await new.open()
    await survivor.open()
    try:
        await _queue(new, 1)
        (email,) = await new.claim_emails(limit=1, now=NOW, lease_s=300)
        await new.mark_failed(email.id, error="421 try later", next_attempt_at=NOW + 1, now=NOW)
        conn = await asyncpg.connect(db_url)
        try:  # the previous version's claim statement (it knows no claimed_by)
            await conn.execute(
                "UPDATE outbox SET state = 'sending', lease_until = $1, attempts = attempts + 1 WHERE id = $2",
                NOW + 301,
                email.id,
            )
        finally:
            await conn.close()
        new._pool.terminate()  # noqa: SLF001
        new._lead_conn.terminate()  # noqa: SLF001
        await _until_lock_free(db_url, new.replica_id)
        assert await survivor.reclaim_dead(now=NOW + 2) == 0
        assert await survivor.reclaim_dead(now=NOW + 2 + GRACE) == 0
        assert (await survivor.get_email(email.id)).state.value == "sending"
    finally:
        await new.close()
        await survivor.close()


class _Recorder:
    """A deliverer that accepts every email and counts its sends."""

    def __init__(self):
        self.sent: list[int] = []

    async def deliver(self, email):
        self.sent.append(email.id)

    async def mark(self, email):
        return None


async def test_a_claim_whose_answer_is_lost_is_released_by_the_claimer_not_left_to_the_lease(db_url):
    """PostgreSQL going down can commit a claim and drop the connection before the answer: the
    rows are `sending`, claimed by a live replica that never saw them."""
    import time

    from streamer.dispatcher import Dispatcher
    from streamer.outbox import RetryPolicy

    store = PostgresStore(db_url)
    await store.open()
    try:
        await _queue(store, 6, now=time.time())
        original, lost = store.claim_emails, []

        async def claim_then_lose_the_answer(**kwargs):
            rows = await original(**kwargs)
            if not lost:
                lost.extend(rows)
                raise ConnectionResetError("connection lost")
            return rows

        store.claim_emails = claim_then_lose_the_answer
        deliverer = _Recorder()
        dispatcher = Dispatcher(store, deliverer, RetryPolicy(3, 0.01, 0.02), concurrency=4, wake=asyncio.Event())
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop, idle_s=0.05))
        try:

            async def six_sent() -> bool:
                return len({e.id for e in await store.list_emails(states=None) if e.state.value == "sent"}) >= 6

            # the lease is 300 s
            await wait_until(six_sent, timeout=30, interval=0.05, what="six emails sent")
        finally:
            stop.set()
            await task
        assert lost and sorted(deliverer.sent) == sorted({*deliverer.sent})  # each sent once
        assert len(deliverer.sent) == 6
        assert await store.requeue_stale(now=time.time() + 10_000) == 0
    finally:
        await store.close()


async def test_events_of_a_claim_whose_answer_is_lost_are_released_by_the_claimer(db_url):
    store = PostgresStore(db_url)
    await store.open()
    try:
        await store.add_events("acme", [{"log_id": "l1", "type": "ss", "user_id": "u1"}], now=NOW)
        assert [e.log_id for e in await store.claim_events(limit=5, now=NOW, lease_s=120)] == ["l1"]
        assert await store.claim_events(limit=5, now=NOW + 1, lease_s=120) == []  # leased
        assert await store.release_orphaned_events(now=NOW + 1) == 1
        assert [e.log_id for e in await store.claim_events(limit=5, now=NOW + 1, lease_s=120)] == ["l1"]
    finally:
        await store.close()
