"""End to end: Auth0 stand-in → webhook → inbox → rules → outbox → real SMTP catcher."""

import asyncio
import io
import json
import re
import time
from contextlib import redirect_stdout
from pathlib import Path

import aiohttp

from streamer.cli import main as cli
from streamer.metrics import REGISTRY as metrics_registry

from conftest import FIXTURES, WEBHOOK_TOKEN, config_text, sample_event
from support.events import envelope
from support.mail import ticket_link
from support.waiting import pipeline_idle, wait_until

ANA = "auth0|65f0c0ffee0000000000a001"


async def wait_for_state(daemon, state: str, timeout: float = 10.0) -> list:
    """All outbox rows, once every one of them is in `state`."""
    for _ in range(int(timeout / 0.05)):
        emails = await daemon.daemon.store.list_emails(states=None)
        if emails and all(e.state == state for e in emails):
            return emails
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox never all {state}: {[(e.id, e.state) for e in emails]}")


async def test_signup_sends_one_verification_email_whose_link_lands_on_the_result_url(
    tmp_path, standin, catcher, start_daemon
):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    status, answer = await daemon.post([envelope(sample_event("ss"))])
    assert status == 200 and answer["stored"] == 1

    [message] = await catcher.wait_for(1)
    assert message.to == ["ana.silva@example.com"]
    assert message.parsed["Content-Language"] == "fr-CA"  # ana's user_metadata.locale is fr-CA: "courriel"
    link = ticket_link(message)
    assert link in message.text and link.startswith(standin.base_url)
    async with aiohttp.ClientSession() as session:
        async with session.get(link, allow_redirects=False) as response:
            assert response.status == 302
            # Auth0 appends its own status parameters to the result_url.
            assert response.headers["Location"].startswith("https://app.acme.test/verified?lang=fr-CA&")
    assert standin.users[ANA]["email_verified"] is True
    await wait_until(lambda: standin.users[ANA].get("app_metadata", {}).get("verification_email_sent"), timeout=5.0)

    # Auth0 redelivers the same batch: nothing new.
    status, answer = await daemon.post([envelope(sample_event("ss"))])
    assert status == 200 and answer["duplicate"] == 1
    # A later login of the (now verified) user, then the sv event: exactly one welcome email.
    await daemon.post([envelope(sample_event("sv"))])
    messages = await catcher.wait_for(2)
    await pipeline_idle(daemon.daemon.store)
    assert len(catcher.messages) == 2
    assert messages[1].to == ["ana.silva@example.com"] and "ticket=" not in messages[1].text


async def test_every_webhook_format_and_unverified_users_get_one_email_each(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    for name in ("body_JSONARRAY.json", "body_JSONLINES.jsonl", "body_JSONOBJECT.json"):
        status, _ = await daemon.post(None, raw=(FIXTURES / "webhook" / name).read_bytes())
        assert status == 200
    await catcher.wait_for(1)
    await pipeline_idle(daemon.daemon.store)
    assert len(catcher.messages) == 1  # ss + s of one unverified user, three times: one email


async def test_bad_requests_store_nothing_and_the_daemon_stays_healthy(tmp_path, standin, catcher, start_daemon):
    text = config_text(tmp_path, standin, catcher).replace(
        'server: {listen: "127.0.0.1:0"}', 'server: {listen: "127.0.0.1:0", max_body_bytes: 2000}'
    )
    daemon = await start_daemon(text)
    event = [envelope(sample_event("ss"))]
    # The registry is the process's: other tests may have counted 401s for acme before this one.
    unauthorized = {"tenant": "acme", "reason": "unauthorized"}
    before = metrics_registry.get_sample_value("streamer_events_rejected_total", unauthorized) or 0.0
    assert (await daemon.post(event, token="wrong"))[0] == 401
    assert (await daemon.post(event, token=None))[0] == 401
    assert (await daemon.post(event, tenant="nobody"))[0] == 401
    status, answer = await daemon.post(None, raw=b"{this is not json")
    assert status == 400 and "not JSON" in answer["error"]
    assert (await daemon.post(None, raw=b"[" + b" " * 5000 + b"]"))[0] == 413
    for size, status in ((5000, 413), (100, 200)):  # chunked: no Content-Length to trust

        async def chunks(size=size):
            yield b"[" + b" " * size
            yield b"]"

        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{daemon.url}/logs/acme", data=chunks(), headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
            ) as response:
                assert response.status == status
    status, answer = await daemon.post([1, "two", {"no": "log_id"}])
    assert status == 200 and answer["skipped"] == 3 and answer["stored"] == 0
    stats = await daemon.daemon.store.stats(now=0)
    assert stats["inbox_pending"] == 0 and sum(stats["outbox"].values()) == 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{daemon.url}/readyz") as response:
            assert response.status == 200, await response.text()
        async with session.get(f"{daemon.url}/metrics") as response:
            metrics = await response.text()
    assert f'streamer_events_rejected_total{{reason="unauthorized",tenant="acme"}} {before + 2}' in metrics
    assert (await daemon.post(event))[0] == 200  # still accepting
    await catcher.wait_for(1)


async def test_smtp_451_is_retried_until_delivered(tmp_path, standin, catcher, start_daemon):
    catcher.fail_next(451, "4.3.0 try again later", stage="RCPT", count=2)
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    await daemon.post([envelope(sample_event("ss"))])
    [message] = await catcher.wait_for(1, timeout=10)
    assert message.to == ["ana.silva@example.com"]
    [email] = await wait_for_state(daemon, "sent")
    assert email.attempts == 3


async def test_smtp_550_makes_the_email_dead_and_outbox_list_shows_it(tmp_path, standin, catcher, start_daemon):
    catcher.fail_next(550, "5.1.1 no such mailbox", stage="DATA", count=1)
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    await daemon.post([envelope(sample_event("ss"))])
    emails = await wait_for_state(daemon, "dead")
    assert "550" in emails[0].last_error
    out = io.StringIO()
    with redirect_stdout(out):
        code = await asyncio.to_thread(cli, ["outbox", "list", "-c", str(daemon.config_path)])
    assert code == 0
    listing = out.getvalue()
    assert "dead" in listing and "ana.silva@example.com" in listing and "550" in listing
    assert catcher.messages == []


async def test_auth0_429_storm_still_delivers_everything(tmp_path, standin, catcher, start_daemon):
    users = []
    for index in range(30):
        user = standin.add_user(
            {
                "user_id": f"auth0|storm{index:04d}",
                "email": f"storm{index}@example.com",
                "email_verified": False,
                "name": f"Storm {index}",
                "logins_count": 1,
            }
        )
        users.append(user)
    standin.set_rate_limit(5, 5.0)
    standin.fail_next("/api/v2/tickets", 429, count=10)
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    events = [
        envelope(
            sample_event("ss", log_id=f"9002026030114010844900{i:04d}", user_id=u["user_id"], user_name=u["email"])
        )
        for i, u in enumerate(users)
    ]
    assert (await daemon.post(events))[0] == 200
    messages = await catcher.wait_for(30, timeout=60)
    assert sorted(m.to[0] for m in messages) == sorted(u["email"] for u in users)
    await pipeline_idle(daemon.daemon.store)
    assert len(catcher.messages) == 30


async def test_no_secret_token_or_ticket_url_in_logs_or_database(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    await daemon.post([envelope(sample_event("ss")), envelope(sample_event("scp"))])
    [message] = await catcher.wait_for(1)
    ticket = ticket_link(message)
    ticket_id = re.search(r"ticket=([^#&]+)", ticket).group(1)
    await daemon.post(None, raw=b"not json", token=WEBHOOK_TOKEN)
    await daemon.post([envelope(sample_event("s"))], token="wrong-token-value")
    await daemon.stop()
    logs = daemon.logs.getvalue()
    assert "email_sent" in logs  # the log was captured at all
    database = b"".join(p.read_bytes() for p in Path(tmp_path).glob("streamer.db*"))
    for secret in (
        ticket_id,
        standin.client_secret,
        WEBHOOK_TOKEN,
        "wrong-token-value",
        "Q2hhbmdlUGFzc3dvcmRUaWNrZXRFeGFtcGxl",
    ):  # the scp event's ticket id
        assert secret not in logs, secret
        assert secret.encode() not in database, secret
    for token in standin.issued_tokens:
        assert token not in logs and token.encode() not in database
    for line in logs.splitlines():
        json.loads(line)  # every line is JSON


async def test_a_log_stream_delivers_to_the_daemon_like_auth0(tmp_path, standin, catcher, start_daemon):
    """The stand-in's custom-webhook stream posts batches to /logs/acme, as Auth0 would."""
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    standin.log_streams["lst_test"] = {
        "id": "lst_test",
        "name": "streamer-acme",
        "type": "http",
        "status": "active",
        "sink": {
            "httpEndpoint": f"{daemon.url}/logs/acme",
            "httpContentFormat": "JSONLINES",
            "httpContentType": "application/json",
            "httpAuthorization": f"Bearer {WEBHOOK_TOKEN}",
        },
    }
    standin.add_log(sample_event("ss"))
    [message] = await catcher.wait_for(1)
    assert message.to == ["ana.silva@example.com"]
    assert standin.stream_deliveries and standin.stream_deliveries[0][1] == 200


async def test_svr_warns_once_that_auth0_still_sends_its_own_emails(tmp_path, standin, catcher, start_daemon):
    from streamer import metrics

    before = metrics.REGISTRY.get_sample_value("streamer_auth0_automatic_email_events_total", {"tenant": "acme"}) or 0
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    first = sample_event("svr")
    second = sample_event("svr", log_id="90020260301140109040039595000000000000000000000000000099")
    status, answer = await daemon.post([envelope(first), envelope(second)])
    assert status == 200 and answer["ignored"] == 2 and answer["stored"] == 0
    warnings = [
        json.loads(line)
        for line in daemon.logs.getvalue().splitlines()
        if "auth0_sends_its_own_verification_emails" in line
    ]
    assert len(warnings) == 1 and warnings[0]["tenant"] == "acme" and warnings[0]["level"] == "warning"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.url}/metrics") as response:
            exposed = await response.text()
    assert f'streamer_auth0_automatic_email_events_total{{tenant="acme"}} {before + 2}' in exposed


async def test_wrong_auth0_credentials_keep_the_event_waiting_in_the_inbox(tmp_path, standin, catcher, start_daemon):
    """A bad client secret is the operator's to fix: the user fetch needs the token, so the event
    waits in the inbox (deferred, not dropped) and no email is queued, let alone dead."""
    text = config_text(tmp_path, standin, catcher).replace(
        f"client_secret: {standin.client_secret}", "client_secret: wrong-secret"
    )
    daemon = await start_daemon(text)
    await daemon.post([envelope(sample_event("ss"))])
    # The processor logs user_fetch_failed after the deferral is committed.
    await wait_until(lambda: "user_fetch_failed" in daemon.logs.getvalue(), timeout=10)
    store = daemon.daemon.store
    assert (await store.stats(now=time.time()))["inbox_pending"] == 1
    assert await store.list_emails(states=None) == []
    assert "wrong-secret" not in daemon.logs.getvalue()


async def test_credentials_refused_at_send_time_keep_the_email_retrying_not_dead(
    tmp_path, standin, catcher, start_daemon
):
    """The user fetch works, then the ticket endpoint answers 401 (twice per attempt: streamer
    fetches a new token and tries once more) for two attempts: failed, retried, sent."""
    standin.fail_next("/api/v2/tickets", 401, count=4)
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    await daemon.post([envelope(sample_event("ss"))])
    [email] = await wait_for_state(daemon, "sent")
    assert email.attempts == 3
    assert "credentials or scopes" in daemon.logs.getvalue()


async def test_a_missing_ticket_scope_is_retried_not_dead(tmp_path, standin, catcher, start_daemon):
    standin.fail_next("/api/v2/tickets", 403, count=2)  # insufficient_scope, then the operator fixes it
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    await daemon.post([envelope(sample_event("ss"))])
    [email] = await wait_for_state(daemon, "sent")
    assert email.attempts == 3
    assert "credentials or scopes" in daemon.logs.getvalue()


async def test_a_full_disk_answers_503_stores_nothing_and_the_redelivery_is_sent(
    tmp_path, standin, catcher, start_daemon
):
    """SQLite's own SQLITE_FULL (max_page_count pinned to the file's size): a clear 503 and log
    line instead of a bare 500, nothing half-stored, and Auth0's redelivery goes through later."""
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    store = daemon.daemon.store
    pages = await store._read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])  # noqa: SLF001
    await store._read(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))  # noqa: SLF001
    events = [
        envelope(
            sample_event(
                "ss", log_id=f"9002026030114010844900000000000000000000000000000000{i:04d}", user_id=f"auth0|disk{i}"
            )
        )
        for i in range(40)
    ]
    for i in range(40):
        standin.add_user({"user_id": f"auth0|disk{i}", "email": f"disk{i}@example.com"})
    status, body = await daemon.post(events)
    assert status == 503 and body == {"error": "the batch could not be stored; send it again"}
    line = next(json.loads(x) for x in daemon.logs.getvalue().splitlines() if '"webhook_store_failed"' in x)
    assert line["level"] == "error" and "full" in line["error"] and line["events"] == 40
    assert (await store.stats(now=0))["inbox_pending"] == 0
    await store._read(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))  # noqa: SLF001 - space freed
    status, body = await daemon.post(events)
    assert status == 200 and body["stored"] == 40
    await catcher.wait_for(40, timeout=20)
