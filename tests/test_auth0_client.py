"""ManagementApi, TokenSource and RateLimitPacer against the Auth0 stand-in on a real socket."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import traceback
from email.utils import formatdate

import httpx
import pytest

from streamer import metrics
from streamer.auth0 import (
    Auth0Permanent,
    Auth0Transient,
    ManagementApi,
    RateLimitPacer,
    TokenSource,
    UserNotFound,
)
from streamer.auth0.client import chunk_ids, endpoint_label, is_stale, next_from, user_id_query
from streamer.auth0.errors import from_status, map_exception
from streamer.auth0.pacer import PROBE_WAIT_S
from streamer.auth0.token import refresh_at
from streamer.config import TenantConfig
from streamer.devkit.auth0_standin import Auth0StandIn, TokenBucket, load_sample_users

from support.clock import FakeClock
from support.users import ANA, BRUNO, CHLOE

SECRET = "standin-secret-Zq81mX"


def tenant_for(standin: Auth0StandIn, secret: str = SECRET) -> TenantConfig:
    return TenantConfig(
        domain=standin.domain, api_url=standin.base_url, client_id=standin.client_id, client_secret=secret
    )


def api_calls(standin: Auth0StandIn, method: str | None = None, prefix: str = "/api/v2") -> list[tuple]:
    return [c for c in standin.calls if c[1].startswith(prefix) and (method is None or c[0] == method)]


@pytest.fixture
async def standin():
    server = Auth0StandIn(users=load_sample_users(), client_secret=SECRET)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api(standin):
    client = ManagementApi(tenant_for(standin), name="t-client")
    yield client
    await client.close()


# --- tokens ----------------------------------------------------------------------------------


async def test_one_token_for_many_calls_then_refetch_after_expiry(standin):
    clock = FakeClock()
    tokens = TokenSource(tenant_for(standin), clock=clock)
    api = ManagementApi(tenant_for(standin), token_source=tokens)
    try:
        await asyncio.gather(*(api.create_email_verification_ticket(user_id=ANA) for _ in range(10)))
        await api.get_users([ANA, BRUNO])
        assert len(api_calls(standin, prefix="/oauth/token")) == 1 and tokens.fetch_count == 1
        clock.now += 86400 - 61  # still > 60 s before expiry
        await api.create_email_verification_ticket(user_id=ANA)
        assert tokens.fetch_count == 1
        clock.now += 2  # inside the 60 s leeway
        await api.create_email_verification_ticket(user_id=ANA)
        assert tokens.fetch_count == 2 and len(api_calls(standin, prefix="/oauth/token")) == 2
    finally:
        await api.close()
        await tokens.close()


async def test_concurrent_callers_share_one_fetch(standin):
    tokens = TokenSource(tenant_for(standin))
    try:
        got = await asyncio.gather(*(tokens.get() for _ in range(20)))
        assert len(set(got)) == 1 and tokens.fetch_count == 1
    finally:
        await tokens.close()


def test_refresh_leeway():
    assert refresh_at(0, 86400) == 86400 - 60
    assert refresh_at(0, 10) == 5  # short-lived tokens: halfway


async def test_token_expired_at_auth0_is_refetched_once(standin, api):
    await api.create_email_verification_ticket(user_id=ANA)
    standin.expire_tokens()
    await api.create_email_verification_ticket(user_id=ANA)
    statuses = [c[2] for c in api_calls(standin, "POST")]
    assert statuses == [201, 401, 201] and api.tokens.fetch_count == 2


async def test_bad_credentials_are_permanent_without_secret(standin):
    api = ManagementApi(tenant_for(standin, secret="wrong-secret-Kx93"), name="t-bad")
    try:
        with pytest.raises(Auth0Permanent) as caught:
            await api.create_email_verification_ticket(user_id=ANA)
    finally:
        await api.close()
    assert caught.value.status == 401 and "access_denied" in str(caught.value)
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert "wrong-secret-Kx93" not in text and SECRET not in text


async def test_wrong_audience_domain_is_permanent(standin):
    tenant = TenantConfig(
        domain="other.eu.auth0.com", api_url=standin.base_url, client_id=standin.client_id, client_secret=SECRET
    )
    async with ManagementApi(tenant) as api:
        with pytest.raises(Auth0Permanent) as caught:
            await api.get_users([ANA])
    assert caught.value.status == 403


async def test_token_endpoint_outage_is_transient(standin):
    standin.fail_next("/oauth/token", 503)
    tokens = TokenSource(tenant_for(standin))
    try:
        with pytest.raises(Auth0Transient):
            await tokens.get()
        assert await tokens.get()  # next attempt works
    finally:
        await tokens.close()


# --- users -----------------------------------------------------------------------------------


async def test_get_users_one_search_for_many(standin, api):
    extra = [standin.add_user({"email": f"user{i}@example.com"})["user_id"] for i in range(30)]
    ids = [u["user_id"] for u in load_sample_users()] + extra
    users = await api.get_users(ids)
    assert set(users) == set(ids) and all(users[i]["user_id"] == i for i in ids)
    assert api_calls(standin) == [("GET", "/api/v2/users", 200)]
    bruno = users[BRUNO]
    assert bruno["user_metadata"] == {} and bruno["app_metadata"] == {}  # always present
    assert users[CHLOE]["app_metadata"]["plan"] == "pro"
    assert users[ANA]["created_at"] == "2026-03-01T14:01:07.398Z"  # Auth0's own date format kept
    again = await api.get_users(ids[:5] + ids[:5])
    assert list(again) == ids[:5] and len(api_calls(standin)) == 1  # cached
    again[ANA]["email"] = "mutated"
    assert (await api.get_users([ANA]))[ANA]["email"] == "ana.silva@example.com"


async def test_get_users_chunks_long_lists(standin, api):
    ids = [standin.add_user({"email": f"bulk{i}@example.com"})["user_id"] for i in range(120)]
    users = await api.get_users(ids)
    assert all(users[i] is not None for i in ids)
    assert api_calls(standin) == [("GET", "/api/v2/users", 200)] * 3


async def test_get_users_falls_back_to_get_by_id_and_404_is_none(standin, api):
    fresh = standin.add_user({"email": "fresh@example.com"}, indexed=False)["user_id"]
    users = await api.get_users([ANA, fresh, "auth0|nobody"])
    assert users[ANA]["email"] == "ana.silva@example.com"
    assert users[fresh]["email"] == "fresh@example.com"
    assert users["auth0|nobody"] is None
    assert sorted(api_calls(standin)) == sorted(
        [
            ("GET", "/api/v2/users", 200),
            ("GET", f"/api/v2/users/{fresh}", 200),
            ("GET", "/api/v2/users/auth0|nobody", 404),
        ]
    )
    await api.get_users(["auth0|nobody"])
    assert len(api_calls(standin)) == 3  # the miss is cached too


async def test_concurrent_get_users_for_one_user_cost_one_call(standin, api):
    results = await asyncio.gather(*(api.get_users([ANA]) for _ in range(10)))
    assert all(r[ANA]["user_id"] == ANA for r in results)
    assert api_calls(standin) == [("GET", "/api/v2/users", 200)]


async def test_stale_search_result_is_refetched_when_fresh_since_given(standin, api):
    standin.freeze_search(ANA)  # the search index will lag behind the verification
    async with httpx.AsyncClient() as browser:
        ticket = await api.create_email_verification_ticket(user_id=ANA)
        assert (await browser.get(ticket.rstrip("#"))).status_code == 200
    sv = standin.logs[-1]
    stale = await api.get_users([ANA])
    assert stale[ANA]["email_verified"] is False  # what the search says
    fresh = await api.get_users([ANA], fresh_since={ANA: sv["date"]})
    assert fresh[ANA]["email_verified"] is True
    assert api_calls(standin, "GET")[-1] == ("GET", f"/api/v2/users/{ANA}", 200)


def test_is_stale():
    assert is_stale({"updated_at": "2026-03-01T14:00:00.000Z"}, "2026-03-01T14:00:01.000Z")
    assert not is_stale({"updated_at": "2026-03-01T14:00:02.000Z"}, "2026-03-01T14:00:01.000Z")
    assert not is_stale({}, "2026-03-01T14:00:01.000Z") and not is_stale({"updated_at": "x"}, None)


async def test_users_by_email_and_update_app_metadata(standin, api):
    found = await api.users_by_email("chloe.tremblay@example.com")
    assert [u["user_id"] for u in found] == [CHLOE] and found[0]["user_metadata"]["locale"] == "fr-CA"
    assert await api.users_by_email("nobody@example.com") == []
    await api.update_app_metadata(CHLOE, {"streamer": {"welcome_sent_at": "2026-03-01T10:05:00Z"}, "plan": None})
    assert standin.users[CHLOE]["app_metadata"] == {"streamer": {"welcome_sent_at": "2026-03-01T10:05:00Z"}}
    calls = len(api_calls(standin))
    cached = await api.get_users([CHLOE])  # the PATCH answer refreshed the cache
    assert cached[CHLOE]["app_metadata"] == {"streamer": {"welcome_sent_at": "2026-03-01T10:05:00Z"}}
    assert len(api_calls(standin)) == calls
    with pytest.raises(UserNotFound):
        await api.update_app_metadata("auth0|nobody", {"x": 1})


# --- tickets ---------------------------------------------------------------------------------


async def test_tickets(standin, api):
    url = await api.create_email_verification_ticket(user_id=ANA, result_url="https://app.acme.test/v", ttl_sec=600)
    assert url.startswith(f"{standin.base_url}/u/email-verification?ticket=")
    ticket = next(iter(standin.tickets.values()))
    assert (ticket["result_url"], ticket["ttl_sec"], ticket["client_id"]) == ("https://app.acme.test/v", 600, None)
    await api.create_email_verification_ticket(user_id=ANA, client_id="Xy7pQ2acmeTESTclient000000000001")
    assert list(standin.tickets.values())[-1]["client_id"] == "Xy7pQ2acmeTESTclient000000000001"
    reset = await api.create_password_change_ticket(user_id=ANA, result_url="https://app.acme.test/login", ttl_sec=3600)
    assert reset.startswith(f"{standin.base_url}/u/reset-verify?ticket=")
    assert list(standin.tickets.values())[-1]["kind"] == "password_change"
    with pytest.raises(Auth0Permanent) as both:
        await api.create_email_verification_ticket(user_id=ANA, result_url="https://a.test/", client_id="c")
    assert both.value.status == 400 and both.value.error_code == "invalid_body"
    with pytest.raises(UserNotFound):
        await api.create_email_verification_ticket(user_id="auth0|nobody")


async def test_new_password_refused_by_current_auth0_and_never_in_messages(standin, api):
    with pytest.raises(Auth0Permanent) as caught:
        await api.create_password_change_ticket(user_id=ANA, new_password="Very-Secret-Pw-1")
    assert "new_password" in str(caught.value) and "Very-Secret-Pw-1" not in str(caught.value)
    async with Auth0StandIn(users=load_sample_users(), client_secret=SECRET, legacy_password_flow=True) as legacy:
        async with ManagementApi(tenant_for(legacy)) as legacy_api:
            await legacy_api.create_password_change_ticket(user_id=ANA, new_password="Very-Secret-Pw-1")
        assert list(legacy.tickets.values())[-1]["new_password"] == "Very-Secret-Pw-1"


# --- retries, errors, secrets ---------------------------------------------------------------


async def test_injected_5xx_is_retried_then_succeeds(standin, api):
    standin.fail_next("/api/v2/tickets/email-verification", 500)
    assert await api.create_email_verification_ticket(user_id=ANA)
    assert [c[2] for c in api_calls(standin, "POST")] == [500, 201]


async def test_persistent_5xx_is_transient_and_leaks_nothing(standin):
    api = ManagementApi(tenant_for(standin), name="t-5xx", max_retries=1)
    try:
        token = await api.tokens.get()
        standin.fail_next("/api/v2/users", 503, count=10)
        with pytest.raises(Auth0Transient) as caught:
            await api.get_users([ANA])
    finally:
        await api.close()
    assert caught.value.status == 503 and len(api_calls(standin)) == 2  # 1 + max_retries
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert token not in text and SECRET not in text and "503" in text


async def test_connection_refused_is_transient():
    tenant = TenantConfig(
        domain="acme-test.us.auth0.com", api_url="http://127.0.0.1:9", client_id="c", client_secret=SECRET
    )
    async with ManagementApi(tenant, max_retries=0) as api:
        with pytest.raises(Auth0Transient):
            await api.get_users([ANA])


def test_error_messages_are_scrubbed():
    body = {
        "statusCode": 400,
        "error": "Bad Request",
        "errorCode": "invalid_body",
        "message": "bad https://acme.us.auth0.com/u/reset-verify?ticket=abcdef# and Bearer eyJhbGciOi.eyJzdWIi.s",
    }
    error = from_status(400, body, {}, endpoint="POST /tickets/password-change", secrets=["s3cr3t-value"])
    assert isinstance(error, Auth0Permanent) and "invalid_body" in str(error)
    assert "ticket=abcdef" not in str(error) and "eyJhbGciOi" not in str(error)
    limited = from_status(
        429,
        {"statusCode": 429, "errorCode": "too_many_requests", "message": "Global limit"},
        {"x-ratelimit-reset": "1010"},
        endpoint="GET /users",
        now=1000.0,
    )
    assert isinstance(limited, Auth0Transient) and limited.retry_after == 10.0
    assert isinstance(from_status(404, {}, {}, endpoint="GET /users/{id}"), UserNotFound)
    assert isinstance(map_exception(TimeoutError(), endpoint="x"), Auth0Transient)  # OSError subclass


async def test_metrics_count_calls(standin, api):
    def value(endpoint: str, status: str) -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "streamer_auth0_calls_total", {"tenant": "t-client", "endpoint": endpoint, "status": status}
            )
            or 0.0
        )

    before = value("GET /users/{id}", "404")
    await api.get_users(["auth0|nobody-metrics"])
    assert value("GET /users/{id}", "404") == before + 1
    assert api.calls_made == len(api_calls(standin))


def test_pure_helpers():
    assert endpoint_label("get", "/users/auth0%7C123") == "GET /users/{id}"
    assert endpoint_label("POST", "/tickets/email-verification") == "POST /tickets/email-verification"
    assert endpoint_label("GET", "/users/x/logs") == "GET /users/{id}/logs"
    assert endpoint_label("GET", "/weird/thing/1") == "GET /weird/*"
    assert user_id_query(["a"]) == 'user_id:"a"'
    assert user_id_query(["a", 'b"c']) == 'user_id:("a" OR "b\\"c")'
    chunks = chunk_ids([f"auth0|{i:024d}" for i in range(120)])
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert all(len(c) < 50 for c in chunk_ids([f"auth0|{'x' * 200}{i}" for i in range(60)]))
    assert next_from("https://t/api/v2/logs?from=900123&take=100") == "900123" and next_from(None) is None


# --- logs and log streams --------------------------------------------------------------------


async def test_read_logs_pages_from_oldest_then_by_checkpoint(standin, api):
    assert await api.read_logs(None) == ([], None)
    kinds = ["ss", "svr", "s", "sv", "scp"]
    for kind in kinds:
        standin.add_log({"type": kind, "user_id": ANA})
    events, cursor = await api.read_logs(None, take=2)
    seen = [e["type"] for e in events]
    while True:
        events, following = await api.read_logs(cursor, take=2)
        if not events:
            assert following == cursor  # caught up: same checkpoint
            break
        seen += [e["type"] for e in events]
        cursor = following
    assert seen == kinds
    assert cursor == standin.logs[-1]["log_id"]
    assert ("GET", "/api/v2/logs", 200) in standin.calls


async def test_read_logs_errors_map(standin, api):
    standin.fail_next("/api/v2/logs", 400)
    with pytest.raises(Auth0Permanent):
        await api.read_logs("0")


async def test_log_streams(standin, api):
    body = {
        "name": "streamer",
        "type": "http",
        "sink": {
            "httpEndpoint": "https://mail.acme.test/logs/acme",
            "httpContentType": "application/json",
            "httpContentFormat": "JSONARRAY",
            "httpAuthorization": "Bearer hook-secret-1",
        },
        "filters": [{"type": "category", "name": "user.success"}],
    }
    created = await api.create_log_stream(body)
    assert created["id"].startswith("lst_") and created["status"] == "active"
    assert created["sink"]["httpEndpoint"] == "https://mail.acme.test/logs/acme"
    assert standin.log_streams[created["id"]]["sink"] == body["sink"]  # wire shape kept
    assert [s["id"] for s in await api.list_log_streams()] == [created["id"]]
    updated = await api.update_log_stream(
        created["id"], {"status": "active", "sink": {"httpEndpoint": "https://x.test/"}}
    )
    assert updated["sink"]["httpEndpoint"] == "https://x.test/"
    with pytest.raises(UserNotFound):
        await api.update_log_stream("lst_0000000000000000", {"status": "active"})


# --- pacing ----------------------------------------------------------------------------------


def test_pacer_probe_then_bucket():
    pacer = RateLimitPacer(clock=FakeClock())
    assert pacer.delay_before_next(1000.0) == 0
    seq = pacer.on_send(1000.0)
    assert pacer.delay_before_next(1000.0) == PROBE_WAIT_S  # nothing known: one request at a time
    pacer.observe(
        seq, 200, {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "4", "x-ratelimit-reset": "1001"}, 1000.01
    )
    sends = 0
    while pacer.delay_before_next(1000.02) == 0:
        pacer.on_send(1000.02)
        sends += 1
    assert sends == 4 and 0 < pacer.delay_before_next(1000.02) <= 1.0


def test_pacer_waits_for_reset_after_429_and_handles_missing_headers():
    pacer = RateLimitPacer()
    seq = pacer.on_send(1000.0)
    pacer.observe(
        seq, 429, {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1003"}, 1000.5
    )
    assert pacer.delay_before_next(1000.5) == pytest.approx(2.5)
    unlimited = RateLimitPacer()
    unlimited.observe(unlimited.on_send(0.0), 200, {}, 0.1)
    assert all(unlimited.delay_before_next(0.1) == 0 for _ in range(3))


@pytest.mark.parametrize(
    "burst,rate,latency,skew",
    [
        (5, 5.0, 0.01, 0.0),
        (2, 2.0, 0.15, 0.0),
        (10, 2.5, 0.3, 0.0),
        (50, 16.0, 0.08, 0.0),
        (10, 2.5, 0.1, 2.0),
        (40, 8.33, 0.2, -1.5),  # our clock 2 s ahead of Auth0's / 1.5 s behind
    ],
)
def test_pacer_simulation_keeps_429s_rare(burst, rate, latency, skew):
    """8 callers, 400 calls, Auth0's token bucket, jittery latency (answers overtake each other)."""
    rng = random.Random(7)
    start = 1_700_000_000.37
    bucket = TokenBucket(burst, rate, updated=start)
    pacer = RateLimitPacer()
    now, waiting, remaining, limited, done = start, 8, 400, 0, 0
    queue: list[tuple] = []
    wake_at = None
    while done < 400:
        while waiting and remaining:
            delay = pacer.delay_before_next(now + skew)
            if delay > 0:
                delay = max(delay, 0.001)  # float resolution at epoch scale; real sleeps move time on
                if wake_at is None or wake_at > now + delay:
                    wake_at = now + delay
                    heapq.heappush(queue, (wake_at, 0, "wake", None))
                break
            seq = pacer.on_send(now + skew)
            waiting -= 1
            remaining -= 1
            heapq.heappush(queue, (now + latency * rng.uniform(0.3, 1.0), seq, "arrive", seq))
        now, _, kind, seq = heapq.heappop(queue)
        if kind == "wake":
            wake_at = None
        elif kind == "arrive":
            status = 200 if bucket.take(now) else 429
            headers = {**bucket.headers(now), "Date": formatdate(math.floor(now), usegmt=True)}
            heapq.heappush(queue, (now + latency * rng.uniform(0.3, 1.0), seq, "answer", (seq, status, headers)))
        else:
            seq, status, headers = seq
            pacer.observe(seq, status, headers, now + skew)
            waiting += 1
            if status == 429:
                limited += 1
                remaining += 1  # the caller retries
            else:
                done += 1
    elapsed = now - start
    ideal = (400 - burst) / rate
    assert limited / (400 + limited) < 0.02
    assert elapsed < ideal * 1.25  # the limit is used, not wasted
    assert pacer.clock_offset == pytest.approx(-skew, abs=latency + 0.05)


async def test_429_storm_stays_under_two_percent():
    """~100 calls from 8 concurrent tasks at an emulated 5 req/s, burst 5: all succeed, <2% 429."""
    async with Auth0StandIn(users=load_sample_users(), client_secret=SECRET, rate_limit=(5, 5.0)) as server:
        async with ManagementApi(tenant_for(server), name="t-storm") as api:
            todo = list(range(100))

            async def worker() -> int:
                made = 0
                while todo:
                    todo.pop()
                    assert await api.create_email_verification_ticket(user_id=ANA)
                    made += 1
                return made

            started = time.monotonic()
            assert sum(await asyncio.gather(*(worker() for _ in range(8)))) == 100
            elapsed = time.monotonic() - started
        calls = api_calls(server)
        limited = sum(1 for c in calls if c[2] == 429)
        assert len([c for c in calls if c[2] == 201]) == 100
        assert limited / len(calls) < 0.02
        assert elapsed < (100 - 5) / 5.0 * 1.25  # and the limit is actually used
