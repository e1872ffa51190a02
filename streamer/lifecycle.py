"""Cooperative stopping: the long-running loops wait with these, so SIGTERM interrupts any wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def wait_any(stop: asyncio.Event, awaitables: Iterable[Awaitable[Any]], timeout: float | None = None) -> None:
    """Return when one of `awaitables` is done, `stop` is set, or `timeout` passes.

    Tasks passed in are left running; waiters created here (for events) are cancelled.
    """
    mine = [asyncio.ensure_future(stop.wait())]
    futures = set()
    for item in awaitables:
        future = asyncio.ensure_future(item)
        futures.add(future)
        if future is not item:
            mine.append(future)
    try:
        await asyncio.wait({*mine, *futures}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in mine:
            future.cancel()
