"""Signed double-submit CSRF tokens for the form, bound to a tenant and short-lived."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

CSRF_COOKIE = "pr_csrf"
CSRF_FIELD = "csrf_token"
CSRF_TTL_S = 3600.0


class CsrfTokens:
    """Signed double-submit tokens: `v1.<issued ms hex>.<nonce>.<sig>`, bound to a tenant."""

    def __init__(self, key: bytes, *, ttl_s: float = CSRF_TTL_S, clock: Callable[[], float] = time.monotonic):
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def _sign(self, tenant: str, issued: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"password-reset-csrf|{tenant}|{issued}|{nonce}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")

    def issue(self, tenant: str) -> str:
        issued = format(int(self._clock() * 1000), "x")
        nonce = secrets.token_urlsafe(18)
        return f"v1.{issued}.{nonce}.{self._sign(tenant, issued, nonce)}"

    def age(self, tenant: str, token: str | None) -> float | None:
        """Seconds since issue for a genuine, unexpired token of this tenant; None otherwise."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            return None
        _, issued, nonce, signature = parts
        if not hmac.compare_digest(
            signature.encode("ascii", "replace"), self._sign(tenant, issued, nonce).encode("ascii")
        ):
            return None
        try:
            age = self._clock() - int(issued, 16) / 1000
        except ValueError:
            return None
        return age if -5 <= age < self.ttl_s else None

    def valid_pair(self, tenant: str, cookie: str | None, field_value: str | None) -> bool:
        if not cookie or not field_value:
            return False
        same = hmac.compare_digest(cookie.encode("utf-8", "replace"), field_value.encode("utf-8", "replace"))
        return same and self.age(tenant, cookie) is not None
