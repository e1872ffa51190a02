"""The daemon's HTTP face: webhook, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer import metrics
from streamer.client_address import client_address
from streamer.config import Config
from streamer.inbox import Inbox
from streamer.logs import get_logger, redact_text
from streamer.sources.webhook import make_handler

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READY_CACHE_S = 5.0
BODY_TIMEOUT_S = web.AppKey("body_timeout_s", float)
#: File descriptors kept free for the store, SMTP and Auth0 connections when connections are capped.
FD_RESERVE = 128


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs every malformed request it answers with a 400 itself (a bad header byte, an
    unknown Content-Encoding) as an error with a plain-text traceback: the client's mistake, not
    ours, and anyone could fill the log with them. One structured line each instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RequestPayloadError):  # a body left unread (after a 401) that is broken too
            error = error.__cause__ if isinstance(error.__cause__, HttpProcessingError) else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            log.info(
                "http_bad_request",
                status=error.code,
                error=str(error.message).strip().splitlines()[0][:200],
                detail=record.getMessage()[:200],
            )
            return False
        return True


#: The logger aiohttp's connection handlers report to (handler_args).
HTTP_LOG = logging.getLogger("streamer.http")
HTTP_LOG.addFilter(_ClientErrorsInOneLine())


class BodyTimeout(asyncio.TimeoutError):
    """The request body did not arrive in time. A TimeoutError, so that aiohttp's own handling of an
    unread body after the answer (lingering) treats it as the end of the wait, not as a crash."""


@web.middleware
async def body_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request body must arrive within server.body_timeout_s of the headers (else 408), and one
    that cannot be read (bad chunked framing, a Content-Encoding it does not have) is a 400.

    aiohttp has no body timeout: a client sending a byte now and then would hold its connection
    and handler forever (with no token needed on the reset form). The deadline is on the body
    only, not on the handler's own work (a slow store commit is not the client's fault).
    """
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    timeout = request.app[BODY_TIMEOUT_S]

    def expire() -> None:
        if not request.content.is_eof():
            request.content.set_exception(BodyTimeout())

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await handler(request)
    except BodyTimeout:
        metrics.HTTP_READ_TIMEOUTS.inc()
        log.warning("http_body_timeout", path=request.path, remote=request.remote, timeout_s=timeout)
        return _abandon(request, 408, f"request body not received within {timeout:g} s")
    except RequestPayloadError as exc:
        log.warning("http_body_unreadable", path=request.path, remote=request.remote, error=str(exc)[:200])
        return _abandon(request, 400, "request body could not be read (framing or Content-Encoding)")
    finally:
        timer.cancel()


def _abandon(request: web.Request, status: int, message: str) -> web.Response:
    """Answer and close: the rest of the body is not read (marked ended, so aiohttp does not wait
    for it either), and what remains of it on the connection must not be taken for a request."""
    request.content.feed_eof()
    response = web.json_response({"error": message}, status=status)
    response.force_close()
    return response


def connection_limit(wanted: int | None) -> int:
    """server.max_connections, at most what the file descriptor limit leaves after FD_RESERVE: past
    it, accept() fails and so do SQLite, SMTP and Auth0 connections, and email stops with it.
    The soft limit is raised to the hard one first (as Go's runtime does): many systems start
    services with 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        target = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = max(soft, target)
        except (ValueError, OSError):
            pass
    room = (1 << 20) if soft == resource.RLIM_INFINITY else max(1, soft - FD_RESERVE)
    return min(wanted, room) if wanted else room


class _Refused(asyncio.Protocol):
    """A connection over the cap: a short 503 and close, before anything is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.HTTP_CONNECTIONS_REFUSED.inc()
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        transport.close()


class CappedTCPSite(web.TCPSite):
    """aiohttp's TCPSite with at most `max_connections` open connections (aiohttp has no such bound)."""

    def __init__(
        self, runner: web.BaseRunner, host: str | None, port: int | None, *, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; what TCPSite.start does next is redone here
        server = self._runner.server
        assert server is not None
        cap = self.max_connections

        def protocol() -> asyncio.Protocol:
            return _Refused() if len(server.connections) >= cap else server()

        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


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


def build_app(
    config: Config,
    inbox: Inbox,
    readiness: Readiness,
    extra_routes: Sequence[web.RouteDef] = (),
    stopped_tasks: Callable[[], list[str]] = list,
) -> web.Application:
    """`stopped_tasks` names the daemon's background tasks (processor, dispatcher, pollers) that
    ended while they should run: then /healthz says the daemon is broken (503)."""
    # The webhook enforces max_body_bytes itself (413); this is aiohttp's own outer bound.
    # keepalive_timeout: aiohttp closes a connection that has no complete request after it, idle
    # or sending its headers slowly, so it is the header timeout (and the keep-alive idle time).
    middlewares = [forwarded_client(config)] if config.server.trusted_proxies else []
    app = web.Application(
        client_max_size=config.server.max_body_bytes + 1,
        middlewares=[*middlewares, body_guard],
        handler_args={
            "keepalive_timeout": config.server.header_timeout_s,
            "logger": HTTP_LOG,
            # an unread body after a 401/413 is drained this long at most
            "lingering_time": min(10.0, config.server.body_timeout_s),
        },
    )
    app[BODY_TIMEOUT_S] = config.server.body_timeout_s

    async def healthz(_request: web.Request) -> web.Response:
        stopped = stopped_tasks()
        if stopped:
            return web.json_response({"status": "broken", "stopped": stopped}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        results = await readiness.results()
        ok = all(value == "ok" for value in results.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": results}, status=200 if ok else 503
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    receive_logs = make_handler(config.tenants, inbox, max_body_bytes=config.server.max_body_bytes)
    app.router.add_post("/logs/{tenant}", receive_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.add_routes(extra_routes)
    return app
