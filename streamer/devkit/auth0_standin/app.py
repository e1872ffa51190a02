"""The stand-in as a server: `Auth0StandIn` is a `Tenant` that serves the resource modules'
routes with aiohttp, runs the log-stream delivery, and offers the tests' hooks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from streamer.devkit.auth0_standin import logs, streams, tickets, tokens
from streamer.devkit.auth0_standin import users as users_resource
from streamer.devkit.auth0_standin.limits import TokenBucket, plan_buckets
from streamer.devkit.auth0_standin.middleware import standin_middleware
from streamer.devkit.auth0_standin.passwords import password_matches
from streamer.devkit.auth0_standin.state import JSON, TENANT, InjectedFailure, Tenant
from streamer.devkit.auth0_standin.stream_delivery import StreamDelivery


def build_app(tenant: Tenant) -> web.Application:
    """The Management API endpoints streamer uses, `/oauth/token` and the ticket pages."""
    app = web.Application(middlewares=[standin_middleware])
    app[TENANT] = tenant
    for module in (tokens, users_resource, tickets, logs, streams):
        app.router.add_routes(module.routes)
    return app


class Auth0StandIn(Tenant):
    """One emulated tenant. `await start()` → base_url; `await stop()` when done."""

    def __init__(
        self,
        *,
        domain: str = "acme-test.us.auth0.com",
        client_id: str = "standin-client",
        client_secret: str = "standin-secret",
        users: list[JSON] | None = None,
        rate_limit: tuple[int, float] | None = None,
        token_ttl_s: int = 86400,
        legacy_password_flow: bool = False,
        search_lag_s: float = 0.0,
        latency_s: float = 0.0,
        plan: str | None = None,
    ):
        super().__init__(
            domain=domain,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl_s=token_ttl_s,
            legacy_password_flow=legacy_password_flow,
            search_lag_s=search_lag_s,
            latency_s=latency_s,
            granted_scopes=tokens.SCOPES,
        )
        self._runner: web.AppRunner | None = None
        self._delivery: StreamDelivery | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        if plan is not None:
            self.set_plan(plan)
        if rate_limit is not None:
            self.set_rate_limit(*rate_limit)
        for profile in users or []:
            self.add_user(profile, indexed=True)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.base_url = f"http://{shown}:{bound_port}"
        self.stream_queue = asyncio.Queue()
        self._delivery = StreamDelivery(self)
        self._delivery_task = asyncio.create_task(self._delivery.run(), name="auth0-standin-log-streams")
        return self.base_url

    async def stop(self) -> None:
        if self._delivery_task is not None:
            self._delivery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery_task
            self._delivery_task = None
        self.stream_queue = None
        if self._delivery is not None:
            await self._delivery.close()
            self._delivery = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Auth0StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- test hooks ---------------------------------------------------------------------------

    def add_user(self, profile: JSON, *, indexed: bool | None = None) -> JSON:
        """See `users.add_user`: `indexed` False hides the user from search, True makes it old."""
        return users_resource.add_user(self, profile, indexed=indexed)

    def delete_user(self, user_id: str) -> None:
        """Delete a user as `DELETE /api/v2/users/{id}` does (an `sdu` log event; search lags)."""
        users_resource.delete_user(self, user_id)

    def add_log(self, event: JSON) -> JSON:
        """Append a tenant log event (see `logs.add_log`): a given unused numeric `log_id` is kept."""
        return logs.add_log(self, event)

    def fail_next(self, path_prefix: str, status: int, count: int = 1) -> None:
        """The next `count` requests whose path starts with `path_prefix` get `status` (Auth0 bodies)."""
        self.failures.append(InjectedFailure(path_prefix, status, count))

    def set_rate_limit(self, burst: int, per_second: float) -> None:
        self.bucket = TokenBucket(burst, per_second, updated=time.time())

    def clear_rate_limit(self) -> None:
        self.bucket = None
        self.endpoint_buckets = {}

    def set_plan(self, plan: str) -> None:
        """The rate limits of an Auth0 plan (RATE_LIMIT_PLANS), each bucket starting full."""
        self.bucket, self.endpoint_buckets = plan_buckets(plan, time.time())

    def password_matches(self, user_id: str, password: str) -> bool:
        return password_matches(self, user_id, password)

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token handed out (to assert that none leaks into logs or storage)."""
        return list(self.tokens)

    def expire_tokens(self) -> None:
        """Every access token issued so far is now expired (the next API call gets 401)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    def issue_token(self, ttl_s: int | None = None) -> str:
        """A valid access token without going through /oauth/token (for raw HTTP tests)."""
        return tokens.new_token(self, self.token_ttl_s if ttl_s is None else ttl_s)

    # Names of the single-module stand-in that tests still use.
    @property
    def _failures(self) -> list[InjectedFailure]:
        return self.failures

    def _search_view(self, user_id: str, now: float) -> JSON | None:
        return self.search_view(user_id, now)


def realistic_tenant(**options: Any) -> Auth0StandIn:
    """A stand-in that behaves like a real tenant under load: 10 requests/s with a burst of 10,
    50 ms per call, users search 3 s behind writes (each overridable by keyword)."""
    settings: dict[str, Any] = {"search_lag_s": 3.0, "latency_s": 0.05, "rate_limit": (10, 10.0)}
    settings.update(options)
    return Auth0StandIn(**settings)
