"""The hosted password-reset form in a real headless Chromium (Playwright, async API), no JavaScript of ours."""

from __future__ import annotations

from contextlib import asynccontextmanager

from browser import chromium
from support.reset_form import ANA, ANA_EMAIL, PATH, SECRET_PASSWORD


@asynccontextmanager
async def browser_page(locale: str = "en-US"):
    async with chromium() as browser:
        context = await browser.new_context(locale=locale, java_script_enabled=False)
        yield await context.new_page()


async def test_a_user_asks_for_a_reset_link_and_sees_the_generic_page(harness):
    h = await harness()
    async with browser_page() as page:
        await page.goto(str(h.client.make_url(PATH)))
        assert await page.get_attribute("html", "lang") == "en"
        email = page.get_by_label("Email address")
        assert await email.get_attribute("type") == "email"
        await page.keyboard.press("Tab")  # keyboard users see where they are
        assert await page.evaluate("document.activeElement.id") == "email"
        assert await email.evaluate("e => getComputedStyle(e).outlineStyle") != "none"
        await email.fill(ANA_EMAIL)
        await page.get_by_role("button", name="Send reset link").click()
        await page.get_by_role("heading", name="Check your email").wait_for()
        assert "If an account exists for that address" in await page.inner_text("main")
    await h.pages.drain()
    assert [event["user_id"] for event in h.events()] == [ANA]


async def test_the_browser_language_picks_the_page_language(harness):
    h = await harness()
    async with browser_page(locale="fr-CA") as page:
        await page.goto(str(h.client.make_url(PATH)))
        assert await page.get_attribute("html", "lang") == "fr"
        await page.get_by_label("Adresse e-mail").fill("personne@example.com")
        await page.get_by_role("button", name="Envoyer le lien de réinitialisation").click()
        await page.get_by_role("heading", name="Consultez votre messagerie").wait_for()


async def test_mismatched_new_passwords_show_a_focused_error_and_keep_the_email(harness):
    h = await harness(new_password=True)
    async with browser_page() as page:
        await page.goto(str(h.client.make_url(PATH)))
        await page.get_by_label("Email address").fill(ANA_EMAIL)
        await page.get_by_label("New password", exact=True).fill(SECRET_PASSWORD)
        await page.get_by_label("Confirm new password").fill(SECRET_PASSWORD + "!")
        await page.get_by_role("button", name="Send reset link").click()
        summary = page.get_by_role("alert")
        await summary.wait_for()
        assert await summary.is_visible()
        assert "The two passwords don't match" in await summary.inner_text()
        assert await page.evaluate("document.activeElement.id") == "error-summary"
        confirm = page.get_by_label("Confirm new password")
        assert await confirm.get_attribute("aria-invalid") == "true"
        assert await page.get_by_label("Email address").input_value() == ANA_EMAIL
        assert await confirm.input_value() == ""
        assert await page.get_by_label("New password", exact=True).input_value() == ""
        assert SECRET_PASSWORD not in await page.content()
        # The summary links to the field at fault.
        await summary.get_by_role("link").click()
        assert await page.evaluate("document.activeElement.id") == "password_confirm"
    await h.pages.drain()
    assert h.events() == []
