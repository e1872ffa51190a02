"""Tickets: `POST /api/v2/tickets/email-verification` and `/password-change`, and the one-time
links they return. Using one changes the user and appends the `sv`/`scp` log event Auth0 writes,
which is what streamer's rules listen to. Ticket URLs point at the stand-in (`{base_url}/u/...`),
so the links in the emails can be clicked on a developer's machine."""

from __future__ import annotations

import functools
import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from streamer.devkit.auth0_standin.errors import ApiProblem, additional_properties, payload_problem
from streamer.devkit.auth0_standin.logs import VERIFIED_MESSAGE, add_log, change_event
from streamer.devkit.auth0_standin.pages import alert_page, page, redirect, reset_page, with_query
from streamer.devkit.auth0_standin.params import json_object, required
from streamer.devkit.auth0_standin.passwords import policy_refusal, set_password
from streamer.devkit.auth0_standin.state import JSON, Tenant, connection_id, now_iso, tenant_of
from streamer.devkit.auth0_standin.users import user_or_404

DEFAULT_TICKET_TTL_S = 432000  # 5 days, Auth0's default for both ticket kinds
_EMAIL_TICKET_PROPS = {
    "user_id",
    "result_url",
    "client_id",
    "organization_id",
    "ttl_sec",
    "includeEmailInRedirect",
    "identity",
}
_PASSWORD_TICKET_PROPS = {
    "result_url",
    "user_id",
    "client_id",
    "organization_id",
    "connection_id",
    "email",
    "ttl_sec",
    "mark_email_as_verified",
    "includeEmailInRedirect",
    "identity",
}

routes = web.RouteTableDef()


def new_ticket(tenant: Tenant, kind: str, user: JSON, body: JSON) -> str:
    ticket_id = secrets.token_urlsafe(24)
    ttl = body.get("ttl_sec") or DEFAULT_TICKET_TTL_S
    tenant.tickets[ticket_id] = {
        "kind": kind,
        "user_id": user["user_id"],
        "result_url": body.get("result_url"),
        "ttl_sec": ttl,
        "client_id": body.get("client_id"),
        "used": False,
        "expires_at": time.time() + ttl,
        "include_email_in_redirect": bool(body.get("includeEmailInRedirect", False)),
        "mark_email_as_verified": bool(body.get("mark_email_as_verified", False)),
    }
    if "new_password" in body:
        tenant.tickets[ticket_id]["new_password"] = body["new_password"]
    return ticket_id


def _check_body(body: JSON, allowed: set[str]) -> None:
    additional_properties(body, allowed)
    ttl = body.get("ttl_sec")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
        raise payload_problem("'Expected type integer, minimum 0' on property ttl_sec")
    if body.get("result_url") and (body.get("client_id") or body.get("organization_id")):
        raise ApiProblem(400, "The result_url parameter cannot be used together with client_id or organization_id.")


@routes.post("/api/v2/tickets/email-verification")
async def email_ticket(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = await json_object(request)
    _check_body(body, _EMAIL_TICKET_PROPS)
    required(body, "user_id")
    ticket_id = new_ticket(tenant, "email_verification", user_or_404(tenant, body["user_id"]), body)
    return web.json_response({"ticket": f"{tenant.base_url}/u/email-verification?ticket={ticket_id}#"}, status=201)


def _has_connection(user: JSON, wanted_id: str) -> bool:
    return any(connection_id(i.get("connection", "")) == wanted_id for i in user.get("identities", []))


def _password_ticket_user(tenant: Tenant, body: JSON) -> JSON:
    """The user a password-change ticket is for: by `user_id`, or by `email` and `connection_id`."""
    if body.get("user_id") and (body.get("email") or body.get("connection_id")):
        raise payload_problem("'user_id cannot be used together with email or connection_id'")
    if body.get("user_id"):
        return user_or_404(tenant, body["user_id"])
    if body.get("email") and body.get("connection_id"):
        for user in tenant.users.values():
            if user.get("email") == body["email"] and _has_connection(user, body["connection_id"]):
                return user
        raise ApiProblem(404, "The user does not exist.", "inexistent_user")
    missing = "connection_id" if body.get("email") else "user_id"
    raise payload_problem(f"'Missing required property: {missing}'")


@routes.post("/api/v2/tickets/password-change")
async def password_ticket(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = await json_object(request)
    _check_body(body, _PASSWORD_TICKET_PROPS | ({"new_password"} if tenant.legacy_password_flow else set()))
    ticket_id = new_ticket(tenant, "password_change", _password_ticket_user(tenant, body), body)
    return web.json_response({"ticket": f"{tenant.base_url}/u/reset-verify?ticket={ticket_id}#"}, status=201)


def _ticket_problem(tenant: Tenant, ticket_id: str, kind: str) -> web.Response | None:
    """The page saying why a ticket link cannot be used, or None when it can."""
    ticket = tenant.tickets.get(ticket_id)
    if ticket is None or ticket["kind"] != kind or ticket["user_id"] not in tenant.users:
        return alert_page("Invalid link", "This link is not valid.", 400)
    if ticket["used"]:
        return alert_page("Link already used", "This URL can be used only once.", 410)
    if ticket["expires_at"] <= time.time():
        return alert_page("Link expired", "Access expired.", 410)
    return None


@dataclass
class _Link:
    """A usable ticket link: the ticket, its id and its user."""

    tenant: Tenant
    ticket_id: str
    ticket: JSON
    user: JSON


_LinkHandler = Callable[[web.Request, _Link], Awaitable[web.Response]]


def _ticket_link(kind: str) -> Callable[[_LinkHandler], Callable[[web.Request], Awaitable[web.Response]]]:
    """A page behind a ticket link: the handler gets the ticket, or the visitor a page saying why
    the link cannot be used."""

    def wrap(handler: _LinkHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
        @functools.wraps(handler)
        async def serve(request: web.Request) -> web.Response:
            tenant = tenant_of(request)
            ticket_id = request.query.get("ticket") or ""
            problem = _ticket_problem(tenant, ticket_id, kind)
            if problem is not None:
                return problem
            ticket = tenant.tickets[ticket_id]
            return await handler(request, _Link(tenant, ticket_id, ticket, tenant.users[ticket["user_id"]]))

        return serve

    return wrap


@routes.get("/u/email-verification")
@_ticket_link("email_verification")
async def use_email_ticket(request: web.Request, link: _Link) -> web.Response:
    tenant, ticket, user = link.tenant, link.ticket, link.user
    ticket["used"] = True
    user["email_verified"] = True
    user["updated_at"] = now_iso()
    tenant.user_changed(user["user_id"])
    add_log(tenant, change_event(tenant, "sv", ticket, user, request))
    if not ticket["result_url"]:
        return page("Email verified", f"<p>{html.escape(VERIFIED_MESSAGE)}</p>")
    params = {"supportSignUp": "true", "supportForgotPassword": "true"}
    if ticket["include_email_in_redirect"] and user.get("email"):
        params["email"] = user["email"]
    params.update({"message": VERIFIED_MESSAGE, "success": "true", "code": "success"})
    return redirect(with_query(ticket["result_url"], params))


@routes.get("/u/reset-verify")
@_ticket_link("password_change")
async def reset_form(request: web.Request, link: _Link) -> web.Response:
    return reset_page(link.ticket_id, link.ticket, link.user)


async def _chosen_password(request: web.Request, link: _Link) -> str | web.Response:
    """The password the form (or, legacy flow, the ticket) sets; the form again when refused."""
    if "new_password" in link.ticket:
        return str(link.ticket["new_password"])
    form = await request.post()
    password, confirm = str(form.get("newPassword", "")), str(form.get("confirmNewPassword", ""))
    if len(password) < 8:
        return reset_page(link.ticket_id, link.ticket, link.user, "The password must have at least 8 characters.", 400)
    if password != confirm:
        return reset_page(link.ticket_id, link.ticket, link.user, "The passwords do not match.", 400)
    refusal = policy_refusal(link.tenant, link.user, password)  # the connection's policy, as PATCH applies it
    if refusal is not None:
        return reset_page(link.ticket_id, link.ticket, link.user, refusal, 400)
    return password


@routes.post("/u/reset-verify")
@_ticket_link("password_change")
async def reset_submit(request: web.Request, link: _Link) -> web.Response:
    tenant, ticket, user = link.tenant, link.ticket, link.user
    password = await _chosen_password(request, link)
    if isinstance(password, web.Response):
        return password
    ticket["used"] = True
    ticket.pop("new_password", None)
    set_password(tenant, user["user_id"], password)
    user["last_password_reset"] = user["updated_at"] = now_iso()
    if ticket["mark_email_as_verified"]:
        user["email_verified"] = True
    tenant.user_changed(user["user_id"])
    add_log(tenant, change_event(tenant, "scp", ticket, user, request))
    if ticket["result_url"]:
        return redirect(ticket["result_url"])
    return page("Password changed", "<p>Your password has been changed successfully.</p>")
