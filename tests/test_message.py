"""The message writer: parses back to the same content, and input can never add a header."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.message import (
    InvalidAddress,
    bare_address,
    build_message,
    clean_header_text,
    envelope,
    message_id,
)

EXPECTED_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "Content-Language",
    "Content-Type",
]
HTML = '<!DOCTYPE html><html><body><p>Hello <a href="https://x.test/a?b=1&amp;c=2">link</a></p></body></html>'
TEXT = "Hello\nlink (https://x.test/a?b=1&c=2)\n"


def build(**overrides: object) -> bytes:
    values: dict = dict(
        from_addr="Acme <no-reply@acme.test>",
        to_addr="ana@example.com",
        to_name="Ana Silva",
        subject="Welcome to Acme",
        html=HTML,
        text=TEXT,
        locale="fr-CA",
        message_id_key="welcome:auth0|1",
        date=datetime(2026, 3, 4, 21, 17, 42, tzinfo=UTC),
    )
    values.update(overrides)
    return build_message(**values)


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def content(part: EmailMessage) -> str:
    """Decoded text with the canonical CRLF line breaks of MIME text turned back into \\n."""
    return part.get_content().replace("\r\n", "\n")


def test_structure_and_headers() -> None:
    raw = build()
    msg = parse(raw)
    assert list(msg.keys()) == EXPECTED_HEADERS
    assert msg["From"].addresses[0].display_name == "Acme"
    assert msg["From"].addresses[0].addr_spec == "no-reply@acme.test"
    assert str(msg["To"]) == "Ana Silva <ana@example.com>"
    assert msg["Subject"] == "Welcome to Acme"
    assert msg["Date"].datetime == datetime(2026, 3, 4, 21, 17, 42, tzinfo=UTC)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Content-Language"] == "fr-CA"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]  # text first
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert content(parts[0]) == TEXT
    assert content(parts[1]) == HTML
    assert not msg.defects and not any(p.defects for p in parts)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_message_id_is_deterministic() -> None:
    first, again, other = build(), build(date=datetime(2030, 1, 1, tzinfo=UTC)), build(message_id_key="welcome:auth0|2")
    assert parse(first)["Message-ID"] == parse(again)["Message-ID"] != parse(other)["Message-ID"]
    assert parse(first)["Message-ID"] == message_id("welcome:auth0|1", "Acme <no-reply@acme.test>")
    assert parse(first)["Message-ID"].endswith("@acme.test>")
    assert len(parse(first)["Message-ID"].split("@")[0]) == 33  # "<" + 32 hex digits


def test_non_ascii_names_and_subject_are_encoded() -> None:
    raw = build(
        to_name="Chloé Tremblay", subject="Votre compte est prêt\u00a0!", from_addr="Équipe Acme <no-reply@acme.test>"
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head
    msg = parse(raw)
    assert msg["To"].addresses[0].display_name == "Chloé Tremblay"
    assert msg["From"].addresses[0].display_name == "Équipe Acme"
    assert msg["Subject"] == "Votre compte est prêt\u00a0!"


def test_specials_in_ascii_names_are_quoted() -> None:
    msg = parse(build(to_name='Doe, John "JD" \\ <boss@evil.test>'))
    (address,) = msg["To"].addresses
    assert address.display_name == 'Doe, John "JD" \\ <boss@evil.test>'
    assert address.addr_spec == "ana@example.com"


def test_idn_domains_are_punycoded() -> None:
    msg = parse(build(to_addr="ana@bücher.de"))
    assert msg["To"].addresses[0].addr_spec == "ana@xn--bcher-kva.de"
    assert envelope("Acme <no-reply@acme.test>", "ana@Bücher.de") == ("no-reply@acme.test", ["ana@xn--bcher-kva.de"])


def test_header_injection_is_removed_not_obeyed() -> None:
    raw = build(to_name="Ana\r\nBcc: victim@evil.test", subject="Hi\r\nBcc: victim@evil.test\nX-Evil: 1")
    msg = parse(raw)
    assert list(msg.keys()) == EXPECTED_HEADERS
    assert [a.addr_spec for a in msg["To"].addresses] == ["ana@example.com"]
    assert msg["Subject"] == "Hi Bcc: victim@evil.test X-Evil: 1"
    assert b"\r\nBcc:" not in raw and b"\r\nX-Evil" not in raw


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "ana",
        "ana@",
        "@example.com",
        "ana@@example.com",
        "a b@example.com",
        "ana@example.com\r\nBcc: x@y.z",
        "ana@example.com\nBcc: x@y.z",
        "ana@exa mple.com",
        "a@b.c, d@e.f",
        "Ana <a@b.c>, d@e.f",
        "grp: a@b.c;",
        "jürgen@example.de",
        "a@[192.0.2.1]",
        "a@-example.com",
        "a..b@example.com",
        ".a@example.com",
        "<>",
        "ana@example..com",
        "ana@exam_ple.com",
        "x" * 65 + "@example.com",
        "ana@" + "a" * 64 + ".com",
    ],
)
@pytest.mark.parametrize("role", ["to_addr", "from_addr"])
def test_invalid_addresses_raise(bad: str, role: str) -> None:
    with pytest.raises(InvalidAddress, match="address"):
        build(**{role: bad})


def test_invalid_address_messages_are_clear() -> None:
    with pytest.raises(InvalidAddress, match=r"recipient address 'a@b.c, d@e.f' is not a bare address"):
        envelope("no-reply@acme.test", "a@b.c, d@e.f")
    with pytest.raises(InvalidAddress, match=r"sender address 'a@b.c, d@e.f': expected exactly one address"):
        envelope("a@b.c, d@e.f", "ana@example.com")
    with pytest.raises(InvalidAddress, match=r"sender address 'nope' is not valid"):
        envelope("nope", "a@b.c")


def test_bodies_are_encoded_with_short_lines() -> None:
    long_line = "é" * 100 + " " + "x" * 900
    cjk = "こんにちは世界。" * 200
    raw = build(text=long_line + "\n.\nFrom here\n--=_not-a-boundary\n", html=cjk)
    assert all(len(line) <= 76 for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))
    assert b"Content-Transfer-Encoding: base64" in raw  # mostly non-ASCII
    assert b"Content-Transfer-Encoding: quoted-printable" in raw
    text, html = [content(p) for p in parse(raw).iter_parts()]
    assert text == long_line + "\n.\nFrom here\n--=_not-a-boundary\n"
    assert html == cjk


def test_line_endings_are_normalised() -> None:
    part = parse(build(text="a\r\nb\rc\n")).get_body(("plain",))
    assert part.get_content() == "a\r\nb\r\nc\r\n"


def test_envelope() -> None:
    assert envelope("Acme <No-Reply@ACME.test>", "ana@Example.com") == ("No-Reply@acme.test", ["ana@example.com"])


def test_clean_header_text() -> None:
    assert clean_header_text("a\r\nb\x00c\u2028d\u2029e\u202ef\u00a0g  h\t") == "a b c d e f\u00a0g h"
    assert clean_header_text(None) == ""


def test_a_word_ending_in_a_colon_is_a_fold_point() -> None:
    """Found by hypothesis: words ending in ":" were never folded after, giving an 82-char line."""
    subject = "Bcc: x@evil.testBcc: x@evil.testBcc: x@evil.testBcc: x@evil.test000000"
    head = build(subject=subject).split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert parse(build(subject=subject))["Subject"] == subject


def test_no_content_language_for_garbage_locale() -> None:
    assert "Content-Language" not in parse(build(locale="not a locale\r\nX: y"))


# --- properties --------------------------------------------------------------------------------

_NASTY = st.sampled_from(
    [
        "\r",
        "\n",
        "\r\n",
        "\x00",
        "\t",
        "\u2028",
        "\u2029",
        "\x85",
        "\x0b",
        "\x0c",
        ":",
        ",",
        ";",
        "<",
        ">",
        '"',
        "\\",
        "@",
        "=?",
        "?=",
        "=?utf-8?q?x?=",
        " ",
        "Bcc: x@evil.test",
        "\r\nBcc: x@evil.test",
        "\u202e",
        "é",
        "日本",
        "😀",
        "\u00a0",
    ]
)
_HEADER_TEXT = st.lists(st.one_of(_NASTY, st.text(max_size=30)), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_HEADER_TEXT, subject=_HEADER_TEXT)
def test_header_text_can_never_add_a_header_or_recipient(name: str, subject: str) -> None:
    raw = build(to_name=name, subject=subject)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    msg = parse(raw)
    assert list(msg.keys()) == EXPECTED_HEADERS
    (address,) = msg["To"].addresses
    assert address.addr_spec == "ana@example.com"
    # The stdlib phrase parser normalises blanks (NBSP included) and keeps the blank between two
    # encoded-words that RFC 2047 says to drop; an RFC decoder must read the exact text.
    assert "".join(address.display_name.split()) == "".join(clean_header_text(name).split())
    to_value = raw.split(b"\r\nTo:", 1)[1].split(b"\r\nSubject:", 1)[0].decode().replace("\r\n", "")
    if "=?" in to_value:
        phrase = to_value.rsplit(" <", 1)[0].strip()
        assert str(make_header(decode_header(phrase))) == clean_header_text(name)
    assert msg["Subject"] == clean_header_text(subject)
    assert not msg.defects
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


@settings(max_examples=150, deadline=None)
@given(text=st.text(), html=st.text())
def test_bodies_round_trip(text: str, html: str) -> None:
    msg = parse(build(text=text, html=html))
    assert list(msg.keys()) == EXPECTED_HEADERS
    plain, rich = list(msg.iter_parts())

    def expected(value: str) -> str:
        return value.replace("\r\n", "\n").replace("\r", "\n")

    assert content(plain) == expected(text)
    assert content(rich) == expected(html)


def test_reply_to_and_feedback_id() -> None:
    msg = parse(build(reply_to="Acme Support <support@acme.test>", feedback=("verify-email", "acme")))
    assert str(msg["Reply-To"]) == "Acme Support <support@acme.test>"
    assert msg["Feedback-ID"] == "verify-email:acme:acme.test"  # rule:tenant:SenderId, SenderId last
    assert list(msg.keys()).index("Reply-To") == list(msg.keys()).index("Message-ID") + 1
    plain = parse(build())
    assert "Reply-To" not in plain and "Feedback-ID" not in plain


@pytest.mark.parametrize("reply_to", ["a@x.test\r\nBcc: victim@x.test", "a@x.test, b@x.test", "not an address"])
def test_reply_to_cannot_add_a_header_or_recipient(reply_to: str) -> None:
    with pytest.raises(InvalidAddress, match="reply-to"):
        build(reply_to=reply_to)


@pytest.mark.parametrize("rule, tenant", [("a:b", "acme"), ("r", "acme\r\nBcc: x@y.test"), ("r", ""), ("r u", "acme")])
def test_feedback_id_parts_are_identifiers_only(rule: str, tenant: str) -> None:
    with pytest.raises(ValueError, match="Feedback-ID"):
        build(feedback=(rule, tenant))


# --- recipients are bare addresses -------------------------------------------------------------

ATTACKER = '"victim@example.com" <evil@attacker.example>'


@pytest.mark.parametrize(
    "profile_email",
    [
        ATTACKER,
        "victim@example.com <evil@attacker.example>",
        "Victim <evil@attacker.example>",
        "<evil@attacker.example>",
        "evil@attacker.example (victim@example.com)",
        "victim@example.com, evil@attacker.example",  # noqa: E501
        '"evil@attacker.example"@example.com',
        "victim@example.com;evil@attacker.example",
    ],
)
def test_a_recipient_with_a_display_name_or_any_syntax_around_the_address_is_refused(profile_email):
    with pytest.raises(InvalidAddress, match="recipient address"):
        envelope("Acme <no-reply@acme.test>", profile_email)
    with pytest.raises(InvalidAddress, match="recipient address"):
        build(to_addr=profile_email)


def test_the_refusal_says_what_a_recipient_must_look_like():
    with pytest.raises(InvalidAddress, match=r"is not a bare address such as ana@example.com"):
        bare_address(ATTACKER)


def test_a_bare_address_keeps_its_local_part_and_punycodes_its_domain():
    assert bare_address("  Ana.Silva+x@Bücher.DE ") == "Ana.Silva+x@xn--bcher-kva.de"
    assert bare_address("ana@例え.テスト") == "ana@xn--r8jz45g.xn--zckzah"


_MAILBOX_CHARS = st.sampled_from(list("abcXYZ09.!#$%&'*+/=?^_`{|}~-\" <>,;:@()[]\\\r\n\tüé例"))


@settings(max_examples=1000, deadline=None)
@given(st.lists(_MAILBOX_CHARS, min_size=1, max_size=40).map("".join))
def test_an_accepted_recipient_is_the_input_itself_never_a_part_picked_out_of_it(text):
    """Whatever a profile holds, RCPT TO is either refused or that very address (domain in
    ASCII form): a parser never gets to choose one address among several."""
    try:
        address = bare_address(text)
    except InvalidAddress:
        return
    local, _, domain = text.strip().partition("@")
    assert address.count("@") == 1 and address.partition("@")[0] == local
    assert address.partition("@")[2] == _ascii(domain)
    assert not set(address) & set('<>"(),;: \t\r\n')
    (only,) = parse(build(to_addr=text))["To"].addresses
    assert only.addr_spec == address


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.emails(), st.emails())
def test_a_display_name_never_decides_the_recipient(name, shown, real):
    for value in (f'"{shown}" <{real}>', f"{name} <{real}>", f"<{real}>", f"{shown} ({real})"):
        with pytest.raises(InvalidAddress):
            bare_address(value)


def _ascii(domain: str) -> str:
    import idna

    return domain.lower() if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")
