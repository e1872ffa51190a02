"""Redaction happens in the log pipeline itself, whatever a call site passes."""

import io
import json

from streamer import logs


def test_secrets_tokens_and_ticket_links_are_masked():
    buffer = io.StringIO()
    logs.configure("info", stream=buffer)
    logs.get_logger("t").info(
        "something",
        client_secret="s3cret",
        webhook_token="tok",
        Authorization="Bearer abcdefgh1234",
        error="failed for HTTPS://X.AUTH0.COM/u/reset-verify?TICKET=Zm9vYmFy# and bearer abcdefghijk",
        jwt="eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        nested={"password": "hunter2", "ok": 1},
        ticket_kind="email_verification",
        note="plain text stays",
    )
    line = json.loads(buffer.getvalue())
    text = buffer.getvalue()
    for secret in ("s3cret", 'tok"', "abcdefgh1234", "Zm9vYmFy", "abcdefghijk", "c2lnbmF0dXJl", "hunter2"):
        assert secret not in text, secret
    assert line["ticket_kind"] == "email_verification" and line["note"] == "plain text stays"
    assert line["nested"]["ok"] == 1
    logs.configure("warning")


def test_redact_text_leaves_ordinary_text_alone():
    assert logs.redact_text("451 4.3.0 try again later") == "451 4.3.0 try again later"
    assert logs.redact_text("see https://a.test/u/email-verification?ticket=abc#") == "see [redacted]"


def test_numbers_are_masked_by_their_key_and_the_event_by_its_text():
    """Ids and counts pass untouched, unless their key names a secret; the event text itself is
    scanned for ticket links. One write per line."""
    buffer = io.StringIO()
    writes = []
    buffer.write = lambda text, write=buffer.write: writes.append(text) or write(text)
    logs.configure("info", stream=buffer)
    logs.get_logger("t").info(
        "sent https://x.auth0.com/u/email-verification?ticket=Zm9vYmFy#",
        email_id=12,
        latency_s=0.5,
        pin_code=None,
        otp_password=123456,
        refresh_token=0,
        attempts=True,
    )
    line = json.loads(buffer.getvalue())
    assert "Zm9vYmFy" not in line["event"] and line["event"].startswith("sent ")
    assert (line["email_id"], line["latency_s"], line["pin_code"], line["attempts"]) == (12, 0.5, None, True)
    assert line["otp_password"] == logs.REDACTED and line["refresh_token"] == 0  # empty-ish values stay, as before
    assert len(writes) == 1 and writes[0].endswith("}\n")
    logs.configure("warning")
