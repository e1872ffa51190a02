"""Waiting for a state, with a timeout: the only way tests synchronise (never a bare sleep)."""

import asyncio
import inspect
import time


async def wait_until(predicate, *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` (sync or async) until it returns something truthy; return that.
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


async def pipeline_idle(store, *, timeout: float = 15.0) -> list:
    """Every stored event processed and every email in a final state (sent, dead, cancelled,
    suppressed):
    nothing more will be sent unless something new arrives. Returns all outbox rows."""

    async def idle():
        if (await store.stats(now=time.time()))["inbox_pending"]:
            return None
        emails = await store.list_emails(states=None)
        return emails if all(e.state in ("sent", "dead", "cancelled", "suppressed") for e in emails) else None

    return await wait_until(idle, timeout=timeout, interval=0.05, what="an idle pipeline")


def awaiting(qualname: str) -> bool:
    """Whether a task of this loop is suspended inside the coroutine function `qualname`
    (e.g. "StreamWatch.check"): for waiting until a background task has reached a point."""
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        while coro is not None:
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            if code is not None and code.co_qualname == qualname:
                return True
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False
