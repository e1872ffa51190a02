"""Management API budget: calls per email and time to the last email, against the floor.

    python bench/budget.py [--quick]     # about 4 min (quick: the 10/s tenant only, ~1 min)

On a real tenant the Management API budget, not CPU, decides how fast emails go out, and the
users search lags behind writes. The daemon (core 0, `python -m streamer run`) talks to the
Auth0 stand-in set up as such a tenant (streamer.devkit.auth0_standin.realistic_tenant): the
issue's 10 requests/s with a burst of 10, 50 ms per call, users search 3 s behind writes; and
the Free plan's 2 requests/s, burst 2, with the same latency and lag.

* signups: N new users are created in the stand-in and their `ss` events (dated 14 ms later)
  are posted at once in webhook batches of 50: N verification emails, each with a ticket.
  Floor: one ticket per email plus one users search per 50 users; its time is that many calls
  through the token bucket (the burst at once, then one per 1/rate s) plus one call's latency.
* welcome: N long-standing users (in the search index for long) verify their address now:
  the stand-in records the change (the index shows it 3 s later) and their `sv` events are
  posted in batches of 50: N welcome emails, no ticket. Floor: one search per 50 users.
* latency at low load: 50 signups/s, one event per request, 20 ms per call, the same search lag,
  no rate limit: accepted event → SMTP 250 (the in-process catcher's arrival time).

Calls are every /api/v2 request the stand-in saw from the first POST until the daemon is quiet
(the start-up token, scope and log-stream checks are made before, and the bucket is full again
when the burst starts). 429s are counted from the stand-in's answers. Timing figures depend on
the machine's load: the 2-core development machine is shared, so they move between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # this tree's streamer, whichever pip installed

from streamer.devkit.auth0_standin import realistic_tenant  # noqa: E402
from streamer.devkit.mailcatcher import MailCatcher  # noqa: E402

import harness as h  # noqa: E402
from harness import BENCH, Daemon  # noqa: E402

BATCH = 50
SEARCH_PER = 50
TENANTS = {  # name → (stand-in options, burst, rate)
    "10/s, burst 10": ({"rate_limit": (10, 10.0)}, 10, 10.0),
    "Free plan, 2/s, burst 2": ({"rate_limit": None, "plan": "free"}, 2, 2.0),
}
TARGETS = {"signups": (1.15, 0.85), "welcome": (0.10, 5.0)}
SECTION = "Management API budget (bench/budget.py)"


@dataclass
class Burst:
    scenario: str
    tenant: str
    emails: int
    calls: Counter
    too_many: int
    seconds: float
    floor_calls: int
    floor_seconds: float
    problems: Counter
    timeline: list[tuple[float, Counter]]  # (seconds after the first POST, calls so far by endpoint)

    @property
    def per_email(self) -> float:
        return sum(self.calls.values()) / self.emails

    @property
    def floor_per_email(self) -> float:
        return self.floor_calls / self.emails


def floor_seconds(calls: int, burst: int, rate: float, latency_s: float) -> float:
    """`calls` through a token bucket starting full: the burst at once, then one per 1/rate s."""
    return max(0, calls - burst) / rate + latency_s


def endpoint(method: str, path: str) -> str:
    parts = path.split("/")
    if len(parts) > 4 and parts[3] == "users":
        path = "/api/v2/users/{id}"
    return f"{method} {path}"


async def quiet(auth0, idle_s: float = 1.0, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while len(auth0.calls) != seen and time.monotonic() < deadline:
        seen = len(auth0.calls)
        await asyncio.sleep(idle_s)


async def burst(scenario: str, tenant: str, count: int, workdir: Path) -> Burst:
    options, bucket, rate = TENANTS[tenant]
    latency = 0.05
    async with realistic_tenant(latency_s=latency, **options) as auth0, MailCatcher() as catcher:
        kind = "ss" if scenario == "signups" else "sv"
        tag = f"{scenario[:3]}{int(rate)}"
        users = h.make_users(tag, count, verified=False, logins=1 if kind == "ss" else 7)
        if kind == "sv":  # long-standing users: in the index long before
            for user in users:
                user["created_at"] = user["updated_at"] = "2025-01-01T00:00:00.000Z"
                auth0.add_user(user, indexed=True)
        daemon = Daemon(workdir, auth0=auth0, smtp_port=catcher.port, rule_text=h.rules())
        await daemon.start()
        try:
            await quiet(auth0, idle_s=0.5)
            await asyncio.sleep(bucket / rate + 0.5)  # the bucket is full again
            first = len(auth0.calls)
            events = []
            now = h.iso_ms(datetime.now(UTC))
            for i, user in enumerate(users):
                if kind == "ss":
                    profile = auth0.add_user(user)  # a signup now: the index lags
                    events.append(h.make_event("ss", profile, h.log_id(7, i), h.signup_date(profile)))
                else:
                    stored = auth0.users[user["user_id"]]
                    stored["email_verified"], stored["updated_at"] = True, now
                    auth0.user_changed(user["user_id"])
                    events.append(h.make_event("sv", stored, h.log_id(8, i), now))
            started = time.time()
            timeline: list[tuple[float, Counter]] = []

            async def watch() -> None:
                while True:
                    timeline.append(
                        (
                            time.time() - started,
                            Counter(endpoint(m, p) for m, p, _ in auth0.calls[first:] if p.startswith("/api/v2")),
                        )
                    )
                    await asyncio.sleep(1.0)

            watcher = asyncio.create_task(watch())
            async with aiohttp.ClientSession() as session:
                for start in range(0, count, BATCH):
                    await daemon.post(session, events[start : start + BATCH])
            await catcher.wait_for(count, timeout=max(120, 3 * count / rate))
            last = max(m.received_at.timestamp() for m in catcher.messages)
            watcher.cancel()
            await quiet(auth0)
            calls = auth0.calls[first:]
        finally:
            await daemon.stop()
    searches = math.ceil(count / SEARCH_PER)
    floor_calls = count + searches if kind == "ss" else searches
    return Burst(
        scenario,
        tenant,
        len(catcher.messages),
        Counter(endpoint(m, p) for m, p, _ in calls if p.startswith("/api/v2")),
        sum(1 for _, _, status in calls if status == 429),
        last - started,
        floor_calls,
        floor_seconds(floor_calls, bucket, rate, latency),
        daemon.problems(),
        timeline,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def latency(count: int, rate: float, workdir: Path) -> tuple[list[float], Counter, int]:
    """Accepted event → SMTP 250 for signups at `rate`/s, one per request (20 ms per call, lag 3 s)."""
    async with realistic_tenant(latency_s=0.02, rate_limit=None) as auth0, MailCatcher() as catcher:
        daemon = Daemon(workdir, auth0=auth0, smtp_port=catcher.port, rule_text=h.rules())
        await daemon.start()
        accepted: dict[str, float] = {}
        users = h.make_users("lowload", count, verified=False, logins=1)
        first = len(auth0.calls)
        try:
            async with aiohttp.ClientSession() as session:

                async def one(i: int) -> None:
                    profile = auth0.add_user(users[i])
                    event = h.make_event("ss", profile, h.log_id(9, i), h.signup_date(profile))
                    accepted[profile["email"]] = await daemon.post(session, [event])

                loop = asyncio.get_running_loop()
                begin = loop.time() + 0.1
                tasks = []
                for i in range(count):
                    await asyncio.sleep(max(0.0, begin + i / rate - loop.time()))
                    tasks.append(asyncio.create_task(one(i)))
                await asyncio.gather(*tasks)
                await catcher.wait_for(count, timeout=60)
        finally:
            await daemon.stop()
        calls = auth0.calls[first:]
    spent = [m.received_at.timestamp() - accepted[m.rcpt_tos[0]] for m in catcher.messages if m.rcpt_tos[0] in accepted]
    return (
        spent,
        Counter(endpoint(m, p) for m, p, _ in calls if p.startswith("/api/v2")),
        sum(1 for _, _, s in calls if s == 429),
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(bursts: list[Burst], low: tuple[list[float], Counter, int] | None) -> tuple[list[str], list[str]]:
    """(table lines, detail lines) in Markdown."""
    table = [
        "| burst | tenant | calls/email (floor) | time to last email (floor) | speed vs floor | 429 | target "
        "| result |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    details = []
    for b in bursts:
        speed = b.floor_seconds / b.seconds if b.seconds > 0 else 0.0
        max_calls, goal = TARGETS[b.scenario]
        if b.scenario == "signups":
            target = f"≤ {max_calls} calls/email, ≥ {goal:.0%} of floor speed, no 429"
            ok = b.per_email <= max_calls and speed >= goal and b.too_many == 0
        else:
            target = f"≤ {max_calls} calls/email, last email ≤ {goal:.0f} s, no 429"
            ok = b.per_email <= max_calls and b.seconds <= goal and b.too_many == 0
        table.append(
            f"| {b.emails} {b.scenario} | {b.tenant} | {b.per_email:.3f} ({b.floor_per_email:.3f}) | "
            f"{b.seconds:.1f} s ({b.floor_seconds:.1f} s) | {speed:.0%} | {b.too_many} | {target} | "
            f"**{verdict(ok)}** |"
        )
        breakdown = ", ".join(f"{name}: {n}" for name, n in b.calls.most_common())
        problems = ", ".join(f"{name} ×{n}" for name, n in b.problems.most_common()) or "none"
        details.append(
            f"- {b.scenario} on {b.tenant}: {b.emails} emails, {sum(b.calls.values())} /api/v2 calls "
            f"({breakdown}); daemon warnings: {problems}"
        )
        if b.scenario == "signups":
            marks = [(t, c) for t, c in b.timeline if t <= 6]
            details.append(
                "  - calls so far, by second after the first POST: "
                + "; ".join(
                    f"{t:.0f} s: "
                    + ", ".join(f"{n} {name.split()[-1].rsplit('/', 1)[-1]}" for name, n in sorted(c.items()))
                    for t, c in marks
                )
            )
    if low is not None:
        spent, calls, too_many = low
        p50, p99 = percentile(spent, 50), percentile(spent, 99)
        table.append(
            f"| {len(spent)} signups at 50/s, one per request | no limit, 20 ms per call, lag 3 s | "
            f"{sum(calls.values()) / max(1, len(spent)):.2f} | p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms | | {too_many} | p99 ≤ 1 s | **{verdict(p99 <= 1.0)}** |"
        )
        breakdown = ", ".join(f"{name}: {n}" for name, n in calls.most_common())
        details.append(
            f"- low load: {len(spent)} emails, max {max(spent) * 1000:.0f} ms; calls: {breakdown} (spare "
            "budget buys latency: a new user is read by id instead of waiting for the index)"
        )
    return table, details


async def main(quick: bool) -> None:
    h.pin_self_to_helper_core()
    workdir = Path(tempfile.mkdtemp(prefix="streamer-budget-"))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    bursts: list[Burst] = []
    try:
        for tenant in list(TENANTS)[:1] if quick else TENANTS:
            for scenario in ("signups", "welcome"):
                result = await burst(scenario, tenant, 200, workdir / f"{scenario}-{TENANTS[tenant][2]:.0f}")
                print(
                    f"{scenario} on {tenant}: {result.per_email:.3f} calls/email "
                    f"(floor {result.floor_per_email:.3f}), "
                    f"{result.seconds:.1f} s (floor {result.floor_seconds:.1f} s), 429: {result.too_many}",
                    flush=True,
                )
                bursts.append(result)
        low = await latency(250 if quick else 1000, 50.0, workdir / "latency")
        print(f"low load: p99 {percentile(low[0], 99) * 1000:.0f} ms", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table, details = report(bursts, low)
    elapsed = time.monotonic() - started
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    text = [
        f"`python bench/budget.py{' --quick' if quick else ''}`, {elapsed:.0f} s, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {h.git_commit()}; load average "
        f"{' '.join(load_before)} at start, {' '.join(load_after)} at end (a shared 2-core machine: the times "
        "move with other work; the call counts do not).",
        "",
        *table,
        "",
        *details,
        "",
        *[line.strip() for line in __doc__.split("\n\n", 2)[2].splitlines()],
    ]
    print("\n".join(table))
    h.write_section(BENCH / "RESULTS.md", SECTION, "\n".join(text))
    print(f"wrote the section to {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 10/s tenant only, 250 events at low load")
    asyncio.run(main(parser.parse_args().quick))
