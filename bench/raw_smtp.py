"""Delivery ceiling for bench/run.py: `--pool` persistent aiosmtplib connections sending the same
pre-built message bytes `--count` times (one worker per connection, as the dispatcher has one
worker per pooled connection). No rendering, no store, no Auth0: only the SMTP client work.

    taskset -c 0 python bench/raw_smtp.py --port 2525 --count 3000 --pool 8 --message msg.eml
Prints one JSON line: {"sent": N, "seconds": S, "rate": N/S, "cpu_ms_per_email": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib

SENDER = "no-reply@acme.test"


async def pooled(port: int, count: int, pool: int, send_one: Callable[[aiosmtplib.SMTP, int], Awaitable]) -> dict:
    """`pool` persistent connections, each sending the next of `count` emails with `send_one(client,
    index)` until none is left; the rate and the CPU per email of that part alone."""
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench") for _ in range(pool)
    ]
    await asyncio.gather(*(client.connect() for client in clients))
    remaining = count

    async def worker(client: aiosmtplib.SMTP) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send_one(client, remaining)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(client) for client in clients))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await asyncio.gather(*(client.quit() for client in clients), return_exceptions=True)
    return {"sent": count, "seconds": seconds, "rate": count / seconds, "cpu_ms_per_email": cpu / count * 1000}


async def send_all(port: int, count: int, pool: int, message: bytes) -> dict:
    return await pooled(port, count, pool, lambda client, _: client.sendmail(SENDER, ["user@example.com"], message))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    parser.add_argument("--message", type=Path, required=True, help="file with the message bytes")
    args = parser.parse_args()
    message = args.message.read_bytes()
    asyncio.run(send_all(args.port, 100, args.pool, message))  # warm-up: imports, code paths, sink
    result = asyncio.run(send_all(args.port, args.count, args.pool, message))
    result["process_cpu_s"] = time.process_time()  # whole process: lets the caller see who else used the core
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
