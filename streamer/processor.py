"""The processor: stored events → rules → due emails in the outbox.

Events are claimed in batches with a lease, so a crash only delays them. User profiles for a
batch are fetched together (one Auth0 search for many users). One event must not hold back its
batch: an event whose user id cannot be an Auth0 id, or whose user lookup Auth0 refuses (found
by halving the search), is rejected alone (settled without emails, counted as
`streamer_events_rejected{reason="bad_user_id"}`, logged once as `event_rejected` with its
log_id) and the others go on. Marking the events done and
queueing their emails is one transaction, and the `once` ledger makes a second pass harmless.

Ingest first: a 200 is what Auth0 waits for, and a log stream whose endpoint stays slow is
retried and then paused by Auth0. While batches are waiting for their commit and the processor
is behind (its last round was a full batch), it takes at most SHARE_WHILE_INGESTING of the
core's time (a fifth), whatever an event costs to evaluate; the events are stored, and it
catches up at full speed as soon as the burst ends. A processor that keeps up never pauses:
its work is the events arriving, which waiting would only delay.

Profiles are read as streamer.auth0.freshness allows (never older than the event). A user the
users search cannot show yet, while the Management API budget is taken by tickets, makes its
events wait here, in memory and still leased, until the index has them (one search then serves
50 users); a user's later events wait behind them, so each user's events are decided in order.
An event that proves a change (`sv`) or a deletion (`sdu`) re-checks that user's emails still
queued: those whose rule no longer holds, and every email of a deleted user, are cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from streamer import metrics
from streamer.auth0.client import user_id_problem
from streamer.auth0.errors import Auth0Error, Auth0Permanent, Auth0Transient
from streamer.auth0.freshness import DELETED_TYPES, PROVEN, Need, epoch
from streamer.backoff import Backoff
from streamer.busy_time import BusyClock
from streamer.config import TenantConfig
from streamer.durable import persist
from streamer.lifecycle import sleep_unless_stopped, wait_any
from streamer.locale import LocaleResolver
from streamer.logs import get_logger
from streamer.outbox import Command, DueEmail, OutboxEmail, sources
from streamer.rules import CompiledRule, RuleError, decide, matches, reads_recipient, tenant_view, user_view
from streamer.store import InboxEvent, Store
from streamer.suppression.policy import normalize_address

log = get_logger(__name__)

BATCH = 200
#: Event types after which a profile from before the event is wrong for the rules
#: (verified, email changed, password changed, username/phone changed).
PROFILE_CHANGING_TYPES = frozenset({"sv", "sce", "scp", "scu", "scpn"})
LEASE_S = 120.0
#: The share of the time the processor takes at most while the inbox is busy accepting batches.
#: A share, not an event rate: it stays a fifth of the core when evaluation gets cheaper or dearer.
SHARE_WHILE_INGESTING = 0.2
#: The longest step aside after one round.
MAX_PAUSE_S = 0.5


class UserSource(Protocol):
    async def get_users(
        self, user_ids: list[str], *, fresh_since: dict[str, str] | None = None
    ) -> dict[str, dict[str, Any] | None]: ...


def pause_after(busy_s: float, round_s: float, ingesting: bool, share: float = SHARE_WHILE_INGESTING) -> float:
    """How long the processor steps aside after a round that took `round_s`, of which its own
    code ran `busy_s` (its waits for commits and Auth0 left out): while batches wait for their
    commit, long enough that it runs `share` of the time; else not at all. A round that waited
    long has already given the time away. Never longer than MAX_PAUSE_S."""
    return min(MAX_PAUSE_S, max(0.0, busy_s / share - round_s)) if ingesting else 0.0


#: Events whose users could not be fetched (Auth0 429/5xx) wait 2, 4, 8 … up to 300 s.
USER_FETCH_BACKOFF = Backoff(initial_s=2.0, max_s=300.0)
#: … and 10 minutes after a permanent error (credentials, scopes): the operator has to act.
USER_FETCH_REFUSED_S = 600.0


def blames_the_ids(error: Auth0Error) -> bool:
    """Whether splitting the ids could help: Auth0 refused the request itself (400, 414 …).
    Not for refused credentials or scopes (401/403) nor for outages (429, 5xx, timeouts): no
    split fixes those, every event waits, and a split would multiply the calls."""
    return isinstance(error, Auth0Permanent) and error.status not in (401, 403)


async def fetch_isolating(
    fetch: Callable[[list[str]], Any], user_ids: list[str]
) -> tuple[dict[str, dict[str, Any] | None], dict[str, Auth0Error]]:
    """(profiles, {id: error}): the ids whose own lookup Auth0 refuses, found by halving the list.

    One poison id among n costs about 2·log2(n) extra calls, not n; an error that no split can
    fix (see blames_the_ids) propagates, so the whole batch waits as before.
    """
    try:
        return await fetch(user_ids), {}
    except Auth0Error as exc:
        if not blames_the_ids(exc):
            raise
        if len(user_ids) == 1:
            return {}, {user_ids[0]: exc}
    middle = len(user_ids) // 2
    halves = await asyncio.gather(fetch_isolating(fetch, user_ids[:middle]), fetch_isolating(fetch, user_ids[middle:]))
    return {**halves[0][0], **halves[1][0]}, {**halves[0][1], **halves[1][1]}


def newest_profile_change(events: list[InboxEvent]) -> dict[str, str]:
    """Per user, the date of the newest event that changes what rules read. A profile cached (or
    indexed) before an `sv` may still say email_verified: false: such events ask for a profile at
    least as new as themselves."""
    fresh_since: dict[str, str] = {}
    for event in events:
        date = event.event.get("date")
        if (
            event.type in PROFILE_CHANGING_TYPES
            and event.user_id
            and isinstance(date, str)
            and date > fresh_since.get(event.user_id, "")
        ):
            fresh_since[event.user_id] = date
    return fresh_since


class Processor:
    def __init__(
        self,
        tenants: Mapping[str, TenantConfig],
        store: Store,
        rules: list[CompiledRule],
        users: Mapping[str, UserSource],
        locale_for: LocaleResolver,
        *,
        wake: asyncio.Event,
        outbox_wake: asyncio.Event,
        ingesting: Callable[[], bool] = lambda: False,
        share_while_ingesting: float = SHARE_WHILE_INGESTING,
    ):
        self.tenants = tenants
        self.store = store
        self.rules = rules
        self.users = users
        self.locale_for = locale_for
        self.wake = wake
        self.outbox_wake = outbox_wake
        self.ingesting = ingesting
        self.share_while_ingesting = share_while_ingesting
        self._stop = asyncio.Event()
        #: The time the processor's own code ran (its rounds and their per-tenant tasks).
        self.busy = BusyClock()
        self._orphans = False
        self._rules = {rule.name: rule for rule in rules}
        #: Events waiting for the users search to have their user: tenant → user → (retry at, events).
        self._waiting: dict[str, dict[str, tuple[float, list[InboxEvent]]]] = defaultdict(dict)

    @property
    def waiting(self) -> int:
        """Events held until the users search has their user."""
        return sum(len(events) for users in self._waiting.values() for _, events in users.values())

    def _next_retry_in(self, now: float) -> float | None:
        times = [at for users in self._waiting.values() for at, _ in users.values()]
        return max(0.0, min(times) - now) if times else None

    def _take_due(self, now: float) -> list[InboxEvent]:
        due: list[InboxEvent] = []
        for users in self._waiting.values():
            for uid in [uid for uid, (at, _) in users.items() if at <= now]:
                due.extend(users.pop(uid)[1])
        return due

    def _hold(self, tenant: str, user_id: str, retry_at: float, events: list[InboxEvent]) -> None:
        at, held = self._waiting[tenant].get(user_id, (retry_at, []))
        self._waiting[tenant][user_id] = (min(at, retry_at), held + events)

    async def run(self, stop: asyncio.Event, *, idle_s: float = 1.0) -> None:
        self._stop = stop
        while not stop.is_set():
            started, busy_before = time.monotonic(), self.busy.busy_s
            # Cleared before the claim, not after it: a batch stored while the claim runs (which
            # cannot see it) sets the wake-up again, and it must not be lost (it would wait idle_s).
            self.wake.clear()
            try:
                if self._orphans:  # nothing is in hand between rounds: whatever we hold is orphaned
                    await self.store.release_orphaned_events(now=time.time())
                    self._orphans = False
                handled = await self.busy.timed(self.process_once())
            except Exception:  # noqa: BLE001 - keep the loop alive; the events stay pending
                log.exception("processor_failed")
                handled = 0
            if handled == 0:
                retry_in = self._next_retry_in(time.time())
                timeout = idle_s if retry_in is None else min(idle_s, max(0.01, retry_in))
                await wait_any(stop, [self.wake.wait()], timeout=timeout)
            else:
                busy_s, round_s = self.busy.busy_s - busy_before, time.monotonic() - started
                behind = handled >= BATCH  # a full round: more events are waiting
                await sleep_unless_stopped(
                    stop, pause_after(busy_s, round_s, behind and self.ingesting(), self.share_while_ingesting)
                )

    async def process_once(self) -> int:
        due = self._take_due(time.time())
        try:
            events = due + await self.store.claim_events(limit=BATCH, now=time.time(), lease_s=LEASE_S)
        except Exception:
            # It may have committed with its answer lost (the connection dropped): without a
            # release, those events would wait for their lease.
            self._orphans = True
            raise
        if not events:
            return 0
        by_tenant: dict[str, list[InboxEvent]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant].append(event)
        await asyncio.gather(
            *(self.busy.timed(self._process_tenant(tenant, batch)) for tenant, batch in by_tenant.items())
        )
        return len(events)

    async def _recipients(self, tenant: str, profiles: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
        """user_id → `recipient` facts: one store read for the batch's addresses, one for its
        preferences, each only when some rule needs it (most configs read neither: no cost)."""
        wanted = any(reads_recipient(rule.config) for rule in self.rules)
        has_unsubscribe = any(rule.config.unsubscribe for rule in self.rules)
        addresses = {user_id: p.get("email") for user_id, p in profiles.items() if p}
        if not addresses or not (wanted or has_unsubscribe):
            return {}
        suppressions = (
            await self.store.get_suppressions(tenant, [a for a in addresses.values() if isinstance(a, str) and a])
            if wanted
            else {}
        )
        unsubscribed = await self.store.get_unsubscribed(tenant, list(addresses)) if has_unsubscribe else {}
        return {
            user_id: recipient_facts(address, suppressions, unsubscribed.get(user_id, set()))
            for user_id, address in addresses.items()
        }

    async def _process_tenant(self, tenant: str, events: list[InboxEvent]) -> None:
        # A store may hand over a whole stored batch at once (SQLite: a webhook body of 100k
        # events): evaluated in one go it would hold the event loop for seconds.
        for start in range(0, len(events), BATCH):
            await self._process_chunk(tenant, events[start : start + BATCH])

    async def _process_chunk(self, tenant: str, events: list[InboxEvent]) -> None:
        tenant_config = self.tenants.get(tenant)
        if tenant_config is None:  # tenant removed from the config: keep its events, say so
            await self.store.defer_events(
                [(e.tenant, e.log_id) for e in events],
                until=time.time() + 3600,
                error=f"tenant {tenant!r} is not in the config",
            )
            log.warning("events_for_unknown_tenant", tenant=tenant, count=len(events))
            return
        events, rejected = self._set_aside(tenant, events)
        if not events and not rejected:
            return
        profiles: dict[str, Any]
        read = await self._read_profiles(tenant, events)
        if read is None:  # the lookup failed: the events were deferred
            if not rejected:
                return
            events, profiles = [], {}
        else:
            events, profiles, refused = read
            rejected += refused
        for event, reason in rejected:
            # Quarantined: settled without emails (the stored event stays for inspection), so the
            # rest of its batch goes on and it is never tried again.
            metrics.EVENTS_REJECTED.labels(tenant, "bad_user_id").inc()
            log.warning("event_rejected", tenant=tenant, log_id=event.log_id, type=event.type, reason=reason)
        tenant_ctx = tenant_view(tenant, tenant_config)
        due = await self._decide(tenant, tenant_ctx, events, profiles)
        # Cancellations first: once the settle commits, these events are never evaluated again, so a
        # crash between the two would lose them; and the read finds no email this batch queues.
        await self._cancel_superseded(tenant, tenant_ctx, events, profiles)
        await self._settle(tenant, [*events, *(event for event, _ in rejected)], due)

    def _set_aside(
        self, tenant: str, events: list[InboxEvent]
    ) -> tuple[list[InboxEvent], list[tuple[InboxEvent, str]]]:
        """The events to evaluate now: an impossible user id is rejected alone, and the events of a
        user already waiting for the users search wait behind that user's (a user's events stay in
        order)."""
        rejected: list[tuple[InboxEvent, str]] = []
        for event in events:
            problem = user_id_problem(event.user_id) if event.user_id else None
            if problem:
                rejected.append((event, problem))
        if rejected:
            refused = {id(event) for event, _ in rejected}
            events = [event for event in events if id(event) not in refused]
        waiting = self._waiting[tenant]
        for event in events:
            if event.user_id is not None and event.user_id in waiting:
                self._hold(tenant, event.user_id, waiting[event.user_id][0], [event])
        return [e for e in events if e.user_id not in waiting], rejected

    async def _read_profiles(
        self, tenant: str, events: list[InboxEvent]
    ) -> tuple[list[InboxEvent], dict[str, Any], list[tuple[InboxEvent, str]]] | None:
        """The profiles the events' rules read, no older than the events; the events whose user
        Auth0 refused to look up (rejected), and those whose user the index has not yet got (held
        until then), come out. None when the lookup failed and the events were deferred."""
        user_ids = sorted({e.user_id for e in events if e.user_id and e.type not in DELETED_TYPES})
        fresh_since = newest_profile_change(events)
        source = self.users[tenant]
        needs = self._needs(source, events)

        async def fetch(ids: list[str]) -> dict[str, Any]:
            if hasattr(source, "read_profiles"):  # profiles, None, or the epoch time to ask again
                wanted = set(ids)
                read: dict[str, Any] = await source.read_profiles([n for n in needs if n.user_id in wanted])
                return read
            return await source.get_users(ids, fresh_since={u: fresh_since[u] for u in ids if u in fresh_since})

        try:
            profiles, failed = await fetch_isolating(fetch, user_ids) if user_ids else ({}, {})
        except Auth0Error as exc:
            attempts = max(e.attempts for e in events)
            delay = (
                USER_FETCH_BACKOFF.delay(max(1, attempts)) if isinstance(exc, Auth0Transient) else USER_FETCH_REFUSED_S
            )
            await self.store.defer_events(
                [(e.tenant, e.log_id) for e in events], until=time.time() + delay, error=str(exc)
            )
            log.warning(
                "user_fetch_failed", tenant=tenant, events=len(events), retry_in_s=round(delay, 1), error=str(exc)
            )
            return None
        rejected = [
            (e, f"Auth0 refused the lookup of this event's user: {failed[e.user_id]}")
            for e in events
            if e.user_id in failed
        ]
        events = [e for e in events if e.user_id not in failed]
        later: dict[str, float] = {
            uid: at for uid, at in cast(dict[str, Any], profiles).items() if isinstance(at, float)
        }
        for event in events:
            if event.user_id is not None and event.user_id in later:
                self._hold(tenant, event.user_id, later[event.user_id], [event])
        events = [e for e in events if e.user_id not in later]
        return events, {uid: p for uid, p in profiles.items() if uid not in later}, rejected

    async def _decide(
        self, tenant: str, tenant_ctx: dict[str, Any], events: list[InboxEvent], profiles: dict[str, Any]
    ) -> list[DueEmail]:
        """The emails the rules make due for these events, and a line and a count for each skip."""
        recipients = await self._recipients(tenant, profiles)
        due_all: list[DueEmail] = []
        for event in events:
            if event.type in DELETED_TYPES:
                continue
            if not event.user_id:
                log.info("event_without_user", tenant=tenant, log_id=event.log_id, type=event.type)
                continue
            profile = profiles.get(event.user_id)
            client_id = event.event.get("client_id") or None

            def locale_for(
                rule: CompiledRule, _profile: dict[str, Any] | None = profile, _client: str | None = client_id
            ) -> str:
                return self.locale_for(tenant, _client, rule.config.template, _profile or {})

            due, skipped = decide(
                self.rules,
                event.event,
                tenant=tenant,
                tenant_ctx=tenant_ctx,
                user=profile,
                locale_for=locale_for,
                accepted_at=event.received_at,
                recipient=recipients.get(event.user_id),
            )
            for skip in skipped:
                metrics.EMAILS_DROPPED.labels(tenant, skip.rule, skip.kind.value).inc()
                log.info(
                    "email_not_due",
                    tenant=tenant,
                    rule=skip.rule,
                    log_id=event.log_id,
                    user_id=event.user_id,
                    reason=skip.reason,
                )
            due_all.extend(due)
        return due_all

    async def _settle(self, tenant: str, events: list[InboxEvent], due: list[DueEmail]) -> None:
        """Mark the events evaluated and queue their emails in one transaction."""
        settled = [(e.tenant, e.log_id) for e in events]
        settled_at = time.time()
        # Evaluated: a store outage must not send these events round again after their lease.
        queued = await persist(
            lambda: self.store.settle_events(settled, due, now=settled_at),
            stop=self._stop,
            what="events_settle",
            tenant=tenant,
            events=len(settled),
        )
        metrics.EVENTS_EVALUATED.labels(tenant).inc(len(settled))
        metrics.EVENTS_LAST_EVALUATED.labels(tenant).set(settled_at)
        for email in queued:
            metrics.EMAILS_QUEUED.labels(tenant, email.rule).inc()
            log.info("email_queued", tenant=tenant, rule=email.rule, user_id=email.user_id, log_id=email.log_id)
        if queued:
            self.outbox_wake.set()

    def _needs(self, source: Any, events: list[InboxEvent]) -> list[Need]:
        """What each event asks of its user's profile; deletions and proofs are learnt first."""
        facts = getattr(source, "facts", None)
        needs = []
        for event in events:
            if not event.user_id:
                continue
            # A date ahead of our clock (skew) counts from when we received the event.
            date = min(epoch(event.event.get("date")) or event.received_at, event.received_at)
            if facts is not None:
                facts.learn(event.user_id, event.type, date)
            if event.type not in DELETED_TYPES:
                needs.append(Need(event.user_id, event.type, date))
        return needs

    async def _cancel_superseded(
        self, tenant: str, tenant_ctx: dict[str, Any], events: list[InboxEvent], profiles: dict[str, Any]
    ) -> None:
        """After an event that proves a change or a deletion, cancel that user's queued emails that
        its rule would no longer send (the user verified meanwhile; the user is gone)."""
        handled = {e.log_id for e in events}
        users = {
            e.user_id: e.type in DELETED_TYPES
            for e in events
            if e.user_id and (e.type in PROVEN or e.type in DELETED_TYPES)
        }
        users = {
            user_id: deleted for user_id, deleted in users.items() if deleted or isinstance(profiles.get(user_id), dict)
        }
        if not users:
            return
        pending = await self.store.list_users_emails(
            states=sources(Command.CANCEL), tenant=tenant, user_ids=list(users)
        )
        for user_id, deleted in users.items():
            profile = None if deleted else profiles.get(user_id)
            for email in pending.get(user_id, ()):
                if email.log_id in handled:
                    continue
                if deleted:
                    reason: str | None = "user deleted"
                else:
                    reason = self._no_longer_due(email, profile, tenant_ctx) if isinstance(profile, dict) else None
                if reason and await self.store.cancel_email(email.id, now=time.time()):
                    metrics.EMAILS_DROPPED.labels(tenant, email.rule, "superseded").inc()
                    log.info(
                        "email_superseded",
                        tenant=tenant,
                        rule=email.rule,
                        email_id=email.id,
                        user_id=user_id,
                        reason=reason,
                    )

    def _no_longer_due(self, email: OutboxEmail, profile: dict[str, Any], tenant_ctx: dict[str, Any]) -> str | None:
        rule = self._rules.get(email.rule)
        if rule is None or rule.condition is None:
            return None
        context = {
            "event": email.context.get("event") or {},
            "user": user_view(profile),
            "client": email.context.get("client") or {},
            "tenant": tenant_ctx,
            "locale": email.locale,
        }
        try:
            return None if matches(rule, context) else "its rule's `if` no longer holds for the user"
        except RuleError:
            return None


def recipient_facts(address: str | None, suppressions: dict[str, Any], unsubscribed: set[str]) -> dict[str, Any]:
    """What rules see as `recipient` for one user (pure)."""
    entry = suppressions.get(normalize_address(address)) if isinstance(address, str) else None
    return {
        "suppressed": entry is not None,
        "reason": entry.reason.value if entry else None,
        "unsubscribed": sorted(unsubscribed),
    }
