"""Odd and hostile input inside the pipeline: profiles, user ids and events that must not send mail
to the wrong place, stall a batch, or kill an email that could be sent."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout

from streamer.cli import main as cli

from conftest import config_text, sample_event

ATTACKER = '"victim@example.com" <evil@attacker.example>'


def envelope(event: dict) -> dict:
    return {"log_id": event["log_id"], "data": event}


async def wait_for_emails(daemon, predicate, timeout: float = 15.0) -> list:
    emails: list = []
    for _ in range(int(timeout / 0.05)):
        emails = await daemon.daemon.store.list_emails(states=None)
        if predicate(emails):
            return emails
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox never reached the expected state: {[(e.id, e.state, e.last_error) for e in emails]}")


def log_lines(daemon, event: str) -> list[dict]:
    return [json.loads(line) for line in daemon.logs.getvalue().splitlines() if f'"{event}"' in line]


async def test_a_profile_email_with_a_display_name_is_refused_never_sent_to_the_address_inside(
        tmp_path, standin, catcher, start_daemon):
    standin.add_user({"user_id": "auth0|mallory", "email": ATTACKER, "email_verified": False})
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    status, _ = await daemon.post([envelope(sample_event("ss", user_id="auth0|mallory"))])
    assert status == 200
    [email] = await wait_for_emails(daemon, lambda emails: emails and emails[0].state == "dead")
    assert "not a bare address" in email.last_error and email.attempts == 1
    assert catcher.messages == []
    out = io.StringIO()
    with redirect_stdout(out):
        code = await asyncio.to_thread(cli, ["outbox", "show", str(email.id), "-c", str(daemon.config_path)])
    assert code == 0 and "not a bare address" in out.getvalue()


async def test_resend_refuses_a_display_name_in_to_and_a_profile_whose_email_is_not_bare(
        tmp_path, standin, catcher, start_daemon, capsys):
    standin.add_user({"user_id": "auth0|mallory", "email": ATTACKER, "email_verified": False})
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))

    def resend(*args: str) -> int:
        return cli(["resend", "-c", str(daemon.config_path), "--tenant", "acme", "--rule", "verify-email", *args])

    assert await asyncio.to_thread(resend, "--user", "auth0|mallory") == 1
    assert "the user's email address cannot be used" in capsys.readouterr().err
    assert await asyncio.to_thread(resend, "--to", "Ana <ana.silva@example.com>", "--force") == 1
    assert "--to address 'Ana <ana.silva@example.com>' is not a bare address" in capsys.readouterr().err
    assert await daemon.daemon.store.list_emails(states=None) == [] and catcher.messages == []
