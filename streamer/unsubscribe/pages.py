"""`GET/POST /unsubscribe/{token}`: the page behind List-Unsubscribe.

- POST (RFC 8058 one-click: the mailbox provider posts `List-Unsubscribe=One-Click`; or the page's
  button) records the preference at once and answers with a confirmation page. No cookie and no
  CSRF token: the signed token in the URL is the authority, as RFC 8058 requires.
- GET only shows a page with a button and changes nothing: link scanners and prefetchers follow
  every GET in an email, and must not unsubscribe anyone.
- A token that is not ours → 404 page; the store failing → 503 page (the user can try again).
Language: `?lang=` (the email's locale, put in the link), then Accept-Language, then the tenant's
default, then English (en, fr, de, es). Same security headers as the password-reset pages.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import jinja2
from aiohttp import web

from streamer.config import Config
from streamer.locale import parse_accept_language
from streamer.logs import get_logger
from streamer.password_reset.messages import choose_locale
from streamer.password_reset.pages import _CSS, SECURITY_HEADERS
from streamer.store import Store
from streamer.unsubscribe import record_unsubscribe
from streamer.unsubscribe.messages import MESSAGES
from streamer.unsubscribe.tokens import Subscription, UnsubscribeTokens

log = get_logger(__name__)
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent.parent / "web")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
MAX_BODY_BYTES = 4096


class UnsubscribePages:
    def __init__(self, config: Config, store: Store, tokens: UnsubscribeTokens):
        self.config = config
        self.store = store
        self.tokens = tokens

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/unsubscribe/{token}", self.get), web.post("/unsubscribe/{token}", self.post)]

    def _locale(self, request: web.Request, subscription: Subscription | None) -> str:
        tenant = self.config.tenants.get(subscription.tenant) if subscription else None
        return choose_locale(
            request.query.get("lang"),
            *parse_accept_language(request.headers.get("Accept-Language")),
            tenant.default_locale if tenant else None,
            self.config.templates.default_locale,
        )

    def _page(
        self,
        request: web.Request,
        subscription: Subscription | None,
        *,
        status: int,
        title: str,
        paragraphs: tuple[str, ...],
        with_button: bool = False,
    ) -> web.Response:
        locale = self._locale(request, subscription)
        t = MESSAGES.get(locale, MESSAGES["en"])
        action = f"/unsubscribe/{quote(request.match_info['token'], safe='.-_')}"
        if lang := request.query.get("lang"):
            action += f"?lang={quote(lang[:35])}"
        html = _templates.get_template("unsubscribe.html").render(
            css=_CSS,
            locale=locale if locale in MESSAGES else "en",
            title=t[title],
            paragraphs=[t[p] for p in paragraphs],
            button=t["button"] if with_button else "",
            action=action,
        )
        return web.Response(
            status=status,
            text=html,
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Content-Language": locale},
        )

    def _subscription(self, request: web.Request) -> Subscription | None:
        subscription = self.tokens.read(request.match_info["token"])
        if subscription is None or subscription.tenant not in self.config.tenants:
            return None
        return subscription

    async def get(self, request: web.Request) -> web.Response:
        subscription = self._subscription(request)
        if subscription is None:
            return self._page(request, None, status=404, title="invalid_title", paragraphs=("invalid_body",))
        return self._page(
            request,
            subscription,
            status=200,
            title="confirm_title",
            paragraphs=("confirm_body", "confirm_note"),
            with_button=True,
        )

    async def post(self, request: web.Request) -> web.Response:
        await request.content.read(MAX_BODY_BYTES)  # `List-Unsubscribe=One-Click`; its presence changes nothing
        subscription = self._subscription(request)
        if subscription is None:
            log.info("unsubscribe_invalid_token")
            return self._page(request, None, status=404, title="invalid_title", paragraphs=("invalid_body",))
        try:
            await record_unsubscribe(self.store, subscription, source="one-click")
        except Exception:  # noqa: BLE001 - the user sees a page that says to try again
            log.exception("unsubscribe_store_failed", tenant=subscription.tenant, rule=subscription.rule)
            return self._page(request, subscription, status=503, title="error_title", paragraphs=("error_body",))
        return self._page(request, subscription, status=200, title="done_title", paragraphs=("done_body",))
