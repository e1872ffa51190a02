"""Shared fixtures: real stores, a real SMTP catcher, the Auth0 stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import json as _json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def sample_event(name: str, **changes) -> dict:
    event = json.loads((FIXTURES / "events" / f"{name}.json").read_text())
    event.update(changes)
    return event


@pytest.fixture(autouse=True)
def _logs_to_stderr():
    """A test that captures logs into a buffer must not leave the next test writing to it."""
    yield
    from streamer import logs

    logs.configure("warning")


@pytest.fixture
async def sqlite_store(tmp_path):
    from streamer.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    """Every store implementation must pass the same contract tests (PostgreSQL: a fresh database each)."""
    from streamer.store import open_store

    if request.param == "postgres":
        import pg

        url = await pg.create_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()


# --- end-to-end harness: the Auth0 stand-in, a real SMTP catcher, the daemon in-process ----------

REPO = Path(__file__).resolve().parents[1]
WEBHOOK_TOKEN = "test-webhook-token-0123456789"


@pytest.fixture
async def standin():
    from streamer.devkit.auth0_standin import Auth0StandIn, load_sample_users

    server = Auth0StandIn(users=load_sample_users())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def catcher():
    from streamer.devkit.mailcatcher import MailCatcher

    server = MailCatcher()
    await server.start()  # sets server.port
    yield server
    await server.stop()


def config_text(
    tmp_path: Path, standin, catcher, *, extra_rules: str = "", delivery: str = "", poll: str = "{enabled: false}"
) -> str:
    return f"""\
server: {{listen: "127.0.0.1:0"}}
store: "sqlite:///{tmp_path}/streamer.db"
smtp: {{host: 127.0.0.1, port: {catcher.port}, security: none, from: "Acme <no-reply@acme.test>", pool_size: 2,
       timeout_s: 5}}
delivery: {{max_attempts: 4, backoff: {{initial_s: 0.05, max_s: 0.2}}{delivery}}}
templates: {{dir: "{REPO / "templates"}", default_locale: en}}
redirects: {{allowed_hosts: ["app.acme.test"]}}
tenants:
  acme:
    domain: {standin.domain}
    api_url: {standin.base_url}
    client_id: {standin.client_id}
    client_secret: {standin.client_secret}
    webhook_token: "{WEBHOOK_TOKEN}"
    poll: {poll}
    vars: {{app_url: "https://app.acme.test"}}
rules:
  - name: verify-email
    on: [ss, s]
    if: "not user.email_verified"
    once: per_user
    ticket: {{kind: email_verification, result_url: "{{{{ tenant.vars.app_url }}}}/verified?lang={{{{ locale }}}}",
             ttl_sec: 3600}}
    template: verify_email
    mark: {{app_metadata: {{verification_email_sent: true}}}}
  - name: welcome
    on: [sv, ss, s]
    if: "user.email_verified and (event.type == 'sv' or user.logins_count <= 1)"
    once: per_user
    template: welcome
{extra_rules}"""


class RunningDaemon:
    def __init__(self, daemon, task, config_path: Path, logs: io.StringIO):
        self.daemon, self.task, self.config_path, self.logs = daemon, task, config_path, logs

    @property
    def url(self) -> str:
        return self.daemon.url

    async def post(self, body, *, tenant="acme", token=WEBHOOK_TOKEN, raw: bytes | None = None):
        data = raw if raw is not None else _json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/logs/{tenant}", data=data, headers=headers) as response:
                text = await response.text()
                return response.status, (_json.loads(text) if text.startswith("{") else text)

    async def stop(self):
        self.daemon.stop.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_daemon(tmp_path):
    """start_daemon(config_text) → RunningDaemon; logs captured as JSON lines."""
    from streamer import logs
    from streamer.config import load_config
    from streamer.daemon import Daemon

    started: list[RunningDaemon] = []

    async def start(text: str, **options: Any) -> RunningDaemon:
        path = tmp_path / "streamer.yaml"
        path.write_text(text)
        buffer = io.StringIO()
        logs.configure("debug", stream=buffer)
        daemon = Daemon(load_config(path, env={}), **options)
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(install_signals=False, on_ready=lambda url: ready.set()))
        done, _ = await asyncio.wait(
            {task, asyncio.ensure_future(ready.wait())}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # raise the start-up error
        running = RunningDaemon(daemon, task, path, buffer)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            with contextlib.suppress(Exception):
                await running.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster for the session (tests/pg.py); FAILS if the binaries are missing."""
    import pg

    yield from pg.session_cluster()


@pytest.fixture
async def harness(tmp_path, standin):
    """The hosted password-reset form in-process: `await harness(**options)` → support.reset_form.Harness."""
    from support.reset_form import harnesses

    async with harnesses(tmp_path, standin) as make:
        yield make
