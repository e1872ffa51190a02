"""The aiohttp pages of the hosted form: `GET/POST /password-reset/{tenant}` and their HTML."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from babel.dates import format_timedelta

from streamer import metrics
from streamer.config import Config, PasswordResetConfig, TenantConfig, parse_rate
from streamer.inbox import Inbox
from streamer.locale import normalize_locale, parse_accept_language
from streamer.logs import get_logger
from streamer.password_reset.clients import ClientInfo, client_info
from streamer.password_reset.csrf import CSRF_COOKIE, CSRF_TTL_S, CsrfTokens
from streamer.password_reset.event import UserLookup, request_reset
from streamer.password_reset.form import (
    FIELDS,
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    Form,
    normalize_email,
    read_form,
    validate_form,
)
from streamer.password_reset.messages import LANGUAGE_NAMES, MESSAGES, SUPPORTED_LOCALES, choose_locale
from streamer.password_reset.ratelimit import SlidingWindowLimiter, address_key, ip_key
from streamer.password_reset.vault import NewPasswordVault

log = get_logger(__name__)

MAX_USER_AGENT = 512
DEFAULT_MIN_RESPONSE_S = 0.6

_WEB_DIR = Path(__file__).parent.parent / "web"
_CSS = (_WEB_DIR / "password_reset.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Vary": "Accept-Language, Cookie",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_WEB_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class ResetPageSettings:
    """What the hosted form reads of the config, and nothing more."""

    reset: PasswordResetConfig
    tenants: Mapping[str, TenantConfig]
    #: Behind a TLS-terminating proxy request.secure is False: the public URL tells.
    public_url: str | None
    default_locale: str

    @classmethod
    def of(cls, config: Config) -> ResetPageSettings:
        return cls(
            reset=config.password_reset,
            tenants=config.tenants,
            public_url=config.server.public_url,
            default_locale=config.templates.default_locale,
        )


class PasswordResetPages:
    """State of the hosted form for one process: CSRF key, rate limiters, in-flight work."""

    def __init__(
        self,
        page_settings: ResetPageSettings,
        inbox: Inbox,
        apis: Mapping[str, UserLookup],
        *,
        vault: NewPasswordVault | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_response_s: float = DEFAULT_MIN_RESPONSE_S,
        csrf_key: bytes | None = None,
    ):
        self.page_settings = page_settings
        self.settings = page_settings.reset
        self.inbox = inbox
        self.apis = apis
        self.vault = vault if vault is not None else NewPasswordVault(clock=clock)
        self.clock = clock
        self.min_response_s = min_response_s
        self._key = csrf_key or secrets.token_bytes(32)
        self.csrf = CsrfTokens(self._key, clock=clock)
        per_ip, per_ip_window = parse_rate(self.settings.rate_limit.per_ip)
        per_address, per_address_window = parse_rate(self.settings.rate_limit.per_address)
        self.ip_limiter = SlidingWindowLimiter(per_ip, per_ip_window, clock=clock)
        self.address_limiter = SlidingWindowLimiter(per_address, per_address_window, clock=clock)
        self._public_https = (page_settings.public_url or "").lower().startswith("https://")
        self._tasks: set[asyncio.Task] = set()
        self._warned_unrouted: set[str] = set()

    # --- wiring -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/password-reset/{tenant}", self.get_form),
            web.post("/password-reset/{tenant}", self.post_form),
        ]

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for lookups still running after their answer was sent."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def address_hash(self, address: str) -> str:
        digest = hmac.new(self._key, b"address|" + address.encode("utf-8", "replace"), hashlib.sha256)
        return digest.hexdigest()[:16]

    # --- request context ----------------------------------------------------------------------

    def _tenant(self, request: web.Request) -> TenantConfig | None:
        if not self.settings.enabled:
            return None
        return self.page_settings.tenants.get(request.match_info["tenant"])

    def _locale(self, request: web.Request, tenant: TenantConfig | None, client: ClientInfo) -> str:
        return choose_locale(
            request.query.get("lang"),
            client.locale,
            *parse_accept_language(request.headers.get("Accept-Language")),
            tenant.default_locale if tenant else None,
            self.page_settings.default_locale,
        )

    @staticmethod
    def _query(request: web.Request, client: ClientInfo, lang: str | None = None) -> str:
        params = {}
        if client.id:
            params["client_id"] = client.id
        wanted = lang if lang is not None else normalize_locale(request.query.get("lang"))
        if wanted:
            params["lang"] = wanted
        return ("?" + urlencode(params)) if params else ""

    def _page(
        self,
        request: web.Request,
        locale: str,
        *,
        status: int,
        page: str,
        title_key: str,
        client: ClientInfo,
        paragraphs: tuple[str, ...] = (),
        back_text: str = "",
        form: Form | None = None,
        csrf_token: str = "",
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> web.Response:
        t = MESSAGES[locale]
        base = f"/password-reset/{request.match_info['tenant']}"
        context: dict[str, Any] = {
            "css": _CSS,
            "locale": locale,
            "t": t,
            "title": t[title_key],
            "client_name": client.name,
            "page": page,
            "errors": [],
            "field_errors": dict.fromkeys(FIELDS, ""),
            "paragraphs": paragraphs,
            "back_text": back_text,
            "back_url": (base + self._query(request, client)) if back_text else "",
            "languages": [],
            "new_password": self.settings.new_password,
            "min_length": self.settings.min_length,
            "max_length": MAX_PASSWORD_LENGTH,
            "csrf_token": csrf_token,
            "email": "",
            "action": "",
            "password_hint": t["password_hint"].format(n=self.settings.min_length),
            "confirm_ticket": "",
            **(extra or {}),
        }
        if page == "form":
            form = form or Form()
            context.update(
                errors=[{"field": name, "message": message} for name, message in form.errors],
                field_errors={**dict.fromkeys(FIELDS, ""), **dict(reversed(form.errors))},
                email=form.email[: MAX_EMAIL_LENGTH + 66],
                action=base + self._query(request, client),
                languages=[
                    {
                        "code": code,
                        "name": LANGUAGE_NAMES[code],
                        "current": code == locale,
                        "href": base + self._query(request, client, code),
                    }
                    for code in SUPPORTED_LOCALES
                ],
            )
        body = _templates.get_template("password_reset.html").render(context)
        response = web.Response(status=status, text=body, content_type="text/html", charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Language"] = locale
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def _not_found(self, request: web.Request) -> web.Response:
        locale = self._locale(request, None, ClientInfo())
        return self._page(
            request,
            locale,
            status=404,
            page="message",
            title_key="notfound_title",
            client=ClientInfo(),
            paragraphs=(MESSAGES[locale]["notfound_body"],),
        )

    def _set_csrf_cookie(self, request: web.Request, response: web.Response, token: str) -> None:
        expires = (datetime.now(UTC) + timedelta(seconds=CSRF_TTL_S)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        response.set_cookie(
            CSRF_COOKIE,
            token,
            max_age=int(CSRF_TTL_S),
            expires=expires,
            httponly=True,
            samesite="Strict",
            secure=request.secure or self._public_https,
            path=f"/password-reset/{request.match_info['tenant']}",
        )

    def _csrf_token_for(self, request: web.Request, tenant_name: str) -> tuple[str, bool]:
        """(token, is_new): the cookie's own token while it is in its first half-life, else a new one."""
        current = request.cookies.get(CSRF_COOKIE)
        age = self.csrf.age(tenant_name, current)
        if current and age is not None and age < CSRF_TTL_S / 2:
            return current, False
        return self.csrf.issue(tenant_name), True

    def _form_page(
        self,
        request: web.Request,
        tenant_name: str,
        locale: str,
        client: ClientInfo,
        *,
        status: int = 200,
        form: Form | None = None,
    ) -> web.Response:
        token, is_new = self._csrf_token_for(request, tenant_name)
        response = self._page(
            request, locale, status=status, page="form", title_key="title", client=client, form=form, csrf_token=token
        )
        if is_new:
            self._set_csrf_cookie(request, response, token)
        return response

    # --- handlers -----------------------------------------------------------------------------

    async def get_form(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if tenant is None:
            return self._not_found(request)
        client = client_info(tenant, request.query.get("client_id"))
        locale = self._locale(request, tenant, client)
        return self._form_page(request, request.match_info["tenant"], locale, client)

    async def post_form(self, request: web.Request) -> web.StreamResponse:
        started = asyncio.get_running_loop().time()
        tenant = self._tenant(request)
        if tenant is None:
            return self._not_found(request)
        tenant_name = request.match_info["tenant"]
        client = client_info(tenant, request.query.get("client_id"))
        locale = self._locale(request, tenant, client)
        t = MESSAGES[locale]

        form, problem = await read_form(request)
        if problem is not None:
            metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_bad_request").inc()
            return self._page(
                request,
                locale,
                status=problem,
                page="message",
                title_key="invalid_title",
                client=client,
                paragraphs=(t["invalid_body"],),
                back_text=t["back"],
            )
        refusal = self._csrf_refusal(request, tenant_name, locale, client, form.csrf_token)
        if refusal is not None:
            return refusal

        address = normalize_email(form.email)
        form.errors.extend(
            validate_form(
                form, address, t, new_password=self.settings.new_password, min_length=self.settings.min_length
            )
        )
        if form.errors:
            return self._form_page(
                request, tenant_name, locale, client, status=400, form=Form(email=form.email, errors=form.errors)
            )

        ip = request.remote or ""  # the client a trusted proxy names (server.trusted_proxies), else the peer
        refusal = self._rate_limit_refusal(request, tenant_name, locale, client, address, ip)
        if refusal is not None:
            return refusal
        self.ip_limiter.hit(ip_key(ip))
        self.address_limiter.hit(address_key(address, ip))

        password = form.password if self.settings.new_password else None
        task = self._start_reset(request, tenant_name, address, client, ip, password)
        del form, password
        await self._answer_no_sooner_than(started + self.min_response_s, task)
        return self._page(
            request,
            locale,
            status=200,
            page="message",
            title_key="sent_title",
            client=client,
            paragraphs=(t["sent_body"], t["sent_hint"]),
            back_text=t["sent_again"],
        )

    def _csrf_refusal(
        self, request: web.Request, tenant_name: str, locale: str, client: ClientInfo, csrf_token: str
    ) -> web.Response | None:
        """A 403 page when the form's token does not pair with the cookie (the form was not ours)."""
        if self.csrf.valid_pair(tenant_name, request.cookies.get(CSRF_COOKIE), csrf_token):
            return None
        t = MESSAGES[locale]
        metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_csrf").inc()
        missing = [
            part
            for part, present in (("cookie", CSRF_COOKIE in request.cookies), ("field", bool(csrf_token)))
            if not present
        ]
        log.info("password_reset_csrf_rejected", tenant=tenant_name, missing=missing or None)
        return self._page(
            request,
            locale,
            status=403,
            page="message",
            title_key="csrf_title",
            client=client,
            paragraphs=(t["csrf_body"], t["csrf_hint"]),
            back_text=t["back"],
        )

    def _rate_limit_refusal(
        self, request: web.Request, tenant_name: str, locale: str, client: ClientInfo, address: str, ip: str
    ) -> web.Response | None:
        """A 429 page, with Retry-After, while this client IP or this address from it is over its limit."""
        wait = max(self.ip_limiter.retry_after(ip_key(ip)), self.address_limiter.retry_after(address_key(address, ip)))
        if wait <= 0:
            return None
        t = MESSAGES[locale]
        seconds = max(1, math.ceil(wait))
        metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_rate_limited").inc()
        log.info(
            "password_reset_rate_limited",
            tenant=tenant_name,
            address_hash=self.address_hash(address),
            retry_after_s=seconds,
        )
        text = t["rate_body"].format(
            wait=format_timedelta(timedelta(seconds=seconds), locale=locale, granularity="minute", threshold=1)
        )
        return self._page(
            request,
            locale,
            status=429,
            page="message",
            title_key="rate_title",
            client=client,
            paragraphs=(text,),
            back_text=t["back"],
            headers={"Retry-After": str(seconds)},
        )

    def _start_reset(
        self, request: web.Request, tenant_name: str, address: str, client: ClientInfo, ip: str, password: str | None
    ) -> asyncio.Task[None]:
        """The reset itself runs on its own, so the page answers alike whether the address exists."""
        task = asyncio.create_task(
            request_reset(
                self.inbox,
                self.apis,
                self.vault,
                tenant_name,
                address,
                client,
                ip,
                request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
                password,
                address_hash=self.address_hash(address),
                warned_unrouted=self._warned_unrouted,
            ),
            name="password-reset-request",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _answer_no_sooner_than(deadline: float, task: asyncio.Task[None]) -> None:
        """Every answer takes at least min_response_s, so its timing tells nothing about the address."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.wait({task}, timeout=remaining)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.sleep(remaining)


def password_reset_routes(
    config: Config,
    inbox: Inbox,
    apis: Mapping[str, UserLookup],
    *,
    vault: NewPasswordVault | None = None,
    clock: Callable[[], float] = time.monotonic,
    min_response_s: float = DEFAULT_MIN_RESPONSE_S,
) -> list[web.RouteDef]:
    """`GET/POST /password-reset/{tenant}` for `app.add_routes(...)`.

    Pass the `vault` the delivery side will `take()` from when `password_reset.new_password` is on.
    To await in-flight lookups at shutdown, build `PasswordResetPages` yourself and call `drain()`.
    """
    pages = PasswordResetPages(
        ResetPageSettings.of(config), inbox, apis, vault=vault, clock=clock, min_response_s=min_response_s
    )
    return pages.routes()
