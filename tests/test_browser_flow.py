"""A person's whole password-reset journey in real headless Chromium, against `streamer dev`:
form → generic page → the email in the mail-catcher page → the link → Auth0's reset page."""

import asyncio
import io
import re

from streamer.devkit.sandbox import run_sandbox

from browser import chromium, goto_when_up
from support.ports import free_port_block


async def test_reset_form_to_email_to_auth0_reset_page(tmp_path):
    port = free_port_block()
    sandbox = asyncio.create_task(run_sandbox(port=port, workdir=tmp_path / "dev", open_for_s=90, out=io.StringIO()))
    daemon, mail_page, standin = (f"http://127.0.0.1:{port + i}" for i in (0, 2, 1))
    try:
        async with chromium() as browser:
            page = await browser.new_page(locale="de-DE")
            await goto_when_up(page, f"{daemon}/password-reset/acme")
            assert await page.get_attribute("html", "lang") == "de"
            await page.goto(f"{daemon}/password-reset/acme?lang=en")
            await page.get_by_label("Email address").fill("dave.miller@example.com")
            await page.get_by_role("button", name="Send reset link").click()
            await page.get_by_role("heading", name="Check your email").wait_for()

            await page.goto(mail_page + "/")
            row = page.locator("#mails tr", has_text=re.compile(r"Reset your \w+ password"))
            await row.first.wait_for(timeout=15000)  # arrives live on the open page
            assert "dave.miller@example.com" in await row.first.inner_text()
            await row.first.locator("a").first.click()
            link = page.locator("a[href*='reset-verify?ticket=']").first
            await link.wait_for()
            href = await link.get_attribute("href")
            assert href.startswith(standin)
            await page.goto(href)
            assert "password" in (await page.content()).lower()
            assert page.url.startswith(f"{standin}/u/reset-verify")
    finally:
        sandbox.cancel()
        try:
            await sandbox
        except asyncio.CancelledError:
            pass


async def test_streamer_dev_new_password_form_to_email_to_confirmation_to_notice(tmp_path):
    """`streamer dev --new-password`: the password typed on the form is set from the email's link."""
    port = free_port_block()
    out = io.StringIO()
    sandbox = asyncio.create_task(
        run_sandbox(port=port, workdir=tmp_path / "dev", open_for_s=90, out=out, new_password=True)
    )
    daemon, mail_page = (f"http://127.0.0.1:{port + i}" for i in (0, 2))
    try:
        async with chromium() as browser:
            page = await browser.new_page(locale="en-US")
            await goto_when_up(page, f"{daemon}/password-reset/acme")
            await page.get_by_label("Email address").fill("ana.silva@example.com")
            await page.get_by_label("New password", exact=True).fill("Tr0ub4dor&3-Zebra-Quartz-91")
            await page.get_by_label("Confirm new password").fill("Tr0ub4dor&3-Zebra-Quartz-91")
            await page.get_by_role("button", name="Send reset link").click()
            await page.get_by_role("heading", name="Check your email").wait_for()
            assert "--new-password" not in out.getvalue() and "confirms it" in out.getvalue()

            await page.goto(mail_page + "/")
            row = page.locator("#mails tr", has_text="Confirmez votre nouveau mot de passe")  # Ana reads French
            await row.first.wait_for(timeout=15000)
            await row.first.locator("a").first.click()
            link = page.locator("a[href*='/confirm?ticket=']").first
            await link.wait_for()
            href = await link.get_attribute("href")
            assert href.startswith(f"{daemon}/password-reset/acme/confirm?")
            changed = page.locator("#mails tr", has_text=re.compile(r"mot de passe .* a été modifié")).filter(
                has_text="ana.silva@example.com"
            )
            await page.goto(mail_page + "/")
            notices_before = await changed.count()  # the sample events may have sent Ana one already
            await page.goto(href)
            await page.get_by_role("button", name="Définir mon nouveau mot de passe").click()
            await page.get_by_role("heading", name="Votre mot de passe a été modifié").wait_for()

            await page.goto(mail_page + "/")  # Auth0's `scp`, polled back: the notice
            await changed.nth(notices_before).wait_for(timeout=20000)
    finally:
        sandbox.cancel()
        try:
            await sandbox
        except asyncio.CancelledError:
            pass
