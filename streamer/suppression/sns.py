"""Amazon SNS message signatures, verified before a word of the message is believed.

What AWS documents (sns-verify-signature-of-message): build the string to sign from the message's
fields in a fixed order (Notification: Message, MessageId, Subject if present, Timestamp, TopicArn,
Type; (Un)SubscriptionConfirmation: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn,
Type; each as `name\\nvalue\\n`), and check `Signature` (base64) with the public key of the
certificate at `SigningCertURL`: RSA PKCS#1 v1.5 with SHA-1 (SignatureVersion 1) or SHA-256 (2).

The certificate is only ever fetched over HTTPS from `sns.<region>.amazonaws.com` (or `.com.cn`):
otherwise anyone could sign a message with their own certificate and point at it. Fetched
certificates are cached by URL. The fetcher is injectable so tests use a locally made certificate.

A signature never expires, so a captured message could be posted again forever: its signed
`Timestamp` (when SNS published it) must be recent, as AWS suggests checking (see MAX_AGE_S).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES = 64 * 1024

#: The oldest a genuine message can be: SNS gives up retrying an HTTP/S delivery after at most
#: 3,600 s (a hard limit of its delivery policies) and a retry keeps the published Timestamp;
#: plus 5 minutes for the clock difference between AWS and this host. Older: a replay.
MAX_AGE_S = 3600 + 300
#: Ahead of this host's clock by more than the skew allowance: not a time SNS signed.
MAX_AHEAD_S = 300

#: url → PEM bytes
CertFetcher = Callable[[str], Awaitable[bytes]]


class SnsRejected(Exception):
    """Not a genuine SNS message of ours; the message says why (safe to log, no secrets)."""


def is_sns_url(url: str) -> bool:
    """HTTPS on an SNS host: where certificates and subscription confirmations may be fetched from."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.port in (None, 443)
        and bool(SNS_HOST.match(parts.hostname or ""))
        and not parts.username
        and not parts.password
    )


def string_to_sign(message: dict[str, Any]) -> bytes:
    fields = _FIELDS.get(message.get("Type", ""))
    if fields is None:
        raise SnsRejected(f"unknown SNS message type {str(message.get('Type'))[:40]!r}")
    lines = []
    for name in fields:
        if name not in message:
            if name == "Subject":
                continue
            raise SnsRejected(f"SNS message without {name}")
        lines.append(f"{name}\n{message[name]}\n")
    return "".join(lines).encode("utf-8")


def check_fresh(message: dict[str, Any], *, now: float) -> None:
    """Raise SnsRejected unless the message's Timestamp is within MAX_AGE_S before `now` (and at
    most MAX_AHEAD_S after it)."""
    timestamp = str(message.get("Timestamp", ""))
    try:
        published = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise SnsRejected(f"Timestamp {timestamp[:40]!r} is not an ISO 8601 time") from None
    if published.tzinfo is None:
        raise SnsRejected(f"Timestamp {timestamp[:40]!r} has no time zone")
    age = now - published.timestamp()
    if age > MAX_AGE_S:
        raise SnsRejected(
            f"Timestamp {timestamp[:40]} is {age / 60:.0f} minutes old: SNS stops retrying within an hour, "
            "so this is a replayed message"
        )
    if age < -MAX_AHEAD_S:
        raise SnsRejected(f"Timestamp {timestamp[:40]} is in the future (check this host's clock)")


class RecentMessages:
    """The MessageIds recorded lately, kept as long as `check_fresh` would still let them in: SNS
    delivers at least once, and a captured message can be posted again until it is too old. In
    memory (per process), bounded: beyond `limit` the oldest are forgotten first."""

    def __init__(self, *, keep_s: float = MAX_AGE_S + MAX_AHEAD_S, limit: int = 100_000):
        self.keep_s = keep_s
        self.limit = limit
        self._until: dict[str, float] = {}  # MessageId → when it may be forgotten, oldest first

    def seen(self, message_id: str, *, now: float) -> bool:
        return self._until.get(message_id, 0.0) > now

    def add(self, message_id: str, *, now: float) -> None:
        self._until.pop(message_id, None)
        self._until[message_id] = now + self.keep_s
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self.limit:
                break
            del self._until[oldest]


class SnsVerifier:
    def __init__(self, fetch_cert: CertFetcher, *, allowed_topics: list[str], clock: Callable[[], float] = time.time):
        self.fetch_cert = fetch_cert
        self.allowed_topics = set(allowed_topics)
        self.clock = clock
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        if url in self._keys:
            return self._keys[url]
        if not is_sns_url(url) or not urlsplit(url).path.endswith(".pem"):
            raise SnsRejected("SigningCertURL is not an HTTPS .pem URL on sns.<region>.amazonaws.com")
        pem = await self.fetch_cert(url)
        try:
            key = x509.load_pem_x509_certificate(pem[:MAX_CERT_BYTES]).public_key()
        except ValueError:
            raise SnsRejected("the signing certificate cannot be read") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected("the signing certificate has no RSA key")
        self._keys[url] = key
        return key

    async def verify(self, message: dict[str, Any]) -> None:
        """Raise SnsRejected unless the message is signed by SNS, recent, and comes from an allowed topic."""
        if message.get("TopicArn") not in self.allowed_topics:
            raise SnsRejected(f"topic {str(message.get('TopicArn'))[:200]!r} is not in webhooks.ses.topic_arns")
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise SnsRejected("unsupported SignatureVersion")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected("Signature is not base64") from None
        key = await self._key(str(message.get("SigningCertURL", "")))
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsRejected("the signature does not match") from None
        check_fresh(message, now=self.clock())  # after the signature: only then is the Timestamp SNS's
