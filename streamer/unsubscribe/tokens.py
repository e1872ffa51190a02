"""Signed unsubscribe tokens: one per (tenant, user, rule), readable only with the configured secret.

`<base64url(tenant \\n user_id \\n rule)>.<base64url(HMAC-SHA256(secret, …)[:16])>`. The token carries
what it stands for (no lookup, so a link keeps working for as long as the secret does) and is
compared in constant time; changing one character of it, or the rule in it, breaks the MAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Subscription:
    tenant: str
    user_id: str
    rule: str


class UnsubscribeTokens:
    def __init__(self, secret: bytes):
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"unsubscribe\0" + payload, hashlib.sha256).digest()[:16]

    def make(self, tenant: str, user_id: str, rule: str) -> str:
        payload = "\n".join((tenant, user_id, rule)).encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, token: str) -> Subscription | None:
        """The subscription a token stands for, or None if it is not one of ours."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            return None
        payload_text, mac_text = token.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if _b64(payload) != payload_text or _b64(mac) != mac_text:
            return None  # non-canonical base64 (spare bits set): one token, one spelling
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        parts = payload.decode("utf-8", "replace").split("\n")
        if len(parts) != 3 or not all(parts):
            return None
        return Subscription(*parts)
