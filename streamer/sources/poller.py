"""Polls `GET /api/v2/logs?from=<checkpoint>&take=100` for one tenant.

The checkpoint is committed in the same transaction as the events it covers, so a crash never
skips events and never stores them twice. It is the fallback or complement to the webhook
(both may run: the inbox dedups by log_id).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from streamer import metrics
from streamer.auth0.errors import Auth0Error, Auth0Transient
from streamer.backoff import Backoff
from streamer.config import PollConfig
from streamer.events import Quarantined, problem_of, unwrap
from streamer.inbox import Inbox
from streamer.lifecycle import sleep_unless_stopped
from streamer.logs import get_logger

log = get_logger(__name__)

TAKE = 100
#: After n failed polls in a row: 2·interval, 4·interval … up to 64·interval, at most 5 minutes.
MAX_WAIT_S = 300.0


class LogReader(Protocol):
    async def read_logs(self, from_log_id: str | None, take: int = TAKE) -> tuple[list[dict[str, Any]], str | None]: ...

    async def latest_log_id(self) -> str | None: ...


class Poller:
    def __init__(self, tenant: str, poll: PollConfig, api: LogReader, inbox: Inbox):
        self.tenant = tenant
        self.poll = poll
        self.api = api
        self.inbox = inbox
        self.backoff = Backoff(2 * poll.interval_s, min(MAX_WAIT_S, 64 * poll.interval_s))

    async def _start_checkpoint(self) -> str | None:
        checkpoint = await self.inbox.store.get_checkpoint(self.tenant)
        if checkpoint is None and self.poll.start == "now":
            checkpoint = await self.api.latest_log_id()
            if checkpoint is not None:
                await self.inbox.accept(self.tenant, [], source="poll", checkpoint=checkpoint)
            log.info("poll_starting_now", tenant=self.tenant)
        return checkpoint

    async def poll_once(self, checkpoint: str | None) -> tuple[str | None, int]:
        """One page; returns the new checkpoint and how many entries the page had."""
        entries, next_from = await self.api.read_logs(checkpoint, TAKE)
        events, quarantined, last_log_id = [], [], None
        for entry in entries:
            event, reason = unwrap(entry)
            if event is None:
                log.warning("poll_entry_skipped", tenant=self.tenant, reason=reason)
                continue
            problem = problem_of(event)
            if problem is None:
                events.append(event)
            else:
                quarantined.append(Quarantined.of(event, problem))
            last_log_id = event["log_id"]
        # A page of events none of which can be stored still moves the checkpoint past them.
        self.inbox.quarantine(self.tenant, quarantined, source="poll")
        if next_from is not None and problem_of(next_from) is not None:
            next_from = None  # taken from a last entry whose log_id is not even valid Unicode
        new_checkpoint = next_from or last_log_id or checkpoint
        if entries and new_checkpoint != checkpoint:
            await self.inbox.accept(self.tenant, events, source="poll", checkpoint=new_checkpoint)
        return new_checkpoint, len(entries)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        checkpoint: str | None = None
        started = False
        while not stop.is_set():
            delay = self.poll.interval_s
            try:
                if not await self.inbox.store.try_lead(f"poll:{self.tenant}"):
                    started = False  # another replica polls; read its checkpoint if we take over
                    await sleep_unless_stopped(stop, delay)
                    continue
                if not started:
                    checkpoint = await self._start_checkpoint()
                    started = True
                checkpoint, count = await self.poll_once(checkpoint)
                failures = 0
                metrics.POLL_LAST_SUCCESS.labels(self.tenant).set_to_current_time()
                if count >= TAKE:
                    delay = 0.0  # more pages are waiting
            except Auth0Error as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                if isinstance(exc, Auth0Transient) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                log.warning("poll_failed", tenant=self.tenant, error=str(exc), retry_in_s=round(delay, 1))
            except Exception:  # noqa: BLE001 - the poller must survive a store hiccup
                failures += 1
                delay = self.backoff.delay(failures)
                log.exception("poll_crashed", tenant=self.tenant)
            await sleep_unless_stopped(stop, delay)
        await self.inbox.store.release_lead(f"poll:{self.tenant}")
