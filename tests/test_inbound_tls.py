"""STARTTLS on the inbound listener: a real aiosmtplib client upgrades the real daemon's listener
with a self-signed certificate made here and delivers a DSN; with require_starttls a plain-text
client is refused; `streamer check` names a missing file and a key of another certificate."""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import re
import ssl
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamer.cli import main as cli

from conftest import FIXTURES, REPO, config_text, sample_event

SECRET = "verp-secret-0123456789abcdef"
ANA_EMAIL = "ana.silva@example.com"


def dsn(return_path: str) -> bytes:
    """The hard-bounce DSN fixture, addressed back to `return_path`."""
    text = (FIXTURES / "bounces" / "dsn_hard.eml").read_text().replace("{RETURN_PATH}", return_path)
    return text.replace("{BARE_RETURN_PATH}", "bounces@bounces.acme.test").replace("\n", "\r\n").encode()


async def suppressed(store, address):
    return (await store.get_suppressions("acme", [address])).get(address)


def make_certificate(folder: Path, name: str = "mx", *, days: int = 30) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and bounces.acme.test, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bounces.acme.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("bounces.acme.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def inbound_config(tmp_path, standin, catcher, inbound: str) -> str:
    return config_text(tmp_path, standin, catcher) + (
        f'suppression:\n  return_path: bounces@bounces.acme.test\n  secret: "{SECRET}"\n  inbound: {inbound}\n'
    )


def trusting(cert_path: Path) -> ssl.SSLContext:
    """A client context that trusts only the test's certificate (and checks its name)."""
    return ssl.create_default_context(cafile=str(cert_path))


@pytest.mark.parametrize("required", [False, True])
async def test_a_dsn_arrives_over_starttls_and_a_plain_client_is_refused_when_required(
    tmp_path, standin, catcher, start_daemon, required
):
    cert_path, key_path = make_certificate(tmp_path)
    running = await start_daemon(
        inbound_config(
            tmp_path,
            standin,
            catcher,
            f'{{listen: "127.0.0.1:0", tls_cert_file: mx.crt, tls_key_file: mx.key, '
            f"require_starttls: {str(required).lower()}}}",
        )
    )
    status, _ = await running.post([sample_event("ss")])  # ana, unverified: the verification email
    assert status == 200
    [message] = await catcher.wait_for(1)
    return_path = message.mail_from
    assert re.fullmatch(r"bounces\+[a-z2-7]{16}@bounces\.acme\.test", return_path)
    port = running.daemon.inbound_port

    # A plain-text client (no STARTTLS): refused at MAIL when STARTTLS is required.
    plain = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await plain.connect()
    try:
        await plain.ehlo()
        assert plain.supports_extension("starttls")  # offered either way
        if required:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await plain.mail("")
            assert refused.value.code == 530 and "STARTTLS" in refused.value.message
        else:
            assert (await plain.mail("")).code == 250
    finally:
        with contextlib.suppress(Exception):
            await plain.quit()
    assert await suppressed(running.daemon.store, ANA_EMAIL) is None

    # A client that upgrades, verifying the certificate: the DSN is taken and acted on.
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        assert (await client.starttls(tls_context=trusting(cert_path))).code == 220
        peer = client.transport.get_extra_info("peercert")
        assert ("commonName", "bounces.acme.test") in [item for rdn in peer["subject"] for item in rdn]
        await client.ehlo()
        assert (await client.mail("")).code == 250
        assert (await client.rcpt(return_path))[0] == 250
        assert (await client.data(dsn(return_path))).code == 250
    finally:
        with contextlib.suppress(Exception):
            await client.quit()
    entry = await suppressed(running.daemon.store, ANA_EMAIL)
    assert entry is not None and entry.reason.value == "hard_bounce"
    assert '"starttls": "required"' in running.logs.getvalue() or not required


def run_check(tmp_path: Path, inbound: str) -> tuple[int, str]:
    config = tmp_path / "streamer.yaml"
    config.write_text(f"""\
smtp: {{from: "Acme <no-reply@acme.test>"}}
templates: {{dir: "{REPO / "templates"}"}}
tenants: {{acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y, webhook_token: t}}}}
rules: [{{name: r, on: [s], template: welcome}}]
suppression: {{return_path: bounces@bounces.acme.test, secret: "{SECRET}", inbound: {inbound}}}
""")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = cli(["check", "-c", str(config)])
    return code, out.getvalue()


def test_check_reads_the_certificate_and_key_and_matches_them(tmp_path):
    make_certificate(tmp_path, "mx")
    make_certificate(tmp_path, "other")
    make_certificate(tmp_path, "old", days=-1)
    (tmp_path / "junk.crt").write_text("not a certificate\n")

    def inbound(cert: str, key: str, extra: str = "") -> str:
        return f"{{listen: 127.0.0.1:2525, tls_cert_file: {cert}, tls_key_file: {key}{extra}}}"

    code, out = run_check(tmp_path, inbound("mx.crt", "mx.key", ", require_starttls: true"))
    assert code == 0 and "tls" not in out, out
    code, out = run_check(tmp_path, inbound("mx.crt", "other.key"))
    assert code == 1 and "suppression.inbound.tls_key_file" in out and "is not the key of the certificate" in out, out
    code, out = run_check(tmp_path, inbound("missing.crt", "mx.key"))
    assert code == 1 and f"cannot read {tmp_path / 'missing.crt'}" in out, out
    code, out = run_check(tmp_path, inbound("junk.crt", "mx.key"))
    assert code == 1 and "holds no PEM certificate" in out, out
    code, out = run_check(tmp_path, inbound("mx.key", "mx.key"))
    assert code == 1 and "holds no PEM certificate" in out, out
    code, out = run_check(tmp_path, inbound("old.crt", "old.key"))
    assert code == 0 and "warning" in out and "the certificate expired on" in out, out
    code, out = run_check(tmp_path, '{listen: "0.0.0.0:2525"}')
    assert code == 0 and "listens on 0.0.0.0:2525 without STARTTLS" in out, out
    code, out = run_check(tmp_path, '{listen: "10.0.0.5:2525", protocol: lmtp}')  # behind a relay: plain is usual
    assert code == 0 and "STARTTLS" not in out, out
    code, out = run_check(tmp_path, "{listen: 127.0.0.1:2525, tls_cert_file: mx.crt}")
    assert code != 0 and "give both tls_cert_file and tls_key_file" in out, out
    code, out = run_check(tmp_path, "{listen: 127.0.0.1:2525, require_starttls: true}")
    assert code != 0 and "require_starttls needs tls_cert_file" in out, out
