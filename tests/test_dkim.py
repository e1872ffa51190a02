"""DKIM signing: real messages from the pipeline, caught by a real SMTP server, verified by
dkimpy against the public key served by a real (local) DNS server; and what `check` says."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from email.parser import BytesHeaderParser
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dns_server import dns_server
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.cli import main as cli
from streamer.config import DkimKeyConfig, parse_config
from streamer.dkim_signing import choose_key, load_key, sign
from streamer.message import build_message

from conftest import config_text, sample_event


def write_key(path: Path, bits: int = 2048, *, pkcs8: bool = False) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def dnsfunc_for(port: int):
    """dkimpy's key lookup, answered by the local DNS server through dnspython."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], port, 5

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)

    return lookup


def dkim_config(tmp_path, standin, catcher, keys_yaml: str) -> str:
    text = config_text(tmp_path, standin, catcher).replace(
        'from: "Acme <no-reply@acme.test>",', 'from: "Acme <no-reply@acme.test>", reply_to: "help@acme.test",'
    )
    return text.replace("rules:\n", f"{keys_yaml}\nrules:\n", 1)


def signed_header_names(raw: bytes) -> list[str]:
    """The h= tag of the message's DKIM-Signature, in order."""
    value = BytesHeaderParser().parsebytes(raw)["DKIM-Signature"]
    tags = dkim.util.parse_tag_value(re.sub(r"\s+", " ", value).encode())
    return [name.strip().decode() for name in tags[b"h"].split(b":")]


async def test_pipeline_mail_is_signed_and_verifies_with_the_key_from_dns(tmp_path, standin, catcher, start_daemon):
    key_file = write_key(tmp_path / "acme.pem", pkcs8=True)
    loaded = load_key(DkimKeyConfig(domain="acme.test", selector="s2026", private_key_file=key_file), tmp_path)
    daemon = await start_daemon(
        dkim_config(
            tmp_path,
            standin,
            catcher,
            f"""\
dkim:
  - {{domain: acme.test, selector: s2026, private_key_file: {key_file.name}}}""",
        )
    )
    await daemon.post([{"log_id": "1", "data": sample_event("ss")}])
    [message] = await catcher.wait_for(1)
    raw = message.data
    assert raw.startswith(b"DKIM-Signature:")
    names = signed_header_names(raw)
    assert names[0] == "from" and names[-1] == "from"  # From oversigned
    assert {"to", "subject", "date", "message-id", "reply-to", "feedback-id", "content-type"} <= set(names)
    assert message.parsed["Reply-To"] == "help@acme.test"
    assert message.parsed["Feedback-ID"] == "verify-email:acme:acme.test"

    records = {}
    with dns_server(records) as port:
        verify = dnsfunc_for(port)
        assert not dkim.verify(raw, dnsfunc=verify)  # no key published yet
        records["s2026._domainkey.acme.test"] = [loaded.dns_record]
        assert dkim.verify(raw, dnsfunc=verify)
        # A changed body or a changed signed header breaks it.
        assert not dkim.verify(raw.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=verify)
        tampered = raw[:-40] + raw[-40:].replace(b"--", b"-x", 1)
        assert tampered != raw and not dkim.verify(tampered, dnsfunc=verify)
        # Adding a second From (a display-name spoof) breaks it too: From is oversigned.
        assert not dkim.verify(b"From: Boss <boss@evil.test>\r\n" + raw, dnsfunc=verify)


async def test_per_tenant_key_wins_and_other_from_domains_stay_unsigned(tmp_path):
    general = write_key(tmp_path / "general.pem")
    special = write_key(tmp_path / "special.pem")
    keys = [
        (cfg, load_key(cfg, tmp_path))
        for cfg in (
            DkimKeyConfig(domain="acme.test", selector="all", private_key_file=general),
            DkimKeyConfig(domain="mail.acme.test", selector="sub", private_key_file=general),
            DkimKeyConfig(domain="acme.test", selector="beta", private_key_file=special, tenants=["beta"]),
        )
    ]
    assert choose_key(keys, "acme.test", "acme").selector == "all"
    assert choose_key(keys, "acme.test", "beta").selector == "beta"
    assert choose_key(keys, "mail.acme.test", "acme").selector == "sub"  # most specific domain
    assert choose_key(keys, "news.acme.test", "acme").selector == "all"  # parent domain aligns
    assert choose_key(keys, "notacme.test", "acme") is None
    assert choose_key(keys, "acme.test.evil", "acme") is None


_REFERENCE_KEY: list = []


def reference_key(tmp_path_factory) -> object:
    if not _REFERENCE_KEY:
        folder = tmp_path_factory.mktemp("dkim")
        config = DkimKeyConfig(domain="acme.test", selector="s1", private_key_file=write_key(folder / "k.pem"))
        _REFERENCE_KEY.append(load_key(config, folder))
    return _REFERENCE_KEY[0]


_WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    subject=_WORDS,
    name=_WORDS | st.none(),
    text=st.text(max_size=300),
    reply_to=st.booleans(),
    unsubscribe=st.booleans(),
    now=st.integers(1_500_000_000, 1_750_000_000),
)  # past: dkimpy refuses a t= ahead
def test_the_signature_is_byte_for_byte_dkimpys_own(tmp_path_factory, subject, name, text, reply_to, unsubscribe, now):
    """sign() uses OpenSSL for the RSA step only: the whole header must be what dkimpy's own
    signer writes for the same message, key and time (PKCS#1 v1.5 signatures are deterministic)."""
    key = reference_key(tmp_path_factory)
    message = build_message(
        from_addr="Acme <no-reply@acme.test>",
        to_addr="ana@example.com",
        to_name=name,
        subject=subject or "Hi",
        html=f"<p>{text}</p>",
        text=text,
        locale="fr",
        message_id_key="k1",
        reply_to="help@acme.test" if reply_to else None,
        list_unsubscribe=("https://acme.test/u/t0k", "mailto:u@acme.test") if unsubscribe else None,
    )
    ours = sign(message, key, now=now)
    include = [name.encode() for name in signed_header_names(ours)]
    real_time = dkim.time.time
    dkim.time.time = lambda: now
    try:
        reference = dkim.sign(
            message,
            b"s1",
            b"acme.test",
            key.pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            linesep=b"\r\n",
        )
    finally:
        dkim.time.time = real_time
    assert ours == reference + message
    assert dkim.verify(ours, dnsfunc=lambda name, timeout=5: key.dns_record.encode())


def test_key_from_the_environment_with_escaped_newlines_signs(tmp_path):
    pem = write_key(tmp_path / "k.pem").read_text()
    text = """\
smtp: {from: "Acme <no-reply@acme.test>"}
tenants: {acme: {domain: a.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{name: r, on: [s], template: welcome}]
dkim: [{domain: acme.test, selector: s1, private_key: "${DKIM_KEY}"}]
"""
    config = parse_config(text, base_dir=tmp_path, env={"DKIM_KEY": pem.replace("\n", "\\n")})
    key = load_key(config.dkim[0], tmp_path)
    raw = sign(
        build_message(
            from_addr="no-reply@acme.test",
            to_addr="ana@example.com",
            to_name=None,
            subject="Hi",
            html="<p>Hi</p>",
            text="Hi",
            locale="en",
            message_id_key="k",
        ),
        key,
    )
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: key.dns_record.encode())
    assert "PRIVATE" not in repr(config)  # the PEM is a secret


def run_check(tmp_path: Path, dkim_yaml: str, env: dict | None = None) -> tuple[int, str]:
    config = tmp_path / "streamer.yaml"
    config.write_text(f"""\
smtp: {{from: "Acme <no-reply@acme.test>"}}
templates: {{dir: "{Path(__file__).resolve().parents[1] / "templates"}"}}
tenants: {{acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y, webhook_token: t}}}}
rules: [{{name: r, on: [s], template: welcome}}]
{dkim_yaml}
""")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = cli(["check", "-c", str(config)])
    return code, out.getvalue()


def test_check_validates_every_key(tmp_path):
    write_key(tmp_path / "good.pem")
    write_key(tmp_path / "small.pem", bits=1024)
    (tmp_path / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    (tmp_path / "ed.pem").write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    code, out = run_check(tmp_path, "dkim: [{domain: acme.test, selector: s1, private_key_file: good.pem}]")
    assert code == 0, out
    code, out = run_check(tmp_path, "dkim: [{domain: acme.test, selector: s1, private_key_file: small.pem}]")
    assert code == 0 and "1024-bit key" in out
    for name, expected in [
        ("missing.pem", "cannot read private_key_file"),
        ("garbage.pem", "not a PEM private key"),
        ("ed.pem", "only RSA keys"),
    ]:
        code, out = run_check(tmp_path, f"dkim: [{{domain: acme.test, selector: s1, private_key_file: {name}}}]")
        assert code == 1 and expected in out and "dkim.0 (s1._domainkey.acme.test)" in out, out
    code, out = run_check(tmp_path, "dkim: [{domain: other.test, selector: s1, private_key_file: good.pem}]")
    assert code == 0 and "never signs" in out
    code, out = run_check(tmp_path, "dkim: [{domain: acme.test, selector: s1}]")
    assert code == 1 and "exactly one of private_key_file" in out
    code, out = run_check(
        tmp_path, "dkim: [{domain: acme.test, selector: s1, private_key_file: good.pem, tenants: [nobody]}]"
    )
    assert code == 1 and "no tenant named 'nobody'" in out


async def test_check_online_reads_dkim_spf_and_dmarc_from_dns(tmp_path):
    from streamer.mail_dns import DnsPythonResolver, mail_auth_findings

    key_file = write_key(tmp_path / "k.pem")
    other = load_key(
        DkimKeyConfig(domain="acme.test", selector="s1", private_key_file=write_key(tmp_path / "other.pem")), tmp_path
    )
    config = parse_config(
        f"""\
smtp: {{from: "Acme <no-reply@acme.test>"}}
tenants: {{acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y}}}}
rules: [{{name: r, on: [s], template: welcome}}]
dkim: [{{domain: acme.test, selector: s1, private_key_file: {key_file}}}]
""",
        base_dir=tmp_path,
        env={},
    )
    key = load_key(config.dkim[0], tmp_path)
    records: dict[str, list[str]] = {}
    with dns_server(records) as port:
        resolver = DnsPythonResolver(["127.0.0.1"], port)

        async def levels() -> dict[str, tuple[str, str]]:
            found = await mail_auth_findings(config, resolver)
            return {f.text.split(" ", 1)[0]: (f.level, f.text) for f in found}

        nothing = await levels()
        assert nothing["DKIM"][0] == "error" and key.dns_record in nothing["DKIM"][1]
        assert nothing["SPF"][0] == "warning" and "no SPF record" in nothing["SPF"][1]
        assert nothing["DMARC"][0] == "warning" and "no DMARC record" in nothing["DMARC"][1]

        records["s1._domainkey.acme.test"] = [other.dns_record]
        records["acme.test"] = ["google-site-verification=abc", "v=spf1 include:relay.test -all"]
        records["_dmarc.acme.test"] = ["v=DMARC1; p=quarantine; rua=mailto:d@acme.test"]
        wrong_key = await levels()
        assert wrong_key["DKIM"][0] == "error" and "another key" in wrong_key["DKIM"][1]
        assert wrong_key["SPF"][0] == "ok" and wrong_key["DMARC"] == ("ok", wrong_key["DMARC"][1])
        assert "p=quarantine" in wrong_key["DMARC"][1]

        records["s1._domainkey.acme.test"] = [key.dns_record]
        records["acme.test"] = ["v=spf1 -all", "v=spf1 +all"]
        good_key = await levels()
        assert good_key["DKIM"][0] == "ok"
        assert good_key["SPF"][0] == "error" and "2 SPF records" in good_key["SPF"][1]


async def test_without_keys_check_online_says_the_relay_must_sign(tmp_path):
    from streamer.mail_dns import DnsPythonResolver, mail_auth_findings

    config = parse_config(
        """\
smtp: {from: "Acme <no-reply@mail.acme.test>"}
tenants: {acme: {domain: a.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{name: r, on: [s], template: welcome}]
""",
        base_dir=tmp_path,
        env={},
    )
    with dns_server({"_dmarc.acme.test": ["v=DMARC1; p=none"]}) as port:
        found = await mail_auth_findings(config, DnsPythonResolver(["127.0.0.1"], port))
    texts = {f.text.split(" ", 1)[0]: f for f in found}
    assert texts["DKIM"].level == "warning" and "relay signs with d=mail.acme.test" in texts["DKIM"].text
    # The organizational domain's DMARC record covers the subdomain.
    assert texts["DMARC"].level == "ok" and "_dmarc.acme.test" in texts["DMARC"].text


async def test_an_unreachable_dns_server_is_a_warning_not_a_crash(tmp_path):
    from streamer.mail_dns import DnsPythonResolver, mail_auth_findings

    config = parse_config(
        """\
smtp: {from: "Acme <no-reply@acme.test>"}
tenants: {acme: {domain: a.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{name: r, on: [s], template: welcome}]
""",
        base_dir=tmp_path,
        env={},
    )
    with dns_server({}) as port:
        pass  # closed again: nobody answers there
    found = await mail_auth_findings(config, DnsPythonResolver(["127.0.0.1"], port, timeout_s=0.5))
    assert [f.level for f in found if f.text.startswith("DNS")] == ["warning", "warning"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1.1.1.1", (["1.1.1.1"], 53)),
        ("127.0.0.1:5353", (["127.0.0.1"], 5353)),
        ("[::1]:5300", (["::1"], 5300)),
        ("::1", (["::1"], 53)),
    ],
)
def test_dns_server_option(given, expected):
    from streamer.mail_dns import resolver_for

    resolver = resolver_for(given)._resolver
    assert ([str(n) for n in resolver.nameservers], resolver.port) == expected


@pytest.mark.parametrize("given", ["dns.example", "1.1.1.1:0", "1.1.1.1:x", "[::1]x"])
def test_dns_server_option_refuses_non_addresses(given):
    from streamer.mail_dns import resolver_for

    with pytest.raises(ValueError):
        resolver_for(given)


def test_list_unsubscribe_headers_are_signed_when_present(tmp_path):
    """Another step may add List-Unsubscribe before signing: the signature must cover it."""
    key = load_key(
        DkimKeyConfig(domain="acme.test", selector="s1", private_key_file=write_key(tmp_path / "k.pem")), tmp_path
    )
    built = build_message(
        from_addr="no-reply@acme.test",
        to_addr="ana@example.com",
        to_name=None,
        subject="Hi",
        html="<p>Hi</p>",
        text="Hi",
        locale="en",
        message_id_key="k",
        feedback=("new-device", "acme"),
    )
    head, body = built.split(b"\r\n\r\n", 1)
    unsubscribe = (
        b"List-Unsubscribe: <https://mail.acme.test/u/abc>, <mailto:u+abc@acme.test>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    )
    raw = sign(head + b"\r\n" + unsubscribe + b"\r\n\r\n" + body, key)
    assert {"list-unsubscribe", "list-unsubscribe-post", "feedback-id"} <= set(signed_header_names(raw))
    dnsfunc = lambda name, timeout=5: key.dns_record.encode()  # noqa: E731
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    assert not dkim.verify(raw.replace(b"/u/abc>", b"/u/evil>"), dnsfunc=dnsfunc)
    assert "list-unsubscribe" not in signed_header_names(sign(built, key))  # absent: not signed


async def test_check_online_judges_spf_on_the_verp_return_path_domain_and_its_alignment(tmp_path):
    """With VERP, MAIL FROM is bounces+<token>@<return-path domain>: receivers check SPF there, and
    DMARC's SPF alignment compares that domain's organizational domain with From's."""
    from streamer.mail_dns import DnsPythonResolver, mail_auth_findings

    def config_with(return_path: str):
        return parse_config(
            f"""\
smtp: {{from: "Acme <no-reply@acme.co.uk>"}}
tenants: {{acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y}}}}
rules: [{{name: r, on: [s], template: welcome}}]
suppression: {{return_path: "{return_path}", secret: "0123456789abcdef0123"}}
""",
            base_dir=tmp_path,
            env={},
        )

    records = {
        "acme.co.uk": ["v=spf1 include:relay.test -all"],  # the From domain: SPF fine, but not where receivers look
        "_dmarc.acme.co.uk": ["v=DMARC1; p=reject"],
    }
    with dns_server(records) as port:
        resolver = DnsPythonResolver(["127.0.0.1"], port)

        async def findings(return_path: str) -> dict[str, tuple[str, str]]:
            found = await mail_auth_findings(config_with(return_path), resolver)
            return {f.text.split(":", 1)[0].split(" (", 1)[0]: (f.level, f.text) for f in found}

        same_org = await findings("bounces@bounces.acme.co.uk")
        level, text = same_org["SPF bounces.acme.co.uk"]
        assert level == "warning" and "no SPF record" in text, same_org
        assert "suppression.return_path" in text and "not on the From domain acme.co.uk" in text
        assert "SPF acme.co.uk" not in same_org
        assert same_org["SPF alignment bounces.acme.co.uk / acme.co.uk"][0] == "ok"

        records["bounces.acme.co.uk"] = ["v=spf1 include:relay.test -all"]
        assert (await findings("bounces@bounces.acme.co.uk"))["SPF bounces.acme.co.uk"][0] == "ok"

        records["_dmarc.acme.co.uk"] = ["v=DMARC1; p=reject; aspf=s"]
        strict = (await findings("bounces@bounces.acme.co.uk"))["SPF alignment bounces.acme.co.uk / acme.co.uk"]
        assert strict[0] == "warning" and "aspf=s" in strict[1] and "DKIM alignment" in strict[1]

        # co.uk is a public suffix: another .co.uk domain is another organization, never aligned.
        other = (await findings("bounces@bounces.mailer.co.uk"))["SPF alignment bounces.mailer.co.uk / acme.co.uk"]
        assert other[0] == "warning" and "not under the From domain's organizational domain acme.co.uk" in other[1]
        assert "DMARC can still pass through DKIM alignment" in other[1]


def test_without_a_return_path_spf_is_checked_on_the_from_domain_and_says_why():
    from streamer.mail_dns import envelope_sender_domain, judge_spf_alignment

    config = parse_config(
        """\
smtp: {from: "Acme <no-reply@acme.test>"}
tenants: {acme: {domain: a.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{name: r, on: [s], template: welcome}]
""",
        env={},
    )
    domain, why = envelope_sender_domain(config)
    assert domain == "acme.test" and "smtp.from" in why
    assert judge_spf_alignment("acme.test", "acme.test", "v=DMARC1; p=reject; aspf=s") is None
