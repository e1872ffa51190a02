"""A throwaway PostgreSQL cluster for the test session, and a fresh database per test.

    with cluster() as base_url:                  # initdb + pg_ctl start on a free port, 127.0.0.1
        url = await create_database(base_url)     # CREATE DATABASE test_<pid>_<n>: tests are independent

The binaries come from $STREAMER_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/<newest>/bin or
$PATH. When none has initdb/pg_ctl/postgres the session FAILS (CI installs `postgresql`; no skip).
`initdb` refuses root, so as root the cluster runs as the `postgres` user (created if missing).
The cluster trades durability for speed (fsync=off): it only ever holds test data.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "streamer"  # the cluster's superuser (trust auth on 127.0.0.1 and the socket)
DATABASE = "streamer"
_REQUIRED = ("initdb", "pg_ctl", "postgres")
_databases = itertools.count(1)


class PgSetupError(RuntimeError):
    pass


def find_bindir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("STREAMER_PG_BINDIR"):
        candidates.append(Path(os.environ["STREAMER_PG_BINDIR"]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    candidates = list(dict.fromkeys(candidates))
    for bindir in candidates:
        if all((bindir / name).is_file() for name in _REQUIRED):
            return bindir
    raise PgSetupError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: looked in "
        f"{', '.join(map(str, candidates)) or '(no candidates)'}. Install them (Debian: "
        "`apt-get install -y postgresql`) or set STREAMER_PG_BINDIR to their directory."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One initdb'd data directory under a temp root; the socket and server log live in the root."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="streamer-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.running = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._ensure_postgres_user()
            self._as_user = [shutil.which("runuser") or "/sbin/runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)

    @staticmethod
    def _ensure_postgres_user() -> None:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                check=True,
                capture_output=True,
            )

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 60, as_owner: bool = True) -> subprocess.CompletedProcess:
        command = [*(self._as_user if as_owner else []), *args]
        try:
            result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PgSetupError(f"{' '.join(args)} timed out after {timeout}s{self.log_tail()}") from exc
        if result.returncode != 0:
            raise PgSetupError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{self.log_tail()}"
            )
        return result

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- server log (tail) ---\n" + "\n".join(text) if text else ""

    def start(self, *, settings: dict[str, str] | None = None, attempts: int = 3) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            timeout=120,
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self._options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        for attempt in range(attempts):  # the free port may be taken between probe and bind
            self.port = _free_port()
            try:
                self._start_server()
            except PgSetupError:
                if attempt + 1 < attempts and "already in use" in self.log_tail():
                    continue
                raise
            break
        self.running = True
        createdb = self.bindir / "createdb"
        if createdb.is_file():  # also proves TCP on 127.0.0.1 works, not just the socket
            self._run(str(createdb), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE, as_owner=False)
        else:
            self._run(
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                "postgres",
                "-c",
                f"CREATE DATABASE {DATABASE}",
                as_owner=False,
            )

    def pause(self) -> None:
        """Shut the server down (`-m fast`: clients are disconnected, as in a PostgreSQL restart);
        `resume()` starts it again on the same port with the same data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)

    def resume(self) -> None:
        self._start_server()

    def _start_server(self) -> None:
        """`pg_ctl start` on this data directory, port and settings; returns once it accepts connections."""
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "-o",
            f"-p {self.port} -k {self.root} {self._options}",
            "start",
            timeout=60,
        )

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(PgSetupError):
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                    timeout=60,
                )
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster(*, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start a cluster, yield its URL (database `streamer`, user `streamer`, no password), then remove it."""
    pg = Cluster(find_bindir())
    atexit.register(pg.stop)  # also on an interrupted session
    try:
        pg.start(settings=settings)
        yield pg.url
    finally:
        pg.stop()
        atexit.unregister(pg.stop)


def session_cluster() -> Iterator[str]:
    """For a session fixture: like `cluster()`, but a setup problem FAILS the tests with its reason."""
    manager = cluster()
    try:
        url = manager.__enter__()
        problem = None
    except PgSetupError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"cannot start the test PostgreSQL cluster: {problem}", pytrace=False)
    try:
        yield url
    finally:
        manager.__exit__(None, None, None)


async def create_database(base_url: str) -> str:
    """A new empty database in the cluster of `base_url`; returns its URL."""
    import asyncpg

    name = f"test_{os.getpid()}_{next(_databases)}"
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base_url.rsplit("/", 1)[0] + f"/{name}"
