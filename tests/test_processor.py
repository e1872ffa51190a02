"""The processor steps aside while the inbox is accepting batches, and still works everything off."""

import asyncio
import time

import pytest

from streamer import metrics
from streamer import processor as processor_module
from streamer.config import parse_config
from streamer.inbox import Inbox
from streamer.processor import (
    MAX_PAUSE_S,
    SHARE_WHILE_INGESTING,
    Processor,
    newest_profile_change,
    pause_after,
)
from streamer.rules import compile_rules
from streamer.store.base import InboxEvent

from conftest import config_text, sample_event
from support.waiting import wait_until


class _Endpoint:  # config_text needs somewhere to point the tenant and the SMTP server
    domain, base_url, client_id, client_secret, port = "acme.test", "http://127.0.0.1:9", "c", "s", 2525


class _Users:
    """Verified returning users: the shipped rules make nothing due for them."""

    async def get_users(self, user_ids, *, fresh_since=None):
        return {
            uid: {"user_id": uid, "email": "ana@example.com", "email_verified": True, "logins_count": 9}
            for uid in user_ids
        }


def _processor(config, store, users, *, wake=None, **options) -> Processor:
    """A processor of the test config's tenant `acme`, its rules, `users` as its profiles."""
    return Processor(
        config.tenants,
        store,
        compile_rules(config.rules),
        {"acme": users},
        lambda *_: "en",
        wake=wake or asyncio.Event(),
        outbox_wake=asyncio.Event(),
        **options,
    )


def test_the_pause_keeps_the_processor_to_its_share_of_the_time_only_while_ingesting():
    assert pause_after(0.005, 0.005, ingesting=False) == 0.0
    for busy in (0.001, 0.005, 0.02):  # cheap or dear rounds: the same share of the time
        pause = pause_after(busy, busy, ingesting=True)
        assert busy / (busy + pause) == pytest.approx(SHARE_WHILE_INGESTING)
    # The round also waited (commits, Auth0) while others ran: that time counts as given away.
    busy, waited = 0.01, 0.02
    pause = pause_after(busy, busy + waited, ingesting=True)
    assert busy / (busy + waited + pause) == pytest.approx(SHARE_WHILE_INGESTING)
    assert pause_after(0.01, 0.2, ingesting=True) == 0.0  # waited longer than its share asks
    assert busy / (busy + pause_after(busy, busy, ingesting=True, share=0.5)) == pytest.approx(0.5)
    assert pause_after(1.0, 1.0, ingesting=True) == MAX_PAUSE_S


async def test_the_inbox_counts_batches_waiting_for_their_commit(sqlite_store):
    inbox = Inbox(sqlite_store, {"ss"})
    seen_while_waiting = []
    original = sqlite_store.add_events

    async def add_events(*args, **kwargs):
        seen_while_waiting.append(inbox.accepting)
        return await original(*args, **kwargs)

    sqlite_store.add_events = add_events
    await asyncio.gather(
        *(inbox.accept("acme", [sample_event("ss", log_id=f"P{i}")], source="webhook") for i in range(3))
    )
    assert max(seen_while_waiting) == 3 and inbox.accepting == 0

    async def broken(*args, **kwargs):
        raise OSError("disk full")

    sqlite_store.add_events = broken
    with pytest.raises(OSError):
        await inbox.accept("acme", [sample_event("ss", log_id="P9")], source="webhook")
    assert inbox.accepting == 0  # a failed commit does not leave the processor paused forever


async def _run_while_ingesting(store, tmp_path, monkeypatch, rows: int, per_row: int) -> tuple[list, list]:
    """Store `rows` inbox rows of `per_row` events, run a processor that is always told batches are
    waiting for their commit until everything is processed: (times it asked, pauses it took)."""
    config = parse_config(config_text(tmp_path, _Endpoint(), _Endpoint()), env={})
    for batch in range(rows):
        await store.add_events(
            "acme", [sample_event("ss", log_id=f"B{batch}-{i}", user_id=f"auth0|{i}") for i in range(per_row)], now=0
        )
    asked, pauses = [], []
    real_sleep = processor_module.sleep_unless_stopped

    async def recorded_sleep(stop, seconds):
        pauses.append(seconds)
        await real_sleep(stop, seconds)

    monkeypatch.setattr(processor_module, "sleep_unless_stopped", recorded_sleep)  # observed, not replaced
    processor = _processor(
        config, store, _Users(), ingesting=lambda: asked.append(True) or True, share_while_ingesting=0.01
    )
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop, idle_s=0.05))
    try:

        async def drained() -> bool:
            return not (await store.stats(now=0))["inbox_pending"]

        await wait_until(drained, timeout=30, interval=0.05, what="every stored event processed")
    finally:
        stop.set()
        await task
    return asked, pauses


async def test_a_processor_that_steps_aside_still_works_off_the_backlog(sqlite_store, tmp_path, monkeypatch):
    asked, pauses = await _run_while_ingesting(sqlite_store, tmp_path, monkeypatch, rows=5, per_row=300)
    # Behind (every round a full batch): asked after each, and paused after each (at a share of
    # 1%, 100 times as long as its own code ran, less the round's waits).
    assert len(asked) == len(pauses) >= 2 and all(p > 0 for p in pauses)


async def test_a_processor_that_keeps_up_never_pauses(sqlite_store, tmp_path, monkeypatch):
    """A round smaller than a batch is the events arriving: pausing would only delay their emails
    (at 50 events/s it made them wait seconds)."""
    _, pauses = await _run_while_ingesting(sqlite_store, tmp_path, monkeypatch, rows=3, per_row=5)
    assert pauses and all(p == 0 for p in pauses)


async def test_events_stored_while_a_claim_runs_are_not_left_waiting(sqlite_store, tmp_path):
    """The inbox stores a batch (and wakes the processor) while a claim that cannot see it is under
    way: the wake-up must not be lost, or the batch waits for `idle_s`."""
    config = parse_config(config_text(tmp_path, _Endpoint(), _Endpoint()), env={})
    original, stored, wake = sqlite_store.claim_events, [], asyncio.Event()

    async def claim_racing_the_inbox(**kwargs):
        found = await original(**kwargs)
        if not found and not stored:  # the claim saw nothing; meanwhile a batch arrives
            stored.append(await sqlite_store.add_events("acme", [sample_event("ss", log_id="W1")], now=time.time()))
            wake.set()
        return found

    sqlite_store.claim_events = claim_racing_the_inbox
    processor = _processor(config, sqlite_store, _Users(), wake=wake)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop, idle_s=60))
    try:

        async def evaluated() -> bool:
            return bool(stored) and not (await sqlite_store.stats(now=time.time()))["inbox_pending"]

        await wait_until(evaluated, timeout=10, interval=0.05, what="the batch evaluated before idle_s")
    finally:
        stop.set()
        await task


async def test_a_rule_error_is_counted_as_one_whatever_its_message_says(sqlite_store):
    """The dropped-email metric's reason comes from the kind of skip, not from words in an error
    message: "substring not found" once made a broken rule count as `user_not_found`."""
    config = parse_config(RULE_ERROR_CONFIG, env={})
    await sqlite_store.add_events("acme", [sample_event("ss", log_id="R1", user_id="auth0|1")], now=0)
    processor = _processor(config, sqlite_store, _Users())

    def dropped(reason):
        return (
            metrics.REGISTRY.get_sample_value(
                "streamer_emails_dropped_total", {"tenant": "acme", "rule": "broken", "reason": reason}
            )
            or 0
        )

    before = dropped("rule_error"), dropped("user_not_found")
    assert await processor.process_once() == 1
    assert (dropped("rule_error"), dropped("user_not_found")) == (before[0] + 1, before[1])


RULE_ERROR_CONFIG = """\
smtp: {host: localhost, from: "Acme <no-reply@acme.test>"}
tenants:
  acme: {domain: acme.eu.auth0.com, client_id: c, client_secret: s}
rules:
  - name: broken
    on: [ss]
    if: "'x'.index('y')"
    template: welcome
"""


class _Unverified:
    """New unverified users: the verification rule makes one email due per event."""

    async def get_users(self, user_ids, *, fresh_since=None):
        return {
            uid: {"user_id": uid, "email": f"{uid[6:]}@example.com", "email_verified": False, "logins_count": 1}
            for uid in user_ids
        }


async def test_evaluated_events_the_store_refuses_are_settled_when_it_is_back_not_after_the_lease(
    sqlite_store, tmp_path
):
    config = parse_config(config_text(tmp_path, _Endpoint(), _Endpoint()), env={})
    await sqlite_store.add_events(
        "acme", [sample_event("ss", log_id=f"S{i}", user_id=f"auth0|u{i}") for i in range(3)], now=0
    )
    original, calls = sqlite_store.settle_events, []

    async def away_twice(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise OSError("the store is away")
        return await original(*args, **kwargs)

    sqlite_store.settle_events = away_twice
    processor = _processor(config, sqlite_store, _Unverified())
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop, idle_s=0.05))
    try:

        async def three_emails() -> bool:
            return len(await sqlite_store.list_emails(states=None)) >= 3

        # the event lease is 120 s: only a retry gets here in time
        await wait_until(three_emails, timeout=30, interval=0.05, what="three emails queued")
    finally:
        stop.set()
        await task
    assert len(calls) == 3
    assert (await sqlite_store.stats(now=0))["inbox_pending"] == 0


async def test_a_user_whose_lookup_auth0_refuses_is_rejected_alone_in_few_calls(sqlite_store, tmp_path):
    """A 400 for the batch search is the fault of one id: halving finds it (about 2·log2(n) calls),
    its event is settled without email, and every other event of the batch is evaluated now."""
    from streamer.auth0.errors import Auth0Permanent

    class _Refusing:
        calls = 0

        async def get_users(self, user_ids, *, fresh_since=None):
            self.calls += 1
            if "auth0|poison" in user_ids:
                raise Auth0Permanent("GET /users: HTTP 400 invalid_query_string", status=400, endpoint="GET /users")
            return {
                uid: {"user_id": uid, "email": f"{uid[6:]}@example.com", "email_verified": False} for uid in user_ids
            }

    config = parse_config(config_text(tmp_path, _Endpoint(), _Endpoint()), env={})
    users = [f"auth0|u{i}" for i in range(63)] + ["auth0|poison"]
    await sqlite_store.add_events(
        "acme", [sample_event("ss", log_id=f"E{i}", user_id=uid) for i, uid in enumerate(users)], now=0
    )
    source = _Refusing()
    processor = _processor(config, sqlite_store, source)
    assert await processor.process_once() == 64
    assert (await sqlite_store.stats(now=0))["inbox_pending"] == 0
    queued = await sqlite_store.list_emails(states=None, limit=1000)
    assert sorted(e.user_id for e in queued) == sorted(users[:-1])
    assert source.calls <= 2 * 6 + 1

    class _Down:
        async def get_users(self, user_ids, *, fresh_since=None):
            raise Auth0Permanent("GET /users: HTTP 403 insufficient_scope", status=403, endpoint="GET /users")

    await sqlite_store.add_events("acme", [sample_event("ss", log_id="F1", user_id="auth0|u1")], now=0)
    processor.users = {"acme": _Down()}
    await processor.process_once()  # our credentials, not the event: it waits, as before
    assert (await sqlite_store.stats(now=0))["inbox_pending"] == 1


def test_profiles_must_be_as_new_as_the_newest_event_that_changes_them() -> None:
    def event(log_id: str, type_: str, user: str | None, date: object) -> InboxEvent:
        return InboxEvent("acme", log_id, type_, user, {"type": type_, "date": date}, 0.0, 0)

    events = [
        event("1", "sv", "auth0|a", "2026-12-01T10:00:00.000Z"),
        event("2", "scp", "auth0|a", "2026-12-01T10:00:05.000Z"),
        event("3", "sv", "auth0|a", "2026-12-01T09:59:00.000Z"),  # older: does not lower it
        event("4", "s", "auth0|b", "2026-12-01T10:00:09.000Z"),  # a login changes nothing rules read
        event("5", "sv", None, "2026-12-01T10:00:09.000Z"),
        event("6", "sv", "auth0|c", 12345),
    ]  # no readable date
    assert newest_profile_change(events) == {"auth0|a": "2026-12-01T10:00:05.000Z"}
