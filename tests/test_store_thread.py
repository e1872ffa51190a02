"""The store's own thread: calls run in order, one at a time, off the event loop; answers and
errors come back to their caller, and a caller that gave up does not stop the ones after it."""

import asyncio
import threading

import pytest

from streamer.store.store_thread import StoreThread


async def test_calls_run_in_order_on_one_thread_that_is_not_the_loops():
    worker = StoreThread("test-store")
    seen: list[tuple[int, str]] = []

    def record(number: int) -> int:
        seen.append((number, threading.current_thread().name))
        return number * 2

    try:
        assert await asyncio.gather(*(worker.run(record, n) for n in range(50))) == [n * 2 for n in range(50)]
    finally:
        worker.shutdown()
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-store"}


async def test_an_error_reaches_its_caller_only():
    worker = StoreThread("test-store")

    def fail() -> None:
        raise ValueError("broken")

    try:
        results = await asyncio.gather(worker.run(fail), worker.run(len, "abc"), return_exceptions=True)
    finally:
        worker.shutdown()
    assert isinstance(results[0], ValueError) and results[1] == 3


async def test_a_caller_that_gave_up_does_not_stop_the_next_calls():
    worker = StoreThread("test-store")
    release = threading.Event()
    try:
        slow = asyncio.ensure_future(worker.run(release.wait, 5))
        await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        release.set()
        assert await asyncio.wait_for(worker.run(sum, [1, 2]), timeout=10) == 3
    finally:
        worker.shutdown()


async def test_shutdown_finishes_the_calls_already_queued():
    worker = StoreThread("test-store")
    done: list[int] = []
    pending = [asyncio.ensure_future(worker.run(done.append, n)) for n in range(5)]
    await asyncio.sleep(0)  # the calls are queued
    await asyncio.to_thread(worker.shutdown)
    await asyncio.gather(*pending)
    assert done == [0, 1, 2, 3, 4]
