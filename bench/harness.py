"""Plumbing for the bench scripts: core pinning, subprocesses, daemon configs, events, machine facts.

Core 0 runs whatever is under test (the daemon, or the ceiling script standing in for it); core 1
runs everything else (this orchestrator with the Auth0 stand-in and the mail catcher, wrk,
smtp-sink, `streamer replay`). The daemon is read only through what a user sees: its `/metrics`
and the `streamer` CLI, never its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
FIXTURES = REPO / "tests" / "fixtures" / "events"
PYTHON = sys.executable
SERVER_CORE, HELPER_CORE = 0, 1
WEBHOOK_TOKEN = "bench-webhook-token-0123456789abcdef"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- cores and processes -----------------------------------------------------------------------


def pin_self_to_helper_core() -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, HELPER_CORE} <= cores:
        raise SystemExit(f"need cores {SERVER_CORE} and {HELPER_CORE}; this process may use {sorted(cores)}")
    os.sched_setaffinity(0, {HELPER_CORE})


def pinned(core: int, *command: str) -> list[str]:
    return ["taskset", "-c", str(core), *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread (the event loop); the rest is its other threads (SQLite)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_jiffies(core: int) -> tuple[int, int, int]:
    """(busy, softirq, total) clock ticks of one core since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            busy = user + nice + system + irq + softirq + steal
            return busy, softirq, busy + idle + iowait
    raise RuntimeError(f"no cpu{core} in /proc/stat")


class CoreWatch:
    """Over a `with` block, shares of one core: busy in all, used by `pid` (all threads), spent in
    softirq (loopback TCP work, not charged to any process) and by other processes (the rest)."""

    def __init__(self, core: int, pid: int | None = None):
        self.core, self.pid = core, pid

    def _cpu(self) -> tuple[float, float]:
        if self.pid is None:
            return 0.0, 0.0
        return cpu_seconds(self.pid), main_thread_cpu_seconds(self.pid)

    def __enter__(self) -> CoreWatch:
        self._jiffies, self._cpu_start, self._wall = core_jiffies(self.core), self._cpu(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, softirq, total = (now - then for now, then in zip(core_jiffies(self.core), self._jiffies, strict=True))
        (cpu, main), wall = self._cpu(), time.monotonic() - self._wall
        self.busy = busy / max(1, total)
        self.softirq = softirq / max(1, total)
        self.ours = (cpu - self._cpu_start[0]) / wall
        self.main_thread = (main - self._cpu_start[1]) / wall  # the event loop's share of the core
        self.foreign = max(0.0, self.busy - self.softirq - self.ours)


class Service:
    """A long-running subprocess we started; stopped by its own pid only."""

    def __init__(self, name: str, command: list[str], log_path: Path):
        self.name, self.command, self.log_path = name, command, log_path
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, ready_url: str | None = None, ready_port: int | None = None, timeout: float = 20) -> None:
        log = open(self.log_path, "ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO, env=ENV
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if await _ready(ready_url, ready_port):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"{self.name} did not become ready within {timeout} s")

    async def stop(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


async def _ready(url: str | None, port: int | None) -> bool:
    try:
        if url is not None:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status == 200
        if port is not None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
    except (OSError, aiohttp.ClientError):
        return False
    return True


async def run_command(command: list[str], timeout: float = 120) -> str:
    """Run to completion; return stdout; raise with stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=ENV
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]}… exited {process.returncode}: {err.decode()[-2000:]}")
    return out.decode()


def smtp_sink(port: int, workdir: Path) -> Service:
    """postfix's smtp-sink on the helper core: accepts and discards every message."""
    return Service(
        "smtp-sink",
        pinned(HELPER_CORE, "/usr/sbin/smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"),
        workdir / "smtp-sink.log",
    )


# --- the daemon --------------------------------------------------------------------------------

VERIFY_RULE = """\
  - name: verify-email
    on: [ss, s]
    if: "not user.email_verified"
    once: per_user
    ticket:
      kind: email_verification
      result_url: "{{ tenant.vars.app_url }}/verified?lang={{ locale }}"
      ttl_sec: 3600
    template: verify_email
"""
MARK = "    mark: {app_metadata: {verification_email_sent: true}}\n"
WELCOME_RULE = """\
  - name: welcome
    on: [sv, ss, s]
    if: "user.email_verified and (event.type == 'sv' or user.logins_count <= 1)"
    once: per_user
    template: welcome
"""


def rules(*, mark: bool = False) -> str:
    """The shipped example's verification + welcome rules (optionally with the verification mark)."""
    return VERIFY_RULE + (MARK if mark else "") + WELCOME_RULE


class Daemon:
    """`python -m streamer run` pinned to the server core, with its own store and config."""

    def __init__(
        self, workdir: Path, *, auth0: Any, smtp_port: int, rule_text: str, pool_size: int = 8, extra_config: str = ""
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.db_path = workdir / "streamer.db"
        self.config_path = workdir / "streamer.yaml"
        self.config_path.write_text(f"""\
server: {{listen: "127.0.0.1:{self.port}"}}
store: "sqlite:///{self.db_path}"
smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, from: "Acme <no-reply@acme.test>",
       pool_size: {pool_size}, timeout_s: 30}}
delivery: {{max_attempts: 4, backoff: {{initial_s: 1, max_s: 5}}, workers: {pool_size}}}
templates: {{dir: "{REPO / "templates"}", default_locale: en}}
redirects: {{allowed_hosts: ["app.acme.test"]}}
tenants:
  acme:
    domain: {auth0.domain}
    api_url: {auth0.base_url}
    client_id: {auth0.client_id}
    client_secret: {auth0.client_secret}
    webhook_token: "{WEBHOOK_TOKEN}"
    poll: {{enabled: false}}
    vars: {{app_url: "https://app.acme.test"}}
{extra_config}
rules:
{rule_text}""")
        self.service = Service(
            "streamer run",
            pinned(SERVER_CORE, PYTHON, "-m", "streamer", "run", "-c", str(self.config_path)),
            workdir / "daemon.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.service.pid

    async def start(self) -> None:
        await self.service.start(ready_url=f"{self.url}/healthz", timeout=30)

    async def stop(self) -> None:
        code = await self.service.stop()
        if code not in (0, None):
            raise RuntimeError(f"streamer run exited {code}: {self.service.log_path.read_text()[-2000:]}")

    def problems(self) -> Counter[str]:
        """Warnings and errors the daemon logged (structlog JSON lines), by event name."""
        found: Counter[str] = Counter()
        for line in self.service.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                found[f"{entry['level']} {entry.get('event')}"] += 1
        return found

    @contextlib.contextmanager
    def paused(self):
        """SIGSTOP the daemon for a while, so its processor (working off a backlog) leaves core 0 to a
        ceiling measured meanwhile; SIGCONT after."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    async def replay(self, events_file: Path) -> str:
        return await run_command(
            pinned(
                HELPER_CORE,
                PYTHON,
                "-m",
                "streamer",
                "replay",
                "-c",
                str(self.config_path),
                "--tenant",
                "acme",
                str(events_file),
            )
        )

    async def scrape(self) -> Scrape:
        """The daemon's `/metrics`, parsed."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as response:
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
            return Scrape.parse(await response.text())

    async def cli_json(self, *arguments: str) -> Any:
        """`streamer ARGUMENTS -c CONFIG` (core 1), its JSON output parsed."""
        return json.loads(
            await run_command(pinned(HELPER_CORE, PYTHON, "-m", "streamer", *arguments, "-c", str(self.config_path)))
        )

    async def count_sent(self) -> int:
        return int((await self.scrape()).total("streamer_emails_sent_total"))

    async def wait_sent(self, count: int, timeout: float, every: float = 0.1) -> float:
        """Poll /metrics until `count` emails are sent; return the time it was seen (epoch). Scrapes
        cost the daemon's core a little: `every` 0.1 s keeps that near 1%."""
        deadline = time.monotonic() + timeout
        while (sent := int((scrape := await self.scrape()).total("streamer_emails_sent_total"))) < count:
            if time.monotonic() > deadline:
                outcomes = ", ".join(
                    f"{name} {scrape.total(f'streamer_emails_{name}_total'):.0f}"
                    for name in ("queued", "sent", "failed", "dead")
                )
                raise RuntimeError(f"only {sent} of {count} emails sent within {timeout} s ({outcomes})")
            await asyncio.sleep(every)
        return time.time()

    async def post(self, session: aiohttp.ClientSession, events: list[dict]) -> float:
        """POST one JSONARRAY batch; return the time the 200 arrived."""
        body = json.dumps([{"log_id": e["log_id"], "data": e} for e in events])
        async with session.post(
            f"{self.url}/logs/acme",
            data=body,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
        ) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"webhook answered {response.status}")
            return time.time()


class Scrape:
    """One `/metrics` page (Prometheus text, parsed by prometheus_client): sample name → series."""

    def __init__(self, samples: dict[str, list[tuple[dict[str, str], float]]]):
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return cls(samples)

    def series(self, name: str, **labels: str) -> list[float]:
        """Values of the series of `name` that carry `labels`."""
        return [value for have, value in self.samples.get(name, []) if labels.items() <= have.items()]

    def total(self, name: str, **labels: str) -> float:
        """Sum over those series (0 when there is none yet: a labelled series appears at first use)."""
        return sum(self.series(name, **labels))

    def latest(self, name: str, **labels: str) -> float:
        """The largest value, for timestamps (`..._timestamp_seconds`); an error when there is none."""
        return max(self._present(name, labels))

    def earliest(self, name: str, **labels: str) -> float:
        """The smallest value: of a counter's `..._created` series, when the first of them was counted."""
        return min(self._present(name, labels))

    def _present(self, name: str, labels: dict[str, str]) -> list[float]:
        values = self.series(name, **labels)
        if not values:
            raise RuntimeError(f"/metrics has no {name}{labels or ''}")
        return values


# --- users and events --------------------------------------------------------------------------


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_users(tag: str, count: int, *, verified: bool, logins: int) -> list[dict]:
    return [
        {
            "user_id": f"auth0|bench{tag}{i:06d}",
            "email": f"{tag}.{i}@example.com",
            "email_verified": verified,
            "logins_count": logins,
            "user_metadata": {"locale": "en"},
        }
        for i in range(count)
    ]


def log_id(tag: int, number: int) -> str:
    """56 digits like Auth0's, unique per (tag, number)."""
    return f"900{tag:017d}{number:036d}"


def make_event(kind: str, user: dict, event_log_id: str, date: str) -> dict:
    """A realistic Auth0 log event (the test fixtures' `ss`/`sv`) for `user`."""
    event = copy.deepcopy(json.loads((FIXTURES / f"{kind}.json").read_text()))
    event.update(log_id=event_log_id, _id=event_log_id, date=date, user_id=user["user_id"], user_name=user["email"])
    body = event.get("details", {}).get("body")
    if isinstance(body, dict) and "email" in body:
        body["email"] = user["email"]
    if kind == "sv":
        event["details"]["email"] = user["email"]
    return event


def signup_date(profile: dict, delay_ms: int = 14) -> str:
    """Auth0 writes the `ss` log entry just after creating the user (the fixtures: 14 ms later)."""
    created = datetime.fromisoformat(profile["created_at"].replace("Z", "+00:00"))
    return iso_ms(created + timedelta(milliseconds=delay_ms))


# --- machine facts -----------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor() or "?",
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    versions = {name: _version(name) for name in ("aiohttp", "aiosmtplib", "aiosmtpd", "Jinja2", "httpx")}
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git commit": git_commit(),
        "product tree": newest_product_file(),
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()) + f", SQLite {sqlite3.sqlite_version}",
        "tools": f"{_first_line(['wrk', '-v'])}; postfix smtp-sink {_first_line(['postconf', '-h', 'mail_version'])}",
    }


def newest_product_file() -> str:
    """The tree is shared and edited live: say how recent the measured code was (no git command)."""
    files = [
        p
        for folder in ("streamer", "templates")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    newest = max(files, key=lambda p: p.stat().st_mtime)
    moment = datetime.fromtimestamp(newest.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"newest file under streamer/ and templates/: {newest.relative_to(REPO)} modified {moment} "
        "(uncommitted changes, if any, are included)"
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
    except OSError:
        return "?"


def git_commit() -> str:
    """HEAD read from .git files (no git command: the tree is shared with other engineers).
    In a worktree .git is a file naming the worktree's folder; the refs are in its commondir."""
    git = common = REPO / ".git"
    try:
        if git.is_file():
            git = Path(git.read_text().strip().removeprefix("gitdir: "))
            if (git / "commondir").exists():
                common = (git / (git / "commondir").read_text().strip()).resolve()
            else:
                common = git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (common / ref).exists():
            return (common / ref).read_text().strip()[:12] + f" ({ref.rpartition('/')[2]})"
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12] + f" ({ref.rpartition('/')[2]})"
    except OSError:
        pass
    return "unknown"


# --- RESULTS.md sections of the other bench scripts --------------------------------------------

#: Sections bench/run.py does not generate: each script rewrites its own and keeps the others.
OWN_SECTIONS = ("Management API budget (bench/budget.py)", "Memory soak (bench/soak.py)")


def _section_span(text: str, title: str) -> tuple[int, int] | None:
    head = f"## {title}\n"
    start = text.find(head)
    if start < 0:
        return None
    end = text.find("\n## ", start + len(head))
    return start, (end + 1 if end >= 0 else len(text))


def write_section(path: Path, title: str, body: str) -> None:
    """Put `## title` + body into a Markdown file: replaced where it is, else appended."""
    text = path.read_text() if path.exists() else ""
    block = f"## {title}\n\n{body.rstrip()}\n\n"
    span = _section_span(text, title)
    if span is None:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        text = text[: span[0]] + block + text[span[1] :]
    path.write_text(text.rstrip("\n") + "\n")


def other_sections(path: Path) -> str:
    """The OWN_SECTIONS present in the file, as they are (for bench/run.py to keep)."""
    if not path.exists():
        return ""
    text = path.read_text()
    kept = [text[span[0] : span[1]].rstrip("\n") for title in OWN_SECTIONS if (span := _section_span(text, title))]
    return "\n\n".join(kept)
