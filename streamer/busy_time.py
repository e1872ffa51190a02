"""The time a coroutine's own code runs on the event loop, its waits left out.

A task's wall time counts its waits (a commit, an Auth0 call) while other tasks ran: as a
measure of the core it takes, it is too high by whatever those others did. Timing each step of
the coroutine, from a resumption to the next suspension, counts only its own code (and the
synchronous code of what it awaits), which is what a share of the core is made of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class BusyClock:
    """Adds up the time the coroutines it wraps run their own steps (`busy_s`, seconds)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.busy_s = 0.0
        self.clock = clock

    def timed(self, coro: Coroutine[Any, Any, T]) -> _Timed[T]:
        """`coro` as an awaitable whose steps count. For a coroutine run as its own task (gather)
        or awaited by one that is not itself timed: nested, its steps would count twice."""
        return _Timed(coro, self)


class _Timed(Generic[T]):
    __slots__ = ("_coro", "_owner")

    def __init__(self, coro: Coroutine[Any, Any, T], owner: BusyClock):
        self._coro = coro
        self._owner = owner

    def __await__(self) -> Generator[Any, Any, T]:
        coro, owner = self._coro, self._owner
        step: Callable[[Any], Any] = coro.send
        argument: Any = None
        while True:
            started = owner.clock()
            try:
                signal = step(argument)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            finally:
                owner.busy_s += owner.clock() - started
            try:
                argument, step = (yield signal), coro.send
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - the task's cancellation, handed to the coroutine
                argument, step = exc, coro.throw
