"""A real `streamer run` in a subprocess, and posting to its webhook."""

import asyncio
import sys

import aiohttp

from conftest import WEBHOOK_TOKEN


async def start_run(config_path, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer",
        "run",
        "-c",
        str(config_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(config_path.parent / "daemon.log", "ab"),
    )
    deadline = asyncio.get_running_loop().time() + 60  # a busy machine starts Python slowly
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            if process.returncode is not None:
                raise AssertionError((config_path.parent / "daemon.log").read_text()[-3000:])
            await asyncio.sleep(0.05)
    raise AssertionError("daemon did not start")


async def post(session, port, events) -> int:
    body = [{"log_id": e["log_id"], "data": e} for e in events]
    try:
        async with session.post(
            f"http://127.0.0.1:{port}/logs/acme", json=body, headers={"Authorization": WEBHOOK_TOKEN}
        ) as response:
            return response.status
    except aiohttp.ClientError:
        return 0  # the daemon died mid-request: Auth0 would retry
