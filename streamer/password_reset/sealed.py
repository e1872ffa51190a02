"""A new password sealed with a one-time key that only the emailed link carries.

AES-256-GCM (`cryptography`'s AEAD, a well-kept binding to OpenSSL): the store keeps the
ciphertext, the link carries the key, so neither a copy of the database nor the email alone
reveals the password. The associated data binds a ciphertext to its tenant, user and row, so
a row copied under another id or user does not open. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
ID_BYTES = 16
_B64 = r"[A-Za-z0-9_-]"
_TOKEN = re.compile(rf"^({_B64}{{22}})\.({_B64}{{43}})$")


@dataclass(frozen=True)
class ConfirmToken:
    """What the link carries: the pending row's id and the key that opens its ciphertext."""

    pending_id: str
    key: bytes = b""

    def __repr__(self) -> str:  # the key never reaches a log line or a traceback
        return f"ConfirmToken(pending_id={self.pending_id!r}, key=<hidden>)"

    def __str__(self) -> str:
        return f"{self.pending_id}.{_b64(self.key)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def new_token() -> ConfirmToken:
    return ConfirmToken(pending_id=_b64(secrets.token_bytes(ID_BYTES)), key=secrets.token_bytes(KEY_BYTES))


def parse_token(text: str | None) -> ConfirmToken | None:
    """The token of a link, or None when it is not one (truncated, altered, foreign)."""
    match = _TOKEN.match(text or "")
    if not match:
        return None
    key = base64.urlsafe_b64decode(match.group(2) + "=")
    return ConfirmToken(pending_id=match.group(1), key=key) if len(key) == KEY_BYTES else None


def _aad(tenant: str, user_id: str, pending_id: str) -> bytes:
    return f"streamer-password-confirm|v1|{tenant}|{user_id}|{pending_id}".encode()


def seal(password: str, token: ConfirmToken, *, tenant: str, user_id: str) -> bytes:
    """nonce || AES-256-GCM(password) under the token's key."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(token.key).encrypt(
        nonce, password.encode("utf-8", "surrogatepass"), _aad(tenant, user_id, token.pending_id)
    )


def unseal(sealed: bytes | None, token: ConfirmToken, *, tenant: str, user_id: str) -> str | None:
    """The password, or None when the key, the row or the ciphertext does not match."""
    if not sealed or len(sealed) <= NONCE_BYTES:
        return None
    try:
        plain = AESGCM(token.key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(tenant, user_id, token.pending_id)
        )
    except (InvalidTag, ValueError):
        return None
    return plain.decode("utf-8", "surrogatepass")
