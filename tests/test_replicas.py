"""Several `streamer run` processes on one PostgreSQL store share the work: each email once."""

import asyncio
from collections import Counter

import aiohttp
import pytest

from streamer.store import open_store

import pg
from conftest import config_text, sample_event
from support.ports import free_port
from support.processes import post, start_run
from support.waiting import pipeline_idle

pytestmark = pytest.mark.slow


async def test_two_replicas_on_postgres_send_each_email_once(tmp_path, standin, catcher, postgres_url):
    database = await pg.create_database(postgres_url)
    users = [
        standin.add_user(
            {
                "user_id": f"auth0|replica{i:04d}",
                "email": f"replica{i}@example.com",
                "email_verified": False,
                "logins_count": 1,
            }
        )
        for i in range(40)
    ]
    events = [
        sample_event("ss", log_id=f"90020260301140108449{i:036d}", user_id=u["user_id"]) for i, u in enumerate(users)
    ]
    # Both replicas also poll the same tenant: only one may lead at a time.
    standin.add_log(sample_event("ss", user_id=users[0]["user_id"]))
    processes, ports = [], []
    for index in range(2):
        port = free_port()
        text = (
            config_text(tmp_path, standin, catcher, poll="{enabled: true, interval_s: 0.2, start: oldest}")
            .replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"')
            .replace(f'store: "sqlite:///{tmp_path}/streamer.db"', f'store: "{database}"')
        )
        folder = tmp_path / f"replica{index}"
        folder.mkdir()
        (folder / "streamer.yaml").write_text(text)
        processes.append(await start_run(folder / "streamer.yaml", port))
        ports.append(port)
    async with aiohttp.ClientSession() as session:
        # A load balancer spreads Auth0's deliveries; Auth0 also redelivers to the other replica.
        statuses = await asyncio.gather(
            *(post(session, port, events[start : start + 10]) for start in range(0, 40, 10) for port in ports)
        )
    assert set(statuses) == {200}
    await catcher.wait_for(40, timeout=60)
    store = open_store(database)  # the replicas' own store: wait until nothing is left to send
    await store.open()
    try:
        await pipeline_idle(store, timeout=60)
    finally:
        await store.close()
    for process in processes:
        process.terminate()
    for process in processes:
        assert await asyncio.wait_for(process.wait(), 20) == 0
    recipients = Counter(m.to[0] for m in catcher.messages)
    assert set(recipients) == {u["email"] for u in users}
    assert max(recipients.values()) == 1, {r: n for r, n in recipients.items() if n > 1}
    logs = [(tmp_path / f"replica{i}" / "daemon.log").read_text() for i in range(2)]
    assert sum(log.count('"email_sent"') for log in logs) == 40  # no replica sent a copy
