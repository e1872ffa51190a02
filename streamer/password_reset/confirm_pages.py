"""`GET/POST /password-reset/{tenant}/confirm`: the pages the emailed confirmation link opens.

Mail scanners and link previews follow links with GET, so a GET only looks: it shows the
confirmation page (or why the link no longer works) and changes nothing. The button's POST
(CSRF-protected like the form, the link's `<id>.<key>` in a hidden field) opens the sealed
password, marks the request used (atomically: a link works once) and calls
`PATCH /api/v2/users/{id}`. Auth0 failing transiently puts the request back, so the link still
works; a policy refusal (PasswordStrengthError …) spends it, since that password will never be
accepted, and the page says what to choose instead. Every page is in the link's language
(`lang=` of the link, then the usual choice) and links back to the form where a new request is
the way forward. Answers: 200 confirm/done, 400 policy, 403 CSRF, 404 unknown, 410 expired/
used/replaced, 503 retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web

from streamer import metrics
from streamer.auth0.errors import Auth0Error, Auth0Permanent, UserNotFound
from streamer.logs import get_logger
from streamer.password_reset.clients import ClientInfo
from streamer.password_reset.confirm import CONFIRM_PATH, policy_refusal
from streamer.password_reset.csrf import CSRF_COOKIE
from streamer.password_reset.form import read_form
from streamer.password_reset.messages import MESSAGES
from streamer.password_reset.pages import PasswordResetPages
from streamer.password_reset.sealed import ConfirmToken, parse_token, unseal
from streamer.store.base import PendingPassword, Store

log = get_logger(__name__)


class PasswordSetter(Protocol):
    """What the confirmation needs from the Management API (`streamer.auth0.ManagementApi` fits)."""

    async def set_password(self, user_id: str, password: str, *, connection: str | None = None) -> None: ...


def link_state(row: PendingPassword | None, token: ConfirmToken | None, tenant: str, now: float) -> str:
    """What a link is now: 'pending' | 'expired' | 'used' | 'replaced' | 'unknown' (pure).

    A wrong key reads as unknown, whatever the row's state: without the key nothing about the
    request is told."""
    if token is None or row is None or row.tenant != tenant:
        return "unknown"
    if row.state in ("used", "replaced"):
        return row.state
    if now >= row.expires_at or row.sealed is None:
        return "expired"
    if unseal(row.sealed, token, tenant=row.tenant, user_id=row.user_id) is None:
        return "unknown"
    return "pending"


_STATE_PAGES = {  # state → (HTTP status, title key, body key)
    "expired": (410, "expired_title", "expired_body"),
    "used": (410, "used_title", "used_body"),
    "replaced": (410, "replaced_title", "replaced_body"),
    "unknown": (404, "unknown_title", "unknown_body"),
}


class ConfirmPages:
    """The confirmation link's pages, drawn with the hosted form's page, CSRF and language."""

    def __init__(
        self,
        pages: PasswordResetPages,
        store: Store,
        apis: Mapping[str, PasswordSetter],
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.pages = pages
        self.store = store
        self.apis = apis
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        path = CONFIRM_PATH.format(tenant="{tenant}")
        return [web.get(path, self.get_confirm), web.post(path, self.post_confirm)]

    def _enabled(self, request: web.Request) -> bool:
        return self.pages._tenant(request) is not None and self.pages.settings.new_password  # noqa: SLF001

    def _locale(self, request: web.Request) -> str:
        return self.pages._locale(request, self.pages._tenant(request), ClientInfo())  # noqa: SLF001

    def _message(
        self, request: web.Request, status: int, title_key: str, *paragraph_keys: str, back: bool = True
    ) -> web.Response:
        locale = self._locale(request)
        t = MESSAGES[locale]
        return self.pages._page(
            request,
            locale,
            status=status,
            page="message",
            title_key=title_key,  # noqa: SLF001
            client=ClientInfo(),
            paragraphs=tuple(t[key] for key in paragraph_keys),
            back_text=t["new_request"] if back else "",
        )

    def _state_page(self, request: web.Request, state: str) -> web.Response:
        status, title_key, body_key = _STATE_PAGES[state]
        return self._message(request, status, title_key, body_key)

    async def _row(self, token: ConfirmToken | None) -> PendingPassword | None:
        return await self.store.get_pending_password(token.pending_id) if token is not None else None

    async def get_confirm(self, request: web.Request) -> web.Response:
        if not self._enabled(request):
            return self.pages._not_found(request)  # noqa: SLF001
        tenant = request.match_info["tenant"]
        token = parse_token(request.query.get("ticket"))
        state = link_state(await self._row(token), token, tenant, self.clock())
        if state != "pending":
            return self._state_page(request, state)
        locale = self._locale(request)
        t = MESSAGES[locale]
        csrf, is_new = self.pages._csrf_token_for(request, tenant)  # noqa: SLF001
        action = CONFIRM_PATH.format(tenant=tenant) + (f"?lang={locale}")
        response = self.pages._page(
            request,
            locale,
            status=200,
            page="confirm",  # noqa: SLF001
            title_key="confirm_title",
            client=ClientInfo(),
            paragraphs=(t["confirm_body"], t["confirm_hint"]),
            csrf_token=csrf,
            extra={"action": action, "confirm_ticket": str(token)},
        )
        if is_new:
            self.pages._set_csrf_cookie(request, response, csrf)  # noqa: SLF001
        return response

    async def post_confirm(self, request: web.Request) -> web.Response:
        if not self._enabled(request):
            return self.pages._not_found(request)  # noqa: SLF001
        tenant = request.match_info["tenant"]
        form, problem = await read_form(request)
        if problem is not None:
            return self._message(request, problem, "invalid_title", "invalid_body")
        if not self.pages.csrf.valid_pair(tenant, request.cookies.get(CSRF_COOKIE), form.csrf_token):
            metrics.EVENTS_REJECTED.labels(tenant, "password_confirm_csrf").inc()
            log.info("password_confirm_csrf_rejected", tenant=tenant)
            return self._message(request, 403, "csrf_title", "csrf_body", "csrf_hint", back=False)
        token = parse_token(form.ticket)
        del form
        row = await self._row(token)
        now = self.clock()
        state = link_state(row, token, tenant, now)
        if state != "pending":
            metrics.PASSWORD_CONFIRMATIONS.labels(tenant, state).inc()
            log.info("password_confirm_refused", tenant=tenant, state=state)
            return self._state_page(request, state)
        assert row is not None and token is not None and row.sealed is not None
        password = unseal(row.sealed, token, tenant=row.tenant, user_id=row.user_id)
        if password is None or not await self.store.use_pending_password(row.id, now=now):
            # Another click got there first (or it expired this very moment): say what it is now.
            state = link_state(await self._row(token), token, tenant, self.clock())
            metrics.PASSWORD_CONFIRMATIONS.labels(tenant, state).inc()
            return self._state_page(request, state)
        try:
            await self.apis[tenant].set_password(row.user_id, password, connection=row.connection or None)
        except Auth0Error as exc:
            return await self._refused(request, tenant, row, exc)
        finally:
            del password
        metrics.PASSWORD_CONFIRMATIONS.labels(tenant, "changed").inc()
        log.info("password_confirmed", tenant=tenant, user_id=row.user_id)
        return self._message(request, 200, "done_title", "done_body", back=False)

    async def _refused(self, request: web.Request, tenant: str, row: PendingPassword, exc: Auth0Error) -> web.Response:
        reason = policy_refusal(exc)
        if reason is not None:
            metrics.PASSWORD_CONFIRMATIONS.labels(tenant, "policy").inc()
            log.info("password_confirm_policy_refused", tenant=tenant, user_id=row.user_id, policy=reason)
            return self._message(request, 400, "policy_title", f"policy_{reason}", "policy_hint")
        if isinstance(exc, UserNotFound) or (isinstance(exc, Auth0Permanent) and exc.status not in (401, 403)):
            metrics.PASSWORD_CONFIRMATIONS.labels(tenant, "failed").inc()
            log.warning(
                "password_confirm_failed",
                tenant=tenant,
                user_id=row.user_id,
                status=exc.status,
                error_code=exc.error_code,
                error=str(exc),
            )
            return self._message(request, 410, "retry_title", "gone_body")
        # Transient, or our credentials/scopes (fixable by the operator): the link works again.
        assert row.sealed is not None
        restored = await self.store.restore_pending_password(row.id, row.sealed, now=self.clock())
        metrics.PASSWORD_CONFIRMATIONS.labels(tenant, "deferred").inc()
        hint = (
            "grant update:users to streamer's application (Auth0 Management API)" if exc.status in (401, 403) else None
        )
        log.warning(
            "password_confirm_deferred",
            tenant=tenant,
            user_id=row.user_id,
            status=exc.status,
            error_code=exc.error_code,
            error=str(exc),
            link_still_works=restored,
            hint=hint,
        )
        return self._message(request, 503, "retry_title", "retry_body", back=not restored)
