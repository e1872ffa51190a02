"""The sandbox's mail page in a real headless Chromium: real SMTP in, live list, safe email view."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import aiosmtplib
import pytest
from aiohttp import web

from streamer.devkit.mailcatcher import MailCatcher
from streamer.devkit.mailpage import IFRAME_SANDBOX, mail_page_app
from streamer.locale import fallback_chain
from streamer.message import build_message
from streamer.render import render
from streamer.sample_context import sample_context
from streamer.templates import Templates

from browser import chromium

REPO = Path(__file__).resolve().parents[1]
SENDER = "Acme <no-reply@acme.test>"
HOSTILE_SUBJECT = '<img src=x onerror="alert(1)"> & "Hostile" <b>subject</b>'
HOSTILE_HTML = """<!DOCTYPE html><html><head><title>x</title></head><body>
<h1 id="hostile">Hello from a hostile email</h1>
<script>document.body.setAttribute("data-pwned", "script");
try { parent.document.title = "pwned"; } catch (e) {}</script>
<img src="data:," onload="document.body.setAttribute('data-pwned', 'onload')">
<a href="javascript:alert(1)">run me</a> <a href="https://example.test/safe">safe link</a>
</body></html>"""


@pytest.fixture
async def mail_page():
    """(catcher, base URL) of a MailCatcher and its page on 127.0.0.1, both on free ports."""
    catcher = MailCatcher()
    await catcher.start()
    runner = web.AppRunner(
        mail_page_app(catcher, extra_links={"Auth0 stand-in": "http://127.0.0.1:9/"}), shutdown_timeout=2
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield catcher, f"http://{host}:{port}"
    await runner.cleanup()
    await catcher.stop()


def streamer_email(base: str, template: str, locale: str, key: str) -> tuple[bytes, str]:
    """A real email: the shipped template rendered for a sample user, its ticket leading to the page."""
    templates = Templates(REPO / "templates")
    context = sample_context(template, locale)
    context["ticket_url"] = (
        f"{base}/verified?lang={locale}&supported=true&success=true"
        f"&message={quote('Your email was verified. You can continue using the application.')}"
    )
    rendered = render(
        templates, template, tenant=None, client_id=None, locale_chain=fallback_chain(locale, "en"), context=context
    )
    recipient = context["user"]["email"]
    data = build_message(
        from_addr=SENDER,
        to_addr=recipient,
        to_name=context["user"]["given_name"],
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        locale=rendered.locale,
        message_id_key=key,
    )
    return data, recipient


async def smtp_send(catcher: MailCatcher, data: bytes, recipient: str) -> None:
    await aiosmtplib.send(
        data,
        sender="no-reply@acme.test",
        recipients=[recipient],
        hostname="127.0.0.1",
        port=catcher.port,
        start_tls=False,
        timeout=5,
    )


async def test_mail_page_in_a_real_browser(mail_page):
    from playwright.async_api import expect

    catcher, base = mail_page
    verify, verify_to = streamer_email(base, "verify_email", "en", "browser-1")
    welcome, welcome_to = streamer_email(base, "welcome", "fr", "browser-2")
    await smtp_send(catcher, verify, verify_to)
    await smtp_send(catcher, welcome, welcome_to)
    verify_id = catcher.messages[0].id

    async with chromium() as browser:
        try:
            page = await browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))

            # The list: newest first, with the recipient and the Content-Language.
            await page.goto(base + "/")
            rows = page.locator("#mails tr[id^='mail-']")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0).locator("td.subject")).to_have_text("Bienvenue sur Acme")
            await expect(rows.nth(0).locator("td.locale")).to_have_text("fr")
            await expect(rows.nth(0).locator("td.to")).to_have_text(welcome_to)
            await expect(rows.nth(1).locator("td.subject")).to_have_text("Confirm your email address for Acme")
            await expect(rows.nth(1).locator("td.locale")).to_have_text("en")
            await expect(page.locator("header nav a", has_text="Auth0 stand-in")).to_be_visible()

            # A third email while the page is open appears on top without a reload (SSE), escaped.
            await expect(page.locator("body[data-live='on']")).to_have_count(1)
            await page.evaluate("window.__sameDocument = true")
            await smtp_send(
                catcher,
                build_message(
                    from_addr=SENDER,
                    to_addr="eve@example.com",
                    to_name="<b>Eve</b>",
                    subject=HOSTILE_SUBJECT,
                    html=HOSTILE_HTML,
                    text="Hello from a hostile email\n",
                    locale="de",
                    message_id_key="browser-3",
                ),
                "eve@example.com",
            )
            await expect(rows).to_have_count(3)
            await expect(rows.nth(0).locator("td.subject")).to_have_text(HOSTILE_SUBJECT)
            await expect(rows.nth(0).locator("td.locale")).to_have_text("de")
            await expect(page.locator("#count")).to_have_text("3")
            assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"
            assert await page.locator("#mails img, #mails b").count() == 0

            # After a reload the server-rendered list shows the same, escaped as well.
            await page.reload()
            await expect(rows).to_have_count(3)
            await expect(rows.nth(0).locator("td.subject")).to_have_text(HOSTILE_SUBJECT)

            # The hostile email's HTML is shown, but none of its script runs.
            await rows.nth(0).locator("td.subject a").click()
            await expect(page.locator("h2.subject")).to_have_text(HOSTILE_SUBJECT)
            iframe = page.locator(".pane iframe")
            assert await iframe.get_attribute("sandbox") == IFRAME_SANDBOX
            frame = page.frame_locator(".pane iframe")
            await expect(frame.locator("#hostile")).to_have_text("Hello from a hostile email")
            await page.wait_for_timeout(200)
            assert await frame.locator("body[data-pwned]").count() == 0
            assert "pwned" not in await page.title() and not dialogs
            await expect(page.locator("#links a", has_text="https://example.test/safe")).to_have_count(1)
            await expect(page.locator("#links a[href^='javascript']")).to_have_count(0)
            await expect(page.locator("#links code", has_text="javascript:alert(1)")).to_have_count(1)
            hostile_id = catcher.messages[2].id
            response = await page.request.get(f"{base}/mail/{hostile_id}/html")
            assert "sandbox" in response.headers["content-security-policy"]
            assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none' applies

            # A real streamer email: HTML in the iframe, the text part, the source.
            await page.goto(f"{base}/mail/{verify_id}")
            frame = page.frame_locator(".pane iframe")
            await expect(frame.locator("h1")).to_have_text("Confirm your email address")
            await page.locator(".tabs a[data-tab='text']").click()
            text_part = page.locator("pre.text-part")
            await expect(text_part).to_contain_text("Confirm my email address (" + base + "/verified?lang=en")
            await expect(text_part.locator("a", has_text="/verified")).to_have_count(1)
            await page.locator(".tabs a[data-tab='source']").click()
            await expect(page.locator("pre.source")).to_contain_text("Content-Language: en")
            await expect(page.locator("pre.source")).to_contain_text("MIME-Version: 1.0")
            raw = await page.request.get(f"{base}/mail/{verify_id}/raw")
            assert raw.headers["content-type"].startswith("text/plain")
            assert (await raw.body()) == catcher.messages[0].data
            eml = await page.request.get(f"{base}/mail/{verify_id}.eml")
            assert eml.headers["content-disposition"].startswith("attachment")

            # A link in the email opens the fake application in a new tab (from inside the iframe) …
            await page.locator(".tabs a[data-tab='html']").click()
            async with page.expect_popup() as popup_info:
                await page.frame_locator(".pane iframe").locator("a", has_text="Confirm my email address").click()
            popup = await popup_info.value
            await expect(popup.locator("#landed-url")).to_contain_text(f"{base}/verified?lang=en")
            await popup.close()
            # … and from the list of links, in this tab.
            await page.locator("#links a", has_text="/verified").first.click()
            await expect(page).to_have_url(re.compile(re.escape(base) + r"/verified\?lang=en&"))
            await expect(page.locator("h2")).to_have_text("You landed on the result_url")
            await expect(page.locator("#landed-url")).to_contain_text("success=true")

            # Without JavaScript the list still works, with a refresh link.
            context = await browser.new_context(java_script_enabled=False)
            plain = await context.new_page()
            await plain.goto(base + "/")
            await expect(plain.locator("#mails tr[id^='mail-']")).to_have_count(3)
            await expect(plain.locator("a", has_text="Refresh")).to_have_attribute("href", "/")
            await context.close()
        finally:
            await browser.close()
