"""streamer benchmark: four figures, each against a ceiling (or floor) measured in the same run.

    python bench/run.py [--quick]        # ≤ 6 min (quick ≤ 90 s); writes bench/RESULTS.md

What is under test always runs on core 0 (`taskset -c 0`): the real daemon (`python -m streamer
run`, a subprocess with its own SQLite store) or the ceiling script standing in for it. Core 1
runs the rest: this orchestrator (Auth0 stand-in, mail catcher, low-rate clients), wrk,
postfix's smtp-sink, `streamer replay`. Only loopback traffic. The machine may be shared: each
measurement records how much of core 0 other processes took (from /proc/stat minus our own CPU
time), rounds where that exceeds 15% are set aside when a cleaner round exists, and CPU-normalised
ratios (work per CPU-second of each side) are printed as cross-checks that interference cannot bias.

1. Durable ingest, events/s through `POST /logs/acme` for 1, 10 and 100 events per request
   (JSONARRAY of realistic `ss` events, {log_id, data} envelopes, every log_id fresh), driven by
   wrk with 32 connections (one thread, core 1). Ceiling: bench/bare_server.py (aiohttp that
   reads + json-parses the same bodies and answers 200), measured in rounds alternating with
   streamer's (median of the per-round ratios; the daemon is SIGSTOPped while the bare server
   runs). The daemon is complete during the measurement: its processor evaluates the shipped
   verification + welcome rules on every event, with profiles from the stand-in, but the users
   are verified returning users so no email becomes due: ingest shares the core with rule
   processing, not with SMTP delivery. While batches wait for their commit the processor
   evaluates at most 10,000 events/s (streamer/processor.py): at one event per request it keeps
   up; at the larger batch sizes it falls behind and works off the backlog afterwards, at the
   rate reported as "settled alone". Why it matters: a 200 is Auth0's promise that the batch is
   ours, so this is the rate a log stream can reach. py-spy counts a thread waiting for the GIL
   as busy: the profile's shares of the SQLite thread are upper bounds; the per-thread CPU split
   comes from /proc.
2. Delivery, emails/s into smtp-sink. N `sv` events (verified users → welcome email, no ticket)
   are stored with `streamer replay`, then `streamer run` starts; the rate is N over the span from
   the first email queued to the last one sent (outbox timestamps, read from SQLite afterwards),
   so it covers the processor and the dispatcher sharing the core, not process start-up.
   Ceiling: bench/raw_smtp.py, pooled raw aiosmtplib (same pool size) sending N copies of the
   very bytes streamer produced for one of those emails, right after each streamer round (median
   of the per-round ratios), reported without a target. The target (≥ 70%, issue 9) is against a
   second yardstick: bench/render_smtp.py renders and builds each of the same N emails with
   streamer's renderer and sends it raw, the work no design can skip per email and nothing
   else. Ingest's targets are regression floors against the bare-parse ceiling: ≥ 30% at 1 and
   10 events per request, ≥ 25% at 100. Below target, the run is repeated under py-spy (sampling from
   core 1) and the profile is written to RESULTS.md; the CPU time per email of each side, and
   of streamer's render + build measured in-process, say where the difference goes.
   Sections 1 and 2 measure CPU: their Auth0 stand-in is the ideal one (no lag, no latency, no
   limit). Sections 3 and 4 talk to it as to a real tenant (streamer.devkit.auth0_standin.
   realistic_tenant): users search 3 s behind writes, 50 ms (3.) or 20 ms (4.) per call, and
   Enterprise limits (3.) or none (4.: 50 signups/s need 100 calls/s); bench/budget.py measures
   the budget on limited tenants.
3. Management API calls per verification email: distinct unverified users sign up (`ss` dated
   14 ms after the user's creation, as in the test fixtures), posted in webhook batches of 50;
   every /api/v2 request seen by the stand-in from before the daemon starts is counted (its start-up
   token and scope check, the log-stream check included), with and without the rule's `mark`.
   Floor: one ticket per email (plus one PATCH per email with `mark`).
4. Latency from the webhook's 200 to the SMTP 250 (the in-process aiosmtpd catcher's arrival
   time) for verification emails with tickets, open loop at 50 events/s, one event per request,
   each user created in the stand-in just before its event (not yet in the search index).
   Floor: the same open loop doing only the unavoidable work per email (a ticket request to the
   stand-in, then one send of pre-built bytes on a persistent SMTP connection).
5. DKIM signing: the delivery of 2, without and with a 2048-bit DKIM key (dkimpy), in alternating
   rounds; ceiling: the unsigned run. Also the CPU of one signature in-process, dkimpy's and
   OpenSSL's (what a C signer, e.g. the relay's, costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiosmtplib

import harness as h
from harness import BENCH, HELPER_CORE, PYTHON, SERVER_CORE, Daemon, Service

from streamer.devkit.auth0_standin import Auth0StandIn, realistic_tenant  # noqa: E402
from streamer.devkit.mailcatcher import MailCatcher  # noqa: E402
from streamer.store.sqlite import INBOX_PENDING  # noqa: E402

POOL_SIZE = 8                    # SMTP connections and dispatcher workers, in streamer and in the ceiling
INGEST_BATCHES = (1, 10, 100)
WRK_CONNECTIONS = 32
BODY_VARIANTS = 20               # pre-generated bodies per batch size, rotated by wrk
INGEST_USERS = 1000
OLD_DATE = "2026-01-01T00:00:00.000Z"  # before the users' last update: cached profiles stay usable
LOGID_MARKER = "@@LOGID@@"
SIGNUP_BATCH = 50
LATENCY_RATE = 50.0
LATENCY_AUTH0_S = 0.02           # per Management API call in the latency runs (issue 9)
#: A round in which other processes took more of core 0 is set aside when a cleaner round exists.
DISTURBED = 0.15


@dataclass(frozen=True)
class Settings:
    ingest_warmup_s: int
    ingest_s: int
    ingest_rounds: int
    drain_s: float
    delivery_emails: int
    delivery_rounds: int
    signups: int
    latency_s: float
    floor_s: float
    profile: bool


FULL = Settings(ingest_warmup_s=2, ingest_s=5, ingest_rounds=3, drain_s=3,
                delivery_emails=3000, delivery_rounds=3, signups=500, latency_s=20, floor_s=5, profile=True)
QUICK = Settings(ingest_warmup_s=1, ingest_s=3, ingest_rounds=1, drain_s=1.5,
                 delivery_emails=1000, delivery_rounds=1, signups=200, latency_s=8, floor_s=2, profile=False)


@dataclass
class Row:
    name: str
    figure: str
    ceiling: str
    ratio: str
    target: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        print(f"  {text}", flush=True)


def note_problems(report: Report, section: str, label: str, problems: Counter[str]) -> None:
    """Warnings/errors the daemon logged during a measurement: a figure is only as good as its run."""
    if problems:
        listed = ", ".join(f"{name} ×{count}" for name, count in problems.most_common(6))
        report.note(section, f"WARNING {label}: the daemon logged {listed}")


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


# --- 1. ingest ---------------------------------------------------------------------------------


@dataclass
class WrkResult:
    events_per_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_busy: float       # share of core 0 the server used
    main_thread: float       # of which its main thread (event loop); the rest: other threads (SQLite)
    foreign_load: float      # share of core 0 used by processes that are not ours
    softirq: float           # share of core 0 in softirq (loopback TCP)
    generator_busy: float    # share of core 1 wrk used
    helper_core_busy: float  # share of core 1 used by anything (wrk, stand-in, other processes)


@dataclass
class IngestBatch:
    batch: int
    rounds: list[tuple[WrkResult, WrkResult]]   # (bare, streamer), run back to back
    stored: int
    pending: int
    drain_rate: float | None                    # processor alone, after the load stopped (None: no backlog)
    drain_cpu_us: float | None                  # daemon CPU per event settled by the processor alone
    problems: Counter[str]                      # warnings/errors in the daemon's log

    @property
    def clean(self) -> list[tuple[WrkResult, WrkResult]]:
        """Rounds other processes did not disturb (all of them if none is clean)."""
        return [(b, s) for b, s in self.rounds if max(b.foreign_load, s.foreign_load) <= DISTURBED] or self.rounds

    @property
    def bare(self) -> float:
        return statistics.median(b.events_per_s for b, _ in self.clean)

    @property
    def streamer(self) -> float:
        return statistics.median(s.events_per_s for _, s in self.clean)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: each pair ran back to back, under the same background load."""
        return statistics.median(s.events_per_s / b.events_per_s for b, s in self.clean)


def write_bodies(path: Path, batch: int, users: list[dict]) -> None:
    """BODY_VARIANTS JSONARRAY bodies, one per line, log_ids left as markers for wrk to fill."""
    lines = []
    for variant in range(BODY_VARIANTS):
        chosen = [users[(variant * batch + i) % len(users)] for i in range(batch)]
        events = [h.make_event("ss", user, LOGID_MARKER, OLD_DATE) for user in chosen]
        lines.append(json.dumps([{"log_id": LOGID_MARKER, "data": e} for e in events], separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")


_wrk_runs = 0


async def run_wrk(url: str, bodies: Path, batch: int, seconds: float, server_pid: int) -> WrkResult:
    global _wrk_runs
    _wrk_runs += 1
    run_id = f"{int(time.time()) % 10**8:08d}{_wrk_runs:02d}"  # with the thread number: unique log_ids
    command = h.pinned(HELPER_CORE, "wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s",
                       "-s", str(BENCH / "wrk_logs.lua"), f"{url}/logs/acme", "--",
                       str(bodies), run_id, h.WEBHOOK_TOKEN, "3")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with h.CoreWatch(SERVER_CORE, server_pid) as core, h.CoreWatch(HELPER_CORE) as helper:
        out = await h.run_command(command, timeout=seconds + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    values = {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}
    duration = values["duration_us"] / 1e6
    errors = values["status_errors"] + values["socket_errors"]
    return WrkResult(events_per_s=(values["requests"] - errors) * batch / duration, errors=errors,
                     p50_ms=values["p50_us"] / 1000, p99_ms=values["p99_us"] / 1000, server_busy=core.ours,
                     main_thread=core.main_thread, foreign_load=core.foreign, softirq=core.softirq,
                     generator_busy=wrk_cpu / duration, helper_core_busy=helper.busy)


async def processor_rate(daemon: Daemon, seconds: float) -> tuple[float, float] | tuple[None, None]:
    """(events/s, daemon CPU µs per event) the processor settles alone once the webhook load has
    stopped (rules evaluated, no email due); (None, None) when it had no backlog to work on."""
    count_done = f"SELECT count(*) - ({INBOX_PENDING}) FROM seen"
    if daemon.query(INBOX_PENDING)[0] < 1000:
        return None, None
    before, started = daemon.query(count_done)[0], time.monotonic()
    with h.CoreWatch(SERVER_CORE, daemon.pid) as core:
        await asyncio.sleep(seconds)
    settled = daemon.query(count_done)[0] - before
    elapsed = time.monotonic() - started
    return settled / elapsed, (core.ours * elapsed / settled * 1e6 if settled else float("nan"))


async def ingest_batch(settings: Settings, batch: int, bodies: Path, bare: Service, bare_url: str,
                       auth0: Auth0StandIn, sink_port: int, workdir: Path) -> IngestBatch:
    """One batch size: a fresh store, warm-ups, then bare/streamer rounds back to back (the daemon
    frozen while the bare server is measured)."""
    daemon = Daemon(workdir / f"ingest-{batch}", auth0=auth0, smtp_port=sink_port, rule_text=h.rules())
    await daemon.start()
    try:
        with daemon.paused():
            await run_wrk(bare_url, bodies, batch, settings.ingest_warmup_s, bare.pid)
        await run_wrk(daemon.url, bodies, batch, settings.ingest_warmup_s, daemon.pid)
        rounds = []
        for _ in range(settings.ingest_rounds):
            with daemon.paused():  # its processor may still be working off the last round's events
                ceiling = await run_wrk(bare_url, bodies, batch, settings.ingest_s, bare.pid)
            rounds.append((ceiling, await run_wrk(daemon.url, bodies, batch, settings.ingest_s, daemon.pid)))
        stored, pending = daemon.query(f"SELECT count(*), ({INBOX_PENDING}) FROM seen")
        drain_rate, drain_cpu_us = await processor_rate(daemon, settings.drain_s)
        if daemon.query("SELECT count(*) FROM outbox")[0]:
            raise RuntimeError("the ingest run queued emails; its users should match no rule")
    finally:
        await daemon.stop()
    return IngestBatch(batch, rounds, stored, pending, drain_rate, drain_cpu_us, daemon.problems())


async def measure_ingest(settings: Settings, report: Report, sink_port: int, workdir: Path) -> None:
    section = "1. Durable ingest"
    print(f"\n{section}", flush=True)
    users = h.make_users("ingest", INGEST_USERS, verified=True, logins=5)
    port = h.free_port()
    bare = Service("bare aiohttp", h.pinned(SERVER_CORE, PYTHON, str(BENCH / "bare_server.py"), "--port", str(port)),
                   workdir / "bare.log")
    await bare.start(ready_port=port)
    missed = False
    try:
        async with Auth0StandIn(users=users) as auth0:
            for batch in INGEST_BATCHES:
                bodies = workdir / f"bodies-{batch}.jsonl"
                write_bodies(bodies, batch, users)
                result = await ingest_batch(settings, batch, bodies, bare, f"http://127.0.0.1:{port}", auth0,
                                            sink_port, workdir)
                report_ingest(report, section, result)
                missed = missed or result.ratio < ingest_target(batch)
            searches = sum(1 for _, path, _ in auth0.calls if path == "/api/v2/users")
            if missed and settings.profile:
                await profile_ingest(settings, report, bare, auth0, sink_port, workdir)
    finally:
        await bare.stop()
    report.note(section, f"the stand-in answered {searches} user searches in all (profiles are cached 30 s)")


async def profile_ingest(settings: Settings, report: Report, bare: Service, auth0: Auth0StandIn, sink_port: int,
                         workdir: Path) -> None:
    """Batch 10 again, with py-spy sampling the daemon from core 1."""
    batch, bodies, output = 10, workdir / "bodies-10.jsonl", workdir / "ingest.pyspy"
    daemon = Daemon(workdir / "ingest-profiled", auth0=auth0, smtp_port=sink_port, rule_text=h.rules())
    await daemon.start()
    try:
        await run_wrk(daemon.url, bodies, batch, settings.ingest_warmup_s, daemon.pid)
        profiler = await start_profiler(daemon.pid, output)
        result = await run_wrk(daemon.url, bodies, batch, settings.ingest_s, daemon.pid)
    finally:
        await daemon.stop()
    await profiler.wait()
    note_problems(report, "1. Durable ingest", "profiled run", daemon.problems())
    report.note("1. Durable ingest", f"profiled rerun of batch 10 (py-spy, 100 Hz, from core 1): "
                f"{result.events_per_s:,.0f} ev/s")
    report.notes["1. Ingest profile (batch 10, py-spy, daemon process, all threads)"] = summarize_profile(
        output, INGEST_STAGES)


def _avg(runs: list[WrkResult], value) -> float:
    return statistics.fmean(value(r) for r in runs)


def _core0(runs: list[WrkResult], who: str, threads: bool = False) -> str:
    """"core 0: daemon 93% (event loop 52%, SQLite 41%), softirq 1%, other processes 0%"."""
    text = f"core 0: {who} {_avg(runs, lambda r: r.server_busy):.0%}"
    if threads:
        text += (f" (event loop thread {_avg(runs, lambda r: r.main_thread):.0%}, other threads i.e. SQLite "
                 f"{_avg(runs, lambda r: r.server_busy - r.main_thread):.0%})")
    return (text + f", softirq {_avg(runs, lambda r: r.softirq):.0%}, other processes "
            f"{_avg(runs, lambda r: r.foreign_load):.0%}")


def ingest_target(batch: int) -> float:
    """Issue 9 re-scoped ingest to a regression floor against the bare-parse ceiling."""
    return 0.25 if batch >= 100 else 0.30


def report_ingest(report: Report, section: str, result: IngestBatch) -> None:
    batch = result.batch
    target = ingest_target(batch)
    report.rows.append(Row(f"1. ingest, {batch} event{'s' * (batch > 1)}/request", f"{result.streamer:,.0f} ev/s",
                           f"{result.bare:,.0f} ev/s (bare aiohttp)", f"{result.ratio:.0%}",
                           f"≥ {target:.0%} (regression floor)", verdict(result.ratio >= target)))
    bare_runs, our_runs = [b for b, _ in result.clean], [s for _, s in result.clean]
    set_aside = len(result.rounds) - len(result.clean)
    report.note(section, f"batch {batch}, median of {len(result.clean)} round(s)"
                f"{f' ({set_aside} set aside: other processes took > {DISTURBED:.0%} of core 0)' if set_aside else ''}"
                f": streamer {result.streamer:,.0f} ev/s "
                f"(request p50 {_avg(our_runs, lambda r: r.p50_ms):.1f} ms, p99 {_avg(our_runs, lambda r: r.p99_ms):.1f} "
                f"ms; {_core0(our_runs, 'daemon', threads=True)}; errors {sum(r.errors for r in our_runs)})")
    report.note(section, f"batch {batch}: bare {result.bare:,.0f} ev/s ({_core0(bare_runs, 'server')}; wrk used "
                f"{_avg(bare_runs, lambda r: r.generator_busy):.0%} of core 1; errors {sum(r.errors for r in bare_runs)})")
    per_core = statistics.median(s.events_per_s / s.server_busy / (b.events_per_s / b.server_busy)
                                 for b, s in result.clean)
    report.note(section, f"batch {batch}: events per core-second used: streamer "
                f"{_avg(our_runs, lambda r: r.events_per_s / r.server_busy):,.0f}, bare "
                f"{_avg(bare_runs, lambda r: r.events_per_s / r.server_busy):,.0f} (CPU-normalised ratio {per_core:.0%})")
    drained = ("the processor kept up" if result.drain_rate is None else
               f"the processor alone then settled {result.drain_rate:,.0f} ev/s at {result.drain_cpu_us:.0f} µs of "
               f"daemon CPU per event")
    report.note(section, f"batch {batch}: {result.stored:,} events stored, {result.pending:,} not yet through the "
                f"rules when the load stopped; {drained}")
    note_problems(report, section, f"batch {batch}", result.problems)
    unsaturated = [b for b in bare_runs if b.server_busy + b.softirq + b.foreign_load < 0.9]
    if result.bare <= result.streamer or unsaturated:
        busy = ", ".join(f"{b.server_busy + b.softirq + b.foreign_load:.0%} / {b.helper_core_busy:.0%}"
                         for b in unsaturated)
        report.note(section, f"WARNING batch {batch}: the bare server left core 0 partly idle in {len(unsaturated)} "
                    f"round(s) (core 0 / core 1 busy: {busy}), so its ceiling may be understated there")


# --- 2. delivery -------------------------------------------------------------------------------


@dataclass
class DeliveryRun:
    rate: float               # N / (last sent − first queued)
    queued_to_sent_s: float
    processed_by_s: float     # when the processor had settled every event, after the first email was queued
    wall_rate: float          # N / (all sent − daemon ready): includes the processor's first batch
    cpu_ms_per_email: float   # daemon CPU (all threads) from ready to the last send, per email
    core_busy: float          # share of core 0 the daemon used over that time
    main_thread_share: float  # share of the daemon's CPU spent on its event loop thread
    foreign_load: float       # share of core 0 other processes used over that time
    daemon: Daemon


class OfflineDelivery:
    """streamer's own Deliverer on the first outbox row of a finished run, SMTP replaced by a capture."""

    def __init__(self, config, email, deliverer):
        self.config, self.email, self.deliverer = config, email, deliverer
        self.captured = b""

    @classmethod
    async def load(cls, daemon: Daemon) -> OfflineDelivery:
        from streamer.config import load_config
        from streamer.delivery import Deliverer
        from streamer.rules import compile_rules
        from streamer.store import open_store
        from streamer.templates import Templates

        config = load_config(daemon.config_path, env={})
        store = open_store(config.store_url)
        await store.open()
        try:
            email = await store.get_email(1)
        finally:
            await store.close()
        templates = Templates(config.templates_dir, default_locale=config.templates.default_locale)
        rules = {rule.name: rule for rule in compile_rules(config.rules)}
        offline = cls(config, email, None)
        offline.deliverer = Deliverer(config, rules, {}, templates, offline)
        return offline

    async def send(self, mail_from: str, rcpt_to: list[str], message: bytes) -> str:
        self.captured = message
        return "captured"

    async def message(self) -> bytes:
        await self.deliverer.deliver(self.email)
        return self.captured

    async def costs_ms(self, count: int = 300) -> dict[str, float]:
        """CPU per email of Deliverer.deliver without SMTP (context, render, build), and of its text part."""
        from streamer.locale import fallback_chain
        from streamer.render import html_to_text, render

        started = time.process_time()
        for _ in range(count):
            await self.deliverer.deliver(self.email)
        deliver = (time.process_time() - started) / count * 1000
        rendered = render(self.deliverer.templates, self.email.template, tenant=self.email.tenant, client_id=None,
                          locale_chain=fallback_chain(self.email.locale, self.config.templates.default_locale),
                          context={**self.deliverer._context(self.email), "ticket_url": None})  # noqa: SLF001
        started = time.process_time()
        for _ in range(count):
            html_to_text(rendered.html)
        return {"deliver": deliver, "html_to_text": (time.process_time() - started) / count * 1000}


async def streamer_delivery(count: int, sink_port: int, workdir: Path, *, profile_to: Path | None = None,
                            extra_config: str = "") -> DeliveryRun:
    users = h.make_users("welcome", count, verified=True, logins=1)
    async with Auth0StandIn(users=users) as auth0:
        daemon = Daemon(workdir, auth0=auth0, smtp_port=sink_port, rule_text=h.rules(), pool_size=POOL_SIZE,
                        extra_config=extra_config)
        events = [h.make_event("sv", user, h.log_id(2, i), OLD_DATE) for i, user in enumerate(users)]
        events_file = workdir / "events.json"
        events_file.write_text(json.dumps(events))
        await daemon.replay(events_file)
        await daemon.start()
        started = time.time()
        profiler = await start_profiler(daemon.pid, profile_to) if profile_to else None
        try:
            with h.CoreWatch(SERVER_CORE, daemon.pid) as core:
                done = await daemon.wait_sent(count, timeout=120)
        finally:
            await daemon.stop()
            if profiler:
                await profiler.wait()
    first_queued, last_sent, unsent = daemon.query(
        "SELECT min(created_at), max(sent_at), sum(state != 'sent') FROM outbox")
    if unsent:
        raise RuntimeError(f"{unsent} emails not sent")
    processed_by = daemon.query("SELECT CAST(value AS REAL) FROM meta WHERE key = 'inbox_done_at'")[0]
    span, wall = last_sent - first_queued, done - started
    return DeliveryRun(rate=count / span, queued_to_sent_s=span, processed_by_s=processed_by - first_queued,
                       wall_rate=count / wall, cpu_ms_per_email=core.ours * wall / count * 1000,
                       core_busy=core.ours, main_thread_share=core.main_thread / core.ours,
                       foreign_load=core.foreign, daemon=daemon)


async def raw_delivery(count: int, sink_port: int, message_file: Path) -> dict:
    """bench/raw_smtp.py's JSON, plus how busy core 1 (smtp-sink's) was and how much of core 0 other
    processes took meanwhile."""
    started = time.monotonic()
    with h.CoreWatch(SERVER_CORE) as core, h.CoreWatch(HELPER_CORE) as helper:
        out = await h.run_command(h.pinned(SERVER_CORE, PYTHON, str(BENCH / "raw_smtp.py"), "--port",
                                           str(sink_port), "--count", str(count), "--pool", str(POOL_SIZE),
                                           "--message", str(message_file)))
    result = json.loads(out.strip().splitlines()[-1])
    own = result["process_cpu_s"] / (time.monotonic() - started)
    return {**result, "helper_core_busy": helper.busy, "foreign_load": max(0.0, core.busy - core.softirq - own)}


async def render_delivery(count: int, sink_port: int, config_path: Path) -> dict:
    """bench/render_smtp.py's JSON: render + build + raw send of the same welcome emails, core 0."""
    out = await h.run_command(h.pinned(SERVER_CORE, PYTHON, str(BENCH / "render_smtp.py"), "--config",
                                       str(config_path), "--port", str(sink_port), "--count", str(count),
                                       "--pool", str(POOL_SIZE)))
    return json.loads(out.strip().splitlines()[-1])


async def delivery_rounds(settings: Settings, sink_port: int, workdir: Path, message_file: Path
                          ) -> tuple[list[tuple[DeliveryRun, dict, dict]], OfflineDelivery]:
    """Streamer, then raw aiosmtplib sending the bytes streamer built, then render + raw send,
    round after round."""
    rounds: list[tuple[DeliveryRun, dict, dict]] = []
    offline = None
    for round_number in range(settings.delivery_rounds):
        run = await streamer_delivery(settings.delivery_emails, sink_port, workdir / f"delivery-{round_number}")
        if offline is None:
            offline = await OfflineDelivery.load(run.daemon)
            message_file.write_bytes(await offline.message())
        raw = await raw_delivery(settings.delivery_emails, sink_port, message_file)
        rounds.append((run, raw, await render_delivery(settings.delivery_emails, sink_port, run.daemon.config_path)))
    return rounds, offline


def report_delivery(report: Report, section: str, rounds: list[tuple[DeliveryRun, dict, dict]], size: int,
                    costs: dict[str, float]) -> float:
    """Rows and notes; returns the ratio (median over the rounds other processes left alone)."""
    pairs = [(run, raw) for run, raw, _ in rounds]
    clean = [(run, raw) for run, raw in pairs if max(run.foreign_load, raw["foreign_load"]) <= DISTURBED] or pairs
    ratio = statistics.median(run.rate / raw["rate"] for run, raw in clean)
    report.rows.append(Row("2. delivery into smtp-sink", f"{statistics.median(run.rate for run, _ in clean):,.0f} emails/s",
                           f"{statistics.median(raw['rate'] for _, raw in clean):,.0f} emails/s (raw aiosmtplib, "
                           f"pool {POOL_SIZE})", f"{ratio:.0%}", "report (rendering bounds it)", verdict(None)))
    for number, (run, raw) in enumerate(pairs, 1):
        report.note(section, f"round {number}, {run.daemon.query('SELECT count(*) FROM outbox')[0]:,} welcome emails of "
                    f"{size:,} bytes: streamer {run.rate:,.0f} emails/s (first queued → last sent "
                    f"{run.queued_to_sent_s:.2f} s; every event through the rules {run.processed_by_s:.2f} s after the "
                    f"first email was queued; {run.wall_rate:,.0f} emails/s counting from daemon ready; daemon used "
                    f"{run.core_busy:.0%} of core 0, other processes {run.foreign_load:.0%}); raw aiosmtplib "
                    f"{raw['rate']:,.0f} emails/s (other processes {raw['foreign_load']:.0%} of core 0; core 1, "
                    f"smtp-sink's, {raw['helper_core_busy']:.0%} busy)")
        note_problems(report, section, f"round {number}", run.daemon.problems())
    if len(clean) < len(pairs):
        report.note(section, f"{len(pairs) - len(clean)} round(s) set aside: other processes took > {DISTURBED:.0%} "
                    f"of core 0; the figures are the median of the other {len(clean)}")
    ours_cpu = statistics.median(run.cpu_ms_per_email for run, _ in clean)
    raw_cpu = statistics.median(raw["cpu_ms_per_email"] for _, raw in clean)
    loop_share = statistics.median(run.main_thread_share for run, _ in clean)
    report.note(section, f"CPU per email: streamer daemon {ours_cpu:.2f} ms (all threads, processor included; "
                f"{loop_share:.0%} on the event loop thread, {1 - loop_share:.0%} on other threads, i.e. SQLite) vs "
                f"raw aiosmtplib {raw_cpu:.2f} ms → CPU-normalised ratio {raw_cpu / ours_cpu:.0%}")
    report.note(section, f"of which, measured in-process with streamer's own Deliverer (SMTP replaced by a "
                f"capture): context + render + build_message {costs['deliver']:.2f} ms, including html_to_text "
                f"(text part derived from the HTML, the shipped templates have no body.txt) "
                f"{costs['html_to_text']:.2f} ms")
    floor_rate = statistics.median(rendered["rate"] for _, _, rendered in rounds)
    floor_ratio = statistics.median(run.rate / rendered["rate"] for run, _, rendered in rounds)
    report.rows.append(Row("2. delivery vs render + raw send", f"{statistics.median(run.rate for run, _ in clean):,.0f} "
                           f"emails/s", f"{floor_rate:,.0f} emails/s (render + build + raw send)", f"{floor_ratio:.0%}",
                           "≥ 70%", verdict(floor_ratio >= 0.7)))
    report.note(section, "render + raw send (bench/render_smtp.py): the same welcome emails rendered with "
                f"streamer's renderer and sent over {POOL_SIZE} raw aiosmtplib connections, nothing else: "
                + ", ".join(f"{rendered['rate']:,.0f} emails/s ({rendered['cpu_ms_per_email']:.2f} ms CPU per email)"
                            for _, _, rendered in rounds))
    bound = raw_cpu / (raw_cpu + costs["deliver"])
    report.note(section, f"bound for any design that renders each email on this one core: raw send + render + "
                f"build = {raw_cpu + costs['deliver']:.2f} ms per email, so at most {bound:.0%} of the raw ceiling, "
                f"before claiming, recording and rule evaluation; hence the ≥ 70% target is against the render + build + raw "
                f"send yardstick")
    return floor_ratio


async def measure_delivery(settings: Settings, report: Report, sink_port: int, workdir: Path) -> None:
    section = "2. Delivery"
    print(f"\n{section}", flush=True)
    message_file = workdir / "message.eml"
    rounds, offline = await delivery_rounds(settings, sink_port, workdir, message_file)
    ratio = report_delivery(report, section, rounds, message_file.stat().st_size, await offline.costs_ms())
    if ratio < 0.7 and settings.profile:
        profile_file = workdir / "delivery.pyspy"
        profiled = await streamer_delivery(settings.delivery_emails, sink_port, workdir / "delivery-profiled",
                                           profile_to=profile_file)
        report.note(section, f"profiled rerun (py-spy, 100 Hz, sampling from core 1): {profiled.rate:,.0f} emails/s")
        report.notes["2. Delivery profile (py-spy, daemon process, all threads)"] = summarize_profile(
            profile_file, DELIVERY_STAGES)


def dkim_key(path: Path, bits: int) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    return path


def signing_costs_ms(message: bytes, key_file: Path, count: int = 200) -> dict[str, float]:
    """CPU per signature, in-process: streamer's sign() (dkimpy: relaxed canonicalisation, hashing,
    RSA in pure Python), and the bare RSA-SHA256 signature by OpenSSL (cryptography) as the floor a C
    signer would reach."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from streamer.config import DkimKeyConfig
    from streamer.dkim_signing import load_key, sign

    key = load_key(DkimKeyConfig(domain="acme.test", selector="bench", private_key_file=key_file), key_file.parent)
    started = time.process_time()
    for _ in range(count):
        sign(message, key)
    dkimpy = (time.process_time() - started) / count * 1000
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    started = time.process_time()
    for _ in range(count):
        private.sign(message[:2000], padding.PKCS1v15(), hashes.SHA256())
    return {"dkimpy": dkimpy, "openssl": (time.process_time() - started) / count * 1000}


async def measure_dkim(settings: Settings, report: Report, sink_port: int, workdir: Path) -> None:
    """5. The same delivery as 2 (welcome emails into smtp-sink), without and with DKIM signing
    (2048-bit RSA, dkimpy), in alternating rounds; the unsigned run is the ceiling."""
    section = "5. DKIM signing"
    print(f"\n{section}", flush=True)
    key_file = dkim_key(workdir / "dkim-2048.pem", 2048)
    signed_config = f"dkim: [{{domain: acme.test, selector: bench, private_key_file: {key_file}}}]"
    pairs: list[tuple[DeliveryRun, DeliveryRun]] = []
    count = max(300, settings.delivery_emails // 3)   # signed delivery is slow: keep the run short
    for round_number in range(settings.delivery_rounds):
        plain = await streamer_delivery(count, sink_port, workdir / f"dkim-off-{round_number}")
        signed = await streamer_delivery(count, sink_port, workdir / f"dkim-on-{round_number}",
                                         extra_config=signed_config)
        pairs.append((plain, signed))
        for label, run in (("without", plain), ("with", signed)):
            note_problems(report, section, f"round {round_number + 1} {label} DKIM", run.daemon.problems())
    clean = [(a, b) for a, b in pairs if max(a.foreign_load, b.foreign_load) <= DISTURBED] or pairs
    ratio = statistics.median(b.rate / a.rate for a, b in clean)
    report.rows.append(Row("5. delivery with DKIM (RSA 2048)", f"{statistics.median(b.rate for _, b in clean):,.0f} "
                           f"emails/s", f"{statistics.median(a.rate for a, _ in clean):,.0f} emails/s (same, unsigned)",
                           f"{ratio:.0%}", "report", verdict(None)))
    for number, (plain, signed) in enumerate(pairs, 1):
        report.note(section, f"round {number}, {count:,} welcome emails each: unsigned {plain.rate:,.0f} emails/s ({plain.cpu_ms_per_email:.2f} ms "
                    f"daemon CPU per email, other processes {plain.foreign_load:.0%} of core 0); signed "
                    f"{signed.rate:,.0f} emails/s ({signed.cpu_ms_per_email:.2f} ms, other processes "
                    f"{signed.foreign_load:.0%})")
    message = await (await OfflineDelivery.load(pairs[0][0].daemon)).message()   # one unsigned welcome email
    costs = signing_costs_ms(message, key_file)
    extra = statistics.median(b.cpu_ms_per_email - a.cpu_ms_per_email for a, b in clean)
    report.note(section, f"CPU per signature, in-process: streamer's sign() (dkimpy, RSA in pure Python) "
                f"{costs['dkimpy']:.2f} ms; the bare RSA-SHA256 signature by OpenSSL (cryptography) "
                f"{costs['openssl']:.2f} ms. Daemon CPU per email grew by {extra:.2f} ms with signing on. The "
                "signature is computed on the event loop: while it runs (one pure-Python modular "
                "exponentiation per email) nothing else on the loop runs")


async def start_profiler(pid: int, output: Path) -> asyncio.subprocess.Process:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is missing: pip install py-spy")
    process = await asyncio.create_subprocess_exec(
        *h.pinned(HELPER_CORE, py_spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                  "--format", "raw", "--output", str(output)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.3)
    return process


#: Where the daemon's time goes: (label, substring of a frame that marks the stage).
INGEST_STAGES = (
    ("webhook handler (receive_logs)", "receive_logs (streamer/sources/webhook.py)"),
    ("  parse_body (json.loads + unwrap)", "parse_body (streamer/events.py)"),
    ("  Inbox.accept (credential check on the raw body, store call)", "Inbox.accept (streamer/inbox.py)"),
    ("Processor (all its tasks)", "(streamer/processor.py)"),
    ("  rules.decide (Jinja2 expressions, locale resolution)", "decide (streamer/rules.py)"),
    ("  ManagementApi.get_users (cache hits)", "ManagementApi.get_users (streamer/auth0/client.py)"),
    ("SQLite thread (all group commits)", "_worker (concurrent/futures/thread.py)"),
    ("  add_events (seen rows + one inbox row per batch)", "add_events.<locals>.insert (streamer/store/sqlite.py)"),
    ("  processor claim_events (inbox rows after the cursor)", "claim_events.<locals>.claim (streamer/store/sqlite.py)"),
    ("  processor settle_events (once keys, outbox, cursor)", "settle_events.<locals>.settle (streamer/"),
    ("thread hand-offs (call_soon_threadsafe)", "BaseEventLoop.call_soon_threadsafe"),
    ("structlog (JSON lines, redaction)", "structlog/"),
    ("prometheus_client", "prometheus_client/"),
    ("event loop select()", "EpollSelector.select"),
)
DELIVERY_STAGES = (
    ("Dispatcher._deliver (send path on the loop)", "Dispatcher._deliver (streamer/dispatcher.py)"),
    ("  render(): Jinja2 + CSS inlining + text part", "render (streamer/render.py)"),
    ("    html_to_text (text part from the HTML)", "html_to_text (streamer/render.py)"),
    ("  build_message", "build_message (streamer/message.py)"),
    ("  SmtpPool.send (aiosmtplib)", "SmtpPool.send (streamer/smtp.py)"),
    ("Processor (all its tasks)", "(streamer/processor.py)"),
    ("SQLite thread (all group commits)", "_worker (concurrent/futures/thread.py)"),
    ("  dispatcher claim_emails (UPDATE … RETURNING)", "claim_emails.<locals>.claim (streamer/"),
    ("  mark_sent", "_update_state.<locals>.<lambda> (streamer/"),
    ("  processor claim_events + settle_events", "_events.<locals>."),
    ("thread hand-offs (call_soon_threadsafe)", "BaseEventLoop.call_soon_threadsafe"),
    ("structlog (JSON lines, redaction)", "structlog/"),
    ("prometheus_client", "prometheus_client/"),
    ("event loop select()", "EpollSelector.select"),
)


def summarize_profile(path: Path, stages: tuple[tuple[str, str], ...], top: int = 15) -> list[str]:
    """Collapsed stacks → share of samples per stage (inclusive) and the busiest leaf functions."""
    stage_samples: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if not frames or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for label, marker in stages:
            if any(marker in frame for frame in frames):
                stage_samples[label] += samples
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples (100 Hz) of non-idle threads; a sample counts for every stage on its stack.", "",
             "| share of samples | stage |", "|---:|---|"]
    lines += [f"| {stage_samples[label] / total:.0%} | {_indented(label)} |" for label, _ in stages]
    lines += ["", "Top self time (leaf functions):", ""]
    lines += [f"- {samples / total:.1%} `{name}`" for name, samples in own.most_common(top)]
    return lines


def _indented(label: str) -> str:
    """Two leading spaces per level → non-breaking indentation and an arrow, for Markdown tables."""
    depth = (len(label) - len(label.lstrip(" "))) // 2
    return ("&nbsp;&nbsp;" * (depth - 1) + "↳ " if depth else "") + label.strip()


def _frame_name(frame: str) -> str:
    """`send (streamer/smtp.py:412)` → `send (streamer/smtp.py)`; library paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    where = where.rpartition(":")[0] or where
    for marker in ("site-packages/", "lib/python3.11/", str(h.REPO) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


# --- 3. Management API calls per email ---------------------------------------------------------


def endpoint(method: str, path: str) -> str:
    parts = path.split("/")
    if len(parts) > 4 and parts[3] == "users":
        path = "/api/v2/users/{id}"
    return f"{method} {path}"


async def api_calls(count: int, sink_port: int, workdir: Path, *, mark: bool,
                    signup_delay_ms: int = 14) -> tuple[int, Counter[str], int, Counter[str]]:
    """(emails sent, /api/v2 calls by endpoint, token requests, daemon warnings) for `count`
    signups whose `ss` entries are dated `signup_delay_ms` after the user's creation."""
    users = h.make_users(f"signup{int(mark)}d{signup_delay_ms}", count, verified=False, logins=1)
    async with realistic_tenant(rate_limit=None, plan="enterprise") as auth0:   # see the docstring, 3.
        profiles = [auth0.add_user(user) for user in users]
        events = [h.make_event("ss", p, h.log_id(3 + mark, i), h.signup_date(p, signup_delay_ms))
                  for i, p in enumerate(profiles)]
        daemon = Daemon(workdir, auth0=auth0, smtp_port=sink_port, rule_text=h.rules(mark=mark), pool_size=POOL_SIZE)
        first_call = len(auth0.calls)  # from before start: the start-up token and scope check count too
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                for start in range(0, count, SIGNUP_BATCH):
                    await daemon.post(session, events[start:start + SIGNUP_BATCH])
            await daemon.wait_sent(count, timeout=120)
            await quiet(auth0)
            sent = daemon.count_sent()
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


async def measure_api_calls(settings: Settings, report: Report, sink_port: int, workdir: Path) -> None:
    section = "3. Management API calls per verification email"
    print(f"\n{section}", flush=True)
    for mark in (False, True):
        sent, by_endpoint, tokens, problems = await api_calls(settings.signups, sink_port,
                                                              workdir / f"api-mark{int(mark)}", mark=mark)
        per_email = sum(by_endpoint.values()) / sent
        floor = 2.0 if mark else 1.0
        label = "with `mark`" if mark else "without mark"
        note_problems(report, section, label, problems)
        report.rows.append(Row(f"3. Mgmt API calls/email, {label}", f"{per_email:.2f}",
                               f"{floor:.2f} (ticket{' + PATCH' if mark else ''} per email)",
                               f"{per_email / floor:.2f}×", "≤ 1.2" if not mark else "report",
                               verdict(per_email <= 1.2) if not mark else "—"))
        breakdown = ", ".join(f"{name}: {n}" for name, n in by_endpoint.most_common())
        report.note(section, f"{label}: {sent} emails, {sum(by_endpoint.values())} /api/v2 calls ({breakdown}); "
                    f"plus {tokens} POST /oauth/token")
        if mark:
            report.note(section, "with `mark`: the rule writes app_metadata back once per email after the send, "
                        "so one PATCH /api/v2/users/{id} per email is inherent (the Management API has no bulk "
                        "metadata update); the figure to watch is the excess over 2.0")
        if not mark and per_email > 1.2:
            await diagnose_api_calls(settings, report, section, sink_port, workdir)


async def diagnose_api_calls(settings: Settings, report: Report, section: str, sink_port: int,
                             workdir: Path) -> None:
    """The same signups with the log entry dated exactly at the user's creation: if the extra calls
    vanish, the profile freshness check (event date vs updated_at) is what causes them."""
    count = min(settings.signups, 100)
    sent, by_endpoint, _, _ = await api_calls(count, sink_port, workdir / "api-same-ms", mark=False,
                                              signup_delay_ms=0)
    breakdown = ", ".join(f"{name}: {n}" for name, n in by_endpoint.most_common())
    report.note(section, f"diagnosis, `ss` dated at the very millisecond of the user's creation instead of 14 ms "
                f"later: {sum(by_endpoint.values()) / sent:.2f} calls/email ({breakdown})")


# --- 4. latency --------------------------------------------------------------------------------


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
                    profile = auth0.add_user(users[i])         # a signup now: not in the search index yet
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
                async with session.post(f"{auth0.base_url}/api/v2/tickets/email-verification", json={
                        "user_id": profiles[i]["user_id"], "result_url": "https://app.acme.test/verified"}) as r:
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


async def measure_latency(settings: Settings, report: Report, workdir: Path, message: bytes) -> None:
    section = "4. Latency, webhook 200 → SMTP 250"
    print(f"\n{section}", flush=True)
    count = int(settings.latency_s * LATENCY_RATE)
    ours, core, problems = await streamer_latency(count, workdir / "latency")
    note_problems(report, section, "latency run", problems)
    floor = await floor_latency(int(settings.floor_s * LATENCY_RATE), message)
    p50, p99, f50, f99 = (percentile(ours, 50), percentile(ours, 99), percentile(floor, 50), percentile(floor, 99))
    report.rows.append(Row("4. latency p50 / p99", f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms",
                           f"{f50 * 1000:.0f} / {f99 * 1000:.0f} ms (ticket + raw send)", f"p99 {p99 / f99:.1f}×",
                           "p99 ≤ 1 s", verdict(p99 <= 1.0)))
    report.note(section, f"streamer: {len(ours)} verification emails at {LATENCY_RATE:.0f}/s, one event per POST; "
                f"p50 {p50 * 1000:.0f} ms, p90 {percentile(ours, 90) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"max {max(ours) * 1000:.0f} ms (the first email also pays for the token, the first "
                f"connections and template compilation: {ours[0] * 1000:.0f} ms), mean "
                f"{statistics.fmean(ours) * 1000:.0f} ms; core 0: daemon {core.ours:.0%}, other processes "
                f"{core.foreign:.0%}")
    report.note(section, f"floor: {len(floor)} emails (ticket + raw send from core 1); p50 {f50 * 1000:.0f} ms, "
                f"p99 {f99 * 1000:.0f} ms")


# --- report ------------------------------------------------------------------------------------

HEADER = ("measurement", "streamer", "ceiling / floor (same run)", "ratio", "target", "result")


def table_text(rows: list[Row]) -> str:
    cells = [HEADER, *[(r.name, r.figure, r.ceiling, r.ratio, r.target, r.verdict) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def table_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join((r.name, r.figure, r.ceiling, r.ratio, r.target, f"**{r.verdict}**")) + " |"
              for r in rows]
    return "\n".join(lines)


def write_results(path: Path, report: Report, machine: dict[str, str], mode: str, seconds: float) -> None:
    doc = __doc__.split("\n\n", 1)[1].strip()
    parts = [
        "# streamer benchmark results", "",
        f"`python bench/run.py{' --quick' if mode == 'quick' else ''}` — {mode} run, {seconds:.0f} s. "
        "Generated file: rerun to refresh; compare only figures from the same run.", "",
        table_markdown(report.rows), "",
        "## Machine", "",
        *[f"- **{key}**: {value}" for key, value in machine.items()], "",
        "## Details", "",
    ]
    for section, notes in report.notes.items():
        parts += [f"### {section}", ""]
        parts += notes if "profile" in section else [f"- {note}" for note in notes]
        parts.append("")
    parts += ["## Method", "", doc, ""]
    # bench/replicas.py keeps its own section (between its markers): carry it over.
    old = path.read_text() if path.exists() else ""
    begin, end = "<!-- bench/replicas.py: begin -->", "<!-- bench/replicas.py: end -->"
    if begin in old and end in old:
        parts += [old[old.index(begin):old.index(end) + len(end)], ""]
    kept = h.other_sections(path)  # bench/budget.py's and bench/soak.py's sections stay
    path.write_text("\n".join(parts) + (f"\n{kept}\n" if kept else ""))


# --- main --------------------------------------------------------------------------------------


async def main(settings: Settings, mode: str, only: str | None = None) -> None:
    h.pin_self_to_helper_core()
    started = time.monotonic()
    report = Report()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    workdir = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    sink_port = h.free_port()
    sink = h.smtp_sink(sink_port, workdir)
    await sink.start(ready_port=sink_port)
    try:
        if only in (None, "ingest"):
            await measure_ingest(settings, report, sink_port, workdir)
        if only in (None, "delivery", "latency"):
            await measure_delivery(settings, report, sink_port, workdir)
        if only in (None, "api"):
            await measure_api_calls(settings, report, sink_port, workdir)
        if only in (None, "dkim"):
            await measure_dkim(settings, report, sink_port, workdir)
        if only in (None, "latency"):
            message = (workdir / "message.eml").read_bytes()
            await measure_latency(settings, report, workdir, message)
    finally:
        await sink.stop()
    elapsed = time.monotonic() - started
    print(f"\n{table_text(report.rows)}\n\n{mode} run: {elapsed:.0f} s")
    if only is not None:  # a partial run is for iterating; RESULTS.md keeps whole runs only
        for section, lines in report.notes.items():
            print(f"\n{section}\n" + "\n".join(f"- {line}" for line in lines))
        shutil.rmtree(workdir, ignore_errors=True)
        return
    machine = h.machine_info()
    machine["load average (1/5/15 min)"] = (f"{' '.join(load_before)} at start, "
                                            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at end")
    write_results(BENCH / "RESULTS.md", report, machine, mode, elapsed)
    print(f"wrote {BENCH / 'RESULTS.md'}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, no profile (≤ 90 s)")
    parser.add_argument("--only", choices=("ingest", "delivery", "api", "latency", "dkim"),
                        help="run one measurement and print it; bench/RESULTS.md is left as it is")
    arguments = parser.parse_args()
    asyncio.run(main(QUICK if arguments.quick else FULL, "quick" if arguments.quick else "full", arguments.only))
