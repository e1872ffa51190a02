"""PostgreSQL in production, with real `streamer run` processes: a replica killed with kill -9
has its claimed emails sent by a survivor within 30 s (not after the 300 s lease), and a
PostgreSQL restart while SMTP servers answer 250 re-sends nothing."""

import asyncio
import signal
import time
from collections import Counter

import aiohttp
import asyncpg
import pytest

import pg
from conftest import config_text, sample_event
from support.ports import free_port
from support.processes import post, start_run
from support.waiting import wait_until

pytestmark = pytest.mark.slow

WORKERS = 4


def hold_data(catcher) -> tuple[asyncio.Event, list]:
    """Make the catcher keep every message at DATA (the full message received, no reply yet) until
    the returned event is set; the list holds one entry per message waiting."""
    release, waiting = asyncio.Event(), []
    original = catcher._handler.handle_DATA  # noqa: SLF001 - a hook of the real server

    async def held(server, session, envelope):
        waiting.append(envelope)
        await release.wait()
        return await original(server, session, envelope)

    catcher._handler.handle_DATA = held  # noqa: SLF001
    return release, waiting


def replica_config(tmp_path, standin, catcher, store_url: str, name: str, port: int):
    text = (
        config_text(tmp_path, standin, catcher, delivery=f", workers: {WORKERS}")
        .replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"')
        .replace(f'store: "sqlite:///{tmp_path}/streamer.db"', f'store: "{store_url}"')
        .replace("pool_size: 2", f"pool_size: {WORKERS}")
    )
    folder = tmp_path / name
    folder.mkdir()
    (folder / "streamer.yaml").write_text(text)
    return folder / "streamer.yaml"


def signups(standin, prefix: str, count: int) -> list[dict]:
    users = [
        standin.add_user(
            {
                "user_id": f"auth0|{prefix}{i:04d}",
                "email": f"{prefix}{i}@example.com",
                "email_verified": False,
                "logins_count": 1,
            }
        )
        for i in range(count)
    ]
    return [sample_event("ss", log_id=f"900202603011401084{i:038d}", user_id=u["user_id"]) for i, u in enumerate(users)]


async def outbox_states(url: str) -> Counter:
    conn = await asyncpg.connect(url)
    try:
        return Counter({r[0]: r[1] for r in await conn.fetch("SELECT state, count(*) FROM outbox GROUP BY state")})
    finally:
        await conn.close()


async def test_a_replica_killed_with_kill_9_has_its_emails_sent_by_a_survivor_within_30_s(
    tmp_path, standin, catcher, postgres_url
):
    database = await pg.create_database(postgres_url)
    events = signups(standin, "killed", 20)
    release, waiting = hold_data(catcher)
    doomed_port = free_port()
    doomed = await start_run(replica_config(tmp_path, standin, catcher, database, "doomed", doomed_port), doomed_port)
    survivor = None
    try:
        async with aiohttp.ClientSession() as session:
            assert await post(session, doomed_port, events) == 200
        # The doomed replica has claimed a full set of emails and is in the middle of sending them.
        await wait_until(
            lambda: _sending_at_least(database, WORKERS), timeout=60, interval=0.1, what="the replica to claim emails"
        )
        await wait_until(lambda: len(waiting) >= 1, timeout=60, interval=0.1, what="a send to reach DATA")
        survivor_port = free_port()  # already running (its start-up is not failover time)
        survivor = await start_run(
            replica_config(tmp_path, standin, catcher, database, "survivor", survivor_port), survivor_port
        )
        doomed.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await doomed.wait()
        release.set()  # the SMTP server answers now; the dead replica never hears it
        recipients = {f"killed{i}@example.com" for i in range(20)}
        await wait_until(
            lambda: recipients <= {m.to[0] for m in catcher.messages}, timeout=45, interval=0.1, what="every email"
        )
        took = time.monotonic() - killed_at
        assert took < 30, f"the survivor sent the dead replica's emails {took:.1f}s after the kill"
        await wait_until(lambda: _only_sent(database, 20), timeout=30, interval=0.1, what="every email marked sent")
        counts = Counter(m.to[0] for m in catcher.messages)
        # A copy only for a send that had reached SMTP when the replica died: at most one per worker.
        assert sum(n - 1 for n in counts.values()) <= WORKERS, counts
        log = (tmp_path / "survivor" / "daemon.log").read_text()
        assert "claims_reclaimed_from_dead_replica" in log
    finally:
        release.set()
        for process in (doomed, survivor):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


async def _sending_at_least(url: str, count: int) -> bool:
    return (await outbox_states(url))["sending"] >= count


async def _only_sent(url: str, count: int) -> bool:
    return await outbox_states(url) == Counter({"sent": count})


async def test_a_postgresql_restart_while_smtp_answers_250_sends_each_email_once(tmp_path, standin, catcher):
    cluster = pg.Cluster(pg.find_bindir())
    try:
        cluster.start()
        database = cluster.url
        events = signups(standin, "restart", 30)
        release, waiting = hold_data(catcher)
        port = free_port()
        process = await start_run(replica_config(tmp_path, standin, catcher, database, "replica", port), port)
        try:
            async with aiohttp.ClientSession() as session:
                assert await post(session, port, events[:15]) == 200
            await wait_until(lambda: len(waiting) >= 2, timeout=60, interval=0.1, what="sends to reach DATA")
            await asyncio.to_thread(cluster.pause)  # PostgreSQL goes away mid-send…
            release.set()  # …and the SMTP server says 250 meanwhile
            await wait_until(lambda: len(catcher.messages) >= 2, timeout=30, interval=0.1, what="the 250s")
            log_file = tmp_path / "replica" / "daemon.log"
            await wait_until(
                lambda: log_file.read_text().count("outbox_outcome_unrecorded") >= 2,
                timeout=30,
                interval=0.1,
                what="the sent marks to fail and be kept in memory",
            )
            await asyncio.to_thread(cluster.resume)
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # the daemon may answer 503 until its pool reconnects
                    if await post(session, port, events[15:]) == 200:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the daemon did not take events after the restart")
            recipients = {f"restart{i}@example.com" for i in range(30)}
            await wait_until(
                lambda: recipients <= {m.to[0] for m in catcher.messages}, timeout=60, interval=0.1, what="every email"
            )
            await wait_until(
                lambda: _only_sent(database, 30),
                timeout=30,
                interval=0.1,
                what="every email marked sent (none left `sending`)",
            )
            counts = Counter(m.to[0] for m in catcher.messages)
            assert max(counts.values()) == 1, {r: n for r, n in counts.items() if n > 1}
            log = (tmp_path / "replica" / "daemon.log").read_text()
            assert "outbox_outcome_unrecorded" in log and "outbox_outcome_recorded" in log
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        cluster.stop()
