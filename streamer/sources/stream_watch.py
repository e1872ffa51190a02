"""Watching the tenant's Auth0 log stream, so an outage of streamer never silences it for good.

Auth0 suspends a custom-webhook stream whose endpoint keeps failing (streamer down, a broken
deploy or proxy) and never restarts it by itself: after the outage no event would arrive and no
email would go out, and nothing would say so. So every few minutes, and right after start, the
daemon reads the stream that points at it. A *suspended* stream is made active again (Auth0 then
delivers the events it kept, within the tenant's log retention); a *paused* one was paused by a
person and is only reported. `streamer_log_stream_active` shows the state to alert on.

Needs the M2M application's `read:log_streams` scope (and `update:log_streams` to re-activate);
without it the watch says so once and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from streamer import metrics
from streamer.auth0.errors import Auth0Error, Auth0Permanent
from streamer.auth0.log_streams import find_stream, missing_categories, our_endpoint, stream_name
from streamer.lifecycle import sleep_unless_stopped
from streamer.logs import get_logger

log = get_logger(__name__)

FIRST_CHECK_S = 2.0  # after start: the server is listening by then
CHECK_EVERY_S = 300.0


class StreamApi(Protocol):
    async def list_log_streams(self) -> list[dict[str, Any]]: ...

    async def update_log_stream(self, stream_id: str, body: dict[str, Any]) -> dict[str, Any]: ...


class Leadership(Protocol):
    async def try_lead(self, name: str) -> bool: ...

    async def release_lead(self, name: str) -> None: ...


class StreamWatch:
    def __init__(
        self, tenant: str, api: StreamApi, public_url: str | None, leadership: Leadership, types: Iterable[str] = ()
    ):
        self.tenant = tenant
        self.api = api
        self.public_url = public_url
        self.leadership = leadership  # the store: of several replicas, one watches
        self.types = set(types)  # the event types the rules listen to
        self._last_status: str | None = None
        self._reported_missing = False
        self._reported_filters: list[str] = []

    async def run(self, stop: asyncio.Event, *, first_s: float = FIRST_CHECK_S, every_s: float = CHECK_EVERY_S) -> None:
        lead = f"stream-watch:{self.tenant}"
        await sleep_unless_stopped(stop, first_s)
        try:
            while not stop.is_set():
                try:
                    if await self.leadership.try_lead(lead) and not await self.check():
                        return
                except Exception:  # noqa: BLE001 - a watch must never take the daemon down
                    log.exception("log_stream_check_crashed", tenant=self.tenant)
                await sleep_unless_stopped(stop, every_s)
        finally:
            await self.leadership.release_lead(lead)

    async def check(self) -> bool:
        """One look (and a re-activation if needed); False when watching cannot work (scope)."""
        try:
            stream = find_stream(await self.api.list_log_streams(), self.tenant, self.public_url)
        except Auth0Permanent as exc:
            if exc.status == 403:
                log.warning(
                    "log_stream_watch_off",
                    tenant=self.tenant,
                    error=str(exc),
                    hint="grant the M2M application read:log_streams (and update:log_streams) so "
                    "streamer notices, and undoes, Auth0 suspending the log stream",
                )
                return False
            log.warning("log_stream_check_failed", tenant=self.tenant, error=str(exc))
            return True
        except Auth0Error as exc:
            log.warning("log_stream_check_failed", tenant=self.tenant, error=str(exc))
            return True
        if stream is None:
            if not self._reported_missing:
                self._reported_missing = True
                log.info(
                    "log_stream_not_found",
                    tenant=self.tenant,
                    endpoint=our_endpoint(self.public_url, self.tenant),
                    hint=f"no http log stream posts to this daemon's URL or is named {stream_name(self.tenant)}; "
                    "`streamer register` creates one",
                )
            return True
        self._reported_missing = False
        status = stream.get("status")
        if status == "suspended":
            status = await self._reactivate(stream)
        elif status == "paused" and self._last_status != "paused":
            log.warning(
                "log_stream_paused",
                tenant=self.tenant,
                stream=stream.get("id"),
                hint="paused in Auth0 by someone (or by Auth0 after 7 days of failures): events wait "
                "there, within the log retention, until it is resumed (Monitoring > Streams)",
            )
        elif status == "active" and self._last_status not in (None, "active"):
            log.info("log_stream_active", tenant=self.tenant, stream=stream.get("id"))
        self._last_status = status
        metrics.LOG_STREAM_ACTIVE.labels(self.tenant).set(1 if status == "active" else 0)
        left_out = missing_categories(stream, self.types)
        if left_out and left_out != self._reported_filters:
            log.warning(
                "log_stream_filters_leave_out_events",
                tenant=self.tenant,
                stream=stream.get("id"),
                categories=left_out,
                hint="a rule listens to events the stream does not send: run "
                "`streamer register` again, it sets the filters the rules need",
            )
        self._reported_filters = left_out
        return True

    async def _reactivate(self, stream: dict[str, Any]) -> str:
        stream_id = str(stream.get("id"))
        try:
            await self.api.update_log_stream(stream_id, {"status": "active"})
        except Auth0Error as exc:
            log.error(
                "log_stream_suspended",
                tenant=self.tenant,
                stream=stream_id,
                error=str(exc),
                hint="Auth0 suspended the stream after failed deliveries and streamer cannot restart it "
                "(needs update:log_streams): restart it in the dashboard (Monitoring > Streams)",
            )
            return "suspended"
        metrics.LOG_STREAM_REACTIVATIONS.labels(self.tenant).inc()
        log.warning(
            "log_stream_reactivated",
            tenant=self.tenant,
            stream=stream_id,
            hint="Auth0 had suspended it after failed deliveries; it now delivers the events it kept. "
            "If this repeats, Auth0 cannot reach the endpoint: check the URL, TLS and proxy",
        )
        return "active"
