"""Replicas on PostgreSQL against SQLite: throughput, failover after kill -9, a store outage.

    python bench/replicas.py [--events N]      # ≈ 4 min; adds its section to bench/RESULTS.md

1. Throughput: 1, 2 and 3 `streamer run` replicas on one PostgreSQL (fsync on, as in production)
   and 1 on SQLite (the most it allows). N signups are posted (10 per request, 8 requests in
   flight, spread round-robin over the replicas); each gives one email, sent into postfix's
   smtp-sink. Ingest = events / time until every 200; emails = emails / time from the first
   post until the last is marked sent.
2. Failover: 3 replicas, an SMTP server that takes 0.2 s per message (so sends are in flight);
   once replica 1 holds claims, kill -9 it. Measured: time until every email it had claimed is
   sent by the others; copies sent twice (the SMTP server counts them).
3. Store outage: 2 replicas, sends in flight, PostgreSQL stopped (`pg_ctl stop -m fast`) for 5 s
   and started again. Measured: copies sent twice, emails left unsent, time to drain after.

No core pinning: three replicas, PostgreSQL and the load generator share the machine's cores
(and other people's work): the figures say what one small shared host does, not a ceiling.
The section it writes into bench/RESULTS.md sits between markers; bench/run.py keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(BENCH)]

from streamer.devkit.auth0_standin import Auth0StandIn  # noqa: E402
from streamer.devkit.mailcatcher import MailCatcher  # noqa: E402

import harness as h  # noqa: E402
import pg  # noqa: E402

BEGIN, END = "<!-- bench/replicas.py: begin -->", "<!-- bench/replicas.py: end -->"
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class Replica(h.Daemon):
    """A `streamer run` on the given store URL (not pinned: replicas share the cores)."""

    def __init__(self, workdir: Path, store_url: str, **kwargs):
        super().__init__(workdir, **kwargs)
        text = self.config_path.read_text().replace(f'store: "sqlite:///{self.db_path}"', f'store: "{store_url}"')
        self.config_path.write_text(text)
        self.service = h.Service(
            "streamer run", [h.PYTHON, "-m", "streamer", "run", "-c", str(self.config_path)], workdir / "daemon.log"
        )

    def replica_id(self) -> int | None:
        match = re.search(r'"replica_id": (\d+)', self.service.log_path.read_text())
        return int(match[1]) if match else None


async def sent_by(replicas: list[Replica], count: int) -> bool:
    """Whether the replicas have recorded `count` emails as sent, by their /metrics (a replica counts
    a send once the store has its outcome)."""
    try:
        return sum(await asyncio.gather(*(replica.count_sent() for replica in replicas))) >= count
    except (aiohttp.ClientError, RuntimeError):  # a replica busy restarting its store answers later
        return False


def events_for(auth0: Auth0StandIn, tag: str, tag_number: int, count: int) -> list[dict]:
    users = [auth0.add_user(u) for u in h.make_users(tag, count, verified=False, logins=1)]
    return [h.make_event("ss", u, h.log_id(tag_number, i), h.signup_date(u)) for i, u in enumerate(users)]


async def post_all(replicas: list[Replica], events: list[dict], *, batch: int = 10, in_flight: int = 8) -> float:
    """POST every event (round-robin over the replicas); return when the last 200 arrived."""
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue: asyncio.Queue = asyncio.Queue()
    for index, chunk in enumerate(batches):
        queue.put_nowait((replicas[index % len(replicas)], chunk))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            replica, chunk = queue.get_nowait()
            for _ in range(50):
                try:
                    await replica.post(session, chunk)
                    break
                except (RuntimeError, aiohttp.ClientError):  # 503 while the store is away: Auth0 retries too
                    await asyncio.sleep(0.2)
            else:
                raise RuntimeError("a batch was refused 50 times")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(in_flight)))
    return time.monotonic()


async def wait_until(condition, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def run_throughput(
    base_url: str, auth0: Auth0StandIn, sink_port: int, workdir: Path, count: int, replicas: int | None, tag_number: int
) -> dict:
    name = "sqlite" if replicas is None else f"pg{replicas}"
    store_url = await pg.create_database(base_url) if replicas is not None else None
    daemons = []
    for index in range(replicas or 1):
        folder = workdir / f"{name}-{index}"
        url = store_url or f"sqlite:///{folder / 'streamer.db'}"
        daemons.append(Replica(folder, url, auth0=auth0, smtp_port=sink_port, rule_text=h.rules()))
    await asyncio.gather(*(d.start() for d in daemons))
    try:
        events = events_for(auth0, name, tag_number, count)
        started = time.monotonic()
        ingested = await post_all(daemons, events)
        done = await wait_until(lambda: sent_by(daemons, count), 600, f"{count} emails sent ({name})")
        return {
            "setup": name,
            "replicas": replicas or 1,
            "events": count,
            "ingest_eps": count / (ingested - started),
            "emails_ps": count / (done - started),
        }
    finally:
        await asyncio.gather(*(d.stop() for d in daemons))


def slow_catcher(delay_s: float) -> MailCatcher:
    """A real SMTP server that takes `delay_s` per message, so a few sends are always in flight."""
    catcher = MailCatcher()
    original = catcher._handler.handle_DATA  # noqa: SLF001

    async def slow(server, session, envelope):
        await asyncio.sleep(delay_s)
        return await original(server, session, envelope)

    catcher._handler.handle_DATA = slow  # noqa: SLF001
    return catcher


async def failover(base_url: str, auth0: Auth0StandIn, workdir: Path, count: int, tag_number: int) -> dict:
    store_url = await pg.create_database(base_url)
    catcher = slow_catcher(0.2)
    await catcher.start()
    daemons = [
        Replica(workdir / f"failover-{i}", store_url, auth0=auth0, smtp_port=catcher.port, rule_text=h.rules())
        for i in range(3)
    ]
    await asyncio.gather(*(d.start() for d in daemons))
    try:
        doomed = daemons[0]
        events = events_for(auth0, "failover", tag_number, count)
        await post_all(daemons, events)
        # Which replica holds which claim is no user's business, so no public surface shows it:
        # this study alone reads the outbox table.
        conn = await asyncpg.connect(store_url)
        try:
            held: list = []

            async def doomed_holds_claims() -> bool:
                held[:] = await conn.fetch(
                    "SELECT id FROM outbox WHERE state = 'sending' AND claimed_by = $1", doomed.replica_id()
                )
                return len(held) >= 4

            await wait_until(doomed_holds_claims, 120, "replica 1 to hold claims")
            os.kill(doomed.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            ids = [r[0] for r in held]

            async def claimed_ones_sent() -> bool:
                return await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE id = ANY($1) AND state = 'sent'", ids
                ) == len(ids)

            recovered = await wait_until(claimed_ones_sent, 600, "the killed replica's emails to be sent")
            await wait_until(lambda: _true(len({m.to[0] for m in catcher.messages}) >= count), 600, "every email")
        finally:
            await conn.close()
        copies = Counter(m.to[0] for m in catcher.messages)
        return {
            "claimed_by_killed": len(ids),
            "failover_s": recovered - killed_at,
            "duplicates": sum(n - 1 for n in copies.values()),
            "workers": 8,
            "emails": len(copies),
        }
    finally:
        await doomed.service.process.wait()
        await asyncio.gather(*(d.stop() for d in daemons[1:]))
        await catcher.stop()


async def outage(
    cluster: pg.Cluster, auth0: Auth0StandIn, workdir: Path, count: int, tag_number: int, down_s: float = 5.0
) -> dict:
    store_url = await pg.create_database(cluster.url)
    catcher = slow_catcher(0.05)
    await catcher.start()
    daemons = [
        Replica(workdir / f"outage-{i}", store_url, auth0=auth0, smtp_port=catcher.port, rule_text=h.rules())
        for i in range(2)
    ]
    await asyncio.gather(*(d.start() for d in daemons))
    try:
        events = events_for(auth0, "outage", tag_number, count)
        await post_all(daemons, events)
        await wait_until(lambda: _true(len(catcher.messages) >= count // 4), 300, "a quarter of the emails")
        await asyncio.to_thread(cluster.pause)
        stopped = time.monotonic()
        await asyncio.sleep(down_s)  # the outage itself
        await asyncio.to_thread(cluster.resume)
        back = time.monotonic()
        await wait_until(lambda: _true(len({m.to[0] for m in catcher.messages}) >= count), 600, "every email")
        drained = await wait_until(lambda: sent_by(daemons, count), 600, "every email marked sent")
        copies = Counter(m.to[0] for m in catcher.messages)
        kept = sum(d.service.log_path.read_text().count('"outbox_outcome_unrecorded"') for d in daemons)
        return {
            "down_s": back - stopped,
            "duplicates": sum(n - 1 for n in copies.values()),
            "unsent": count - len(copies),
            "outcomes_kept_in_memory": kept,
            "drained_after_s": drained - back,
        }
    finally:
        await asyncio.gather(*(d.stop() for d in daemons))
        await catcher.stop()


async def _true(value: bool) -> bool:
    return value


def write_section(results: dict, machine: dict[str, str], load: tuple[str, str], seconds: float) -> None:
    rows = results["throughput"]
    lines = [
        BEGIN,
        "## Replicas: PostgreSQL against SQLite, failover, store outage",
        "",
        f"`python bench/replicas.py --events {rows[0]['events']}` — {seconds:.0f} s, on {machine['date']}, "
        f"commit {machine['git commit']}. **The machine is shared and busy** (load average "
        f"{load[0]} at start, {load[1]} at end, {machine['nproc']} cores for everything: the replicas, "
        "PostgreSQL, the load generator and other engineers' work). The load generator, the Auth0 "
        "stand-in (one ticket call per email) and the SMTP catchers share one Python process. More "
        "replicas on one such host add contention, not capacity: replicas buy availability; their "
        "throughput on separate hosts is bounded by PostgreSQL's commits and the SMTP server.",
        "",
        "| setup | ingest (events/s) | emails/s (first post → last sent) |",
        "|---|---:|---:|",
    ]
    for row in rows:
        label = "SQLite, 1 replica" if row["setup"] == "sqlite" else f"PostgreSQL, {row['replicas']} replica(s)"
        lines.append(f"| {label} | {row['ingest_eps']:,.0f} | {row['emails_ps']:,.0f} |")
    f, o = results["failover"], results["outage"]
    lines += [
        "",
        f"- **failover after kill -9** (3 replicas, SMTP 0.2 s per message): the killed replica held "
        f"{f['claimed_by_killed']} claimed emails; the survivors had sent them all "
        f"**{f['failover_s']:.1f} s** after the kill (before: the 300 s lease, now `delivery.lease_s`, "
        f"the last resort); copies sent twice: {f['duplicates']} (bound: the killed replica's sends "
        f"already at the SMTP server, ≤ workers = {f['workers']}).",
        f"- **store outage** (2 replicas, PostgreSQL stopped with `pg_ctl stop -m fast` mid-burst for "
        f"{o['down_s']:.1f} s): copies sent twice: **{o['duplicates']}**, emails unsent: {o['unsent']}; "
        f"outcomes kept in memory and written after: {o['outcomes_kept_in_memory']}; every email marked "
        f"sent {o['drained_after_s']:.1f} s after PostgreSQL was back.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items() if k not in ("date",)),
        END,
    ]
    path = BENCH / "RESULTS.md"
    text = path.read_text()
    section = "\n".join(lines)
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


async def main(count: int) -> None:
    began = time.monotonic()
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"streamer-bench-replicas-{os.getpid()}"
    workdir.mkdir(parents=True)
    auth0 = Auth0StandIn()
    await auth0.start()
    cluster = pg.Cluster(pg.find_bindir())
    sink = h.Service(
        "smtp-sink",
        ["/usr/sbin/smtp-sink", "-u", "nobody", f"127.0.0.1:{(port := h.free_port())}", "1024"],
        workdir / "smtp-sink.log",
    )
    results: dict = {"throughput": []}
    try:
        await asyncio.to_thread(cluster.start, settings=DURABLE)
        await sink.start(ready_port=port)
        for number, replicas in enumerate((None, 1, 2, 3), start=1):
            row = await run_throughput(cluster.url, auth0, port, workdir, count, replicas, number)
            print(json.dumps(row), flush=True)
            results["throughput"].append(row)
        results["failover"] = await failover(cluster.url, auth0, workdir, max(200, count // 10), 11)
        print(json.dumps(results["failover"]), flush=True)
        results["outage"] = await outage(cluster, auth0, workdir, max(400, count // 5), 12)
        print(json.dumps(results["outage"]), flush=True)
    finally:
        await sink.stop()
        await auth0.stop()
        await asyncio.to_thread(cluster.stop)
    load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    write_section(results, h.machine_info(), (load_start, load_end), time.monotonic() - began)
    print(f"wrote {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="signups per throughput run")
    asyncio.run(main(parser.parse_args().events))
