"""Log-stream delivery, as Auth0 does it for http streams: batches, at least once, 3 attempts
per batch; a batch that failed them all is tried again later, and successive failed batches
suspend the stream (its events are kept until it is active again). Only loopback endpoints
get traffic: a stand-in never sends anything off this machine."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from urllib.parse import urlsplit

import aiohttp

from streamer.devkit.auth0_standin.state import JSON, Tenant

ATTEMPTS = 3
MAX_BATCH = 100


def is_loopback_url(url: str) -> bool:
    """Only loopback endpoints (127.0.0.0/8, ::1, localhost) are delivered to."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def batch_body(sink: JSON, events: list[JSON]) -> str:
    """The body in the sink's `httpContentFormat` (JSONARRAY, JSONLINES or JSONOBJECT)."""
    records = [{"log_id": e["log_id"], "data": e} for e in events]
    shape = sink.get("httpContentFormat", "JSONARRAY")
    if shape == "JSONLINES":
        return "\n".join(json.dumps(r) for r in records)
    if shape == "JSONOBJECT":
        return json.dumps({"logs": records})
    return json.dumps(records)


def batch_headers(sink: JSON) -> dict[str, str]:
    """Content type, the sink's Authorization and its custom headers."""
    headers = {"Content-Type": sink.get("httpContentType") or "application/json"}
    if sink.get("httpAuthorization"):
        headers["Authorization"] = sink["httpAuthorization"]
    for header in sink.get("httpCustomHeaders") or []:
        if isinstance(header, dict) and header.get("header"):
            headers[str(header["header"])] = str(header.get("value", ""))
    return headers


class StreamDelivery:
    """Takes (stream id, event) from the tenant's queue and posts them in batches; `run()` is
    the server's background task, `close()` releases its HTTP session."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        queue = self.tenant.stream_queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(0.05)  # let a burst of events form one batch
            while not queue.empty() and len(batch) < MAX_BATCH:
                batch.append(queue.get_nowait())
            by_stream: dict[str, list[JSON]] = {}
            for stream_id, event in batch:
                by_stream.setdefault(stream_id, []).append(event)
            for stream_id, events in by_stream.items():
                await self._deliver(stream_id, events)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, stream_id: str, events: list[JSON]) -> None:
        stream = self.tenant.log_streams.get(stream_id)
        if stream is None:
            return
        if stream.get("status") != "active":  # paused or suspended meanwhile: kept
            self.tenant.stream_held.setdefault(stream_id, []).extend(events)
        elif not is_loopback_url(stream.get("sink", {}).get("httpEndpoint", "")):
            self.tenant.stream_deliveries.append((stream_id, -1, len(events)))  # kept, not delivered
        elif not await self._post(stream, events):
            self._failed(stream, events)

    async def _post(self, stream: JSON, events: list[JSON]) -> bool:
        """Up to `ATTEMPTS` posts of the batch; True once one is answered with a 2xx."""
        sink = stream["sink"]
        body, headers = batch_body(sink, events).encode(), batch_headers(sink)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(ATTEMPTS):
            try:
                async with self._session.post(sink["httpEndpoint"], data=body, headers=headers) as answer:
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = 0
            self.tenant.stream_deliveries.append((stream["id"], status, len(events)))
            if 200 <= status < 300:
                self.tenant.stream_failures.pop(stream["id"], None)
                return True
            await asyncio.sleep(0.2 * (attempt + 1))
        return False

    def _failed(self, stream: JSON, events: list[JSON]) -> None:
        """A batch that failed every attempt: retried later, or kept once the stream is suspended."""
        tenant = self.tenant
        failures = tenant.stream_failures[stream["id"]] = tenant.stream_failures.get(stream["id"], 0) + 1
        if failures >= tenant.stream_suspend_after and stream.get("status") == "active":
            stream["status"] = "suspended"
        if stream.get("status") == "active":  # retried later, until it works
            asyncio.get_running_loop().call_later(0.5, tenant.queue_events, stream["id"], events)
        else:
            tenant.stream_held.setdefault(stream["id"], []).extend(events)
