"""The daemon's HTTP face: webhook, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer import metrics
from streamer.client_address import client_address
from streamer.config import Config
from streamer.inbox import Inbox
from streamer.logs import get_logger, redact_text
from streamer.sources.webhook import make_handler

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
READY_CACHE_S = 5.0


class Readiness:
    """Runs the named checks at most every few seconds, so probes cannot hammer SMTP."""

    def __init__(self, checks: dict[str, ReadinessCheck]):
        self.checks = checks
        self._last: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()

    async def results(self) -> dict[str, str]:
        async with self._lock:
            if self._last and time.monotonic() - self._last[0] < READY_CACHE_S:
                return self._last[1]
            results = {}
            for name, check in self.checks.items():
                try:
                    await asyncio.wait_for(check(), timeout=5)
                    results[name] = "ok"
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    results[name] = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            self._last = (time.monotonic(), results)
            return results


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_client(config: Config) -> Middleware:
    """Middleware: `request.remote` becomes the client a trusted proxy names (client_address)."""
    networks = config.server.trusted_networks

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = client_address(request.remote, request.headers, networks)
        if remote is not None and remote != request.remote:
            request = request.clone(remote=remote)
        return await handler(request)

    return middleware


def build_app(config: Config, inbox: Inbox, readiness: Readiness,
              extra_routes: Sequence[web.RouteDef] = ()) -> web.Application:
    # The webhook enforces max_body_bytes itself (413); this is aiohttp's own outer bound.
    app = web.Application(client_max_size=config.server.max_body_bytes + 1,
                          middlewares=[forwarded_client(config)] if config.server.trusted_proxies else [])

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        results = await readiness.results()
        ok = all(value == "ok" for value in results.values())
        return web.json_response({"status": "ready" if ok else "not ready", "checks": results},
                                 status=200 if ok else 503)

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    receive_logs = make_handler(config.tenants, inbox, max_body_bytes=config.server.max_body_bytes)
    app.router.add_post("/logs/{tenant}", receive_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.add_routes(extra_routes)
    return app
