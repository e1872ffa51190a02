"""Auth0's Management API error answers: `ApiProblem` raised by a handler becomes Auth0's body
(statusCode, error, message, errorCode), so clients meet the shapes they meet in production."""

from __future__ import annotations

from typing import Any

from aiohttp import web

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_DEFAULT_CODES = {
    400: "invalid_body",
    403: "insufficient_scope",
    404: "inexistent_user",
    409: "conflict",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_DEFAULT_MESSAGES = {
    429: "Global limit has been reached",
    500: "Internal Server Error",
    503: "Service Unavailable",
    404: "Not Found",
    400: "Bad Request",
}


class ApiProblem(Exception):
    """Raised by handlers; becomes an Auth0 error body."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def error_body(status: int, message: str | None = None, error_code: str | None = None) -> dict[str, Any]:
    """Auth0's Management API error shape: statusCode, error, message, errorCode."""
    body: dict[str, Any] = {
        "statusCode": status,
        "error": REASONS.get(status, "Error"),
        "message": message or _DEFAULT_MESSAGES.get(status, REASONS.get(status, "Error")),
    }
    code = error_code or _DEFAULT_CODES.get(status)
    if status == 401:  # Auth0's 401s carry attributes.error instead of errorCode
        body["attributes"] = {"error": body["message"]}
    elif code:
        body["errorCode"] = code
    return body


def api_error(
    status: int, message: str | None = None, error_code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, message, error_code), status=status, headers=headers)


def payload_problem(detail: str) -> ApiProblem:
    """Auth0's 400 for a body that fails its schema: `Payload validation error: '<detail>'.`"""
    return ApiProblem(400, f"Payload validation error: {detail}.")


def additional_properties(body: dict[str, Any], allowed: set[str]) -> None:
    """Auth0's schemas refuse properties they do not list."""
    extra = sorted(set(body) - allowed)
    if extra:
        raise payload_problem(f"'Additional properties not allowed: {','.join(extra)}'")
