"""The processor: stored events → rules → due emails in the outbox.

Events are claimed in batches with a lease, so a crash only delays them. User profiles for a
batch are fetched together (one Auth0 search for many users). Marking the events done and
queueing their emails is one transaction, and the `once` ledger makes a second pass harmless.

Ingest first: a 200 is what Auth0 waits for, and a log stream whose endpoint stays slow is
retried and then paused by Auth0. While batches are waiting for their commit, the processor
evaluates at most RATE_WHILE_INGESTING events per second (about a fifth of a core); the events
are stored, and it catches up at full speed as soon as the burst ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from streamer import metrics
from streamer.auth0.errors import Auth0Error, Auth0Transient
from streamer.config import Config
from streamer.lifecycle import sleep_unless_stopped, wait_any
from streamer.logs import get_logger
from streamer.rules import UNSUBSCRIBED, CompiledRule, decide, reads_recipient, tenant_view
from streamer.store import InboxEvent, Store
from streamer.suppression.policy import normalize_address

log = get_logger(__name__)

BATCH = 200
#: Event types after which a profile from before the event is wrong for the rules
#: (verified, email changed, password changed, username/phone changed).
PROFILE_CHANGING_TYPES = frozenset({"sv", "sce", "scp", "scu", "scpn"})
LEASE_S = 120.0
#: Events per second the processor evaluates at most while the inbox is busy accepting batches:
#: more than one event per request at the webhook's full speed, so small batches never queue up.
RATE_WHILE_INGESTING = 10_000


class UserSource(Protocol):
    async def get_users(self, user_ids: list[str], *,
                        fresh_since: dict[str, str] | None = None) -> dict[str, dict[str, Any] | None]: ...


#: (tenant, client_id, template, user profile) → the locale the email will render in.
LocaleResolver = Callable[[str, str | None, str, dict[str, Any]], str]


def pause_after(events: int, spent_s: float, ingesting: bool) -> float:
    """How long the processor steps aside after evaluating `events` in `spent_s`: while batches
    wait for their commit, long enough to stay at RATE_WHILE_INGESTING; else not at all."""
    return max(0.0, events / RATE_WHILE_INGESTING - spent_s) if ingesting else 0.0


def retry_delay(attempts: int) -> float:
    """Events whose users could not be fetched wait 2, 4, 8 … up to 300 s."""
    return float(min(300, 2 ** max(1, attempts)))


class Processor:
    def __init__(self, config: Config, store: Store, rules: list[CompiledRule], users: dict[str, UserSource],
                 locale_for: LocaleResolver, *, wake: asyncio.Event, outbox_wake: asyncio.Event,
                 ingesting: Callable[[], bool] = lambda: False):
        self.config = config
        self.store = store
        self.rules = rules
        self.users = users
        self.locale_for = locale_for
        self.wake = wake
        self.outbox_wake = outbox_wake
        self.ingesting = ingesting

    async def run(self, stop: asyncio.Event, *, idle_s: float = 1.0) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                handled = await self.process_once()
            except Exception:  # noqa: BLE001 - keep the loop alive; the events stay pending
                log.exception("processor_failed")
                handled = 0
            if handled == 0:
                self.wake.clear()
                await wait_any(stop, [self.wake.wait()], timeout=idle_s)
            else:
                await sleep_unless_stopped(stop, pause_after(handled, time.monotonic() - started, self.ingesting()))

    async def process_once(self) -> int:
        events = await self.store.claim_events(limit=BATCH, now=time.time(), lease_s=LEASE_S)
        if not events:
            return 0
        by_tenant: dict[str, list[InboxEvent]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant].append(event)
        await asyncio.gather(*(self._process_tenant(tenant, batch) for tenant, batch in by_tenant.items()))
        return len(events)

    async def _recipients(self, tenant: str, profiles: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
        """user_id → `recipient` facts: one store read for the batch's addresses, one for its
        preferences, each only when some rule needs it (most configs read neither: no cost)."""
        wanted = any(reads_recipient(rule.config) for rule in self.rules)
        has_unsubscribe = any(rule.config.unsubscribe for rule in self.rules)
        addresses = {user_id: p.get("email") for user_id, p in profiles.items() if p}
        if not addresses or not (wanted or has_unsubscribe):
            return {}
        suppressions = (await self.store.get_suppressions(
            tenant, [a for a in addresses.values() if isinstance(a, str) and a]) if wanted else {})
        unsubscribed = await self.store.get_unsubscribed(tenant, list(addresses)) if has_unsubscribe else {}
        return {user_id: recipient_facts(address, suppressions, unsubscribed.get(user_id, set()))
                for user_id, address in addresses.items()}

    async def _process_tenant(self, tenant: str, events: list[InboxEvent]) -> None:
        tenant_config = self.config.tenants.get(tenant)
        if tenant_config is None:  # tenant removed from the config: keep its events, say so
            await self.store.defer_events([(e.tenant, e.log_id) for e in events], until=time.time() + 3600,
                                          error=f"tenant {tenant!r} is not in the config")
            log.warning("events_for_unknown_tenant", tenant=tenant, count=len(events))
            return
        user_ids = sorted({e.user_id for e in events if e.user_id})
        # A profile cached (or indexed) before an `sv` may still say email_verified: false: for
        # events that change what rules read, ask for a profile at least as new as the event.
        fresh_since: dict[str, str] = {}
        for event in events:
            date = event.event.get("date")
            if (event.type in PROFILE_CHANGING_TYPES and event.user_id and isinstance(date, str)
                    and date > fresh_since.get(event.user_id, "")):
                fresh_since[event.user_id] = date
        try:
            profiles = (await self.users[tenant].get_users(user_ids, fresh_since=fresh_since)
                        if user_ids else {})
        except Auth0Error as exc:
            attempts = max(e.attempts for e in events)
            delay = retry_delay(attempts) if isinstance(exc, Auth0Transient) else 600.0
            await self.store.defer_events([(e.tenant, e.log_id) for e in events], until=time.time() + delay,
                                          error=str(exc))
            log.warning("user_fetch_failed", tenant=tenant, events=len(events), retry_in_s=round(delay, 1),
                        error=str(exc))
            return
        tenant_ctx = tenant_view(tenant, tenant_config)
        recipients = await self._recipients(tenant, profiles)
        due_all = []
        for event in events:
            if not event.user_id:
                log.info("event_without_user", tenant=tenant, log_id=event.log_id, type=event.type)
                continue
            profile = profiles.get(event.user_id)
            client_id = event.event.get("client_id") or None

            def locale_for(rule: CompiledRule, _profile=profile, _client=client_id) -> str:
                return self.locale_for(tenant, _client, rule.config.template, _profile or {})

            due, skipped = decide(self.rules, event.event, tenant=tenant, tenant_ctx=tenant_ctx, user=profile,
                                  locale_for=locale_for, accepted_at=event.received_at,
                                  recipient=recipients.get(event.user_id))
            for skip in skipped:
                metrics.EMAILS_DROPPED.labels(tenant, skip.rule, _reason_label(skip.reason)).inc()
                log.info("email_not_due", tenant=tenant, rule=skip.rule, log_id=event.log_id,
                         user_id=event.user_id, reason=skip.reason)
            due_all.extend(due)
        queued = await self.store.settle_events([(e.tenant, e.log_id) for e in events], due_all, now=time.time())
        for email in queued:
            metrics.EMAILS_QUEUED.labels(tenant, email.rule).inc()
            log.info("email_queued", tenant=tenant, rule=email.rule, user_id=email.user_id, log_id=email.log_id)
        if queued:
            self.outbox_wake.set()


def recipient_facts(address: str | None, suppressions: dict[str, Any], unsubscribed: set[str]) -> dict[str, Any]:
    """What rules see as `recipient` for one user (pure)."""
    entry = suppressions.get(normalize_address(address)) if isinstance(address, str) else None
    return {"suppressed": entry is not None, "reason": entry.reason.value if entry else None,
            "unsubscribed": sorted(unsubscribed)}


def _reason_label(reason: str) -> str:
    if reason == UNSUBSCRIBED:
        return "unsubscribed"
    if "not found" in reason:
        return "user_not_found"
    if "no email" in reason:
        return "no_email"
    return "rule_error"
