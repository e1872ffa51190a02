"""What every request passes before its handler, in Auth0's order: the latency of a real tenant,
the rate limit (429 with `x-ratelimit-*`), injected failures (`fail_next`), the Bearer token
and its scopes; and after it, the call log the tests read (`calls`)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from streamer.devkit.auth0_standin.errors import REASONS, ApiProblem, api_error
from streamer.devkit.auth0_standin.limits import LIMIT_REACHED, bucket_for, exhausted_headers, rate_headers
from streamer.devkit.auth0_standin.state import Tenant, take_injected_status, tenant_of
from streamer.devkit.auth0_standin.tokens import bearer_problem, scope_problem


@web.middleware
async def standin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _handle(tenant_of(request), request, handler)
    tenant_of(request).calls.append((request.method, request.path, response.status))
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, with problems and router errors as Auth0-style answers."""
    try:
        return await handler(request)
    except ApiProblem as problem:
        return api_error(problem.status, problem.message, problem.error_code)
    except web.HTTPException as exc:  # unknown route, wrong method
        if request.path.startswith("/api/v2"):
            return api_error(exc.status, exc.reason, "not_found" if exc.status == 404 else None)
        return web.Response(status=exc.status, text=exc.reason)


def _injected(path: str, status: int, headers: dict[str, str], now: float) -> web.Response:
    """The answer of an injected failure: Auth0's error body, or OAuth's on the token endpoint."""
    if status == 429:
        headers = exhausted_headers(headers, now)
    if path == "/oauth/token":
        return web.json_response(
            {
                "error": "server_error" if status >= 500 else "access_denied",
                "error_description": REASONS.get(status, "Error"),
            },
            status=status,
        )
    return api_error(status, None, None, headers or None)


def _refused_credentials(tenant: Tenant, request: web.Request, now: float) -> tuple[int, str] | None:
    """(401, message) for a missing or bad token, (403, message) for one without the scope."""
    problem = bearer_problem(tenant, request.headers.get("Authorization", ""), now)
    if problem is not None:
        return 401, problem
    token = request.headers["Authorization"].partition(" ")[2]
    wanted = scope_problem(tenant, request.method, request.path, token)
    if wanted is not None:
        return 403, f"Insufficient scope, expected any of: {wanted}"
    return None


async def _handle(tenant: Tenant, request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    is_api = path.startswith("/api/v2/") or path == "/api/v2"
    if tenant.latency_s > 0 and (is_api or path == "/oauth/token"):
        await asyncio.sleep(tenant.latency_s)
    now = time.time()
    headers: dict[str, str] = {}
    if is_api:
        bucket = bucket_for(request.method, path, tenant.bucket, tenant.endpoint_buckets)
        allowed = bucket.take(now) if bucket else True
        headers = rate_headers(now, bucket)
        if not allowed:
            return api_error(429, LIMIT_REACHED, "too_many_requests", headers)
    injected = take_injected_status(tenant.failures, path)
    if injected is not None:
        return _injected(path, injected, headers, now)
    refused = _refused_credentials(tenant, request, now) if is_api else None
    if refused is not None:
        status, message = refused
        return api_error(status, message, "insufficient_scope" if status == 403 else None, headers)
    response = await _answer(request, handler)
    response.headers.update(headers)
    return response
