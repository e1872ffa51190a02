"""Odd and hostile input inside the pipeline: profiles, user ids and events that must not send mail
to the wrong place, stall a batch, or kill an email that could be sent."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from datetime import UTC

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
    tmp_path, standin, catcher, start_daemon
):
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
    tmp_path, standin, catcher, start_daemon, capsys
):
    standin.add_user({"user_id": "auth0|mallory", "email": ATTACKER, "email_verified": False})
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))

    def resend(*args: str) -> int:
        return cli(["resend", "-c", str(daemon.config_path), "--tenant", "acme", "--rule", "verify-email", *args])

    assert await asyncio.to_thread(resend, "--user", "auth0|mallory") == 1
    assert "the user's email address cannot be used" in capsys.readouterr().err
    assert await asyncio.to_thread(resend, "--to", "Ana <ana.silva@example.com>", "--force") == 1
    assert "--to address 'Ana <ana.silva@example.com>' is not a bare address" in capsys.readouterr().err
    assert await asyncio.to_thread(resend, "--user", ".") == 1
    assert "--user: the user id '.' is not an Auth0 user id of the form provider|id" in capsys.readouterr().err
    assert await daemon.daemon.store.list_emails(states=None) == [] and catcher.messages == []


# --- one bad user id never holds back its batch -------------------------------------------------

BAD_USER_IDS = ["x" * 9000, ".", "..", "/", "auth0|a\x00b", "no-provider-prefix"]


async def test_events_with_impossible_user_ids_are_rejected_alone_and_the_batch_goes_on(
    tmp_path, standin, catcher, start_daemon
):
    from streamer import metrics

    before = (
        metrics.REGISTRY.get_sample_value("streamer_events_rejected_total", {"tenant": "acme", "reason": "bad_user_id"})
        or 0
    )
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    bad = [sample_event("ss", log_id=f"bad-user-{i}", user_id=uid) for i, uid in enumerate(BAD_USER_IDS)]
    status, answer = await daemon.post([envelope(e) for e in [*bad, sample_event("ss")]])
    assert status == 200 and answer["stored"] == len(BAD_USER_IDS) + 1
    [message] = await catcher.wait_for(1, timeout=10)  # the good event of the batch: at once
    assert message.to == ["ana.silva@example.com"]
    for _ in range(200):
        if not (await daemon.daemon.store.stats(now=0))["inbox_pending"]:
            break
        await asyncio.sleep(0.05)
    assert (await daemon.daemon.store.stats(now=0))["inbox_pending"] == 0  # nothing deferred
    rejected = log_lines(daemon, "event_rejected")
    assert sorted(line["log_id"] for line in rejected) == sorted(e["log_id"] for e in bad)  # once each
    assert all("user id" in line["reason"] for line in rejected)
    assert not log_lines(daemon, "user_fetch_failed")
    after = metrics.REGISTRY.get_sample_value(
        "streamer_events_rejected_total", {"tenant": "acme", "reason": "bad_user_id"}
    )
    assert after == before + len(BAD_USER_IDS)
    # No request ever carried them: only ana's lookups and her ticket reached the stand-in.
    assert all(
        path in ("/oauth/token", "/api/v2/users", f"/api/v2/users/{ANA_QUOTED}", "/api/v2/tickets/email-verification")
        for _, path, _ in standin.calls
    ), standin.calls


ANA_QUOTED = "auth0|65f0c0ffee0000000000a001"


async def test_the_management_api_client_never_makes_a_request_with_an_impossible_user_id(standin):
    from streamer.auth0.client import InvalidUserId, ManagementApi
    from streamer.config import TenantConfig

    tenant = TenantConfig(
        domain=standin.domain,
        api_url=standin.base_url,
        client_id=standin.client_id,
        client_secret=standin.client_secret,
    )
    async with ManagementApi(tenant, name="acme") as api:
        assert await api.get_users([".", "..", "x" * 9000]) == {".": None, "..": None, "x" * 9000: None}
        for uid in (".", "..", "/"):
            try:
                await api.create_email_verification_ticket(user_id=uid)
            except InvalidUserId as exc:
                assert "provider|id" in str(exc)
            else:
                raise AssertionError(f"a ticket was asked for {uid!r}")
            try:
                await api.update_app_metadata(uid, {"x": 1})
            except InvalidUserId:
                pass
            else:
                raise AssertionError(f"PATCH was sent for {uid!r}")
    assert [call for call in standin.calls if call[1].startswith("/api/v2")] == []


# --- an event without a date ---------------------------------------------------------------------

PASSWORD_CHANGED_RULE = """\
  - name: password-changed
    on: [scp]
    once: per_event
    template: password_changed
"""


async def test_an_event_without_a_date_is_dated_when_received_and_its_email_is_sent(
    tmp_path, standin, catcher, start_daemon
):
    import time
    from datetime import datetime

    daemon = await start_daemon(config_text(tmp_path, standin, catcher, extra_rules=PASSWORD_CHANGED_RULE))
    before = datetime.now(UTC)
    undated = sample_event("scp")
    del undated["date"]
    garbled = sample_event("scp", log_id="90020260310082441155055433000000000000000000000000000008", date="soon")
    assert (await daemon.post([envelope(undated), envelope(garbled)]))[0] == 200
    messages = await catcher.wait_for(2, timeout=10)
    emails = await wait_for_emails(daemon, lambda es: len(es) == 2 and all(e.state == "sent" for e in es))
    assert all(e.last_error is None for e in emails)
    for message in messages:  # "When:" shows the time it was received, in her zone
        assert "When" in message.text or "Date" in message.text
    dates = [e.context["event"]["date"] for e in emails]
    for value in dates:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert before.timestamp() - 1 <= moment.timestamp() <= time.time() + 1
