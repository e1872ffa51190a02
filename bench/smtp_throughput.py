"""Throughput check (not a test): SmtpPool.send versus bare aiosmtplib, into the mail catcher.

The catcher runs in its own process pinned to one core, the client is pinned to the other, and
every scenario runs in each round so the figures compare within one run (INFRA.md). Run:

    python bench/smtp_throughput.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamer.config import SmtpConfig  # noqa: E402
from streamer.smtp import SmtpPool  # noqa: E402

SENDER = "no-reply@acme.test"
CONCURRENCY = 8  # = pool_size: one worker per connection in every scenario


def build_message() -> bytes:
    """A typical identity email, built once: the pool sends bytes, never re-serialises."""
    msg = EmailMessage()
    msg["From"] = f"Acme <{SENDER}>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Vérifiez votre adresse e-mail"
    link = "https://acme.eu.auth0.com/u/email-verification?ticket=" + "x" * 64 + "#"
    msg.set_content(f"Bonjour Alice,\n\nConfirmez votre adresse : {link}\n\n" + "Merci.\n" * 20)
    msg.add_alternative(
        f'<html><body><p>Bonjour Alice,</p><p><a href="{link}">Confirmer</a></p>'
        + "<p>Merci de votre confiance.</p>" * 40
        + "</body></html>",
        subtype="html",
    )
    return msg.as_bytes(policy=SMTP_POLICY)


async def run_workers(count: int, send_one) -> float:
    """`count` sends spread over CONCURRENCY workers; returns messages per second."""
    remaining = count

    async def worker(index: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send_one(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return count / (time.perf_counter() - started)


async def bench_pool(port: int, count: int, message: bytes) -> float:
    config = SmtpConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from": SENDER,
            "pool_size": CONCURRENCY,
            "timeout_s": 30,
        }
    )
    async with SmtpPool(config) as pool:
        return await run_workers(count, lambda i: pool.send(SENDER, ["alice@example.test"], message))


async def bench_raw(port: int, count: int, message: bytes) -> float:
    """The ceiling: CONCURRENCY persistent aiosmtplib connections, sendmail in a loop."""
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench")
        for _ in range(CONCURRENCY)
    ]
    for client in clients:
        await client.connect()
    try:
        return await run_workers(count, lambda i: clients[i].sendmail(SENDER, ["alice@example.test"], message))
    finally:
        for client in clients:
            await client.quit()


async def bench_per_message(port: int, count: int, message: bytes) -> float:
    """What the pool avoids: a new connection (connect, EHLO, QUIT) for every message."""
    return await run_workers(
        count,
        lambda i: aiosmtplib.send(
            message,
            sender=SENDER,
            recipients=["alice@example.test"],
            hostname="127.0.0.1",
            port=port,
            start_tls=False,
            local_hostname="bench",
        ),
    )


def start_catcher(core: int | None) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "streamer.devkit.mailcatcher", "--port", "0"]
    if core is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"mail catcher did not start: {line!r}")
    return proc, int(line.split()[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) > 1 else None
    if server_core is not None:
        os.sched_setaffinity(0, set(cores[1:]))
    proc, port = start_catcher(server_core)
    message = build_message()
    scenarios = {
        "SmtpPool.send, pool_size 8": (bench_pool, args.messages),
        "raw aiosmtplib, 8 persistent connections": (bench_raw, args.messages),
        "raw aiosmtplib.send, new connection per message": (bench_per_message, max(args.messages // 4, 100)),
    }
    results: dict[str, list[float]] = {name: [] for name in scenarios}
    try:
        await bench_raw(port, 200, message)  # warm-up
        for _ in range(args.rounds):
            for name, (bench, count) in scenarios.items():
                results[name].append(await bench(port, count, message))
    finally:
        proc.terminate()
        proc.wait(10)
    print(
        f"message {len(message)} bytes; catcher on core {server_core}, client on {cores[1:] or cores}; "
        f"{args.rounds} rounds, median (min–max) messages/s"
    )
    for name, rates in results.items():
        print(f"  {name:50s} {statistics.median(rates):7.0f}  ({min(rates):.0f}–{max(rates):.0f})")


if __name__ == "__main__":
    asyncio.run(main())
