"""MailCatcher: the in-process SMTP server used by tests and `streamer dev`, driven by aiosmtplib."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib
import pytest
import trustme

from streamer.devkit.mailcatcher import CaughtMessage, LoginAttempt, MailCatcher

from support.waiting import wait_until


def build(subject: str = "Bienvenue, Zoë", to: str = "Zoë <zoe@example.test>, bob@example.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Acme <no-reply@acme.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Verify: https://app.acme.test/verify?ticket=t1&lang=fr.\nOr https://acme.test/help\n")
    msg.add_alternative(
        '<p><a href="https://app.acme.test/verify?ticket=t1&amp;lang=fr">Vérifier</a>'
        ' <a href="mailto:help@acme.test">help</a> <a href="https://acme.test/help">aide</a></p>',
        subtype="html",
    )
    return msg.as_bytes(policy=SMTP_POLICY)


async def deliver(port: int, message: bytes = b"", *, rcpt: list[str] | None = None, count: int = 1, **kwargs) -> None:
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="test", **kwargs
    ) as smtp:
        for _ in range(count):
            await smtp.sendmail("no-reply@acme.test", rcpt or ["zoe@example.test"], message or build())


async def test_helpers(catcher):
    message = build()
    await deliver(catcher.port, message)
    [msg] = await catcher.wait_for(1)
    assert isinstance(msg, CaughtMessage)
    assert msg.mail_from == "no-reply@acme.test" and msg.rcpt_tos == ["zoe@example.test"]
    assert msg.subject == "Bienvenue, Zoë"
    assert msg.to == ["zoe@example.test", "bob@example.test"]
    assert "Vérifier" in msg.html
    assert msg.text.startswith("Verify: https://")
    assert msg.links == [
        "https://app.acme.test/verify?ticket=t1&lang=fr",
        "mailto:help@acme.test",
        "https://acme.test/help",
    ]
    assert msg.parsed["From"] == "Acme <no-reply@acme.test>"
    assert msg.data == message and msg.received_at.tzinfo is not None
    assert catcher.get(msg.id) is msg and catcher.get("nope") is None


async def test_text_only_message_has_no_html(catcher):
    await deliver(catcher.port, b"Subject: plain\r\nTo: a@example.test\r\n\r\nsee https://x.test/a, then stop.\r\n")
    [msg] = await catcher.wait_for(1)
    assert msg.html is None
    assert msg.links == ["https://x.test/a"]


async def test_wait_for_waits_and_times_out(catcher):
    waiter = asyncio.create_task(catcher.wait_for(3, timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await deliver(catcher.port, count=3)
    assert len(await waiter) == 3
    with pytest.raises(TimeoutError, match="caught 3 of 4"):
        await catcher.wait_for(4, timeout=0.05)


async def test_save_dir_writes_eml_files(tmp_path):
    catcher = MailCatcher(save_dir=tmp_path / "mail")
    port = await catcher.start()
    try:
        await deliver(port, count=2)
        caught = await catcher.wait_for(2)
    finally:
        await catcher.stop()
    files = sorted((tmp_path / "mail").iterdir())
    assert [f.name for f in files] == sorted(m.filename for m in caught)
    for msg in caught:
        assert re.fullmatch(rf"\d{{8}}T\d{{6}}\.\d{{6}}Z-{msg.id}\.eml", msg.filename)
        assert (tmp_path / "mail" / msg.filename).read_bytes() == msg.data


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_fail_next_then_recover(catcher, stage):
    catcher.fail_next(451, stage=stage, count=2)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.port, start_tls=False) as smtp:
        for _ in range(2):
            with pytest.raises((aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)) as info:
                await smtp.sendmail("a@acme.test", ["b@example.test"], build())
            codes = [r.code for r in info.value.recipients] if stage == "RCPT" else [info.value.code]
            assert codes == [451]
        await smtp.sendmail("a@acme.test", ["b@example.test"], build())
    assert len(await catcher.wait_for(1)) == 1


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_hold_next_keeps_the_client_waiting_for_the_reply_until_released(catcher, stage):
    held = catcher.hold_next(stage)
    sending = asyncio.create_task(deliver(catcher.port))
    await held.wait_arrived()
    assert not sending.done() and catcher.messages == []
    held.release()
    await asyncio.wait_for(sending, 10)
    assert len(await catcher.wait_for(1)) == 1


async def test_fail_next_custom_text_and_permanent_code(catcher):
    catcher.fail_next(550, "5.1.1 <b@example.test>: no such user", stage="RCPT")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await deliver(catcher.port, rcpt=["b@example.test"])
    assert (info.value.recipients[0].code, info.value.recipients[0].message) == (
        550,
        "5.1.1 <b@example.test>: no such user",
    )
    catcher.fail_next(554, stage="DATA")
    catcher.clear_failures()
    await deliver(catcher.port)


def test_fail_next_validates():
    catcher = MailCatcher()
    with pytest.raises(ValueError):
        catcher.fail_next(250)
    with pytest.raises(ValueError):
        catcher.fail_next(451, stage="EHLO")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        catcher.fail_next(451, count=0)


async def test_421_closes_the_connection(catcher):
    catcher.fail_next(421, stage="MAIL")
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.port, start_tls=False)
    await smtp.connect()
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        await smtp.sendmail("a@acme.test", ["b@example.test"], build())
    for _ in range(50):
        if catcher.active_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert catcher.active_connections == 0
    smtp.close()


async def test_counts_connections(catcher):
    await asyncio.gather(deliver(catcher.port, count=3), deliver(catcher.port, count=2))
    assert catcher.connections_opened == 2
    assert len(catcher.messages) == 5


async def test_subscribe_gets_new_messages(catcher):
    queue = catcher.subscribe()
    await deliver(catcher.port, count=2)
    first = await asyncio.wait_for(queue.get(), 5)
    second = await asyncio.wait_for(queue.get(), 5)
    assert [first, second] == catcher.messages
    catcher.unsubscribe(queue)
    await deliver(catcher.port)
    assert queue.empty()


async def test_slow_subscriber_is_bounded(catcher):
    queue = catcher.subscribe(maxsize=2)
    await deliver(catcher.port, count=5)
    assert queue.qsize() == 2 and len(catcher.messages) == 5


async def test_auth_required_and_checked():
    catcher = MailCatcher(auth=("mailer", "pw"))
    port = await catcher.start()
    try:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            await deliver(port)
        assert info.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await deliver(port, username="mailer", password="wrong")
        await deliver(port, username="mailer", password="pw")
        [msg] = await catcher.wait_for(1)
        assert msg.auth_user == "mailer" and msg.tls is False
        assert [a.success for a in catcher.logins][-1] is True
        assert all(isinstance(a, LoginAttempt) and "pw" not in repr(a) for a in catcher.logins)
    finally:
        await catcher.stop()


async def test_require_starttls():
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    catcher = MailCatcher(tls_context=server, require_starttls=True)
    port = await catcher.start()
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            await deliver(port)
        assert info.value.code == 530
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=client) as smtp:
            await smtp.sendmail("a@acme.test", ["b@example.test"], build())
        [msg] = await catcher.wait_for(1)
        assert msg.tls is True
        assert catcher.connections_opened == 2  # STARTTLS does not count as a new connection
    finally:
        await catcher.stop()


async def test_stop_hangs_up_and_start_again_keeps_messages(catcher):
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.port, start_tls=False)
    await smtp.connect()
    await smtp.sendmail("a@acme.test", ["b@example.test"], build())
    port = catcher.port
    await catcher.stop()
    await wait_until(lambda: not smtp.is_connected, timeout=5, what="the client seeing the hang-up")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert await catcher.start(port=port) == port
    await deliver(port)
    assert len(catcher.messages) == 2


async def test_many_messages_from_concurrent_clients_are_all_caught(catcher):
    # Nothing dropped or stuck (speed is bench/'s to measure, not a timed test's).
    await asyncio.gather(*(deliver(catcher.port, count=100) for _ in range(4)))
    assert len(await catcher.wait_for(400, timeout=60)) == 400


def test_start_in_thread_for_synchronous_callers():
    catcher = MailCatcher()
    port = catcher.start_in_thread()
    try:

        async def client_side() -> list[CaughtMessage]:
            waiter = asyncio.create_task(catcher.wait_for(2, timeout=5))  # wakes across threads
            queue = catcher.subscribe()
            await deliver(port, count=2)
            await asyncio.wait_for(queue.get(), 5)
            return await waiter

        caught = asyncio.run(client_side())
        assert len(caught) == 2
    finally:
        catcher.stop_in_thread()
    assert catcher._thread is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
