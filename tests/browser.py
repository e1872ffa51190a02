"""Headless Chromium from Debian's `chromium` package, driven by Playwright (no browser download).

Missing pieces are an error, not a skip: `.ci/run` installs both.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        raise RuntimeError("Debian's chromium is not installed: run `bash .ci/run` (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def goto_when_up(page: Page, url: str, *, timeout_s: float = 30.0) -> None:
    """Open `url` as soon as the server behind it listens (a sandbox started by the same test)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await page.goto(url)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.1)
