"""Log streams: `GET/POST/PATCH/DELETE /api/v2/log-streams` with Auth0's validation, and which
events a stream takes. The filter categories come from `streamer.auth0.log_streams`, the table
`streamer register` and the daemon's watch use, so a stream registered in the sandbox gets what
it would get from Auth0."""

from __future__ import annotations

import secrets

from aiohttp import web

from streamer.auth0.log_streams import category_of, filter_names
from streamer.devkit.auth0_standin.errors import ApiProblem, additional_properties, payload_problem
from streamer.devkit.auth0_standin.params import json_object, required
from streamer.devkit.auth0_standin.state import JSON, Tenant, tenant_of

_CREATE_PROPS = {"name", "type", "isPriority", "filters", "pii_config", "startFrom", "sink"}
_PATCH_PROPS = {"name", "status", "isPriority", "filters", "pii_config", "sink"}
_STATUSES = {"active", "paused", "suspended"}

routes = web.RouteTableDef()


def takes(stream: JSON, event: JSON) -> bool:
    """An http stream takes the events of the categories its filters name (all without filters)."""
    if stream.get("type") != "http":
        return False
    names = filter_names(stream)
    return not names or category_of(str(event.get("type"))) in names


def stream_or_404(tenant: Tenant, stream_id: str) -> JSON:
    stream = tenant.log_streams.get(stream_id)
    if stream is None:
        raise ApiProblem(404, "The log stream does not exist.", "inexistent_log_stream")
    return stream


def _check(body: JSON, allowed: set[str]) -> None:
    additional_properties(body, allowed)
    if "status" in body and body["status"] not in _STATUSES:
        raise payload_problem("'Invalid value' on property status")
    if "filters" in body and not (
        isinstance(body["filters"], list) and all(isinstance(f, dict) and f.get("name") for f in body["filters"])
    ):
        raise payload_problem("'Expected an array of {type, name}' on property filters")
    if "sink" in body and not isinstance(body["sink"], dict):
        raise payload_problem("'Expected type object' on property sink")


def _check_create(body: JSON) -> None:
    _check(body, _CREATE_PROPS)
    required(body, "type")
    if not isinstance(body.get("sink"), dict):
        raise payload_problem("'Missing required property: sink'")
    if body["type"] == "http" and not body["sink"].get("httpEndpoint"):
        raise payload_problem("'Missing required property: httpEndpoint' on property sink")


@routes.get("/api/v2/log-streams")
async def list_streams(request: web.Request) -> web.Response:
    return web.json_response(list(tenant_of(request).log_streams.values()))


@routes.get("/api/v2/log-streams/{id}")
async def get_stream(request: web.Request) -> web.Response:
    return web.json_response(stream_or_404(tenant_of(request), request.match_info["id"]))


@routes.post("/api/v2/log-streams")
async def create_stream(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = await json_object(request)
    _check_create(body)
    stream_id = f"lst_{len(tenant.log_streams) + 1 + secrets.randbelow(10**6) * 100:016d}"
    stream = {
        "id": stream_id,
        "name": body.get("name") or f"{body['type']} stream",
        "type": body["type"],
        "status": "active",
        "sink": body["sink"],
    }
    for key in ("filters", "isPriority", "pii_config"):
        if key in body:
            stream[key] = body[key]
    tenant.log_streams[stream_id] = stream
    return web.json_response(stream)


@routes.patch("/api/v2/log-streams/{id}")
async def patch_stream(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    stream = stream_or_404(tenant, request.match_info["id"])
    body = await json_object(request)
    _check(body, _PATCH_PROPS)
    was = stream.get("status")
    for key, value in body.items():
        stream[key] = {**stream.get("sink", {}), **value} if key == "sink" else value
    if was != "active" and stream.get("status") == "active":
        tenant.stream_failures.pop(stream["id"], None)
        tenant.queue_events(stream["id"], tenant.stream_held.pop(stream["id"], []))  # what Auth0 kept, in order
    return web.json_response(stream)


@routes.delete("/api/v2/log-streams/{id}")
async def delete_stream(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    stream_or_404(tenant, request.match_info["id"])
    del tenant.log_streams[request.match_info["id"]]
    return web.Response(status=204)
