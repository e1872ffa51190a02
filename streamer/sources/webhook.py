"""`POST /logs/{tenant}`: the Auth0 custom-webhook log stream.

A 200 is an Auth0 promise that the batch is ours: we answer it only after the store committed.
Unknown tenants and wrong tokens get the same 401, after the same constant-time comparison.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from streamer import metrics
from streamer.config import TenantConfig
from streamer.events import BodyError, parse_body
from streamer.inbox import Inbox
from streamer.logs import get_logger, redact_text

log = get_logger(__name__)

_DUMMY_TOKEN = "streamer-no-such-tenant-" + "x" * 32
#: What a 503 asks of the sender when the store failed (Auth0 retries on any non-2xx anyway).
STORE_RETRY_AFTER_S = 5
#: Bodies larger than this are parsed on a worker thread: a few MB of JSON lines take a few
#: hundred ms to parse, which on the event loop would stall every other request meanwhile.
PARSE_OFF_LOOP_BYTES = 256 * 1024


def authorized(header: str, token: str | None) -> bool:
    """`Authorization` equals the token, bare or as `Bearer <token>` (Auth0 sends it verbatim)."""
    expected = (token or _DUMMY_TOKEN).encode()
    # aiohttp hands bytes that are not UTF-8 over as lone surrogates: compare the bytes as sent.
    given = header.strip().encode("utf-8", "surrogateescape")
    bare = given[7:].strip() if given[:7].lower() == b"bearer " else given
    # Evaluate both comparisons always: the time taken does not tell which form matched.
    verbatim_ok = hmac.compare_digest(given, expected)
    bare_ok = hmac.compare_digest(bare, expected)
    return token is not None and (verbatim_ok | bare_ok)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None:
        # aiohttp stops at the declared length; the app's client_max_size is limit + 1.
        return await request.read() if request.content_length <= limit else None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def make_handler(
    tenants: Mapping[str, TenantConfig], inbox: Inbox, *, max_body_bytes: int
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def receive_logs(request: web.Request) -> web.Response:
        name = request.match_info["tenant"]
        tenant = tenants.get(name)
        token = tenant.webhook_token.get_secret_value() if tenant and tenant.webhook_token else None
        if not authorized(request.headers.get("Authorization", ""), token):
            metrics.EVENTS_REJECTED.labels(name if tenant else "(unknown)", "unauthorized").inc()
            log.warning("webhook_unauthorized", tenant=name if tenant else None, remote=request.remote)
            return _error(401, "unauthorized")
        body = await _read_limited(request, max_body_bytes)
        if body is None:
            metrics.EVENTS_REJECTED.labels(name, "too_large").inc()
            log.warning("webhook_body_too_large", tenant=name, limit=max_body_bytes)
            return _error(413, f"body larger than server.max_body_bytes ({max_body_bytes})")
        try:
            batch = await asyncio.to_thread(parse_body, body) if len(body) > PARSE_OFF_LOOP_BYTES else parse_body(body)
        except BodyError as exc:
            metrics.EVENTS_REJECTED.labels(name, "bad_body").inc()
            log.warning("webhook_bad_body", tenant=name, error=str(exc), size=len(body))
            return _error(400, str(exc))
        if batch.skipped:
            metrics.EVENTS_REJECTED.labels(name, "not_a_log_event").inc(len(batch.skipped))
            log.warning("webhook_entries_skipped", tenant=name, count=len(batch.skipped), reasons=batch.skipped[:5])
        inbox.quarantine(name, batch.quarantined, source="webhook")
        whole = not batch.skipped and not batch.quarantined  # the body holds exactly the events
        try:
            result = await inbox.accept(name, batch.events, source="webhook", raw=body if whole else None)
        except Exception as exc:  # noqa: BLE001 - disk full, database down: Auth0 must send it again
            metrics.EVENTS_REJECTED.labels(name, "store_failed").inc()
            log.error(
                "webhook_store_failed",
                tenant=name,
                events=len(batch.events),
                error=redact_text(str(exc)),
                hint="nothing was stored; Auth0 delivers the batch again",
            )
            return _error(
                503, "the batch could not be stored; send it again", headers={"Retry-After": str(STORE_RETRY_AFTER_S)}
            )
        # orjson into bytes: a third of json_response's cost, on the path every accepted batch takes.
        return web.Response(
            body=orjson.dumps(
                {
                    "received": len(batch.events),
                    "stored": result.new,
                    "duplicate": result.duplicate,
                    "ignored": len(batch.events) - result.new - result.duplicate,
                    "skipped": len(batch.skipped),
                    "skipped_reasons": batch.skipped[:20],
                    "quarantined": len(batch.quarantined),
                    "quarantined_reasons": [f"{q.log_id}: {q.reason}" for q in batch.quarantined[:20]],
                }
            ),
            content_type="application/json",
        )

    return receive_logs
