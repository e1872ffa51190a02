"""The inbox: the one door every source (webhook, poller, replay, hosted form) uses to store events.

It drops events no rule listens to (counted, never stored), warns once per tenant when Auth0
itself still sends verification emails (`svr`), stores the rest durably and wakes the processor.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from streamer import metrics
from streamer.events import Quarantined, may_hold_credentials
from streamer.logs import get_logger
from streamer.store import IngestResult, Store

log = get_logger(__name__)

#: Auth0 queued its own verification email: with streamer in place users would get two.
AUTO_EMAIL_TYPES = frozenset({"svr"})


class Inbox:
    def __init__(self, store: Store, listened_types: set[str], *, wake: asyncio.Event | None = None):
        self.store = store
        self.listened_types = frozenset(listened_types)
        self.wake = wake or asyncio.Event()
        #: Batches waiting for their commit right now: the processor steps aside while there are any.
        self.accepting = 0
        self._warned_tenants: set[str] = set()

    def _warn_automatic_emails(self, tenant: str, event: dict[str, Any]) -> None:
        metrics.AUTO_EMAIL_WARNINGS.labels(tenant).inc()
        if tenant not in self._warned_tenants:
            self._warned_tenants.add(tenant)
            log.warning(
                "auth0_sends_its_own_verification_emails",
                tenant=tenant,
                log_id=event.get("log_id"),
                hint="Auth0 logged 'svr': switch off the Verification Email template (Dashboard > "
                "Branding > Email Templates) or users will get two emails",
            )

    def quarantine(self, tenant: str, quarantined: list[Quarantined], *, source: str) -> None:
        """Record events set aside because no store can keep them (events.problem_of): counted,
        and logged once each with its log_id, by which the event can be read again from Auth0."""
        if not quarantined:
            return
        metrics.EVENTS_REJECTED.labels(tenant, "quarantined").inc(len(quarantined))
        for item in quarantined:
            log.warning(
                "event_quarantined",
                tenant=tenant,
                source=source,
                log_id=item.log_id,
                reason=item.reason,
                hint="the rest of the batch was stored; this event cannot be (GET /api/v2/logs/{log_id} "
                "reads it from Auth0)",
            )

    async def accept(
        self,
        tenant: str,
        events: list[dict[str, Any]],
        *,
        source: str,
        checkpoint: str | None = None,
        raw: bytes | None = None,
    ) -> IngestResult:
        """Store the events rules care about; return after the commit. `raw` is the body the
        events were parsed from, with no entry skipped: stored as it is when all are kept and
        nothing in it needs scrubbing (see Store.add_events)."""
        kept = []
        ignored: Counter[str] = Counter()
        for event in events:
            kind = event["type"]
            if kind in AUTO_EMAIL_TYPES:
                self._warn_automatic_emails(tenant, event)
            if kind in self.listened_types:
                kept.append(event)
            else:
                ignored[metrics.event_type_label(kind)] += 1
        for label, count in ignored.items():
            metrics.EVENTS_IGNORED.labels(tenant, label).inc(count)
        if not kept and checkpoint is None:
            return IngestResult(new=0, duplicate=0)
        if raw is not None and (len(kept) != len(events) or may_hold_credentials(raw)):
            raw = None
        self.accepting += 1
        try:
            result = await self.store.add_events(tenant, kept, now=time.time(), checkpoint=checkpoint, raw=raw)
        finally:
            self.accepting -= 1
        if result.new:
            metrics.EVENTS_RECEIVED.labels(tenant, source).inc(result.new)
            self.wake.set()
        if result.duplicate:
            metrics.EVENTS_DUPLICATE.labels(tenant).inc(result.duplicate)
        return result
