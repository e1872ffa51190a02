"""Hostile-input figures (issue 8), not a test: slow clients and 5 MB bodies against a real daemon.

    python bench/hostile_input.py [--slow N] [--tree PATH]...

The daemon (`python -m streamer run`, its own SQLite store) runs on core 0; this script, the
Auth0 stand-in and the mail catcher on core 1; a /healthz probe in its own process.

1. Slow clients: N connections that send half a request line and headers, N that connect and
   send nothing, N that send a valid webhook request's headers and a sliver of its 100 kB body;
   all held open. Meanwhile a normal client measures /healthz and webhook POST latency. Then:
   how long until the daemon had closed them (header timeout; body timeout with a 408).
2. 5 MB bodies: three 5 MB JSON-lines bodies (realistic `ss` events; tiny events of distinct
   made-up types; tiny `s` events of distinct users) posted one at a time while the probe asks
   /healthz every 5 ms: the POST's time and the longest /healthz answer over the next seconds
   (the event loop's longest stall as a client sees it, the processor's work included).

`--tree PATH` (repeatable) measures the daemon of another checkout too, e.g. `--tree /work/main`
for a before/after in one run; the default is this checkout only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from streamer.devkit.auth0_standin import Auth0StandIn  # noqa: E402
from streamer.devkit.mailcatcher import MailCatcher  # noqa: E402

import harness as h  # noqa: E402

PROBE = r"""
import http.client, json, statistics, sys, threading, time
port, lat, lock, current = int(sys.argv[1]), [], threading.Lock(), [None]
def loop():
    while True:
        started = current[0] = time.perf_counter()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("GET", "/healthz"); c.getresponse().read(); c.close()
        except OSError:
            pass
        with lock: lat.append(time.perf_counter() - started); current[0] = None
        time.sleep(0.005)
threading.Thread(target=loop, daemon=True).start()
for _ in sys.stdin:
    with lock:
        got = list(lat); lat.clear()
        if current[0] is not None:  # a request still waiting counts with its wait so far
            got.append(time.perf_counter() - current[0])
    print(json.dumps({"n": len(got), "max_ms": max(got) * 1000 if got else None,
                      "p50_ms": statistics.median(got) * 1000 if got else None}), flush=True)
"""


class TreeDaemon:
    """`python -m streamer run` from a given checkout, pinned to the server core."""

    def __init__(self, tree: Path, workdir: Path, auth0: Auth0StandIn, smtp_port: int):
        config = h.Daemon(workdir, auth0=auth0, smtp_port=smtp_port, rule_text=h.rules())  # writes the config
        self.tree, self.port, self.config = tree, config.port, config.config_path
        self.log = workdir / "daemon.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.tree)}
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *h.pinned(h.SERVER_CORE, h.PYTHON, "-m", "streamer", "run", "-c", str(self.config)),
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=self.tree,
                env=env,
            )
        for _ in range(600):
            if await h._ready(f"{self.url}/healthz", None):  # noqa: SLF001
                return
            if self.process.returncode is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            await asyncio.sleep(0.05)
        raise RuntimeError("daemon did not start")

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def timed(session: aiohttp.ClientSession, method: str, url: str, **kwargs) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return time.perf_counter() - started, response.status


def quantiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"


async def watch_close(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """When the daemon closed the connection (monotonic time), and what it said first."""
    answer = await reader.read()
    return time.monotonic(), answer


async def open_many(port: int, first: bytes, count: int) -> list[tuple[asyncio.Task, asyncio.StreamWriter]]:
    """`count` connections that sent `first`, each watched from the start for the daemon's close."""
    opened = []
    for start in range(0, count, 200):
        batch = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(200, count - start))),
            return_exceptions=True,
        )
        for item in batch:
            if isinstance(item, BaseException):
                continue
            reader, writer = item
            if first:
                writer.write(first)
            opened.append((asyncio.create_task(watch_close(reader)), writer))
    return opened


async def slow_clients(daemon: TreeDaemon, n: int, wait_s: float) -> list[str]:
    auth = b"Authorization: Bearer " + h.WEBHOOK_TOKEN.encode()
    kinds = {
        "half-sent headers": b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nAuthoriz",
        "idle (nothing sent)": b"",
        "half-sent body": b"POST /logs/acme HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b'\r\nContent-Length: 100000\r\n\r\n[{"log_id"',
    }
    opened_at = time.monotonic()
    held = {kind: await open_many(daemon.port, first, n) for kind, first in kinds.items()}
    all_open = time.monotonic()
    lines = [f"opened in {all_open - opened_at:.1f} s and held: {', '.join(f'{len(v)} {k}' for k, v in held.items())}"]
    event = h.make_event("ss", {"user_id": "auth0|nobody", "email": "x@example.com"}, "", "2026-01-01T00:00:00.000Z")
    health, posts, failures = [], [], 0
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 3
        number = 0
        while time.monotonic() < deadline:
            number += 1
            try:
                seconds, status = await timed(session, "GET", f"{daemon.url}/healthz")
                health.append(seconds)
                event["log_id"] = f"slow-bench-{time.time_ns()}-{number}"
                seconds, status2 = await timed(
                    session,
                    "POST",
                    f"{daemon.url}/logs/acme",
                    data=json.dumps([event]),
                    headers={"Authorization": f"Bearer {h.WEBHOOK_TOKEN}"},
                )
                posts.append(seconds)
                failures += (status != 200) + (status2 != 200)
            except (aiohttp.ClientError, OSError):
                failures += 1
            await asyncio.sleep(0.02)
    lines.append(f"meanwhile /healthz: {quantiles(health) if health else 'no answer'} ({len(health)} requests)")
    lines.append(
        f"meanwhile webhook POST: {quantiles(posts) if posts else 'no answer'} ({len(posts)} requests, "
        f"{failures} failed)"
    )
    for kind, connections in held.items():
        tasks = [task for task, _ in connections]
        await asyncio.wait(tasks, timeout=max(0.1, all_open + wait_s - time.monotonic()))
        done = [task.result() for task in tasks if task.done() and not task.exception()]
        times = [closed_at - opened_at for closed_at, _ in done]
        answers = {
            answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without an answer" for _, answer in done
        }
        still = len(tasks) - len(done)
        lines.append(
            f"{kind}: {len(times)} closed by the daemon "
            + (
                f"{min(times):.1f}–{max(times):.1f} s after the first was opened ({', '.join(sorted(answers))})"
                if times
                else ""
            )
            + (f"; {still} still open {wait_s:.0f} s after the last was opened" if still else "")
        )
        for task, writer in connections:
            task.cancel()
            writer.close()
    return lines


def bodies() -> dict[str, tuple[bytes, int]]:
    event = json.loads((h.FIXTURES / "ss.json").read_text())
    made: dict[str, tuple[bytes, int]] = {}
    for name, line_of in (
        (
            "realistic ss events",
            lambda i: json.dumps(
                {"log_id": f"r{i:010d}", "data": {**event, "log_id": f"r{i:010d}", "user_id": "auth0|nobody"}}
            ),
        ),
        ("tiny events of distinct made-up types", lambda i: json.dumps({"log_id": f"t{i:010d}", "type": f"x{i}"})),
        (
            "tiny s events of distinct users",
            lambda i: json.dumps({"log_id": f"u{i:010d}", "type": "s", "user_id": f"auth0|u{i}"}),
        ),
    ):
        lines, size = [], 0
        while size < 5_000_000:
            lines.append(line_of(len(lines)))
            size += len(lines[-1]) + 1
        made[name] = ("\n".join(lines).encode(), len(lines))
    return made


async def big_bodies(daemon: TreeDaemon, settle_s: float) -> list[str]:
    probe = await asyncio.create_subprocess_exec(h.PYTHON, "-c", PROBE, str(daemon.port), stdin=-1, stdout=-1)
    lines = []

    async def window() -> dict:
        probe.stdin.write(b"\n")
        await probe.stdin.drain()
        return json.loads(await probe.stdout.readline())

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            for name, (body, count) in bodies().items():
                await asyncio.sleep(0.5)
                await window()
                seconds, status = await timed(
                    session,
                    "POST",
                    f"{daemon.url}/logs/acme",
                    data=body,
                    headers={"Authorization": f"Bearer {h.WEBHOOK_TOKEN}"},
                )
                await asyncio.sleep(settle_s)
                stats = await window()
                longest = f"{stats['max_ms']:.0f} ms" if stats["max_ms"] is not None else "no answer"
                lines.append(
                    f"{name} ({count:,} events, {len(body) / 1e6:.1f} MB): HTTP {status} in {seconds:.2f} s; "
                    f"longest /healthz wait over the next {seconds + settle_s:.0f} s: {longest} "
                    f"({stats['n']} answered)"
                )
    finally:
        probe.kill()
        await probe.wait()
    return lines


async def main(trees: list[Path], n: int, wait_s: float, settle_s: float) -> None:
    h.pin_self_to_helper_core()
    print(
        f"# hostile input — {h.machine_info()['date']}, {h.machine_info()['CPU']}, nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    for tree in trees:
        workdir = Path(tempfile.mkdtemp(prefix="hostile-"))
        async with Auth0StandIn() as auth0, MailCatcher() as catcher:
            daemon = TreeDaemon(tree, workdir / "slow", auth0, catcher.port)
            await daemon.start()
            try:
                print(f"\n## {tree}\n\n### slow clients (N = {n} of each kind)")
                for line in await slow_clients(daemon, n, wait_s):
                    print(f"- {line}", flush=True)
            finally:
                await daemon.stop()
            daemon = TreeDaemon(tree, workdir / "big", auth0, catcher.port)
            await daemon.start()
            try:
                print("\n### 5 MB JSON-lines bodies")
                for line in await big_bodies(daemon, settle_s):
                    print(f"- {line}", flush=True)
            finally:
                await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow connections of each kind (default 1000)")
    parser.add_argument(
        "--wait",
        type=float,
        default=45,
        help="seconds after the last one is opened to wait for the daemon to close them",
    )
    parser.add_argument("--settle", type=float, default=6, help="seconds to watch /healthz after each big POST")
    parser.add_argument("--tree", type=Path, action="append", help="checkout whose daemon to measure (repeatable)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tree or [h.REPO], arguments.slow, arguments.wait, arguments.settle))
