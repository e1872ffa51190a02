"""DKIM signing of the finished message bytes (dkimpy), and the keys it needs.

Signing is the last step before SMTP: it covers the final headers (List-Unsubscribe too, when a
rule adds it), so nothing may change the message afterwards. Which key signs is a pure decision
on (From domain, tenant); keys are loaded and test-signed once, by `streamer check` and at start.

dkimpy parses, canonicalizes, selects and hashes the headers, folds the header: the DKIM rules
stay its. Only the RSA operation is OpenSSL's (`cryptography`): dkimpy does it in pure Python,
~8 ms of CPU per 2048-bit signature on the event loop, where OpenSSL takes ~0.3 ms
(`python bench/run.py --only dkim`). PKCS#1 v1.5 signatures are deterministic, so the header is
byte for byte dkimpy's own (tests/test_dkim.py compares them).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from streamer.config import Config, DkimKeyConfig

#: Headers signed when present, in this order. From is signed twice ("oversigned"), so a second
#: From added on the way breaks the signature instead of being displayed.
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "feedback-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
    "content-language",
    "auto-submitted",
)
MIN_BITS, RECOMMENDED_BITS = 1024, 2048
_HEADER_NAME = re.compile(rb"^([A-Za-z0-9-]+):", re.MULTILINE)


class DkimKeyError(ValueError):
    """A key that cannot sign; the message names the key and what is wrong."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    #: PKCS#1 PEM, the form dkimpy reads (its signer is the reference in the tests).
    pem: bytes
    bits: int
    #: The `p=` value the selector's DNS record must publish.
    public_b64: str
    #: The same key, parsed for OpenSSL, which signs.
    private: rsa.RSAPrivateKey = field(repr=False, compare=False)

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


def _label(index: int, key: DkimKeyConfig) -> str:
    return f"dkim.{index} ({key.selector}._domainkey.{key.domain})"


def load_key(key: DkimKeyConfig, base_dir: Path, label: str = "dkim") -> SigningKey:
    """Read and parse one key (PEM, PKCS#1 or PKCS#8, RSA only), then sign and verify a test
    message with it, so a key that passes here signs at run time too."""
    if key.private_key_file is not None:
        path = key.private_key_file if key.private_key_file.is_absolute() else base_dir / key.private_key_file
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise DkimKeyError(f"{label}: cannot read private_key_file {path}: {exc.strerror or exc}") from None
    else:
        value = key.private_key.get_secret_value() if key.private_key else ""
        # An env var often carries the PEM on one line with literal \n.
        text = (value.replace("\\n", "\n") if "\n" not in value else value).encode("utf-8")
    try:
        private = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as exc:
        hint = " (encrypted keys are not supported)" if b"ENCRYPTED" in text else ""
        raise DkimKeyError(f"{label}: not a PEM private key{hint}: {exc}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise DkimKeyError(
            f"{label}: only RSA keys are supported (receivers that check ed25519 still need an RSA signature)"
        )
    if private.key_size < MIN_BITS:
        raise DkimKeyError(
            f"{label}: a {private.key_size}-bit key is rejected by receivers; use {RECOMMENDED_BITS} bits"
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    loaded = SigningKey(
        domain=key.domain,
        selector=key.selector,
        pem=pem,
        bits=private.key_size,
        public_b64=base64.b64encode(public).decode("ascii"),
        private=private,
    )
    _self_test(loaded, label)
    return loaded


def _self_test(key: SigningKey, label: str) -> None:
    probe = (
        f"From: check@{key.domain}\r\nTo: check@{key.domain}\r\nSubject: DKIM self-test\r\n\r\nstreamer check\r\n"
    ).encode("ascii")
    try:
        signed = sign(probe, key)
        good = dkim.verify(signed, dnsfunc=lambda name, timeout=5: key.dns_record.encode("ascii"))
    except dkim.DKIMException as exc:
        raise DkimKeyError(f"{label}: dkimpy cannot sign with this key: {exc}") from None
    if not good:
        raise DkimKeyError(f"{label}: a test signature with this key does not verify")


def load_keys(config: Config) -> list[tuple[DkimKeyConfig, SigningKey]]:
    """Every configured key, loaded; raises DkimKeyError for the first one that cannot sign."""
    return [(key, load_key(key, config.base_dir, _label(index, key))) for index, key in enumerate(config.dkim)]


def check_keys(config: Config) -> tuple[list[str], list[str]]:
    """(errors, warnings) for `streamer check`: every key loads and signs; sizes and alignment."""
    errors: list[str] = []
    warnings: list[str] = []
    from_domain = _domain_of(config.smtp.from_)
    for index, key in enumerate(config.dkim):
        label = f"{config.source}: {_label(index, key)}"
        try:
            loaded = load_key(key, config.base_dir, label)
        except DkimKeyError as exc:
            errors.append(str(exc))
            continue
        if loaded.bits < RECOMMENDED_BITS:
            warnings.append(f"{label}: {loaded.bits}-bit key; {RECOMMENDED_BITS} bits is the norm")
        if not aligned(key.domain, from_domain):
            warnings.append(
                f"{label}: smtp.from is @{from_domain}, which this key does not cover (d= must be "
                "the From domain or a parent of it), so it never signs"
            )
    return errors, warnings


def aligned(key_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment, approximated: d= is the From domain or one of its parents."""
    from_domain = from_domain.lower()
    return from_domain == key_domain or from_domain.endswith("." + key_domain)


def choose_key(keys: list[tuple[DkimKeyConfig, SigningKey]], from_domain: str, tenant: str) -> SigningKey | None:
    """The key for one email: among keys covering the From domain and this tenant, one that
    names the tenant wins over one for every tenant, then the most specific domain."""
    fitting = [
        (bool(cfg.tenants), len(cfg.domain), loaded)
        for cfg, loaded in keys
        if aligned(cfg.domain, from_domain) and (not cfg.tenants or tenant in cfg.tenants)
    ]
    if not fitting:
        return None
    return max(fitting, key=lambda item: item[:2])[2]


def sign(message: bytes, key: SigningKey, *, now: float | None = None) -> bytes:
    """`message` with a DKIM-Signature header in front (relaxed/relaxed, rsa-sha256), over the
    headers of SIGNED_HEADERS that are present."""
    head = message.split(b"\r\n\r\n", 1)[0]
    present = {name.lower().decode("ascii") for name in _HEADER_NAME.findall(head)}
    include = [name.encode("ascii") for name in SIGNED_HEADERS if name in present] + [b"from"]
    return _signature(message, key, include, time.time() if now is None else now) + message


_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_NAME = b"DKIM-Signature"


def _signature(message: bytes, key: SigningKey, include: list[bytes], now: float) -> bytes:
    """What dkimpy's DKIM.sign(…, canonicalize=(relaxed, relaxed)) returns, step by step with its
    own functions, but with OpenSSL's RSA (dkimpy offers no way to plug a signer in)."""
    headers, body = dkim.rfc822_parse(message)
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", str(int(now)).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())),
        (b"b", b"0" * 60),
    ]  # as dkimpy: b= folds onto its own line, so filling it in moves nothing
    value = dkim.RE_BTAG.sub(b"\\1", dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_NAME)))
    digest = hashlib.sha256()
    dkim.hash_headers(
        digest, _RELAXED, _RELAXED.canonicalize_headers(headers), tuple(include), (_NAME, b" " + value), dict(fields)
    )
    signature = key.private.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    fields[-1] = (b"b", base64.b64encode(signature))
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=len(_NAME), linesep=b"\r\n")
    return _NAME + b": " + value


def _domain_of(address: str) -> str:
    from streamer.message import parse_mailbox

    return parse_mailbox(address, "sender")[1].rpartition("@")[2]
