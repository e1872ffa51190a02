"""The tenant logs: writing events (ids that sort by ingest time, handed to the log streams),
the shapes of the events the stand-in writes, and `GET /api/v2/logs` with its page and
checkpoint (`from`/`take` with a Link header) modes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from streamer.devkit.auth0_standin.errors import ApiProblem
from streamer.devkit.auth0_standin.params import (
    MAX_PER_PAGE,
    fields_param,
    include_totals,
    int_param,
    paging,
    query_problem,
    query_terms,
)
from streamer.devkit.auth0_standin.query import matches, project
from streamer.devkit.auth0_standin.state import (
    JSON,
    Tenant,
    connection_id,
    first_identity,
    iso_ms,
    log_id_key,
    make_log_id,
    tenant_of,
)
from streamer.devkit.auth0_standin.streams import takes

DEFAULT_TAKE = 50
VERIFIED_MESSAGE = "Your email was verified. You can continue using the application."

routes = web.RouteTableDef()


def _new_log_id(tenant: Tenant, given: str, now: datetime) -> str:
    """A given numeric id not used yet is kept (to replay known events); otherwise a new one is
    made from the ingest time, always above every id so far, as checkpoints need."""
    if given.isdigit() and all(e["log_id"] != given for e in tenant.logs):
        log_id = given
    else:
        tenant.log_sequence += 1
        log_id = make_log_id(now, tenant.log_sequence)
        if int(log_id) <= tenant.last_log_id:
            log_id = str(tenant.last_log_id + 1)
    tenant.last_log_id = max(tenant.last_log_id, int(log_id))
    return log_id


def add_log(tenant: Tenant, event: JSON) -> JSON:
    """Append a tenant log event, filling `date`, `log_id` and `_id`, and hand it to the streams:
    active ones get it delivered, paused or suspended ones keep it until they are active."""
    stored = copy.deepcopy(event)
    now = datetime.now(UTC)
    stored.setdefault("date", iso_ms(now))
    stored["log_id"] = stored["_id"] = _new_log_id(tenant, str(stored.get("log_id") or ""), now)
    tenant.logs.append(stored)
    if tenant.stream_queue is not None:
        for stream in tenant.log_streams.values():
            if not takes(stream, stored):
                continue
            if stream.get("status") == "active":
                tenant.queue_event(stream["id"], stored)
            else:
                tenant.stream_held.setdefault(stream["id"], []).append(stored)
    return stored


def user_fields(tenant: Tenant, user: JSON) -> JSON:
    """The fields of a log event about a user: where it happened and whose identity."""
    connection, provider = first_identity(user)
    return {
        "hostname": tenant.domain,
        "tenant_name": tenant.tenant_name,
        "connection": connection,
        "connection_id": connection_id(connection),
        "strategy": provider,
        "user_id": user["user_id"],
        "user_name": user.get("email", ""),
    }


def change_event(tenant: Tenant, kind: str, ticket: JSON, user: JSON, request: web.Request) -> JSON:
    """The `sv`/`scp` log event of a used ticket or a password PATCH (shape of the samples,
    without the ticket id)."""
    fields = user_fields(tenant, user)
    query: dict[str, Any] = {
        "email": user.get("email"),
        "user_id": user["user_id"],
        "tenant": tenant.tenant_name,
        "client_id": ticket.get("client_id") or "",
        "connection": fields["connection"],
        "resultUrl": ticket["result_url"],
    }
    if kind == "sv":
        query["idp_user_id"] = None
        details_body: dict[str, Any] = {"tenant": tenant.tenant_name}
        title, description = "Email Verification", VERIFIED_MESSAGE
    else:
        query["markEmailAsVerified"] = ticket["mark_email_as_verified"]
        details_body = {"tenant": tenant.tenant_name, "newPassword": "*****", "confirmNewPassword": "*****"}
        title, description = "Change Password", "Password changed successfully"
    query["includeEmailInRedirect"] = ticket["include_email_in_redirect"]
    return {
        "type": kind,
        "description": description,
        "client_id": ticket.get("client_id") or "",
        "client_name": "",
        "ip": request.remote or "127.0.0.1",
        "user_agent": request.headers.get("User-Agent", "unknown"),
        "environment_name": "standin",
        "isMobile": False,
        "$event_schema": {"version": "1.0.0"},
        **fields,
        "strategy_type": "database" if fields["strategy"] == "auth0" else "social",
        "details": {"title": title, "email": user.get("email"), "body": details_body, "query": query},
    }


@routes.get("/api/v2/logs")
async def get_logs(request: web.Request) -> web.Response:
    if "from" in request.query:
        return _logs_by_checkpoint(request)
    page, per_page = paging(request)
    if page * per_page >= 1000:
        raise ApiProblem(
            400,
            f"Requesting page {page + 1} exceeds the allowed maximum of 1000 records: "
            "please consider searching by checkpoint",
            "invalid_paging",
        )
    terms = query_terms(request.query.get("q") or request.query.get("search"))
    found = [e for e in tenant_of(request).logs if matches(e, terms)]
    ascending = request.query.get("sort", "date:-1").strip() == "date:1"
    found.sort(key=lambda e: (e.get("date", ""), log_id_key(e["log_id"])), reverse=not ascending)
    window = [project(e, *fields_param(request)) for e in found[page * per_page : (page + 1) * per_page]]
    if include_totals(request):
        return web.json_response(
            {"start": page * per_page, "limit": per_page, "length": len(window), "total": len(found), "logs": window}
        )
    return web.json_response(window)


def _logs_by_checkpoint(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    start = request.query.get("from", "")
    if not start.isdigit():
        raise query_problem("'String does not match pattern ^\\d+$' on property from")
    take = int_param(request, "take", DEFAULT_TAKE, 1, MAX_PER_PAGE)
    newer = sorted(
        (e for e in tenant.logs if log_id_key(e["log_id"]) > log_id_key(start)), key=lambda e: log_id_key(e["log_id"])
    )[:take]
    following = newer[-1]["log_id"] if newer else start
    link = f'<{tenant.base_url}/api/v2/logs?{urlencode({"from": following, "take": take})}>; rel="next"'
    return web.json_response(newer, headers={"Link": link})


@routes.get("/api/v2/logs/{id}")
async def get_log(request: web.Request) -> web.Response:
    wanted = request.match_info["id"]
    for event in tenant_of(request).logs:
        if event["log_id"] == wanted:
            return web.json_response(event)
    raise ApiProblem(404, "log not found", "inexistent_log")
