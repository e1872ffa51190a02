"""Reading a Management API request's input as Auth0 validates it (its 400 messages), so a
handler gets plain values or raises the `ApiProblem` Auth0 would answer with."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamer.devkit.auth0_standin.errors import ApiProblem, payload_problem
from streamer.devkit.auth0_standin.query import Terms, parse_query

MAX_PER_PAGE = 100


def query_problem(detail: str) -> ApiProblem:
    return ApiProblem(400, f"Query validation error: {detail}.", "invalid_query_string")


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise query_problem(f"'Expected type integer but found type string' on property {name}") from None
    if value < low:
        raise query_problem(f"'Value {value} is less than minimum {low}' on property {name}")
    if value > high:
        raise query_problem(f"'Value {value} is greater than maximum {high}' on property {name}")
    return value


def paging(request: web.Request) -> tuple[int, int]:
    """`page` and `per_page` (50 by default, at most 100)."""
    return int_param(request, "page", 0, 0, 10**6), int_param(request, "per_page", 50, 1, MAX_PER_PAGE)


def include_totals(request: web.Request) -> bool:
    return request.query.get("include_totals", "false").lower() == "true"


def fields_param(request: web.Request) -> tuple[str | None, bool]:
    """`fields` and `include_fields`, as `query.project` takes them."""
    include = request.query.get("include_fields", "true").lower() != "false"
    return request.query.get("fields"), include


def query_terms(q: str | None) -> Terms:
    """The parsed `q` (no terms when absent); Auth0's 400 when it cannot be parsed."""
    try:
        return parse_query(q) if q else []
    except ValueError as exc:
        raise query_problem(f"'invalid query string: {exc}'") from None


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise query_problem(f"'Missing required property: {name}' on property {name}")
    return value


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(400, "Invalid request payload JSON format", "invalid_body") from None
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else type(body).__name__
        raise ApiProblem(
            400, f"Payload validation error: 'Expected type object but found type {kind}'.", "invalid_body"
        )
    return body


def required(body: dict[str, Any], name: str) -> None:
    if not body.get(name):
        raise payload_problem(f"'Missing required property: {name}'")
