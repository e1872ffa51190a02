"""The unsubscribe page in a real headless Chromium: a GET changes nothing, the button unsubscribes."""

from __future__ import annotations

from aiohttp import web

from streamer.config import parse_config
from streamer.store.sqlite import SqliteStore
from streamer.unsubscribe import UnsubscribeTokens, links
from streamer.unsubscribe.pages import UnsubscribePages

from browser import chromium

CONFIG = """\
smtp: {from: "Acme <no-reply@acme.test>"}
server: {public_url: "https://mail.acme.test"}
tenants: {acme: {domain: acme.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{name: new-device, on: [s], template: new_device, unsubscribe: true}]
unsubscribe: {secret: "browser-test-secret-0123456789"}
"""
CHLOE = "auth0|65f0c0ffee0000000000c003"


async def serve(tmp_path):
    config = parse_config(CONFIG, env={})
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    tokens = UnsubscribeTokens(config.unsubscribe.secret.get_secret_value().encode())
    app = web.Application()
    app.add_routes(UnsubscribePages(config, store, tokens).routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    return store, tokens, runner, base


async def test_the_page_is_localized_and_only_its_button_unsubscribes(tmp_path):
    store, tokens, runner, base = await serve(tmp_path)
    try:
        url, _ = links(base, tokens.make("acme", CHLOE, "new-device"), None, None)
        async with chromium() as browser:
            context = await browser.new_context(locale="de-DE", java_script_enabled=False)
            page = await context.new_page()
            response = await page.goto(url)
            assert response.status == 200
            assert await page.get_attribute("html", "lang") == "de"
            await page.get_by_role("heading", name="Diese E-Mails abbestellen?").wait_for()
            assert "Passworts" in await page.inner_text("main")
            assert await store.get_unsubscribed("acme", [CHLOE]) == {}  # looking changes nothing
            button = page.get_by_role("button", name="Abbestellen")
            await page.keyboard.press("Tab")  # reachable by keyboard
            assert await button.evaluate("b => b === document.activeElement")
            await button.click()
            await page.get_by_role("heading", name="Sie haben diese E-Mails abbestellt").wait_for()
            assert await store.get_unsubscribed("acme", [CHLOE]) == {CHLOE: {"new-device"}}

            # The email's locale (?lang=) wins over the browser's; a broken link says so, in that language.
            response = await page.goto(url.replace("/unsubscribe/", "/unsubscribe/x") + "?lang=es")
            assert response.status == 404
            assert await page.get_attribute("html", "lang") == "es"
            await page.get_by_role("heading", name="Este enlace no es válido").wait_for()
    finally:
        await runner.cleanup()
        await store.close()
