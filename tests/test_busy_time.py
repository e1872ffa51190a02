"""BusyClock counts a coroutine's own steps on the event loop, not its waits."""

import asyncio
import time

import pytest

from streamer.busy_time import BusyClock


def _spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def _work(spin_s: float, sleep_s: float, result: str) -> str:
    _spin(spin_s / 2)
    await asyncio.sleep(sleep_s)  # another task runs meanwhile: not ours
    _spin(spin_s / 2)
    return result


async def test_the_steps_count_and_the_waits_do_not():
    clock = BusyClock()
    other = asyncio.create_task(asyncio.to_thread(time.sleep, 0.3))
    assert await clock.timed(_work(0.05, 0.3, "done")) == "done"
    await other
    assert 0.05 <= clock.busy_s < 0.3


async def test_tasks_run_by_gather_add_up():
    clock = BusyClock()
    results = await asyncio.gather(*(clock.timed(_work(0.02, 0.1, str(i))) for i in range(3)))
    assert results == ["0", "1", "2"]
    assert 0.06 <= clock.busy_s < 0.1 + 0.06


async def test_errors_and_cancellation_reach_the_coroutine():
    clock = BusyClock()

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await clock.timed(failing())

    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def waiting() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.set()

    task = asyncio.ensure_future(clock.timed(waiting()))
    await asyncio.wait_for(started.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()
