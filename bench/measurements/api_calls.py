"""Measurement 3: Management API calls per verification email, against one ticket per email,
on a stand-in that behaves like a real tenant."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp

from streamer.devkit.auth0_standin import Auth0StandIn, realistic_tenant

import harness as h
from harness import Daemon
from report import Report, Row, note_problems, verdict
from settings import POOL_SIZE, Run, Settings

SECTION = "3. Management API calls per verification email"
METHOD = """\
3. Management API calls per verification email: distinct unverified users sign up (`ss` dated
   14 ms after the user's creation, as in the test fixtures), posted in webhook batches of 50;
   every /api/v2 request seen by the stand-in from before the daemon starts is counted (its start-up
   token and scope check, the log-stream check included), with and without the rule's `mark`.
   Floor: one ticket per email (plus one PATCH per email with `mark`)."""
SIGNUP_BATCH = 50


def endpoint(method: str, path: str) -> str:
    parts = path.split("/")
    if len(parts) > 4 and parts[3] == "users":
        path = "/api/v2/users/{id}"
    return f"{method} {path}"


async def api_calls(
    count: int, sink_port: int, workdir: Path, *, mark: bool, signup_delay_ms: int = 14
) -> tuple[int, Counter[str], int, Counter[str]]:
    """(emails sent, /api/v2 calls by endpoint, token requests, daemon warnings) for `count`
    signups whose `ss` entries are dated `signup_delay_ms` after the user's creation."""
    users = h.make_users(f"signup{int(mark)}d{signup_delay_ms}", count, verified=False, logins=1)
    async with realistic_tenant(rate_limit=None, plan="enterprise") as auth0:  # see the docstring, 3.
        profiles = [auth0.add_user(user) for user in users]
        events = [
            h.make_event("ss", p, h.log_id(3 + mark, i), h.signup_date(p, signup_delay_ms))
            for i, p in enumerate(profiles)
        ]
        daemon = Daemon(workdir, auth0=auth0, smtp_port=sink_port, rule_text=h.rules(mark=mark), pool_size=POOL_SIZE)
        first_call = len(auth0.calls)  # from before start: the start-up token and scope check count too
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                for start in range(0, count, SIGNUP_BATCH):
                    await daemon.post(session, events[start : start + SIGNUP_BATCH])
            await daemon.wait_sent(count, timeout=120)
            await quiet(auth0)
            sent = await daemon.count_sent()
        finally:
            await daemon.stop()
        calls = auth0.calls[first_call:]
    by_endpoint = Counter(endpoint(method, path) for method, path, _ in calls if path.startswith("/api/v2"))
    tokens = sum(1 for _, path, _ in calls if path == "/oauth/token")
    return sent, by_endpoint, tokens, daemon.problems()


async def quiet(auth0: Auth0StandIn, idle_s: float = 0.5, timeout: float = 10) -> None:
    """Wait until the stand-in saw no new call for `idle_s` (marks are written after the send)."""
    deadline = time.monotonic() + timeout
    seen = -1
    while len(auth0.calls) != seen and time.monotonic() < deadline:
        seen = len(auth0.calls)
        await asyncio.sleep(idle_s)


async def measure(run: Run) -> None:
    settings, report, sink_port, workdir = run.settings, run.report, run.sink_port, run.workdir
    section = SECTION
    print(f"\n{section}", flush=True)
    for mark in (False, True):
        sent, by_endpoint, tokens, problems = await api_calls(
            settings.signups, sink_port, workdir / f"api-mark{int(mark)}", mark=mark
        )
        per_email = sum(by_endpoint.values()) / sent
        floor = 2.0 if mark else 1.0
        label = "with `mark`" if mark else "without mark"
        note_problems(report, section, label, problems)
        report.rows.append(
            Row(
                f"3. Mgmt API calls/email, {label}",
                f"{per_email:.2f}",
                f"{floor:.2f} (ticket{' + PATCH' if mark else ''} per email)",
                f"{per_email / floor:.2f}×",
                "≤ 1.2" if not mark else "report",
                verdict(per_email <= 1.2) if not mark else "—",
            )
        )
        breakdown = ", ".join(f"{name}: {n}" for name, n in by_endpoint.most_common())
        report.note(
            section,
            f"{label}: {sent} emails, {sum(by_endpoint.values())} /api/v2 calls ({breakdown}); "
            f"plus {tokens} POST /oauth/token",
        )
        if mark:
            report.note(
                section,
                "with `mark`: the rule writes app_metadata back once per email after the send, "
                "so one PATCH /api/v2/users/{id} per email is inherent (the Management API has no bulk "
                "metadata update); the figure to watch is the excess over 2.0",
            )
        if not mark and per_email > 1.2:
            await diagnose_api_calls(settings, report, section, sink_port, workdir)


async def diagnose_api_calls(settings: Settings, report: Report, section: str, sink_port: int, workdir: Path) -> None:
    """The same signups with the log entry dated exactly at the user's creation: if the extra calls
    vanish, the profile freshness check (event date vs updated_at) is what causes them."""
    count = min(settings.signups, 100)
    sent, by_endpoint, _, _ = await api_calls(count, sink_port, workdir / "api-same-ms", mark=False, signup_delay_ms=0)
    breakdown = ", ".join(f"{name}: {n}" for name, n in by_endpoint.most_common())
    report.note(
        section,
        f"diagnosis, `ss` dated at the very millisecond of the user's creation instead of 14 ms "
        f"later: {sum(by_endpoint.values()) / sent:.2f} calls/email ({breakdown})",
    )
