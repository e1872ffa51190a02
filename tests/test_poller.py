"""The poller against the Auth0 stand-in: checkpoint paging, start now/oldest, committed checkpoints."""

import asyncio
import contextlib
import time

from streamer import metrics
from streamer.auth0 import ManagementApi
from streamer.config import parse_config
from streamer.inbox import Inbox
from streamer.sources.poller import Poller

from conftest import config_text, sample_event
from support.waiting import wait_until


def last_poll() -> float | None:
    return metrics.REGISTRY.get_sample_value("streamer_poll_last_success_timestamp_seconds", {"tenant": "acme"})


def make(tmp_path, standin, catcher, store, start="oldest"):
    poll = f"{{enabled: true, start: {start}, interval_s: 0.05}}"
    config = parse_config(config_text(tmp_path, standin, catcher, poll=poll), env={})
    tenant = config.tenants["acme"]
    api = ManagementApi(tenant, name="acme")
    return Poller("acme", tenant.poll, api, Inbox(store, config.listened_types())), api


async def test_oldest_reads_every_page_and_commits_the_checkpoint(tmp_path, standin, catcher, sqlite_store):
    for index in range(250):
        standin.add_log(sample_event("ss", user_id=f"auth0|p{index}"))
    poller, api = make(tmp_path, standin, catcher, sqlite_store)
    checkpoint, total = None, 0
    async with api:
        for _ in range(10):
            checkpoint, count = await poller.poll_once(checkpoint)
            total += count
            if count == 0:
                break
    assert total == 250
    stats = await sqlite_store.stats(now=0)
    assert stats["inbox_pending"] == 250
    assert await sqlite_store.get_checkpoint("acme") == standin.logs[-1]["log_id"] == checkpoint


async def test_start_now_skips_history_and_resumes_from_the_stored_checkpoint(tmp_path, standin, catcher, sqlite_store):
    old = standin.add_log(sample_event("ss", user_id="auth0|old"))
    poller, api = make(tmp_path, standin, catcher, sqlite_store, start="now")
    stop = asyncio.Event()
    async with api:
        task = asyncio.create_task(poller.run(stop))

        async def checkpoint_is(log_id):
            return await sqlite_store.get_checkpoint("acme") == log_id

        # Started "now": the newest log so far is the checkpoint, history is skipped.
        await wait_until(lambda: checkpoint_is(old["log_id"]), what="the start checkpoint")
        new = standin.add_log(sample_event("ss", user_id="auth0|new"))
        await wait_until(lambda: checkpoint_is(new["log_id"]), what="the new event polled")
        stop.set()
        await task
    events = await sqlite_store.claim_events(limit=10, now=10**10, lease_s=1)
    assert [e.user_id for e in events] == ["auth0|new"]


async def test_auth0_outage_backs_off_and_recovers(tmp_path, standin, catcher, sqlite_store):
    standin.add_log(sample_event("ss"))
    standin.fail_next("/api/v2/logs", 503, count=6)
    poller, api = make(tmp_path, standin, catcher, sqlite_store)
    stop = asyncio.Event()
    started = time.time()
    with contextlib.suppress(KeyError):
        metrics.POLL_LAST_SUCCESS.remove("acme")
    async with api:
        task = asyncio.create_task(poller.run(stop))
        while ("GET", "/api/v2/logs", 503) not in standin.calls:
            await asyncio.sleep(0.01)
        assert last_poll() is None  # failing: the gauge says nothing new
        for _ in range(200):
            if (await sqlite_store.stats(now=0))["inbox_pending"] == 1:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
    assert (await sqlite_store.stats(now=0))["inbox_pending"] == 1
    assert last_poll() >= started  # what an alert on poll lag reads
