"""The dispatcher: claims due outbox rows and delivers them with bounded concurrency.

Rows are claimed by next attempt time, so one poison email never blocks the others. The attempt
is counted when the row is claimed, so even an email that crashes the process cannot loop
forever. On stop, no new rows are claimed and in-flight sends are awaited.

An outcome (sent, failed, dead) that cannot be written because the store is away is kept in
memory and written when the store is back: a lost "sent" mark would mean a second copy later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamer import metrics
from streamer.delivery import Deliverer, PermanentFailure, TransientFailure
from streamer.durable import persist
from streamer.lifecycle import sleep_unless_stopped, wait_any
from streamer.logs import get_logger, redact_text
from streamer.outbox import OutboxEmail, RetryPolicy
from streamer.rules import UNSUBSCRIBED, SkipReason
from streamer.store import Store
from streamer.store.base import RecipientChecks
from streamer.store.liveness import CHECK_EVERY_S
from streamer.suppression.policy import normalize_address

log = get_logger(__name__)

#: A claimed row is invisible to other claimers this long; a crashed sender's rows come back after
#: (the default of `delivery.lease_s`; PostgreSQL brings a dead replica's rows back much sooner).
LEASE_S = 300.0
STALE_CHECK_S = 30.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        deliverer: Deliverer,
        policy: RetryPolicy,
        *,
        concurrency: int,
        wake: asyncio.Event,
        lease_s: float = LEASE_S,
        unsubscribable: frozenset[str] = frozenset(),
    ):
        self.store = store
        #: The rules with `unsubscribe: true`: their emails are not sent to a user who unsubscribed
        #: after they were queued (the processor decides only for new events).
        self.unsubscribable = unsubscribable
        self.lease_s = lease_s
        self.deliverer = deliverer
        self.policy = policy
        self.concurrency = concurrency
        self.wake = wake
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sending: set[int] = set()  # ids of the emails in flight
        self._stop = asyncio.Event()
        #: Resolved by the send that leaves half the slots free (see `_until_half_free`).
        self._half_free: asyncio.Future[None] | None = None
        self._sent_metrics: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    async def run(self, stop: asyncio.Event, *, idle_s: float = 1.0) -> None:
        self._stop = stop
        stopping = asyncio.ensure_future(stop.wait())  # one waiter for the whole run, not one per wait
        try:
            await self._run(stop, stopping, idle_s)
        finally:
            stopping.cancel()
        await self.drain()

    async def _run(self, stop: asyncio.Event, stopping: asyncio.Future[Any], idle_s: float) -> None:
        next_stale_check = 0.0
        orphans = False  # a claim failed: its rows may be claimed in the store, unknown to us
        while not stop.is_set():
            now = time.time()
            if now >= next_stale_check:
                next_stale_check = now + STALE_CHECK_S
                await self._requeue_stale(now)
            free = self.concurrency - len(self._in_flight)
            emails: list[OutboxEmail] = []
            checks: dict[str, RecipientChecks | None] = {}
            if free > 0:
                try:
                    if orphans:
                        released = await self.store.release_orphaned_emails(keep=set(self._sending), now=time.time())
                        orphans = False
                        if released:
                            log.warning("outbox_orphaned_claims_released", count=released)
                    # Cleared before the claim, not after: a wake set while it runs may be for rows it
                    # did not see, and must not be lost (the loop would sleep idle_s with work due).
                    self.wake.clear()
                    emails, checks = await self.store.claim_emails_checked(
                        limit=free, now=time.time(), lease_s=self.lease_s, unsubscribable=self.unsubscribable
                    )
                except Exception:  # noqa: BLE001 - store hiccup: try again shortly
                    log.exception("outbox_claim_failed")
                    orphans = True  # the claim may have committed with its answer lost
            for email in await self._hold_back(emails, checks):
                self._sending.add(email.id)
                task = asyncio.create_task(self._deliver(email))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if emails and len(emails) == free:
                await self._until_half_free(stopping)
                continue
            if not emails:
                await wait_any(stop, [self.wake.wait()], timeout=idle_s)

    async def _until_half_free(self, stopping: asyncio.Future[Any]) -> None:
        """Full: wait until half the slots are free (or stop), so that one claim transaction serves
        several emails instead of one. One wait per claim, not one per finished send: the send that
        frees the slot resolves `_half_free` (in `_finished`)."""
        if len(self._in_flight) <= self.concurrency // 2 or stopping.done():
            return
        self._half_free = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait((self._half_free, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._half_free = None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        waiter = self._half_free
        if waiter is not None and not waiter.done() and len(self._in_flight) <= self.concurrency // 2:
            waiter.set_result(None)

    async def _hold_back(
        self, emails: list[OutboxEmail], checks: dict[str, RecipientChecks | None]
    ) -> list[OutboxEmail]:
        """The claimed emails to send: not to a suppressed address (those become `suppressed`), nor
        of a rule the user unsubscribed from since (`cancelled`), settled before any ticket or
        render. The checks come with the claim."""
        deliver = []
        for email in emails:
            found = checks.get(email.tenant)
            if found is None:  # unknown (the store logged why): not sent now; the lease brings them back
                continue
            entry = found.suppressions.get(normalize_address(email.recipient))
            unsubscribed = email.rule in self.unsubscribable and email.rule in found.unsubscribed.get(email.user_id, ())
            try:
                if entry is not None:
                    reason = (
                        f"recipient is on the suppression list: {entry.reason.value} ({entry.source}: {entry.detail})"
                    )
                    await self._suppressed(email, reason[:500])
                elif unsubscribed:
                    await self._unsubscribed(email)
                else:
                    deliver.append(email)
            except Exception:  # noqa: BLE001
                log.exception("outbox_update_failed", email_id=email.id, tenant=email.tenant, rule=email.rule)
        return deliver

    async def _requeue_stale(self, now: float) -> None:
        try:
            count = await self.store.requeue_stale(now=now)
        except Exception:  # noqa: BLE001
            log.exception("outbox_requeue_failed")
            return
        if count:
            log.warning("outbox_requeued_stale", count=count)

    async def reclaim(self, stop: asyncio.Event, *, every_s: float = CHECK_EVERY_S) -> None:
        """Keep this replica known alive and take dead replicas' claims back (PostgreSQL), until stop.
        Its own task: a dispatcher busy with slow sends must not miss a beat (its rows would be
        judged dead)."""
        failing = False
        while not stop.is_set():
            try:
                released = await self.store.reclaim_dead(now=time.time())
                if failing:
                    log.info("replica_liveness_restored")
                failing = False
                if released:
                    log.warning("claims_reclaimed_from_dead_replica", rows=released)
                    metrics.REPLICA_CLAIMS_RECLAIMED.inc(released)
                    self.wake.set()
            except Exception as exc:  # noqa: BLE001 - store away: try again at the next beat
                if not failing:
                    log.warning("replica_liveness_check_failed", error=redact_text(str(exc)))
                failing = True
            await sleep_unless_stopped(stop, every_s)

    async def drain(self) -> None:
        """Wait for in-flight sends to finish (used on SIGTERM)."""
        if self._in_flight:
            log.info("outbox_draining", in_flight=len(self._in_flight))
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _deliver(self, email: OutboxEmail) -> None:
        try:
            await self._deliver_and_record(email)
        except Exception:  # noqa: BLE001 - the outcome could not be stored: the lease brings it back
            log.exception("outbox_update_failed", email_id=email.id, tenant=email.tenant, rule=email.rule)
        finally:
            self._sending.discard(email.id)

    async def _deliver_and_record(self, email: OutboxEmail) -> None:
        labels = (email.tenant, email.rule)
        try:
            await self.deliverer.deliver(email)
        except PermanentFailure as exc:
            await self._dead(email, str(exc))
            return
        except TransientFailure as exc:
            await self._failed(email, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker; retry, bounded
            log.exception("delivery_crashed", email_id=email.id, tenant=email.tenant, rule=email.rule)
            await self._failed(email, f"internal error: {type(exc).__name__}: {exc}")
            return
        now = time.time()
        await self._record(email, "sent", lambda: self.store.mark_sent(email.id, now=now))
        sent, last_sent, latency = self._sent_metrics.get(labels) or self._sent_metrics_of(labels)
        sent.inc()
        last_sent.set(now)
        latency.observe(max(0.0, now - email.accepted_at))
        log.info(
            "email_sent",
            email_id=email.id,
            tenant=email.tenant,
            rule=email.rule,
            user_id=email.user_id,
            attempts=email.attempts,
            latency_s=round(now - email.accepted_at, 3),
        )
        await self.deliverer.mark(email)

    def _sent_metrics_of(self, labels: tuple[str, str]) -> tuple[Any, Any, Any]:
        """The labelled series a sent email counts in, looked up once per (tenant, rule): the label
        lookup costs as much as the count. Bounded: an email of a rule or tenant not in the config
        is never sent."""
        series = (
            metrics.EMAILS_SENT.labels(*labels),
            metrics.EMAILS_LAST_SENT.labels(labels[0]),
            metrics.DELIVERY_LATENCY.labels(*labels),
        )
        self._sent_metrics[labels] = series
        return series

    async def _failed(self, email: OutboxEmail, error: str) -> None:
        error = redact_text(error)
        delay = self.policy.next_delay(email.attempts)
        if delay is None:
            await self._dead(email, f"gave up after {email.attempts} attempts: {error}")
            return
        now = time.time()
        await self._record(
            email, "failed", lambda: self.store.mark_failed(email.id, error=error, next_attempt_at=now + delay, now=now)
        )
        metrics.EMAILS_FAILED.labels(email.tenant, email.rule).inc()
        log.warning(
            "email_failed",
            email_id=email.id,
            tenant=email.tenant,
            rule=email.rule,
            attempts=email.attempts,
            retry_in_s=round(delay, 1),
            error=error,
        )

    async def _dead(self, email: OutboxEmail, error: str) -> None:
        error = redact_text(error)
        now = time.time()
        await self._record(email, "dead", lambda: self.store.mark_dead(email.id, error=error, now=now))
        metrics.EMAILS_DEAD.labels(email.tenant, email.rule).inc()
        log.error(
            "email_dead", email_id=email.id, tenant=email.tenant, rule=email.rule, attempts=email.attempts, error=error
        )

    async def _record(self, email: OutboxEmail, outcome: str, write: Callable[[], Awaitable[None]]) -> None:
        """Write an outcome, retrying while the store is away (the slot stays taken meanwhile, so
        nothing new is claimed)."""
        await persist(write, stop=self._stop, what="outbox_outcome", email_id=email.id, outcome=outcome)

    async def _suppressed(self, email: OutboxEmail, reason: str) -> None:
        await self.store.mark_suppressed(email.id, error=reason, now=time.time())
        metrics.EMAILS_SUPPRESSED.labels(email.tenant, email.rule).inc()
        log.info("email_suppressed", email_id=email.id, tenant=email.tenant, rule=email.rule, reason=reason)

    async def _unsubscribed(self, email: OutboxEmail) -> None:
        """`cancelled`, not `suppressed`: the address is fine and on no list; the rule no longer
        applies to this user, as when the processor cancels an email its rule would not send."""
        await self.store.mark_unsubscribed(email.id, error=UNSUBSCRIBED, now=time.time())
        metrics.EMAILS_DROPPED.labels(email.tenant, email.rule, SkipReason.UNSUBSCRIBED.value).inc()
        log.info("email_cancelled", email_id=email.id, tenant=email.tenant, rule=email.rule, reason=UNSUBSCRIBED)
