"""Management API access tokens by client credentials, fetched without blocking the loop.

auth0-python's own providers either block the event loop (sync httpx) or hard-code
`https://{domain}/oauth/token`, which cannot point at a stand-in; this one uses the tenant's
`base_url` and an httpx.AsyncClient. The token lives in memory only, is reused until shortly
before it expires (Auth0 rate-limits /oauth/token and tokens cannot be revoked), and
concurrent callers share one fetch. Neither the token nor the client secret is ever logged or
put in an exception message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from streamer.auth0.errors import Auth0Transient, from_status, map_exception
from streamer.config import TenantConfig

ENDPOINT = "POST /oauth/token"
#: Refresh this long before expiry, so a request never leaves with a token about to expire.
REFRESH_LEEWAY_S = 60.0
#: After a 403 a token at least this old is fetched again: Auth0 writes the scopes into the token
#: when it issues it, so scopes granted since (the usual fix) only count in a new one.
SCOPE_RECHECK_S = 60.0


def refresh_at(fetched_at: float, expires_in: float) -> float:
    """When to fetch again: 60 s before expiry, or halfway for tokens shorter than 2 minutes."""
    return fetched_at + expires_in - min(REFRESH_LEEWAY_S, expires_in / 2)


class TokenSource:
    """`await source.get()` → a valid access token for the tenant's Management API."""

    def __init__(
        self,
        tenant: TenantConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 15.0,
        scope_recheck_s: float = SCOPE_RECHECK_S,
    ):
        self._tenant = tenant
        self._scope_recheck_s = scope_recheck_s
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        #: Tokens fetched so far (for tests and metrics; never the token itself).
        self.fetch_count = 0
        #: Bumped on every fetch, so a 401 can drop exactly the token that failed.
        self.generation = 0
        #: The scopes Auth0 granted with the current token (None until fetched, or if not said).
        self.scopes: frozenset[str] | None = None
        self._fetched_at = 0.0

    def __repr__(self) -> str:
        return f"TokenSource(domain={self._tenant.domain!r}, cached={self._token is not None})"

    async def get(self) -> str:
        token = self._valid_token()
        if token is not None:
            return token
        async with self._lock:
            token = self._valid_token()  # another caller may have fetched while we waited
            if token is None:
                token = await self._fetch()
            return token

    def invalidate(self, generation: int | None = None) -> None:
        """Forget the cached token after a 401; with `generation`, only if no newer one was fetched."""
        if generation is None or generation == self.generation:
            self._token = None
            self._refresh_at = 0.0

    def invalidate_after_refusal(self, generation: int) -> bool:
        """After a 403: forget the token if it is old enough that the grant may have changed since
        (at most one new token a minute for a scope still missing). True if it was dropped."""
        if (
            generation != self.generation
            or self._token is None
            or self._clock() - self._fetched_at < self._scope_recheck_s
        ):
            return False
        self.invalidate(generation)
        return True

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _valid_token(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def _fetch(self) -> str:
        secret = self._tenant.client_secret.get_secret_value()
        form = {
            "grant_type": "client_credentials",
            "client_id": self._tenant.client_id,
            "client_secret": secret,
            "audience": self._tenant.audience,
        }
        started = self._clock()
        try:
            response = await self._http.post(
                f"{self._tenant.base_url}/oauth/token", data=form, headers={"Accept": "application/json"}
            )
        except Exception as exc:  # noqa: BLE001 - mapped, never re-raised with the secret
            raise map_exception(exc, endpoint=ENDPOINT, secrets=[secret]) from None
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        if response.status_code != 200:
            raise from_status(
                response.status_code, body, response.headers, endpoint=ENDPOINT, secrets=[secret]
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        try:
            expires_in = float(body.get("expires_in", 86400)) if isinstance(body, dict) else 0.0
        except (TypeError, ValueError):
            expires_in = 0.0
        if not isinstance(token, str) or not token or expires_in <= 0:
            raise Auth0Transient(
                f"{ENDPOINT}: answer without a usable access_token/expires_in",
                status=response.status_code,
                endpoint=ENDPOINT,
            )
        self._token = token
        self._refresh_at = refresh_at(started, expires_in)
        self._fetched_at = started
        scope = body.get("scope")
        self.scopes = frozenset(scope.split()) if isinstance(scope, str) else None
        self.fetch_count += 1
        self.generation += 1
        return token


__all__ = ["TokenSource", "refresh_at"]
