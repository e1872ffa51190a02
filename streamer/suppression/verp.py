"""The return path (VERP): each email's envelope sender names its tenant and recipient.

`bounces@bounces.acme.test` as the configured return path makes the MAIL FROM of an email to
ana@example.com (tenant acme) `bounces+<token>@bounces.acme.test`. A bounce comes back to that
address, so it says which recipient failed even when the remote report is vague or lies.

The token is HMAC-SHA256(secret, tenant, address), 80 bits in base32: the address cannot be read
from it, and nobody without the secret can make one, so a forged bounce cannot suppress an address
(the store maps tokens we issued back to (tenant, address); see Store.remember_return_path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from streamer.suppression.policy import normalize_address

TOKEN_LENGTH = 16
_TOKEN = re.compile(r"^[a-z2-7]{16}$")


class ReturnPaths:
    def __init__(self, return_path: str, secret: bytes):
        local, _, domain = return_path.strip().rpartition("@")
        self.local, self.domain = local, domain.lower()
        self._secret = secret

    def token(self, tenant: str, address: str) -> str:
        message = f"verp\0{tenant}\0{normalize_address(address)}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:10]
        return base64.b32encode(digest).decode("ascii").lower()

    def address(self, token: str) -> str:
        return f"{self.local}+{token}@{self.domain}"

    def token_of(self, address: str) -> str | None:
        """The token in `bounces+<token>@domain` (any case), or None for any other address."""
        local, _, domain = normalize_address(address).rpartition("@")
        base, plus, token = local.partition("+")
        if domain != self.domain or not plus or base != self.local.lower() or not _TOKEN.match(token):
            return None
        return token

    def is_bare(self, address: str) -> bool:
        return normalize_address(address) == f"{self.local}@{self.domain}".lower()

    def verify(self, token: str, tenant: str, address: str) -> bool:
        return hmac.compare_digest(token, self.token(tenant, address))
