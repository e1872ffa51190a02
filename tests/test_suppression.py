"""Bounces, complaints and unsubscribes end to end, over real SMTP and HTTP: the daemon sends with a
VERP return path into the mail catcher; DSNs and ARF reports come back over SMTP to its inbound
listener; SES (SNS-signed with a locally made certificate) and Postmark post to its webhooks;
the suppression list then holds the next email back (state `suppressed`); the unsubscribe link
of a `new_device` notice stops the next one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import io
import json
import re
import subprocess
import sys
import time
import uuid

import aiohttp
import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from streamer.suppression.sns import string_to_sign

from conftest import FIXTURES, REPO, config_text, sample_event
from support.events import envelope
from support.waiting import pipeline_idle, wait_until

BOUNCES = FIXTURES / "bounces"
ANA, ANA_EMAIL = "auth0|65f0c0ffee0000000000a001", "ana.silva@example.com"
CHLOE, CHLOE_EMAIL = "auth0|65f0c0ffee0000000000c003", "chloe.tremblay@example.com"
DAVE_EMAIL = "dave.miller@example.com"
PUBLIC_URL = "https://mail.acme.test"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC
    + "&Token=2336412f37fb687f5d51e6e2425c464de12884"
)
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "pm-secret-0123456789abcdef"

SECTIONS = f"""\
  - name: new-device
    on: [s]
    if: "user.email_verified"
    once: {{key: "{{{{ event.ip }}}} {{{{ event.user_agent }}}}"}}
    template: new_device
    unsubscribe: true
suppression:
  return_path: bounces@bounces.acme.test
  secret: "verp-secret-0123456789abcdef"
  soft_bounces: {{count: 2, window: 1d}}
  inbound: {{listen: "127.0.0.1:0"}}
  webhooks:
    ses: {{topic_arns: ["{TOPIC}"]}}
    postmark: {{username: {POSTMARK_USER}, password: "{POSTMARK_PASSWORD}"}}
unsubscribe:
  secret: "unsubscribe-secret-0123456789"
  mailto: unsubscribe@bounces.acme.test
"""


def full_config(tmp_path, standin, catcher) -> str:
    text = config_text(tmp_path, standin, catcher, extra_rules=SECTIONS)
    return text.replace(
        'server: {listen: "127.0.0.1:0"}', f'server: {{listen: "127.0.0.1:0", public_url: "{PUBLIC_URL}"}}'
    )  # noqa: E501


# --- a local stand-in for the SNS signing certificate ---------------------------------------------


class FakeSns:
    """Signs messages like SNS, with a certificate it serves only at CERT_URL; records every fetch."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if url == SUBSCRIBE_URL:
            return b"<ConfirmSubscriptionResponse/>"
        raise AssertionError(f"streamer fetched {url}")

    def sign(self, message: dict, version: str = "2", key=None) -> dict:
        message = {"SignatureVersion": version, "SigningCertURL": CERT_URL, **message}
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = (key or self.key).sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {**message, "Signature": base64.b64encode(signature).decode()}


def sns_time(seconds_ago: float = 0.0) -> str:
    """An SNS Timestamp (publish time, ISO 8601 in UTC with milliseconds)."""
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(payload_file: str, **changes) -> dict:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),  # SNS gives every message its own
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": (BOUNCES / payload_file).read_text(),
        "Timestamp": sns_time(40),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        **changes,
    }


@pytest.fixture
async def running(tmp_path, standin, catcher):
    """The daemon with the full config and a FakeSns, in-process; logs captured."""
    from streamer import logs
    from streamer.config import load_config
    from streamer.daemon import Daemon

    path = tmp_path / "streamer.yaml"
    path.write_text(full_config(tmp_path, standin, catcher))
    buffer = io.StringIO()
    logs.configure("debug", stream=buffer)
    sns = FakeSns()
    daemon = Daemon(load_config(path, env={}), sns_fetch=sns.fetch)
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.run(install_signals=False, on_ready=lambda url: ready.set()))
    await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()

    class Running:
        pass

    running = Running()
    running.daemon, running.url, running.store, running.sns, running.path = daemon, daemon.url, daemon.store, sns, path
    running.logs = buffer

    async def post_events(*events):
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{daemon.url}/logs/acme",
                json=[envelope(e) for e in events],
                headers={"Authorization": "Bearer test-webhook-token-0123456789"},
            ) as response:
                assert response.status == 200

    running.post_events = post_events
    yield running
    daemon.stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15)


async def wait_emails(store, predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        emails = await store.list_emails(states=None)
        if predicate(emails):
            return emails
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox never matched: {[(e.id, e.rule, e.recipient, e.state.value) for e in emails]}")


async def suppressed(store, address):
    return (await store.get_suppressions("acme", [address])).get(address)


async def smtp_send(port: int, rcpt: str, data: bytes, sender: str = "") -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5)
    await client.connect()
    try:
        await client.mail(sender)
        code, text = await client.rcpt(rcpt)
        if code >= 400:
            return code, text
        response = await client.data(data)
        return response.code, response.message
    except aiosmtplib.SMTPRecipientRefused as exc:
        return exc.code, exc.message
    finally:
        with contextlib.suppress(Exception):
            await client.quit()


def report(name: str, return_path: str) -> bytes:
    text = (BOUNCES / name).read_text().replace("{RETURN_PATH}", return_path)
    return text.replace("{BARE_RETURN_PATH}", "bounces@bounces.acme.test").replace("\n", "\r\n").encode()


# --- bounces over SMTP ---------------------------------------------------------------------------------


async def test_a_dsn_to_the_verp_return_path_suppresses_the_address_and_the_next_email_is_held_back(
    running, catcher, standin
):
    await running.post_events(sample_event("ss"))  # ana, unverified: verify-email
    [message] = await catcher.wait_for(1)
    return_path = message.mail_from
    assert re.fullmatch(r"bounces\+[a-z2-7]{16}@bounces\.acme\.test", return_path), return_path
    assert message.parsed["From"] == "Acme <no-reply@acme.test>"  # the header From is unchanged
    assert "List-Unsubscribe" not in message.parsed  # transactional: no unsubscribe

    # A forged bounce (a token streamer never issued) is refused at RCPT and changes nothing.
    code, _ = await smtp_send(
        running.daemon.inbound_port, "bounces+aaaaaaaaaaaaaaaa@bounces.acme.test", report("dsn_hard.eml", return_path)
    )
    assert code == 550
    assert await smtp_send(running.daemon.inbound_port, "postmaster@bounces.acme.test", b"x") == (
        550,
        "5.1.1 No such mailbox",
    )  # noqa: E501
    assert await suppressed(running.store, ANA_EMAIL) is None

    code, _ = await smtp_send(running.daemon.inbound_port, return_path.upper(), report("dsn_hard.eml", return_path))
    assert code == 250
    entry = await suppressed(running.store, ANA_EMAIL)
    assert (entry.reason.value, entry.source) == ("hard_bounce", "dsn") and "5.1.1" in entry.detail

    # Ana verifies (sv): the welcome email is queued, then held back.
    standin.users[ANA].update(email_verified=True, updated_at="2030-01-03T00:00:00.000Z")
    await running.post_events(sample_event("sv", date="2030-01-02T00:00:00.000Z"))  # newer than the cached profile
    emails = await wait_emails(
        running.store, lambda es: any(e.rule == "welcome" and e.state.value == "suppressed" for e in es)
    )
    assert [e.state.value for e in emails if e.rule == "verify-email"] == ["sent"]
    assert len(catcher.messages) == 1


async def test_suppressed_recipient_gets_state_suppressed_not_dead(running, catcher, standin):
    standin.users[ANA]["email_verified"] = True
    from streamer.suppression.policy import Reason

    await running.store.suppress(
        "acme", ANA_EMAIL.upper(), reason=Reason.HARD_BOUNCE, source="dsn", detail="5.1.1", now=0
    )
    await running.post_events(sample_event("s_new_device"))
    emails = await wait_emails(
        running.store, lambda es: len(es) == 2 and all(e.state.value == "suppressed" for e in es)
    )
    assert {e.rule for e in emails} == {"new-device", "welcome"} and all("hard_bounce" in e.last_error for e in emails)
    assert catcher.messages == []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}/metrics") as response:
            text = await response.text()
    assert 'streamer_emails_suppressed_total{rule="new-device",tenant="acme"} 1.0' in text
    assert 'streamer_emails_dead_total{rule="new-device"' not in text


async def test_rules_read_recipient_suppressed_and_its_reason(tmp_path, standin, catcher, start_daemon):
    extra = """\
  - name: fix-your-address
    on: [s]
    if: "recipient.suppressed and recipient.reason == 'complaint'"
    once: per_event
    template: welcome
"""
    daemon = await start_daemon(config_text(tmp_path, standin, catcher, extra_rules=extra))
    from streamer.suppression.policy import Reason

    await daemon.daemon.store.suppress(
        "acme", "erik.schmidt@example.com", reason=Reason.COMPLAINT, source="arf", detail="abuse", now=0
    )
    await daemon.daemon.store.suppress(
        "acme", CHLOE_EMAIL, reason=Reason.HARD_BOUNCE, source="dsn", detail="5.1.1", now=0
    )
    erik = sample_event("s", user_id="auth0|65f0c0ffee0000000000e005", log_id="900201", ip="192.0.2.1")
    chloe = sample_event("s", user_id=CHLOE, log_id="900202", ip="192.0.2.2")
    await daemon.post([envelope(erik), envelope(chloe)])
    emails = await wait_emails(daemon.daemon.store, lambda es: any(e.rule == "fix-your-address" for e in es))
    await pipeline_idle(daemon.daemon.store)  # both events evaluated: chloe's made nothing due
    assert [
        (e.rule, e.recipient)
        for e in await daemon.daemon.store.list_emails(states=None)
        if e.rule == "fix-your-address"
    ] == [("fix-your-address", "erik.schmidt@example.com")]
    assert emails


async def test_soft_bounces_suppress_after_the_configured_count(running, catcher):
    await running.post_events(sample_event("ss"))
    [message] = await catcher.wait_for(1)
    port = running.daemon.inbound_port
    assert (await smtp_send(port, message.mail_from, report("dsn_delayed.eml", message.mail_from)))[0] == 250
    assert (await smtp_send(port, message.mail_from, report("dsn_soft.eml", message.mail_from)))[0] == 250
    assert await suppressed(running.store, ANA_EMAIL) is None  # one soft bounce: not yet
    assert (await smtp_send(port, message.mail_from, report("dsn_soft.eml", message.mail_from)))[0] == 250
    entry = await suppressed(running.store, ANA_EMAIL)
    assert entry.reason.value == "soft_bounce" and "2 soft bounces" in entry.detail


async def test_an_arf_complaint_at_the_bare_return_path_is_matched_by_its_original_sender(running, catcher):
    await running.post_events(sample_event("ss"))
    [message] = await catcher.wait_for(1)
    code, _ = await smtp_send(
        running.daemon.inbound_port, "bounces@bounces.acme.test", report("arf_complaint.eml", message.mail_from)
    )
    assert code == 250
    entry = await suppressed(running.store, ANA_EMAIL)
    assert (entry.reason.value, entry.source, entry.detail) == ("complaint", "arf", "feedback-type abuse")
    # The same report with a token streamer never issued is accepted (the FBL must not retry) and ignored.
    await running.store.unsuppress("acme", ANA_EMAIL)
    forged = report("arf_complaint.eml", "bounces+aaaaaaaaaaaaaaaa@bounces.acme.test")
    assert (await smtp_send(running.daemon.inbound_port, "bounces@bounces.acme.test", forged))[0] == 250
    assert await running.store.list_suppressions() == []


async def test_lmtp_listener_takes_the_same_reports(tmp_path, standin, catcher):
    from streamer.config import InboundConfig, SuppressionConfig
    from streamer.store.sqlite import SqliteStore
    from streamer.suppression.inbound import InboundHandler, InboundListener
    from streamer.suppression.recorder import SuppressionRecorder
    from streamer.suppression.verp import ReturnPaths

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    paths = ReturnPaths("bounces@bounces.acme.test", b"k" * 20)
    token = paths.token("acme", ANA_EMAIL)
    await store.remember_return_path(token, "acme", ANA_EMAIL, now=0)
    config = SuppressionConfig(return_path="bounces@bounces.acme.test", secret="k" * 20)
    listener = InboundListener(
        InboundConfig(listen="127.0.0.1:0", protocol="lmtp"),
        InboundHandler(store, paths, SuppressionRecorder(store, config)),
    )
    port = await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def say(line: bytes) -> bytes:
            writer.write(line + b"\r\n")
            await writer.drain()
            reply = b""
            while True:
                got = await asyncio.wait_for(reader.readline(), 5)
                reply += got
                if got[3:4] == b" ":
                    return reply

        await asyncio.wait_for(reader.readline(), 5)
        assert (await say(b"LHLO test"))[:3] == b"250"
        assert (await say(b"MAIL FROM:<>"))[:3] == b"250"
        assert (await say(f"RCPT TO:<{paths.address(token)}>".encode()))[:3] == b"250"
        assert (await say(b"RCPT TO:<bounces@bounces.acme.test>"))[:3] == b"250"
        assert (await say(b"DATA"))[:3] == b"354"
        body = report("dsn_hard.eml", paths.address(token)).replace(b"\r\n.", b"\r\n..")
        writer.write(body + b"\r\n.\r\n")
        await writer.drain()
        replies = [await asyncio.wait_for(reader.readline(), 5) for _ in range(2)]  # one per recipient (RFC 2033)
        assert [r[:3] for r in replies] == [b"250", b"250"], replies
        writer.close()
    finally:
        await listener.stop()
    assert (await store.get_suppressions("acme", [ANA_EMAIL]))[ANA_EMAIL].reason.value == "hard_bounce"
    await store.close()


# --- provider webhooks ---------------------------------------------------------------------------------


async def post_json(url: str, body, headers=None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url,
            data=json.dumps(body) if not isinstance(body, bytes) else body,
            headers={"Content-Type": "text/plain; charset=UTF-8", **(headers or {})},
        ) as response:
            return response.status, await response.text()


async def test_ses_notifications_are_believed_only_with_a_valid_sns_signature(running):
    url = f"{running.url}/webhooks/ses/acme"
    sns = running.sns
    # Confirming the subscription: the SubscribeURL (an SNS host) is fetched once.
    confirm = sns.sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e2425c464de12884",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": SUBSCRIBE_URL,
            "Timestamp": sns_time(60),
        }
    )
    assert (await post_json(url, confirm))[0] == 200 and SUBSCRIBE_URL in sns.fetched

    signed = sns.sign(notification("ses_bounce.json"))
    tampered = {**signed, "Message": signed["Message"].replace("dave.miller", "erik.schmidt")}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected = [
        tampered,
        sns.sign(notification("ses_bounce.json"), key=other_key),
        sns.sign(notification("ses_bounce.json", TopicArn="arn:aws:sns:us-east-1:999999999999:other")),
        {**sns.sign(notification("ses_bounce.json")), "SigningCertURL": "https://sns.evil.test/cert.pem"},
        {**sns.sign(notification("ses_bounce.json")), "SigningCertURL": CERT_URL.replace("https", "http")},
        {
            **sns.sign(notification("ses_bounce.json")),
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
        },
        {**signed, "Signature": "not base64!"},
    ]
    for message in rejected:
        status, text = await post_json(url, message)
        assert status == 403, text
    assert await running.store.list_suppressions() == []
    assert set(sns.fetched) <= {CERT_URL, SUBSCRIBE_URL}  # never any other host

    assert (await post_json(url, signed))[0] == 200
    assert (await post_json(url, sns.sign(notification("ses_complaint.json"), version="1")))[0] == 200
    assert (await post_json(url, sns.sign(notification("ses_delivery.json"))))[0] == 200
    entries = {e.address: e for e in await running.store.list_suppressions(tenant="acme")}
    assert set(entries) == {DAVE_EMAIL, "sofia.garcia@example.com"}
    assert (entries[DAVE_EMAIL].reason.value, entries[DAVE_EMAIL].source) == ("hard_bounce", "ses")
    assert entries["sofia.garcia@example.com"].reason.value == "complaint"
    assert sns.fetched.count(CERT_URL) == 1  # cached
    assert (await post_json(f"{running.url}/webhooks/ses/nobody", signed))[0] == 404
    assert (await post_json(url, b"{not json"))[0] == 400


async def test_a_captured_sns_notification_cannot_be_replayed_later(running):
    """SNS stops retrying an HTTP/S delivery within an hour and a retry keeps its Timestamp: a
    genuinely signed message older than that (plus 5 minutes of clock skew) is a replay."""
    url = f"{running.url}/webhooks/ses/acme"
    for timestamp in (sns_time(3600 + 301), sns_time(-301), "yesterday"):
        status, text = await post_json(url, running.sns.sign(notification("ses_bounce.json", Timestamp=timestamp)))
        assert status == 403 and "Timestamp" in text, (timestamp, text)
    assert await running.store.list_suppressions() == []
    assert "ses_webhook_rejected" in running.logs.getvalue()
    status, _ = await post_json(url, running.sns.sign(notification("ses_bounce.json", Timestamp=sns_time(3600))))
    assert status == 200  # SNS's last retry, an hour after publishing
    assert [e.address for e in await running.store.list_suppressions()] == [DAVE_EMAIL]


async def test_an_sns_message_posted_again_within_the_window_counts_once(running):
    """SNS may deliver a message twice, and a captured one can be replayed until it is too old:
    a soft bounce must not count twice (two would suppress the address here). One that the
    store failed to record (503) is taken when SNS retries it."""
    url = f"{running.url}/webhooks/ses/acme"
    soft = notification("ses_bounce.json")
    soft["Message"] = soft["Message"].replace('"Permanent"', '"Transient"')
    signed = running.sns.sign(soft)
    assert (await post_json(url, signed))[0] == 200
    status, text = await post_json(url, signed)
    assert status == 200 and "already received" in text
    assert await running.store.list_suppressions() == []
    again = running.sns.sign({**soft, "MessageId": "5e8d0d7a-0000-4000-8000-000000000002"})
    original = running.store.record_soft_bounce

    async def store_away(*args, **kwargs):
        raise OSError("database is away")

    running.store.record_soft_bounce = store_away
    assert (await post_json(url, again))[0] == 503
    running.store.record_soft_bounce = original
    assert (await post_json(url, again))[0] == 200  # SNS's retry of the same message
    assert [e.address for e in await running.store.list_suppressions()] == [DAVE_EMAIL]


def test_recent_messages_are_forgotten_once_too_old_to_pass_or_beyond_the_limit():
    from streamer.suppression.sns import RecentMessages

    recent = RecentMessages(keep_s=100, limit=2)
    recent.add("a", now=0)
    assert recent.seen("a", now=99) and not recent.seen("b", now=99)
    assert not recent.seen("a", now=100)  # the Timestamp check refuses it by now
    recent.add("b", now=1)
    recent.add("c", now=2)
    assert not recent.seen("a", now=3) and recent.seen("b", now=3) and recent.seen("c", now=3)  # oldest went first


async def test_postmark_webhooks_need_the_basic_credentials(running):
    url = f"{running.url}/webhooks/postmark/acme"
    bounce = json.loads((BOUNCES / "postmark_bounce.json").read_text())
    good = "Basic " + base64.b64encode(f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(f"{POSTMARK_USER}:wrong".encode()).decode()
    assert (await post_json(url, bounce))[0] == 401
    assert (await post_json(url, bounce, {"Authorization": bad}))[0] == 401
    assert await running.store.list_suppressions() == []
    for name in ("postmark_bounce.json", "postmark_spam_complaint.json", "postmark_autoresponder.json"):
        status, _ = await post_json(url, json.loads((BOUNCES / name).read_text()), {"Authorization": good})
        assert status == 200
    entries = {e.address: e.reason.value for e in await running.store.list_suppressions(tenant="acme")}
    assert entries == {"erik.schmidt@example.com": "hard_bounce", "bruno.costa@example.com": "complaint"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}/metrics") as response:
            text = await response.text()
    assert 'streamer_suppressions_added_total{reason="complaint",source="postmark",tenant="acme"} 1.0' in text


# --- one-click unsubscribe ----------------------------------------------------------------------------


def unsubscribe_link(message) -> tuple[str, str]:
    header = str(message.parsed["List-Unsubscribe"])
    https, mailto = re.findall(r"<([^>]+)>", header)
    return https, mailto


async def test_one_click_unsubscribe_stops_the_next_new_device_email(running, catcher):
    first = sample_event("s_new_device", user_id=CHLOE, log_id="900301", ip="192.0.2.31")
    await running.post_events(first)
    [message] = await catcher.wait_for(1)
    assert message.to == [CHLOE_EMAIL]
    assert message.parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = unsubscribe_link(message)
    assert https.startswith(f"{PUBLIC_URL}/unsubscribe/") and https.endswith("?lang=fr-CA")
    assert mailto.startswith("mailto:unsubscribe@bounces.acme.test?subject=unsubscribe%20")
    local = running.url + https[len(PUBLIC_URL) :]
    async with aiohttp.ClientSession() as session:
        async with session.get(local) as response:  # a link scanner's GET
            page = await response.text()
            assert response.status == 200 and response.headers["Content-Language"] == "fr"
            assert "Me désabonner" in page and "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert await running.store.get_unsubscribed("acme", [CHLOE]) == {}
        async with session.post(
            local.replace("/unsubscribe/", "/unsubscribe/x"), data="List-Unsubscribe=One-Click"
        ) as response:
            assert response.status == 404
        async with session.post(
            local, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as response:
            assert response.status == 200 and "Votre désabonnement est enregistré" in await response.text()
    assert await running.store.get_unsubscribed("acme", [CHLOE]) == {CHLOE: {"new-device"}}

    second = sample_event("s_new_device", user_id=CHLOE, log_id="900302", ip="192.0.2.32")
    await running.post_events(second)
    await wait_until(
        lambda: (
            '"reason": "user unsubscribed' in running.logs.getvalue()
            or "user unsubscribed from this rule" in running.logs.getvalue()
        ),
        timeout=10,
    )
    assert len(catcher.messages) == 1


async def test_an_email_queued_before_the_unsubscribe_click_is_not_sent(running, catcher):
    """The processor only decides for new events: an email already queued (here: dead after an SMTP
    outage, then retried by the operator) is checked again when it is claimed, and cancelled."""
    await running.post_events(sample_event("s_new_device", user_id=CHLOE, log_id="900501", ip="192.0.2.51"))
    [message] = await catcher.wait_for(1)
    https, _ = unsubscribe_link(message)
    catcher.fail_next(451, count=100)  # an outage: the next email cannot be sent for now
    await running.post_events(sample_event("s_new_device", user_id=CHLOE, log_id="900502", ip="192.0.2.52"))
    emails = await wait_emails(
        running.store, lambda es: any(e.log_id == "900502" and e.state.value == "dead" for e in es)
    )
    [queued] = [e for e in emails if e.log_id == "900502"]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            running.url + https[len(PUBLIC_URL) :],
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as response:
            assert response.status == 200
    catcher.clear_failures()
    drops_before = await unsubscribed_drops(running)
    assert await running.store.retry_email(queued.id, now=time.time())  # `streamer outbox retry` after the outage
    await wait_emails(running.store, lambda es: any(e.id == queued.id and e.state.value == "cancelled" for e in es))
    assert len(catcher.messages) == 1
    shown = run_cli("outbox", "show", str(queued.id), "-c", str(running.path))
    assert shown.returncode == 0, shown.stderr
    email = json.loads(shown.stdout)
    assert (email["state"], email["last_error"]) == ("cancelled", "user unsubscribed from this rule's emails")
    assert await unsubscribed_drops(running) == drops_before + 1


async def unsubscribed_drops(running) -> float:
    """The daemon's count of new-device emails not sent because the user unsubscribed (the metrics
    live as long as the test process: compare before and after)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}/metrics") as response:
            text = await response.text()
    series = 'streamer_emails_dropped_total{reason="unsubscribed",rule="new-device",tenant="acme"} '
    return next((float(line[len(series) :]) for line in text.splitlines() if line.startswith(series)), 0.0)


async def test_mailto_unsubscribe_through_the_inbound_listener(running, catcher):
    await running.post_events(sample_event("s_new_device", user_id=CHLOE, log_id="900401", ip="192.0.2.41"))
    [message] = await catcher.wait_for(1)
    _, mailto = unsubscribe_link(message)
    address, _, query = mailto[len("mailto:") :].partition("?")
    from urllib.parse import parse_qs

    subject = parse_qs(query)["subject"][0]
    mail = f"From: {CHLOE_EMAIL}\r\nTo: {address}\r\nSubject: {subject}\r\n\r\n\r\n".encode()
    assert (await smtp_send(running.daemon.inbound_port, address, mail, sender=CHLOE_EMAIL))[0] == 250
    assert await running.store.get_unsubscribed("acme", [CHLOE]) == {CHLOE: {"new-device"}}


# --- check and the command line --------------------------------------------------------------------------


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def test_check_refuses_unsubscribe_on_transactional_rules(tmp_path, standin, catcher):
    text = full_config(tmp_path, standin, catcher).replace(
        "    template: verify_email\n", "    template: verify_email\n    unsubscribe: true\n"
    )
    path = tmp_path / "streamer.yaml"
    path.write_text(text)
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 1
    assert "rules.0 (verify-email).unsubscribe: not allowed here (it creates a ticket)" in result.stdout
    path.write_text(full_config(tmp_path, standin, catcher).replace('  secret: "unsubscribe-secret-0123456789"\n', ""))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 1 and "(new-device).unsubscribe: needs unsubscribe.secret" in result.stdout
    path.write_text(full_config(tmp_path, standin, catcher))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_suppression_commands_add_list_and_remove(tmp_path, standin, catcher):
    path = tmp_path / "streamer.yaml"
    path.write_text(full_config(tmp_path, standin, catcher))
    added = run_cli(
        "suppression",
        "add",
        "Ana.Silva@Example.com",
        "--tenant",
        "acme",
        "--note",
        "asked by phone",
        "-c",
        str(path),
        "--json",
    )
    assert added.returncode == 0 and json.loads(added.stdout) == {"tenant": "acme", "address": ANA_EMAIL, "added": True}
    listed = json.loads(run_cli("suppression", "list", "-c", str(path), "--json").stdout)
    assert [(e["address"], e["reason"], e["source"], e["detail"]) for e in listed] == [
        (ANA_EMAIL, "manual", "cli", "asked by phone")
    ]
    table = run_cli("suppression", "list", "--tenant", "acme", "-c", str(path)).stdout
    assert table.splitlines()[0].split()[:4] == ["TENANT", "ADDRESS", "REASON", "SOURCE"] and ANA_EMAIL in table
    assert run_cli("suppression", "add", "not an address", "--tenant", "acme", "-c", str(path)).returncode == 1
    assert run_cli("suppression", "add", ANA_EMAIL, "--tenant", "nobody", "-c", str(path)).returncode == 1
    assert run_cli("suppression", "add", ANA_EMAIL, "-c", str(path)).returncode == 2  # --tenant required
    removed = run_cli("suppression", "remove", ANA_EMAIL, "--tenant", "acme", "-c", str(path))
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert run_cli("suppression", "remove", ANA_EMAIL, "--tenant", "acme", "-c", str(path)).returncode == 1
    assert json.loads(run_cli("suppression", "list", "-c", str(path), "--json").stdout) == []


def test_the_example_config_sections_are_valid_once_uncommented():
    from streamer.config import parse_config

    text = (REPO / "config" / "streamer.example.yaml").read_text()
    start = text.index("# suppression:")
    tail = "\n".join(re.sub(r"^# (?=\s*[a-z_]+:)", "", line) for line in text[start:].splitlines())
    env = {
        "STREAMER_VERP_SECRET": "v" * 32,
        "POSTMARK_WEBHOOK_PASSWORD": "p" * 32,
        "STREAMER_UNSUBSCRIBE_SECRET": "u" * 32,
        "ACME_CLIENT_ID": "id",
        "ACME_CLIENT_SECRET": "secret",
        "ACME_WEBHOOK_TOKEN": "token",
    }
    config = parse_config(text[:start] + tail, env=env)
    assert config.suppression.return_path == "bounces@bounces.acme.test"
    assert config.suppression.soft_bounces.window == 7 * 86400 and config.suppression.inbound.protocol == "smtp"
    assert config.suppression.webhooks.ses.topic_arns and config.suppression.webhooks.postmark.username == "postmark"
    assert config.unsubscribe.mailto == "unsubscribe@bounces.acme.test"
