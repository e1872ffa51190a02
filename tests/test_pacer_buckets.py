"""TenantPacer: one pacer per Auth0 rate-limit bucket, learnt from the x-ratelimit-* headers.

On the self-service paid plans (Essentials, Professional, B2B) user reads have a bucket of their
own (burst 40, 500/min) beside the one of "all other endpoints" (burst 10, 150/min), which the
tickets draw on; on Free and Enterprise every endpoint shares one bucket (FACTS f)."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import Counter
from email.utils import formatdate

import httpx
import pytest

from streamer.auth0 import ManagementApi, TenantPacer
from streamer.auth0.pacer import GLOBAL, PROBE_WAIT_S, READ_USERS, bucket_family, separate_buckets
from streamer.config import TenantConfig
from streamer.devkit.auth0_standin import Auth0StandIn, TokenBucket, load_sample_users
from streamer.devkit.auth0_standin.limits import ENDPOINT_BUCKETS

from support.users import ANA, ANA_EMAIL

SECRET = "standin-secret-Zq81mX"
ESSENTIALS = {GLOBAL: (10, 150 / 60), READ_USERS: (40, 500 / 60)}


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(reset)}


@pytest.mark.parametrize(
    "method,path,family",
    [
        ("GET", "/users", READ_USERS),
        ("GET", "/users/auth0%7C1", READ_USERS),
        ("GET", "/users-by-email", READ_USERS),
        ("PATCH", "/users/auth0%7C1", "write_users"),
        ("POST", "/users", "write_users"),
        ("DELETE", "/users/auth0%7C1", "delete_users"),
        ("GET", "/logs", "read_logs"),
        ("POST", "/tickets/email-verification", GLOBAL),
        ("POST", "/tickets/password-change", GLOBAL),
        ("GET", "/log-streams", GLOBAL),
        ("PATCH", "/log-streams/lst_1", GLOBAL),
        ("GET", "/usersx", GLOBAL),
    ],
)
def test_each_request_draws_on_its_endpoint_familys_bucket(method, path, family):
    assert bucket_family(method, path) == family


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/users"),
        ("GET", "/users/auth0%7C1"),
        ("GET", "/users-by-email"),
        ("PATCH", "/users/auth0%7C1"),
        ("POST", "/users"),
        ("DELETE", "/users/auth0%7C1"),
        ("GET", "/logs"),
        ("POST", "/tickets/password-change"),
        ("GET", "/log-streams"),
        ("POST", "/log-streams"),
    ],
)
def test_the_families_are_the_stand_ins_endpoint_groups(method, path):
    """The stand-in's plan presets and the pacer agree on which bucket each endpoint draws on."""
    group = next(
        (name for wanted, pattern, name in ENDPOINT_BUCKETS if method == wanted and pattern.match("/api/v2" + path)),
        GLOBAL,
    )
    assert bucket_family(method, path) == group


def test_families_are_separate_buckets_once_their_sizes_differ():
    assert not separate_buckets({})
    assert not separate_buckets({GLOBAL: 2, READ_USERS: 2})  # Free: one bucket
    assert separate_buckets({GLOBAL: 10, READ_USERS: 40})  # Essentials


def test_a_new_family_probes_alone_then_gets_its_own_bucket():
    pacer = TenantPacer(clock=lambda: 1000.0)
    read = pacer.on_send(READ_USERS, 1000.0)
    pacer.observe(read, 200, headers(40, 39, 1001), 1000.05)
    assert not pacer.separate and pacer.delay_before_next(READ_USERS, 1000.05) == 0
    # The shared model says 38 tokens, but tickets may have a smaller bucket: one goes first.
    assert pacer.delay_before_next(GLOBAL, 1000.05) == 0
    ticket = pacer.on_send(GLOBAL, 1000.05)
    assert pacer.delay_before_next(GLOBAL, 1000.05) == PROBE_WAIT_S
    assert pacer.spare(GLOBAL, 1000.05) == 0
    pacer.observe(ticket, 201, headers(10, 9, 1001), 1000.1)
    assert pacer.separate  # 40 and 10: Essentials
    for _ in range(9):  # the tickets' bucket …
        assert pacer.delay_before_next(GLOBAL, 1000.1) == 0
        pacer.on_send(GLOBAL, 1000.1)
    assert pacer.delay_before_next(GLOBAL, 1000.1) > 0  # … is empty,
    assert pacer.delay_before_next(READ_USERS, 1000.1) == 0  # the reads' is not


def test_requests_in_flight_move_to_their_familys_bucket_when_it_turns_out_separate():
    pacer = TenantPacer(clock=lambda: 1000.0)
    first = pacer.on_send(READ_USERS, 1000.0)
    pacer.observe(first, 200, headers(40, 39, 1001), 1000.05)
    reads = [pacer.on_send(READ_USERS, 1000.05) for _ in range(5)]
    ticket = pacer.on_send(GLOBAL, 1000.05)
    pacer.observe(ticket, 201, headers(10, 9, 1001), 1000.1)
    assert pacer.separate
    # The reads' new model has heard nothing yet and counts 5 of its requests in flight: it waits.
    assert pacer.delay_before_next(READ_USERS, 1000.1) == PROBE_WAIT_S
    pacer.observe(reads[0], 200, headers(40, 34, 1001), 1000.15)
    own = pacer.pacer_for(READ_USERS)
    assert own is not pacer.pacer_for(GLOBAL) and own.capacity == 40
    assert own.tokens_at(1000.15) == pytest.approx(34 - 4, abs=0.01)  # 4 still in flight


def test_one_bucket_for_all_stays_one_and_a_changed_size_starts_over():
    pacer = TenantPacer(clock=lambda: 0.0)
    pacer.observe(pacer.on_send(READ_USERS, 1000.0), 200, headers(2, 1, 1001), 1000.05)
    pacer.observe(pacer.on_send(GLOBAL, 1000.1), 201, headers(2, 0, 1001), 1000.15)
    assert not pacer.separate and pacer.pacer_for(GLOBAL) is pacer.pacer_for(READ_USERS)
    assert pacer.delay_before_next(GLOBAL, 1000.15) > 0  # one bucket, and it is empty
    # The tenant changes plan: every family now reports 10. Not a reason to split.
    pacer.observe(pacer.on_send(READ_USERS, 1010.0), 200, headers(10, 9, 1011), 1010.05)
    pacer.observe(pacer.on_send(GLOBAL, 1010.1), 201, headers(10, 8, 1011), 1010.15)
    assert not pacer.separate


# --- simulation: Auth0's buckets, jittery latency, callers that never stop ------------------------


def simulate(
    buckets: dict[str, tuple[int, float]],
    route: dict[str, str],
    *,
    seconds: float = 60.0,
    callers: int = 8,
    latency: float = 0.15,
    seed: int = 7,
) -> tuple[Counter, Counter, Counter]:
    """`callers` per family, each sending again as soon as its answer is in; `route` maps a family
    to the server bucket it draws on. Returns (answered 2xx, 429s, allowance) by family/bucket."""
    rng = random.Random(seed)
    start = 1_700_000_000.37
    server = {name: TokenBucket(burst, rate, updated=start) for name, (burst, rate) in buckets.items()}
    pacer = TenantPacer(clock=lambda: now)
    now = start
    waiting = dict.fromkeys(route, callers)
    wake: dict[str, float] = {}
    ok, limited = Counter(), Counter()
    queue: list[tuple] = []
    order = 0
    families = list(route)
    while now < start + seconds:
        rng.shuffle(families)  # no family always first: callers queue for a slot in turn
        for family in families:
            while waiting[family]:
                delay = pacer.delay_before_next(family, now)
                if delay > 0:
                    at = now + max(delay, 0.001)
                    if family not in wake or wake[family] > at:
                        wake[family] = at
                        order += 1
                        heapq.heappush(queue, (at, order, "wake", family))
                    break
                slot = pacer.on_send(family, now)
                waiting[family] -= 1
                order += 1
                heapq.heappush(queue, (now + latency * rng.uniform(0.3, 1.0), order, "arrive", (family, slot)))
        now, _, kind, payload = heapq.heappop(queue)
        if kind == "wake":
            if wake.get(payload) == now:
                del wake[payload]
        elif kind == "arrive":
            family, slot = payload
            bucket = server[route[family]]
            status = 200 if bucket.take(now) else 429
            answer = {**bucket.headers(now), "Date": formatdate(math.floor(now), usegmt=True)}
            order += 1
            heapq.heappush(
                queue, (now + latency * rng.uniform(0.3, 1.0), order, "answer", (family, slot, status, answer))
            )
        else:
            family, slot, status, answer = payload
            pacer.observe(slot, status, answer, now)
            waiting[family] += 1
            (ok if status == 200 else limited)[family] += 1
    allowance = Counter({name: burst + rate * seconds for name, (burst, rate) in buckets.items()})
    return ok, limited, allowance


@pytest.mark.parametrize("latency,seed", [(0.05, 1), (0.15, 7), (0.3, 11)])
def test_essentials_reads_and_tickets_each_use_their_own_bucket_without_429(latency, seed):
    ok, limited, allowance = simulate(ESSENTIALS, {GLOBAL: GLOBAL, READ_USERS: READ_USERS}, latency=latency, seed=seed)
    assert sum(limited.values()) <= 2, limited  # the probes at most
    for family in (GLOBAL, READ_USERS):
        assert ok[family] >= 0.9 * allowance[family], (family, ok, allowance)


def test_free_plan_one_bucket_for_both_families_stays_one():
    ok, limited, allowance = simulate({"all": (2, 2.0)}, {GLOBAL: "all", READ_USERS: "all"})
    assert sum(limited.values()) / (sum(ok.values()) + sum(limited.values())) < 0.02, limited
    assert sum(ok.values()) >= 0.85 * allowance["all"]
    assert min(ok[GLOBAL], ok[READ_USERS]) >= 0.25 * allowance["all"], ok  # both get their turn


# --- against the stand-in's Essentials preset, on a real socket ---------------------------------


async def test_on_an_essentials_tenant_reads_do_not_wait_behind_tickets():
    """Tickets and user reads at once, as many as the pacer allows, until 20 tickets are made: no
    429, and both buckets end up drained (each was used at its own rate, neither waited for the
    other). With one model for both, the reads would be paced at the tickets' 2.5/s."""
    async with Auth0StandIn(users=load_sample_users(), client_secret=SECRET, plan="essentials") as standin:
        tenant = TenantConfig(
            domain=standin.domain, api_url=standin.base_url, client_id=standin.client_id, client_secret=SECRET
        )
        async with ManagementApi(tenant, name="t-essentials", max_retries=0) as api:
            tickets, reads = [], []

            async def make_tickets() -> None:
                while len(tickets) < 20:
                    tickets.append(await api.create_email_verification_ticket(user_id=ANA))

            async def read_users() -> None:
                while len(tickets) < 20:
                    reads.append(await api.users_by_email(ANA_EMAIL))

            await asyncio.wait_for(
                asyncio.gather(*(make_tickets() for _ in range(4)), *(read_users() for _ in range(4))), timeout=60
            )
        assert api.pacer.separate
        assert not [call for call in standin.calls if call[2] == 429]
        assert len(reads) > 40 + len(tickets)  # more than the tickets' bucket could have given both
        async with httpx.AsyncClient(
            base_url=standin.base_url, headers={"Authorization": f"Bearer {standin.issue_token()}"}
        ) as http:
            left = {
                family: int((await http.get(path)).headers["x-ratelimit-remaining"])
                for family, path in (
                    (READ_USERS, f"/api/v2/users-by-email?email={ANA_EMAIL}"),
                    (GLOBAL, "/api/v2/log-streams"),
                )
            }
        assert left[READ_USERS] < 10 and left[GLOBAL] < 5, left  # of 40 and 10: both used
