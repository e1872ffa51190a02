"""Profile reads at the floor: rules never decide on data older than their event, and the
Management API budget goes to tickets while it is the bottleneck.

The processor runs against the real ManagementApi, a real SQLite store and the Auth0 stand-in
set up as a real tenant (its users search lags behind writes); no dispatcher runs, so queued
emails stay queued and what the processor does to them can be read from the store.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from streamer.auth0 import ManagementApi
from streamer.auth0.freshness import IndexLag, KnownFacts, Need, requirements
from streamer.config import TenantConfig, parse_config
from streamer.devkit.auth0_standin import Auth0StandIn, iso_ms, load_sample_users
from streamer.outbox import EmailState
from streamer.processor import Processor
from streamer.rules import compile_rules

from conftest import config_text, sample_event

ANA = "auth0|65f0c0ffee0000000000a001"  # unverified, long-standing (in the search index)
LAG_S = 30.0  # longer than any test: the index never catches up


class _Smtp:  # config_text wants an SMTP port; nothing is sent in these tests
    port = 2525


def now_iso() -> str:
    return iso_ms(datetime.now(UTC))


@pytest.fixture
async def tenant():
    server = Auth0StandIn(users=load_sample_users(), search_lag_s=LAG_S)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api(tenant):
    client = ManagementApi(
        TenantConfig(
            domain=tenant.domain,
            api_url=tenant.base_url,
            client_id=tenant.client_id,
            client_secret=tenant.client_secret,
        ),
        name="acme",
    )
    yield client
    await client.close()


@pytest.fixture
def processor(tmp_path, tenant, api, sqlite_store):
    config = parse_config(config_text(tmp_path, tenant, _Smtp()), env={})
    return Processor(
        config.tenants,
        sqlite_store,
        compile_rules(config.rules),
        {"acme": api},
        lambda *_: "en",
        wake=asyncio.Event(),
        outbox_wake=asyncio.Event(),
    )


async def handle(store, processor, *events: dict) -> None:
    """Store the events as the webhook would, and let the processor work until none is pending."""
    await store.add_events("acme", list(events), now=time.time())
    async with asyncio.timeout(10):
        while True:
            await processor.process_once()
            if not processor.waiting and not (await store.stats(now=time.time()))["inbox_pending"]:
                return
            await asyncio.sleep(0.02)


async def emails(store, rule: str | None = None) -> list:
    return [e for e in await store.list_emails(states=None, tenant="acme") if rule is None or e.rule == rule]


def verify(tenant: Auth0StandIn, user_id: str) -> dict:
    """The user clicks a verification link: Auth0 changes the profile (the index shows it later)
    and logs `sv`."""
    user = tenant.users[user_id]
    user["email_verified"], user["updated_at"] = True, now_iso()
    tenant.user_changed(user_id)
    return sample_event("sv", log_id=f"sv-{time.monotonic_ns()}", date=now_iso(), user_id=user_id)


def reads_by_id(tenant: Auth0StandIn) -> int:
    return sum(1 for method, path, _ in tenant.calls if method == "GET" and path.startswith("/api/v2/users/"))


async def test_welcome_rule_fires_on_sv_while_the_index_still_shows_the_user_unverified(
    tenant, sqlite_store, processor
):
    sv = verify(tenant, ANA)
    assert tenant._search_view(ANA, time.monotonic())["email_verified"] is False  # the index lags
    await handle(sqlite_store, processor, sv)
    [welcome] = await emails(sqlite_store)
    assert welcome.rule == "welcome" and welcome.context["user"]["email_verified"] is True
    # The event proved it: one search served the decision, no read by id.
    assert reads_by_id(tenant) == 0


async def test_no_verification_email_goes_to_a_user_verified_in_the_meantime(tenant, sqlite_store, processor):
    login = sample_event("s", log_id="login-1", date=now_iso(), user_id=ANA)
    await handle(sqlite_store, processor, login)
    [queued] = await emails(sqlite_store)
    assert queued.rule == "verify-email" and queued.state == EmailState.QUEUED

    await handle(sqlite_store, processor, verify(tenant, ANA))  # verified before the email went out
    by_rule = {e.rule: e for e in await emails(sqlite_store)}
    assert by_rule["verify-email"].state == EmailState.CANCELLED
    assert by_rule["welcome"].state == EmailState.QUEUED


class _Crash(BaseException):
    """The process dies here."""


async def test_a_crash_right_after_the_settle_loses_no_cancellation(tenant, sqlite_store, processor, monkeypatch):
    """Once its settle is committed an event is never evaluated again: the emails it makes obsolete
    must be cancelled by then (and reading them before the settle finds none of its own)."""
    await handle(sqlite_store, processor, sample_event("s", log_id="login-3", date=now_iso(), user_id=ANA))
    settle = sqlite_store.settle_events

    async def settle_then_die(*args, **kwargs):
        await settle(*args, **kwargs)
        raise _Crash

    monkeypatch.setattr(sqlite_store, "settle_events", settle_then_die)
    await sqlite_store.add_events("acme", [verify(tenant, ANA)], now=time.time())
    with pytest.raises(_Crash):
        await processor.process_once()
    by_rule = {e.rule: e for e in await emails(sqlite_store)}
    assert by_rule["verify-email"].state == EmailState.CANCELLED
    assert by_rule["welcome"].state == EmailState.QUEUED


async def test_a_login_decided_after_a_verification_sees_the_verification(tenant, sqlite_store, processor):
    """A login dated before the sv but decided after it: the index (lagging) says unverified."""
    login = sample_event("s", log_id="login-early", date=now_iso(), user_id=ANA)
    await handle(sqlite_store, processor, verify(tenant, ANA))
    await handle(sqlite_store, processor, login)
    assert [e.rule for e in await emails(sqlite_store)] == ["welcome"]


async def test_a_user_deleted_before_the_email_goes_out_gets_none(tenant, sqlite_store, processor):
    await handle(sqlite_store, processor, sample_event("s", log_id="login-2", date=now_iso(), user_id=ANA))
    [queued] = await emails(sqlite_store)
    assert queued.state == EmailState.QUEUED
    tenant.delete_user(ANA)
    [sdu] = [e for e in tenant.logs if e["type"] == "sdu"]
    await handle(sqlite_store, processor, sdu)
    [cancelled] = await emails(sqlite_store)
    assert cancelled.state == EmailState.CANCELLED


async def test_a_signup_deleted_while_it_waits_for_the_index_gets_no_email(tenant, sqlite_store, processor, api):
    tenant.set_rate_limit(2, 0.2)  # the bucket is the bottleneck: no token to spare on a read by id
    await api.read_profiles([Need(ANA, "s", time.time() - 60)])
    await api.read_profiles([Need(ANA, "s", time.time() - 60)])
    profile = tenant.add_user({"email": "new.user@example.com"})  # absent from search for LAG_S
    signup = sample_event("ss", log_id="ss-new", date=now_iso(), user_id=profile["user_id"])
    await sqlite_store.add_events("acme", [signup], now=time.time())
    await processor.process_once()
    assert processor.waiting == 1 and not await emails(sqlite_store)
    tenant.delete_user(profile["user_id"])
    [sdu] = [e for e in tenant.logs if e["type"] == "sdu"]
    await handle(sqlite_store, processor, sdu)
    assert not await emails(sqlite_store) and reads_by_id(tenant) == 0


async def test_new_users_wait_for_the_index_while_the_bucket_is_busy_then_one_search_serves_them(api, tenant):
    tenant.set_search_lag(0.6)
    tenant.set_rate_limit(3, 1.0)
    profiles = [tenant.add_user({"email": f"burst{i}@example.com"}) for i in range(5)]
    needs = [Need(p["user_id"], "ss", time.time()) for p in profiles]
    await api.read_profiles([Need(ANA, "s", time.time() - 60)])  # the first answers tell the bucket's size
    await api.read_profiles([Need(ANA, "s", time.time() - 60)])
    first = await api.read_profiles(needs)
    waiting = [uid for uid, value in first.items() if isinstance(value, float)]
    assert waiting, first  # not all read by id: the bucket had no token to spare
    await asyncio.sleep(max(first[uid] for uid in waiting) - time.time())
    async with asyncio.timeout(10):
        while True:
            calls_before = len(tenant.calls)
            again = await api.read_profiles([n for n in needs if n.user_id in waiting])
            if not any(isinstance(v, float) for v in again.values()):
                break
            await asyncio.sleep(max(0.05, min(v for v in again.values() if isinstance(v, float)) - time.time()))
    assert all(again[uid]["user_id"] == uid for uid in waiting)
    assert len(tenant.calls) - calls_before == 1  # one search for all of them


async def test_spare_tokens_buy_latency_a_new_user_is_read_by_id_at_once(api, tenant):
    profile = tenant.add_user({"email": "fresh@example.com"})  # no rate limit: every token is spare
    result = await api.read_profiles([Need(profile["user_id"], "ss", time.time())])
    assert result[profile["user_id"]]["email"] == "fresh@example.com" and reads_by_id(tenant) == 1


# --- the pure parts ---------------------------------------------------------------------------


def test_requirements_combine_a_batch_per_user():
    combined = requirements([Need("u", "ss", 10.0), Need("u", "sv", 12.0), Need("v", "scp", 11.0)])
    assert combined["u"].newest == 12.0 and combined["u"].oldest == 10.0 and combined["u"].new_user
    assert not combined["u"].needs_read_after  # sv proves what it changes
    assert combined["v"].needs_read_after  # a password change proves nothing rules read


def test_known_facts_lay_a_verification_over_older_reads_only():
    facts = KnownFacts(size=2)
    facts.learn("u", "sv", 100.0)
    stale = {"user_id": "u", "email_verified": False}
    assert facts.apply("u", stale, read_at=99.0)["email_verified"] is True
    assert facts.apply("u", stale, read_at=101.0) is stale  # read after it: the read wins
    facts.learn("d", "sdu", 100.0)
    assert facts.deleted("d") and facts.apply("d", stale, read_at=0.0) is None
    facts.learn("x", "sv", 100.0)  # bounded: the oldest user goes
    assert len(facts) == 2 and facts.apply("u", stale, read_at=0.0) is stale
    clock = [0.0]
    expiring = KnownFacts(keep_s=60, clock=lambda: clock[0])
    expiring.learn("u", "sv", 100.0)
    clock[0] = 61.0
    expiring.learn("v", "sv", 161.0)  # … and none older than keep_s
    assert len(expiring) == 1 and expiring.apply("u", stale, read_at=0.0) is stale


def test_index_lag_grows_after_misses_and_settles_on_the_first_hit():
    clock = [1000.0]
    lag = IndexLag(clock=lambda: clock[0])
    assert lag.wait() == 0.0  # nothing known: search at once
    lag.observe(False, 0.1)
    assert lag.wait() == IndexLag.FIRST_WAIT_S
    lag.observe(False, 2.0)
    assert lag.wait() == 2.75  # half as long again, at most 0.75 s (or a quarter) more
    lag.observe(True, 3.1)
    assert lag.wait() == pytest.approx(3.2)
    clock[0] += IndexLag.KEEP_S + 1  # old observations are forgotten
    assert lag.wait() == 0.0


def test_spare_tokens_are_only_those_a_full_bucket_would_lose():
    from streamer.auth0.pacer import RateLimitPacer

    pacer = RateLimitPacer(clock=lambda: 1000.0)
    assert pacer.spare(1000.0) == 1  # nothing known: one probe
    seq = pacer.on_send(1000.0)
    assert pacer.spare(1000.0) == 0  # … and only one
    pacer.observe(
        seq, 200, {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9", "x-ratelimit-reset": "1001"}, 1000.05
    )
    assert pacer.spare(1000.05) >= 1  # full but for the call just made
    for _ in range(5):
        pacer.on_send(1000.05)
    assert pacer.spare(1000.05) == 0  # tickets took them: none to spare
    assert pacer.spare(1010.0) >= 1  # refilled while nobody asked
    pacer.observe(
        pacer.on_send(1010.0),
        429,
        {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1012"},
        1010.05,
    )
    assert pacer.spare(1011.0) == 0  # blocked after a 429


def test_a_documented_bucket_is_paced_at_its_documented_rate_before_the_headers_prove_more():
    from streamer.auth0.pacer import RateLimitPacer

    pacer = RateLimitPacer(clock=lambda: 0.0)
    pacer.observe(
        pacer.on_send(1000.0),
        200,
        {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1002"},
        1000.05,
    )
    # Free plan: 2/s documented; the headers alone only prove 1 / (1002 - 1000) = 0.5/s.
    assert pacer.delay_before_next(1000.05) == pytest.approx(0.5)
    odd = RateLimitPacer(clock=lambda: 0.0)
    odd.observe(
        odd.on_send(1000.0),
        200,
        {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1002"},
        1000.05,
    )
    assert odd.delay_before_next(1000.05) == pytest.approx(1.0)  # no documented plan: what is proven, 2 / 2 s
