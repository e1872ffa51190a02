"""Writes whose loss would repeat an effect (an email sent, events evaluated): while the store is
away the result is kept in memory and written again until the store is back.

The rows stay claimed meanwhile, and a live replica's claims are not taken by others, so
nothing is done twice; only a process death loses what was kept (then the lease or the
liveness reclaim redo the work, as documented).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from streamer import metrics
from streamer.logs import get_logger, redact_text

log = get_logger(__name__)
T = TypeVar("T")

#: Retry delays while the store is away (doubling up to the cap).
RETRY_S = (0.2, 5.0)
#: After a stop, a write still failing is given up this long after (then the lease decides).
AFTER_STOP_S = 30.0


async def persist(write: Callable[[], Awaitable[T]], *, stop: asyncio.Event, what: str, **fields: Any) -> T:
    """`await write()` until it succeeds; raises its last error only AFTER_STOP_S after `stop`.
    `write` must be safe to repeat (one transaction; a repeat after a lost commit changes nothing)."""
    delay, cap = RETRY_S
    give_up_at: float | None = None
    waiting = False
    try:
        while True:
            try:
                result = await write()
                if waiting:
                    log.info(f"{what}_recorded", **fields)
                return result
            except Exception as exc:  # noqa: BLE001 - the store is away: keep the result, retry
                if stop.is_set():
                    give_up_at = give_up_at or time.monotonic() + AFTER_STOP_S
                    if time.monotonic() >= give_up_at:
                        raise
                if not waiting:
                    waiting = True
                    metrics.OUTCOMES_UNRECORDED.inc()
                    log.warning(
                        f"{what}_unrecorded",
                        **fields,
                        error=redact_text(str(exc)),
                        note="kept in memory, retrying until the store is back",
                    )
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
    finally:
        if waiting:
            metrics.OUTCOMES_UNRECORDED.dec()
