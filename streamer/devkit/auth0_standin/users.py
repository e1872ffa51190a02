"""Users: `GET /api/v2/users` (the search, behind its lagging index), get-by-id, users-by-email,
`PATCH` (first-level metadata merges, the password policy) and `DELETE`, plus the writes the
test hooks make (`add_user`, `delete_user`)."""

from __future__ import annotations

import copy
import json
import math
import secrets
import time
from importlib import resources
from typing import Any

from aiohttp import web

from streamer.devkit.auth0_standin.errors import ApiProblem, payload_problem
from streamer.devkit.auth0_standin.logs import add_log, change_event, user_fields
from streamer.devkit.auth0_standin.params import (
    fields_param,
    include_totals,
    json_object,
    paging,
    query_terms,
    required_query,
)
from streamer.devkit.auth0_standin.passwords import policy_refusal, set_password
from streamer.devkit.auth0_standin.query import field_value, matches, project
from streamer.devkit.auth0_standin.state import (
    JSON,
    Tenant,
    first_identity,
    merge_metadata,
    now_iso,
    public_user,
    tenant_of,
)

#: Body properties of a PATCH that modify the request rather than the profile.
_REQUEST_MODIFIERS = {"connection", "client_id", "verify_email", "verify_phone_number", "verify_password"}
_METADATA = ("app_metadata", "user_metadata")

routes = web.RouteTableDef()


def load_sample_users() -> list[JSON]:
    """The seeded users of `streamer dev` (ana.silva fr-CA unverified, bruno.costa google …)."""
    text = resources.files("streamer.devkit").joinpath("sample_users.json").read_text(encoding="utf-8")
    users: list[JSON] = json.loads(text)
    return users


def _with_defaults(profile: JSON, now: str) -> JSON:
    """A profile as Auth0 stores it: an id, an identity, the email-derived names, the dates."""
    user = copy.deepcopy(profile)
    user_id = user.setdefault("user_id", "auth0|" + secrets.token_hex(12))
    provider, _, sub = user_id.partition("|")
    if "identities" not in user:
        social = provider not in ("auth0", "email", "sms")
        user["identities"] = [
            {
                "connection": provider if social else "Username-Password-Authentication",
                "provider": provider,
                "user_id": sub,
                "isSocial": social,
            }
        ]
    if "email" in user:
        user.setdefault("email_verified", False)
        user.setdefault("name", user["email"])
        user.setdefault("nickname", user["email"].split("@")[0])
    user.setdefault("created_at", now)
    user.setdefault("updated_at", now)
    user.setdefault("logins_count", 0)
    user.pop("password", None)
    return user


def add_user(tenant: Tenant, profile: JSON, *, indexed: bool | None = None) -> JSON:
    """Store a user (Auth0 shape; defaults filled in). `indexed=False` hides it from search
    until `index_all()`; `True` makes it a long-standing user the index already has; None
    (a signup now) follows `search_lag_s`."""
    user = _with_defaults(profile, now_iso())
    user_id = user["user_id"]
    tenant.users[user_id] = public_user(user)
    if indexed is False:
        tenant.unindexed.add(user_id)
    else:
        tenant.unindexed.discard(user_id)
    tenant.versions.pop(user_id, None)
    if tenant.search_lag_s > 0:  # long-standing users are in the index since "always"
        tenant.versions[user_id] = [(-math.inf if indexed else time.monotonic(), public_user(user))]
    return public_user(user)


def user_or_404(tenant: Tenant, user_id: str) -> JSON:
    user = tenant.users.get(user_id)
    if user is None:
        raise ApiProblem(404, "The user does not exist.", "inexistent_user")
    return user


def delete_user(tenant: Tenant, user_id: str) -> None:
    """Delete a user as `DELETE /api/v2/users/{id}` does (an `sdu` log event; search lags)."""
    user = user_or_404(tenant, user_id)
    del tenant.users[user_id]
    tenant.user_changed(user_id)
    connection, _ = first_identity(user)
    add_log(
        tenant,
        {
            "type": "sdu",
            "description": "",
            "client_id": "",
            "client_name": "",
            "ip": "127.0.0.1",
            "user_agent": "unknown",
            **user_fields(tenant, user),
            "strategy_type": "database",
            "details": {
                "body": {
                    "tenant": tenant.tenant_name,
                    "connection": connection,
                    "user_id": user_id,
                    "email": user.get("email"),
                }
            },
        },
    )


@routes.get("/api/v2/users/{id}")
async def get_user(request: web.Request) -> web.Response:
    user = user_or_404(tenant_of(request), request.match_info["id"])
    return web.json_response(project(public_user(user), *fields_param(request)))


def _search_candidates(tenant: Tenant, terms: list[tuple[str, list[str]]]) -> list[str]:
    """The user ids a search looks at: `user_id:("a" OR "b")` is a direct index read, not a scan."""
    id_terms = [values for name, values in terms if name == "user_id" and not any("*" in v for v in values)]
    if id_terms:
        known = tenant.users.keys() | tenant.versions.keys()  # a deleted user stays found for the lag
        return [uid for uid in dict.fromkeys(id_terms[0]) if uid in known]
    return list(tenant.users) + [uid for uid in tenant.versions if uid not in tenant.users]


def search(tenant: Tenant, terms: list[tuple[str, list[str]]], sort: str | None) -> list[JSON]:
    """The users the search index matches now, sorted as asked."""
    moment = time.monotonic()
    index = [view for uid in _search_candidates(tenant, terms) if (view := tenant.search_view(uid, moment)) is not None]
    found = [user for user in index if matches(user, terms)]
    if sort:
        name, _, direction = sort.partition(":")
        found.sort(key=lambda u: str(field_value(u, name) or ""), reverse=direction == "-1")
    return found


@routes.get("/api/v2/users")
async def search_users(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    totals = include_totals(request)
    found = search(tenant_of(request), query_terms(request.query.get("q")), request.query.get("sort"))
    if page * per_page >= 1000:
        raise ApiProblem(
            400,
            "You can only page through the first 1000 records. See "
            "https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            "invalid_paging",
        )
    window = [project(public_user(u), *fields_param(request)) for u in found[page * per_page : (page + 1) * per_page]]
    if totals:
        return web.json_response(
            {"start": page * per_page, "limit": per_page, "length": len(window), "total": len(found), "users": window}
        )
    return web.json_response(window)


@routes.get("/api/v2/users-by-email")
async def users_by_email(request: web.Request) -> web.Response:
    email = required_query(request, "email")
    fields = fields_param(request)
    users = tenant_of(request).users.values()
    return web.json_response([project(public_user(u), *fields) for u in users if u.get("email") == email])


def _check_patch(user: JSON, body: JSON) -> None:
    if not body:
        raise payload_problem("'Too few properties defined (0), minimum 1'")
    if "user_id" in body and body["user_id"] != user["user_id"]:
        raise payload_problem("'Additional properties not allowed: user_id'")
    for key in _METADATA:
        if key in body and not isinstance(body[key], dict):
            raise payload_problem(f"'Expected type object but found type {type(body[key]).__name__}' on property {key}")


def _apply_patch(user: JSON, body: JSON) -> None:
    """The profile fields of the body; metadata merged on the first level."""
    for key, value in body.items():
        if key in _METADATA:
            user[key] = merge_metadata(user.get(key), value)
        elif key != "password" and key not in _REQUEST_MODIFIERS:  # the password is set once accepted
            user[key] = value
    user["updated_at"] = now_iso()


def _change_password(tenant: Tenant, user: JSON, body: JSON, request: web.Request) -> None:
    """An accepted password change: stored, noted in `password_changes`, logged as `scp`."""
    set_password(tenant, user["user_id"], str(body["password"]))
    user["last_password_reset"] = user["updated_at"]
    tenant.password_changes.append({"user_id": user["user_id"], "connection": body.get("connection")})
    no_ticket: dict[str, Any] = {
        "client_id": "",
        "result_url": None,
        "mark_email_as_verified": False,
        "include_email_in_redirect": False,
    }
    add_log(tenant, change_event(tenant, "scp", no_ticket, user, request))


@routes.patch("/api/v2/users/{id}")
async def patch_user(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    user = user_or_404(tenant, request.match_info["id"])
    body = await json_object(request)
    _check_patch(user, body)
    refusal = policy_refusal(tenant, user, str(body["password"])) if "password" in body else None
    if refusal is not None:  # Auth0's policy errors carry no errorCode
        return web.json_response({"statusCode": 400, "error": "Bad Request", "message": refusal}, status=400)
    _apply_patch(user, body)
    if "password" in body:
        _change_password(tenant, user, body, request)
    tenant.users[user["user_id"]] = public_user(user)
    tenant.user_changed(user["user_id"])
    return web.json_response(public_user(user))


@routes.delete("/api/v2/users/{id}")
async def delete_user_endpoint(request: web.Request) -> web.Response:
    delete_user(tenant_of(request), request.match_info["id"])
    return web.Response(status=204)
