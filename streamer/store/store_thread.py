"""One thread of its own that runs a store's blocking calls, answering on the event loop.

Why not `loop.run_in_executor` with a one-worker ThreadPoolExecutor: the store hops to its thread
several times per email (claim, sent mark, settle), and each hop there builds a
concurrent.futures.Future, chains it to an asyncio one and hands the work over through a
pure-Python Condition. Here a hop is a put on a `queue.SimpleQueue` (C, one futex wake) and one
`call_soon_threadsafe` back, which on one shared core is a measurable share of an email's CPU.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled meanwhile: nobody waits for the answer
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class StoreThread:
    """Runs callables one at a time, in order, on one thread (started at the first call)."""

    def __init__(self, name: str):
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, loop, future))
        return await future

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            fn, args, loop, future = work
            try:
                outcome: tuple[bool, Any] = (True, fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor would
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_resolve, future, *outcome)
            except RuntimeError:  # the loop is closed: nobody is left to answer
                pass
            del work, fn, args, future, outcome  # hold no result while waiting for the next call

    def shutdown(self) -> None:
        """Finish the calls already queued, then stop the thread (blocking)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
