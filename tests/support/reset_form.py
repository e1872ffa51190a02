"""The hosted password-reset form under test: its config, an in-process server and a harness
to drive it (used by test_password_reset and test_password_reset_browser)."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streamer import logs
from streamer.auth0 import ManagementApi
from streamer.config import parse_config
from streamer.events import parse_body
from streamer.inbox import Inbox
from streamer.password_reset import NewPasswordVault, PasswordResetPages, ResetPageSettings
from streamer.server import Readiness, build_app
from streamer.store.sqlite import SqliteStore

from conftest import config_text
from support.clock import FakeClock
from support.users import ANA, ANA_EMAIL

__all__ = [
    "ANA",
    "ANA_EMAIL",
    "BRUNO_EMAIL",
    "NOBODY_EMAIL",
    "PATH",
    "RESET_RULE",
    "SECRET_PASSWORD",
    "SHOP",
    "Harness",
    "csrf_from",
    "harnesses",
    "make_config",
]

NOBODY_EMAIL = "nobody.here@example.com"
BRUNO_EMAIL = "bruno.costa@example.com"  # google-oauth2 only: no database identity
SHOP = "shopClient0123456789"
PATH = "/password-reset/acme"
SECRET_PASSWORD = "Tr0ub4dor&3-Zebra-Quartz-91"

RESET_RULE = """\
  - name: password-reset
    on: [password_reset_requested]
    once: {cooldown: 5m}
    ticket: {kind: password_change, result_url: "{{ tenant.vars.app_url }}/login", ttl_sec: 3600}
    template: password_change
"""


@dataclass
class Harness:
    client: TestClient
    pages: PasswordResetPages
    store: SqliteStore
    db_path: Path
    vault: NewPasswordVault
    clock: FakeClock
    logs: io.StringIO

    async def token(self, query: str = "") -> str:
        response = await self.client.get(PATH + query)
        assert response.status == 200
        return csrf_from(await response.text())

    async def submit(
        self, email: str, *, query: str = "", token: str | None = None, headers=None, **fields
    ) -> tuple[int, dict, str]:
        token = token if token is not None else await self.token(query)
        data = {"csrf_token": token, "email": email, **fields}
        response = await self.client.post(PATH + query, data=data, headers=headers or {})
        return response.status, response.headers, await response.text()

    def events(self) -> list[dict]:
        """Every event stored, read straight from the database file (not through the store)."""
        with sqlite3.connect(self.db_path) as db:
            bodies = [body for (body,) in db.execute("SELECT body FROM inbox")]
        return sorted((event for body in bodies for event in parse_body(body).events), key=lambda e: e["log_id"])

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines() if line.startswith("{")]


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def make_config(
    tmp_path,
    standin,
    *,
    enabled=True,
    new_password=False,
    per_ip="1000/hour",
    per_address="1000/hour",
    default_locale: str | None = None,
    trusted_proxies: list | None = None,
):
    text = config_text(tmp_path, standin, SimpleNamespace(port=2525), extra_rules=RESET_RULE)
    if trusted_proxies is not None:
        text = text.replace(
            'server: {listen: "127.0.0.1:0"}',
            f'server: {{listen: "127.0.0.1:0", trusted_proxies: {json.dumps(trusted_proxies)}}}',
        )
    text = text.replace(
        'vars: {app_url: "https://app.acme.test"}',
        'vars: {app_url: "https://app.acme.test", clients: {'
        f'{SHOP}: {{name: "Acme <Shop>", locale: fr}}, plainClient: {{name: "Plain"}}}}}}',
    )
    if default_locale:
        text = text.replace("    poll:", f"    default_locale: {default_locale}\n    poll:")
    text += (
        f"password_reset: {{enabled: {str(enabled).lower()}, new_password: {str(new_password).lower()}, "
        f'min_length: 10, rate_limit: {{per_ip: "{per_ip}", per_address: "{per_address}"}}}}\n'
    )
    return parse_config(text, env={}, base_dir=tmp_path)


@asynccontextmanager
async def harnesses(tmp_path, standin):
    """Yields `make(**options) -> Harness`; the `harness` fixture in conftest wraps it."""
    async with AsyncExitStack() as stack:
        made = 0

        async def make(**options) -> Harness:
            nonlocal made
            made += 1
            min_response_s = options.pop("min_response_s", 0.05)
            config = make_config(tmp_path, standin, **options)
            buffer = io.StringIO()
            logs.configure("debug", stream=buffer)
            db_path = tmp_path / f"pr{made}.db"
            store = SqliteStore(db_path)
            await store.open()
            stack.push_async_callback(store.close)
            api = ManagementApi(config.tenants["acme"], name="acme", max_retries=0)
            stack.push_async_callback(api.close)
            clock = FakeClock(10_000.0)
            vault = NewPasswordVault(clock=clock)
            pages = PasswordResetPages(
                ResetPageSettings.of(config),
                Inbox(store, config.listened_types()),
                {"acme": api},
                vault=vault,
                clock=clock,
                min_response_s=min_response_s,
            )
            if "trusted_proxies" in options:  # the daemon's own app, with its forwarded-client middleware
                app = build_app(config, Inbox(store, config.listened_types()), Readiness({}), pages.routes())
            else:
                app = web.Application()
                app.add_routes(pages.routes())
            client = TestClient(TestServer(app))
            await client.start_server()
            stack.push_async_callback(client.close)
            stack.push_async_callback(pages.drain)
            return Harness(client, pages, store, db_path, vault, clock, buffer)

        yield make
