"""Memory soak: the daemon's resident memory under steady mixed traffic for ten minutes or more.

    python bench/soak.py [--minutes 12] [--warmup 2] [--rate 200]

The daemon (core 0, `python -m streamer run`, SQLite store) gets `rate` Auth0 log events per
second for `minutes`, posted as a log stream would, in batches of 20 every 0.1 s: per batch 2
signups (new users: verification email with a ticket), 2 verifications of users who signed up
at least 5 s before (welcome email), 14 logins of 2,000 long-standing verified users (the rules
evaluate them, no email), 2 logouts (no rule listens: dropped by the inbox). The Auth0 stand-in
answers in 20 ms and its users search lags 3 s behind writes; it has no rate limit (a limited
tenant could not take 20 tickets/s). Emails go to an in-process SMTP sink that counts and drops.

The daemon's RSS (/proc/PID/status VmRSS) is sampled every second. After the warm-up, RSS must
stay within ±10% of its post-warm-up median; the slope is a least-squares fit over the same
samples. Results go into bench/RESULTS.md (this section only).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiosmtpd.controller import Controller

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # this tree's streamer, whichever pip installed

from streamer.devkit.auth0_standin import realistic_tenant  # noqa: E402

import harness as h  # noqa: E402
from harness import BENCH, Daemon  # noqa: E402

SECTION = "Memory soak (bench/soak.py)"
BATCH_EVERY_S = 0.1
#: Every cache and table the daemon keeps in memory, and what bounds it.
BOUNDED = [
    "Profiles (ManagementApi `_cache` and `_reads`): LRU of 4,096 users each per tenant, entries expire after 30 s",
    "Facts events proved (`KnownFacts`): LRU of 10,000 users per tenant, none kept over 2 min",
    "Index lag observations (`IndexLag`): last 256, none older than 10 min",
    "Events waiting for the users search (Processor `_waiting`): each at most 30 s after its date, so at most "
    "30 s of one tenant's signups; their users' later events wait with them",
    "Rate-limit pacer: 32 rate samples, 120 anchors (60 s), one record per call in flight",
    "Concurrent profile fetches (`_pending`): one future per user being fetched, removed when settled",
    "functools.lru_cache: locale chains 1,024, parsed mailboxes 4,096, SMTP addresses 4,096, secret-key checks "
    "for log redaction 2,048, date filters 2 × 256, template lookups 16, compiled templates 4,096, the daemon's "
    "locale resolver 4,096",
    "Password-reset rate limiter: `max_keys` addresses/IPs, each a deque of `limit` hits (not exercised here)",
    "Jinja2 template cache: 2,000 templates",
    "SNS MessageIds taken (`RecentMessages`, replay check): none kept over 70 min, at most 100,000 (not exercised "
    "here)",
    "Events stored but not yet claimed, kept parsed (SQLite `_fresh`): at most 5,000 events; beyond, read from "
    "the file",
    "Young GC generation: collected every 100,000 new containers (gc_tuning.YOUNG_THRESHOLD)",
]


class Sink:
    """An SMTP server that accepts everything, counts it, and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        self.count += 1
        return "250 OK"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (KiB) over time, in MiB per minute."""
    xs, ys = [t for t, _ in samples], [v for _, v in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return (cov / var) * 60 / 1024 if var else 0.0


async def soak(minutes: float, warmup_min: float, rate: float, workdir: Path) -> dict:
    per_batch = max(10, round(rate * BATCH_EVERY_S))
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=h.free_port())
    controller.start()
    samples: list[tuple[float, int]] = []
    posted = 0
    try:
        async with realistic_tenant(latency_s=0.02, rate_limit=None) as auth0:
            regulars = h.make_users("regular", 2000, verified=True, logins=5)
            for user in regulars:
                auth0.add_user(user, indexed=True)
            daemon = Daemon(workdir, auth0=auth0, smtp_port=controller.port, rule_text=h.rules())
            await daemon.start()
            signed_up: list[tuple[float, dict]] = []
            number = 0
            start = time.monotonic()
            end = start + minutes * 60
            try:
                async with aiohttp.ClientSession() as session:

                    async def sample() -> None:
                        while time.monotonic() < end:
                            samples.append((time.monotonic() - start, rss_kib(daemon.pid)))
                            await asyncio.sleep(1.0)

                    sampler = asyncio.create_task(sample())
                    tick = start
                    while time.monotonic() < end:
                        now_iso = h.iso_ms(datetime.now(UTC))
                        events = []
                        for _ in range(2):
                            profile = auth0.add_user(
                                {"email": f"soak.{number}@example.com", "user_metadata": {"locale": "en"}}
                            )
                            events.append(h.make_event("ss", profile, h.log_id(11, number), h.signup_date(profile)))
                            signed_up.append((time.monotonic(), profile))
                            number += 1
                        for _ in range(2):
                            if signed_up and time.monotonic() - signed_up[0][0] >= 5:
                                _, profile = signed_up.pop(0)
                                stored = auth0.users[profile["user_id"]]
                                stored["email_verified"], stored["updated_at"] = True, now_iso
                                auth0.user_changed(profile["user_id"])
                                events.append(h.make_event("sv", stored, h.log_id(11, number), now_iso))
                                number += 1
                        while len(events) < per_batch - 2:
                            user = regulars[number % len(regulars)]
                            events.append(h.make_event("s", user, h.log_id(11, number), now_iso))
                            number += 1
                        for _ in range(2):
                            event = h.make_event("s", regulars[number % len(regulars)], h.log_id(11, number), now_iso)
                            event["type"] = "slo"
                            events.append(event)
                            number += 1
                        await daemon.post(session, events)
                        posted += len(events)
                        tick += BATCH_EVERY_S
                        await asyncio.sleep(max(0.0, tick - time.monotonic()))
                    await sampler
            finally:
                await daemon.stop()
            problems = daemon.problems()
            seconds = time.monotonic() - start
    finally:
        controller.stop()
    after = [(t, v) for t, v in samples if t >= warmup_min * 60]
    values = [v for _, v in after]
    median = statistics.median(values)
    return {
        "seconds": seconds,
        "posted": posted,
        "sent": sink.count,
        "samples": samples,
        "after": after,
        "median": median,
        "low": min(values) / median - 1,
        "high": max(values) / median - 1,
        "slope": slope_per_minute(after),
        "problems": problems,
        "rate": posted / seconds,
    }


async def main(minutes: float, warmup: float, rate: float) -> None:
    h.pin_self_to_helper_core()
    workdir = Path(tempfile.mkdtemp(prefix="streamer-soak-"))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        r = await soak(minutes, warmup, rate, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    ok = -0.10 <= r["low"] and r["high"] <= 0.10
    by_minute = [f"{int(t // 60)} min {v / 1024:.1f}" for t, v in r["samples"] if int(t) % 60 == 0]
    problems = ", ".join(f"{name} ×{n}" for name, n in r["problems"].most_common()) or "none"
    text = [
        f"`python bench/soak.py --minutes {minutes:g} --warmup {warmup:g} --rate {rate:g}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {h.git_commit()}; load average {' '.join(load_before)} at "
        f"start, {' '.join(load_after)} at end (shared 2-core machine).",
        "",
        "| measurement | result | target | verdict |",
        "|---|---:|---|---|",
        f"| RSS after {warmup:g} min warm-up, min / max vs median ({r['median'] / 1024:.1f} MiB) | "
        f"{r['low']:+.1%} / {r['high']:+.1%} | within ±10% | **{'PASS' if ok else 'MISS'}** |",
        f"| RSS slope after warm-up | {r['slope']:+.3f} MiB/min | report | — |",
        "",
        f"- {r['posted']:,} events posted in {r['seconds']:.0f} s ({r['rate']:.0f}/s), {r['sent']:,} emails sent; "
        f"{len(r['samples'])} RSS samples; daemon warnings: {problems}",
        f"- RSS by minute (MiB): {', '.join(by_minute)}",
        "- bounded caches and tables (what keeps each from growing):",
        *[f"  - {item}" for item in BOUNDED],
        "",
        *[line.strip() for line in __doc__.split("\n\n", 2)[2].splitlines()],
    ]
    print("\n".join(text[2:6]))
    h.write_section(BENCH / "RESULTS.md", SECTION, "\n".join(text))
    print(f"wrote the section to {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.warmup, args.rate))
