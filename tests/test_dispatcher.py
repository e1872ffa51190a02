"""The dispatcher's decisions with a real SQLite store and a deliverer that fails on purpose."""

import asyncio
import time

from structlog.testing import capture_logs

from streamer.delivery import PermanentFailure, TransientFailure
from streamer.dispatcher import Dispatcher
from streamer.outbox import DueEmail, EmailState, RetryPolicy

from support.waiting import wait_until


def due(i: int) -> DueEmail:
    return DueEmail(
        tenant="acme",
        rule="r",
        template="welcome",
        once_key=f"k{i}",
        cooldown_s=None,
        key=f"k{i}",
        user_id=f"u{i}",
        log_id=f"L{i}",
        recipient=f"u{i}@example.com",
        locale="en",
        accepted_at=time.time(),
        context={},
    )


class ScriptedDeliverer:
    """Fails each email as told by its recipient number: 0 ok, 1 transient, 2 permanent, 3 crash."""

    def __init__(self):
        self.attempts: dict[int, int] = {}

    async def deliver(self, email):
        n = int(email.user_id[1:])
        self.attempts[n] = self.attempts.get(n, 0) + 1
        kind = n % 4
        if kind == 1:
            raise TransientFailure("451 later")
        if kind == 2:
            raise PermanentFailure("550 no such user")
        if kind == 3:
            raise RuntimeError("bug")

    async def mark(self, email):
        return None


async def run_until(store, dispatcher, predicate, timeout=10.0):
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop, idle_s=0.02))
    try:
        for _ in range(int(timeout / 0.02)):
            if predicate(await store.list_emails(states=None)):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not reached")
    finally:
        stop.set()
        await task


async def test_outcomes_follow_the_retry_policy(sqlite_store):
    await sqlite_store.settle_events([], [due(i) for i in range(8)], now=time.time())
    deliverer = ScriptedDeliverer()
    dispatcher = Dispatcher(sqlite_store, deliverer, RetryPolicy(3, 0.01, 0.02), concurrency=4, wake=asyncio.Event())
    await run_until(
        sqlite_store, dispatcher, lambda emails: all(e.state in (EmailState.SENT, EmailState.DEAD) for e in emails)
    )
    states = {int(e.user_id[1:]): (e.state, e.attempts) for e in await sqlite_store.list_emails(states=None)}
    assert states[0] == (EmailState.SENT, 1) and states[4] == (EmailState.SENT, 1)
    assert states[1] == (EmailState.DEAD, 3)  # transient until max_attempts
    assert states[2] == (EmailState.DEAD, 1)  # permanent at once
    assert states[3] == (EmailState.DEAD, 3)  # a crash is retried, bounded


async def test_a_sent_mark_the_store_refuses_is_kept_and_written_when_the_store_is_back(sqlite_store):
    """The SMTP server said 250 while the store was away: the email must end `sent`, not come back
    after its lease to be sent a second time."""
    await sqlite_store.settle_events([], [due(0)], now=time.time())
    original = sqlite_store.mark_sent
    calls = []

    async def flaky_mark_sent(email_id, *, now):
        calls.append(email_id)
        if len(calls) <= 3:
            raise OSError("database is away")
        await original(email_id, now=now)

    sqlite_store.mark_sent = flaky_mark_sent
    deliverer = ScriptedDeliverer()
    dispatcher = Dispatcher(sqlite_store, deliverer, RetryPolicy(3, 0.01, 0.02), concurrency=2, wake=asyncio.Event())
    with capture_logs() as logs:
        await run_until(sqlite_store, dispatcher, lambda emails: emails[0].state == EmailState.SENT)
    assert deliverer.attempts == {0: 1}  # sent once
    assert len(calls) == 4  # written on the fourth try, no new send in between
    events = [entry["event"] for entry in logs]
    assert events.count("outbox_outcome_unrecorded") == 1  # one warning per kept outcome, not one per retry
    assert await sqlite_store.requeue_stale(now=time.time() + 10_000) == 0


async def test_an_unsubscribe_holds_back_only_the_emails_of_rules_that_offer_it(sqlite_store):
    """u0 unsubscribed from `r`, which offers unsubscribing: cancelled. Then `r` no longer offers it
    (the config changed): u4's old preference does not apply, the email is sent."""
    deliverer = ScriptedDeliverer()
    policy = RetryPolicy(3, 0.01, 0.02)
    for user in ("u0", "u4"):
        await sqlite_store.set_unsubscribed("acme", user, "r", now=time.time())
    await sqlite_store.settle_events([], [due(0)], now=time.time())
    offering = Dispatcher(
        sqlite_store, deliverer, policy, concurrency=4, wake=asyncio.Event(), unsubscribable=frozenset({"r"})
    )
    await run_until(sqlite_store, offering, lambda emails: emails[0].state == EmailState.CANCELLED)
    [cancelled] = await sqlite_store.list_emails(states=None)
    assert cancelled.last_error == "user unsubscribed from this rule's emails"
    await sqlite_store.settle_events([], [due(4)], now=time.time())
    not_offering = Dispatcher(sqlite_store, deliverer, policy, concurrency=4, wake=asyncio.Event())
    await run_until(sqlite_store, not_offering, lambda emails: emails[0].state == EmailState.SENT)
    assert deliverer.attempts == {4: 1}


class GatedDeliverer:
    """Records every delivery; while `gate` is closed, a delivery waits for it (an SMTP reply
    that has not come yet)."""

    def __init__(self):
        self.delivered: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def deliver(self, email):
        self.delivered.append(int(email.user_id[1:]))
        await self.gate.wait()

    async def mark(self, email):
        return None


def start(dispatcher):
    stop = asyncio.Event()
    return stop, asyncio.create_task(dispatcher.run(stop, idle_s=0.02))


async def sent_ids(store):
    return {int(e.user_id[1:]) for e in await store.list_emails(states=None) if e.state == EmailState.SENT}


async def _equal(awaitable, expected):
    return await awaitable == expected


async def test_while_the_store_refuses_outcomes_the_sends_stop_at_a_bound(sqlite_store):
    """Outcomes the store cannot take are kept in memory, each holding its slot: no more than
    `concurrency` emails are ever sent without their mark written (README, "the window"). All are
    written when the store is back."""
    await sqlite_store.settle_events([], [due(i) for i in range(30)], now=time.time())
    original, refused, away = sqlite_store.mark_sent, [], True

    async def refusing_mark_sent(email_id, *, now):
        if away:
            refused.append(email_id)
            raise OSError("database is away")
        await original(email_id, now=now)

    sqlite_store.mark_sent = refusing_mark_sent
    deliverer = GatedDeliverer()
    dispatcher = Dispatcher(sqlite_store, deliverer, RetryPolicy(3, 0.01, 0.02), concurrency=2, wake=asyncio.Event())
    stop, task = start(dispatcher)
    try:
        # Every outcome kept is retried (0.2 s, 0.4 s …): wait until each has been refused three times.
        await wait_until(lambda: len(refused) >= 3 * len(deliverer.delivered) > 0, timeout=15, what="outcomes retried")
        assert len(deliverer.delivered) == 2
        away = False
        await wait_until(lambda: _equal(sent_ids(sqlite_store), set(range(30))), timeout=30, what="all sent")
    finally:
        away = False
        stop.set()
        await task
    assert sorted(deliverer.delivered) == list(range(30))  # each once


async def test_work_queued_while_a_claim_runs_is_not_left_waiting(sqlite_store):
    """The processor queues an email (and wakes the dispatcher) while a claim that cannot see it is
    under way: the wake-up must not be lost, or the email waits for `idle_s`."""
    original, queued = sqlite_store.claim_emails_checked, []
    wake = asyncio.Event()

    async def claim_racing_the_processor(**kwargs):
        found = await original(**kwargs)
        if not found[0] and not queued:  # the claim saw nothing; meanwhile the processor queues one
            queued.append(await sqlite_store.settle_events([], [due(0)], now=time.time()))
            wake.set()
        return found

    sqlite_store.claim_emails_checked = claim_racing_the_processor
    deliverer = GatedDeliverer()
    dispatcher = Dispatcher(sqlite_store, deliverer, RetryPolicy(3, 0.01, 0.02), concurrency=2, wake=wake)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop, idle_s=60))
    try:
        await wait_until(lambda: _equal(sent_ids(sqlite_store), {0}), timeout=10, what="the email sent before idle_s")
    finally:
        stop.set()
        await task
