"""Measurement 4: latency from the webhook's 200 to the SMTP 250 at a low steady rate, against
the same open loop doing only a ticket request and a raw send."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import aiohttp
import aiosmtplib

from streamer.devkit.auth0_standin import realistic_tenant
from streamer.devkit.mailcatcher import MailCatcher

import harness as h
from harness import SERVER_CORE, Daemon
from report import Row, note_problems, verdict
from settings import POOL_SIZE, Run

SECTION = "4. Latency, webhook 200 → SMTP 250"
METHOD = """\
4. Latency from the webhook's 200 to the SMTP 250 (the in-process aiosmtpd catcher's arrival
   time) for verification emails with tickets, open loop at 50 events/s, one event per request,
   each user created in the stand-in just before its event (not yet in the search index).
   Floor: the same open loop doing only the unavoidable work per email (a ticket request to the
   stand-in, then one send of pre-built bytes on a persistent SMTP connection)."""
LATENCY_RATE = 50.0
LATENCY_AUTH0_S = 0.02  # per Management API call in the latency runs (issue 9)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def open_loop(count: int, rate: float, one) -> None:
    """Start `one(i)` at t0 + i/rate whatever the previous ones are doing; wait for all."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


def arrival_latencies(catcher: MailCatcher, accepted: dict[str, float]) -> list[float]:
    return [m.received_at.timestamp() - accepted[m.rcpt_tos[0]] for m in catcher.messages if m.rcpt_tos[0] in accepted]


async def streamer_latency(count: int, workdir: Path) -> tuple[list[float], h.CoreWatch, Counter[str]]:
    users = h.make_users("latency", count, verified=False, logins=1)
    async with realistic_tenant(latency_s=LATENCY_AUTH0_S, rate_limit=None) as auth0, MailCatcher() as catcher:
        daemon = Daemon(workdir, auth0=auth0, smtp_port=catcher.port, rule_text=h.rules(), pool_size=POOL_SIZE)
        await daemon.start()
        accepted: dict[str, float] = {}
        try:
            async with aiohttp.ClientSession() as session:

                async def one(i: int) -> None:
                    profile = auth0.add_user(users[i])  # a signup now: not in the search index yet
                    event = h.make_event("ss", profile, h.log_id(5, i), h.signup_date(profile))
                    accepted[profile["email"]] = await daemon.post(session, [event])

                with h.CoreWatch(SERVER_CORE, daemon.pid) as core:
                    await open_loop(count, LATENCY_RATE, one)
                    await catcher.wait_for(count, timeout=60)
        finally:
            await daemon.stop()
        return arrival_latencies(catcher, accepted), core, daemon.problems()


async def floor_latency(count: int, message: bytes) -> list[float]:
    """Per event: POST a ticket to the stand-in, then send pre-built bytes on a pooled connection."""
    async with realistic_tenant(latency_s=LATENCY_AUTH0_S, rate_limit=None) as auth0, MailCatcher() as catcher:
        profiles = [auth0.add_user(u) for u in h.make_users("floor", count, verified=False, logins=1)]
        token = auth0.issue_token()
        accepted: dict[str, float] = {}
        pool: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(POOL_SIZE):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.port, start_tls=False, local_hostname="bench")
            await client.connect()
            pool.put_nowait(client)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

            async def one(i: int) -> None:
                accepted[profiles[i]["email"]] = time.time()
                async with session.post(
                    f"{auth0.base_url}/api/v2/tickets/email-verification",
                    json={"user_id": profiles[i]["user_id"], "result_url": "https://app.acme.test/verified"},
                ) as r:
                    await r.read()
                client = await pool.get()
                try:
                    await client.sendmail("no-reply@acme.test", [profiles[i]["email"]], message)
                finally:
                    pool.put_nowait(client)

            await open_loop(count, LATENCY_RATE, one)
        await catcher.wait_for(count, timeout=30)
        while not pool.empty():
            await pool.get_nowait().quit()
        return arrival_latencies(catcher, accepted)


async def measure(run: Run) -> None:
    """Needs the message measurement 2 left (run.message_file) for its floor."""
    settings, report, workdir, message = run.settings, run.report, run.workdir, run.message_file.read_bytes()
    section = SECTION
    print(f"\n{section}", flush=True)
    count = int(settings.latency_s * LATENCY_RATE)
    ours, core, problems = await streamer_latency(count, workdir / "latency")
    note_problems(report, section, "latency run", problems)
    floor = await floor_latency(int(settings.floor_s * LATENCY_RATE), message)
    p50, p99, f50, f99 = (percentile(ours, 50), percentile(ours, 99), percentile(floor, 50), percentile(floor, 99))
    report.rows.append(
        Row(
            "4. latency p50 / p99",
            f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms",
            f"{f50 * 1000:.0f} / {f99 * 1000:.0f} ms (ticket + raw send)",
            f"p99 {p99 / f99:.1f}×",
            "p99 ≤ 1 s",
            verdict(p99 <= 1.0),
        )
    )
    report.note(
        section,
        f"streamer: {len(ours)} verification emails at {LATENCY_RATE:.0f}/s, one event per POST; "
        f"p50 {p50 * 1000:.0f} ms, p90 {percentile(ours, 90) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {max(ours) * 1000:.0f} ms (the first email also pays for the token, the first "
        f"connections and template compilation: {ours[0] * 1000:.0f} ms), mean "
        f"{statistics.fmean(ours) * 1000:.0f} ms; core 0: daemon {core.ours:.0%}, other processes "
        f"{core.foreign:.0%}",
    )
    report.note(
        section,
        f"floor: {len(floor)} emails (ticket + raw send from core 1); p50 {f50 * 1000:.0f} ms, p99 {f99 * 1000:.0f} ms",
    )
