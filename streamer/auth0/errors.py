"""What can go wrong talking to Auth0, sorted by what the caller should do about it.

Callers care about one question: try again later (`Auth0Transient`), fix the config or the
request (`Auth0Permanent`), or accept that the user is gone (`UserNotFound`). SDK exceptions,
httpx exceptions and raw responses are all mapped here, by pure functions, so the rule is in
one place. Messages carry Auth0's statusCode/errorCode/message but never a token, a client
secret or a ticket URL: they end up in logs and in the outbox's `last_error`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from streamer.logs import REDACTED, redact_text

_MAX_MESSAGE = 300


class Auth0Error(Exception):
    """Base class; `status` and `error_code` are Auth0's when there was an answer."""

    def __init__(
        self, message: str, *, status: int | None = None, error_code: str | None = None, endpoint: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.endpoint = endpoint


class Auth0Transient(Auth0Error):
    """429 after retries, 5xx, timeouts, connection errors: the same call may work later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        #: Seconds until Auth0 said it would accept calls again (x-ratelimit-reset), if known.
        self.retry_after = retry_after


class Auth0Permanent(Auth0Error):
    """400/401/403/409…: the config (credentials, scopes) or the request is wrong; retrying won't help."""


class UserNotFound(Auth0Error):
    """404: the user (or the object addressed) does not exist in the tenant."""


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask known secrets, then anything that looks like a ticket link, bearer token or JWT."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = redact_text(text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def retry_after_from(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait, from Retry-After or x-ratelimit-reset (UTC epoch seconds)."""
    if not headers:
        return None
    lower = {str(k).lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    value = lower.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = lower.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            pass
    return None


def describe_body(body: Any) -> tuple[str | None, str]:
    """(errorCode, message) from a Management API or /oauth/token error body, whatever its shape."""
    if isinstance(body, Mapping):
        if body.get("errorCode"):
            code = body["errorCode"]
        elif "statusCode" not in body:  # OAuth shape: {"error", "error_description"}
            code = body.get("error")
        else:  # Management API 401s may carry attributes.error instead of errorCode
            code = None
        message = body.get("message") or body.get("error_description") or ""
        return (str(code) if code else None), str(message)
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    return None, ("" if body is None else str(body)[:200])


def from_status(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    endpoint: str,
    now: float | None = None,
    secrets: Iterable[str | None] = (),
) -> Auth0Error:
    """Map one HTTP answer (status, parsed body, headers) to the error the caller should see."""
    code, message = describe_body(body)
    text = scrub(
        f"{endpoint}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else ""), secrets
    )
    kwargs: dict[str, Any] = {"status": status, "error_code": code, "endpoint": endpoint}
    if status == 404:
        return UserNotFound(text, **kwargs)
    if status == 429 or status == 408 or status >= 500:
        return Auth0Transient(text, retry_after=retry_after_from(headers, now), **kwargs)
    return Auth0Permanent(text, **kwargs)


def map_exception(
    exc: BaseException, *, endpoint: str, now: float | None = None, secrets: Iterable[str | None] = ()
) -> Auth0Error:
    """SDK ApiError/ParsingError and httpx errors → our three kinds (Auth0Error passes through)."""
    if isinstance(exc, Auth0Error):
        return exc
    # Imported lazily: the SDK is big and only this mapping needs its exception classes.
    from auth0.management.core.api_error import ApiError
    from auth0.management.core.parse_error import ParsingError

    if isinstance(exc, ApiError):
        return from_status(exc.status_code or 0, exc.body, exc.headers, endpoint=endpoint, now=now, secrets=secrets)
    if isinstance(exc, ParsingError):
        # A 2xx whose body is not what the API documents: a proxy page or a partial answer.
        return Auth0Transient(
            scrub(f"{endpoint}: unexpected response (HTTP {exc.status_code})", secrets),
            status=exc.status_code,
            endpoint=endpoint,
        )
    if isinstance(exc, httpx.TimeoutException):
        return Auth0Transient(f"{endpoint}: timeout ({type(exc).__name__})", endpoint=endpoint)
    if isinstance(exc, httpx.HTTPError):
        return Auth0Transient(scrub(f"{endpoint}: {type(exc).__name__}: {exc}", secrets), endpoint=endpoint)
    if isinstance(exc, OSError):
        return Auth0Transient(scrub(f"{endpoint}: {type(exc).__name__}: {exc}", secrets), endpoint=endpoint)
    return Auth0Permanent(scrub(f"{endpoint}: {type(exc).__name__}: {exc}", secrets), endpoint=endpoint)
