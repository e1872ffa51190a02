"""STARTTLS for the inbound listener: the certificate and key from `suppression.inbound`.

MTAs delivering bounces and complaints to a public MX try STARTTLS first; without it, reports
(which quote the original email) cross the internet in plain text. The files are read and
matched here, so `streamer check` (and `run`, which refuses what check refuses) names a missing
file or a key of another certificate instead of the listener failing at its first TLS client.
"""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from streamer.config import Config, InboundConfig

LABEL = "suppression.inbound"


class InboundTlsError(Exception):
    """The certificate or key cannot serve STARTTLS (the message names the file and why)."""


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InboundTlsError(f"{LABEL}.{field}: cannot read {path}: {exc.strerror or exc}") from None


def _paths(inbound: InboundConfig, base_dir: Path) -> tuple[Path, Path] | None:
    if inbound.tls_cert_file is None or inbound.tls_key_file is None:
        return None
    return base_dir / inbound.tls_cert_file, base_dir / inbound.tls_key_file


def load_certificate(inbound: InboundConfig, base_dir: Path) -> x509.Certificate | None:
    """The leaf certificate, after checking that the key file holds its private key; None without TLS."""
    paths = _paths(inbound, base_dir)
    if paths is None:
        return None
    cert_path, key_path = paths
    cert_pem, key_pem = _read(cert_path, "tls_cert_file"), _read(key_path, "tls_key_file")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise InboundTlsError(f"{LABEL}.tls_cert_file: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        hint = " (encrypted keys are not supported)" if b"ENCRYPTED" in key_pem else ""
        raise InboundTlsError(f"{LABEL}.tls_key_file: {key_path} is not a PEM private key{hint}: {exc}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise InboundTlsError(
            f"{LABEL}.tls_key_file: {key_path} is not the key of the certificate in {cert_path} "
            "(the first certificate of the file must be the one for this key)"
        )
    return chain[0]


def inbound_tls_context(inbound: InboundConfig, base_dir: Path) -> ssl.SSLContext | None:
    """A server-side TLS context for aiosmtpd's STARTTLS, or None when no certificate is configured."""
    paths = _paths(inbound, base_dir)
    if paths is None or load_certificate(inbound, base_dir) is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(*paths)
    except (ssl.SSLError, OSError) as exc:
        raise InboundTlsError(f"{LABEL}: OpenSSL refuses {paths[0]} with {paths[1]}: {exc}") from None
    return context


def faces_internet(host: str) -> bool:
    """Whether a listener on `host` may take connections from the internet: any address (0.0.0.0,
    ::), a public IP or a name; not loopback or private addresses (behind a relay, plain is usual)."""
    if host in ("", "localhost"):
        return host == ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return address.is_unspecified or address.is_global


def check_inbound_tls(config: Config, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for `streamer check`: the pair loads and matches; an expired certificate
    is a warning (MTAs that deliver opportunistically still use it, strict ones fall back or defer),
    and so is a plain SMTP listener that faces the internet."""
    inbound = config.suppression.inbound
    if inbound is None:
        return [], []
    if inbound.tls_cert_file is None and inbound.protocol == "smtp" and faces_internet(inbound.host):
        return [], [
            f"{config.source}: {LABEL}: listens on {inbound.listen} without STARTTLS: MTAs that deliver "
            "to a public MX expect it, and reports quote the original email; set tls_cert_file and tls_key_file"
        ]
    try:
        certificate = load_certificate(inbound, config.base_dir)
        if certificate is not None:
            inbound_tls_context(inbound, config.base_dir)
    except InboundTlsError as exc:
        return [f"{config.source}: {exc}"], []
    if certificate is not None and certificate.not_valid_after_utc < (now or datetime.now(UTC)):
        return [], [
            f"{config.source}: {LABEL}.tls_cert_file: the certificate expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; renew it (senders that verify it fall back to plain text)"
        ]
    return [], []
