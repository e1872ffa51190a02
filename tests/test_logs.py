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
