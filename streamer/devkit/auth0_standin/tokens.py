"""`POST /oauth/token` (client credentials) and the Bearer and scope checks every /api/v2 call
passes: tokens expire, carry the grant of the moment they were issued, and each endpoint wants
the scopes Auth0 documents for it."""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web

from streamer.devkit.auth0_standin.state import Tenant, tenant_of

#: Everything streamer may ask for: what the stand-in's M2M application is granted by default.
SCOPES = (
    "read:users update:users update:users_app_metadata delete:users create:user_tickets read:logs "
    "read:logs_users "
    "read:log_streams create:log_streams update:log_streams delete:log_streams"
)
#: Scopes each Management API endpoint wants (any one of them), as Auth0 documents them.
ENDPOINT_SCOPES: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (method, re.compile(pattern), scopes)
    for method, pattern, scopes in (
        ("GET", r"/api/v2/users(/[^/]+)?$", ("read:users",)),
        ("GET", r"/api/v2/users-by-email$", ("read:users",)),
        ("PATCH", r"/api/v2/users/[^/]+$", ("update:users", "update:users_app_metadata")),
        ("DELETE", r"/api/v2/users/[^/]+$", ("delete:users",)),
        ("POST", r"/api/v2/tickets/", ("create:user_tickets",)),
        ("GET", r"/api/v2/logs(/[^/]+)?$", ("read:logs", "read:logs_users")),
        ("GET", r"/api/v2/log-streams", ("read:log_streams",)),
        ("POST", r"/api/v2/log-streams$", ("create:log_streams",)),
        ("PATCH", r"/api/v2/log-streams/", ("update:log_streams",)),
        ("DELETE", r"/api/v2/log-streams/", ("delete:log_streams",)),
    )
)

routes = web.RouteTableDef()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_token(tenant: Tenant, ttl_s: int) -> str:
    """A JWT-shaped access token (its signature is random: nobody verifies it but the stand-in)."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "standin"}
    claims = {
        "iss": f"https://{tenant.domain}/",
        "sub": f"{tenant.client_id}@clients",
        "aud": tenant.audience,
        "iat": now,
        "exp": now + ttl_s,
        "scope": tenant.granted_scopes,
        "gty": "client-credentials",
        "azp": tenant.client_id,
        "jti": secrets.token_hex(8),
    }
    token = ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(secrets.token_bytes(64))]
    )
    tenant.tokens[token] = time.time() + ttl_s
    tenant.token_scopes[token] = frozenset(tenant.granted_scopes.split())
    return token


def bearer_problem(tenant: Tenant, authorization: str, now: float) -> str | None:
    """Auth0's 401 message for the Authorization header, or None when the token is valid."""
    scheme, _, token = authorization.partition(" ")
    if not authorization:
        return "Missing authentication"
    if scheme.lower() != "bearer" or not token.strip():
        return "Bad HTTP authentication header format"
    expiry = tenant.tokens.get(token.strip())
    if expiry is None:
        return "Invalid token"
    if expiry <= now:
        return "Expired token"
    return None


def scope_problem(tenant: Tenant, method: str, path: str, token: str) -> str | None:
    """The scopes the endpoint wants, comma-separated, when the token carries none of them."""
    granted = tenant.token_scopes.get(token.strip(), frozenset())
    for wanted_method, pattern, scopes in ENDPOINT_SCOPES:
        if method == wanted_method and pattern.match(path):
            return None if granted.intersection(scopes) else ",".join(scopes)
    return None


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def _token_request(request: web.Request) -> dict[str, Any] | None:
    """The request's form or JSON fields (None when it has no object)."""
    if request.content_type != "application/json":
        return dict(await request.post())
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _same(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


@routes.post("/oauth/token")
async def oauth_token(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    data = await _token_request(request)
    if data is None:
        return _oauth_error(400, "invalid_request", "Invalid request body")
    grant = data.get("grant_type")
    if grant != "client_credentials":
        return _oauth_error(403, "unsupported_grant_type", f"Unsupported grant type: {grant}")
    if not (_same(data.get("client_id"), tenant.client_id) and _same(data.get("client_secret"), tenant.client_secret)):
        return _oauth_error(401, "access_denied", "Unauthorized")
    if data.get("audience") != tenant.audience:
        return _oauth_error(403, "access_denied", f"Service not enabled within domain: {data.get('audience')}")
    return web.json_response(
        {
            "access_token": new_token(tenant, tenant.token_ttl_s),
            "expires_in": tenant.token_ttl_s,
            "scope": tenant.granted_scopes,
            "token_type": "Bearer",
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
