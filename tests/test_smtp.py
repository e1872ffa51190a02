"""SmtpPool and classify against real SMTP servers on 127.0.0.1 (the in-process MailCatcher)."""

from __future__ import annotations

import asyncio
import base64
import pickle
import socket
import ssl
import traceback
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import SmtpConfig
from streamer.devkit.mailcatcher import LoginAttempt, MailCatcher
from streamer.metrics import REGISTRY
from streamer.smtp import SmtpError, SmtpPermanent, SmtpPool, SmtpTransient, classify

from support.waiting import wait_until

PASSWORD = "s3cret-Pa55word!"
USER = "mailer"
FROM = "Acme <no-reply@acme.test>"


def make_message(to: str = "alice@example.test", subject: str = "Verify your email") -> bytes:
    msg = EmailMessage()
    msg["From"] = FROM
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Open https://app.acme.test/verify?ticket=abc\n.a line starting with a dot\n")
    msg.add_alternative('<p><a href="https://app.acme.test/verify?ticket=abc&amp;x=1">Verify</a></p>', subtype="html")
    return msg.as_bytes(policy=SMTP_POLICY)


MESSAGE = make_message()


def make_config(port: int, **overrides: object) -> SmtpConfig:
    values = {"host": "127.0.0.1", "port": port, "security": "none", "from": FROM, "pool_size": 4, "timeout_s": 5}
    values.update(overrides)
    return SmtpConfig.model_validate(values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


@pytest.fixture
async def pool(catcher):
    pool = SmtpPool(make_config(catcher.port))
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# --- delivery and connection reuse ------------------------------------------------------------


async def test_many_messages_share_a_few_connections(catcher, pool):
    replies = await asyncio.gather(*(pool.send(FROM, [f"user{i}@example.test"], MESSAGE) for i in range(60)))
    caught = await catcher.wait_for(60)
    assert len(caught) == 60
    assert catcher.connections_opened <= 4
    assert {m.id for m in caught} == {reply.rsplit(" ", 1)[-1] for reply in replies}  # the 250 text
    for _ in range(10):
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert catcher.connections_opened <= 4  # sequential sends reuse what is there


async def test_sequential_sends_use_one_connection(catcher, pool):
    for _ in range(10):
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert len(catcher.messages) == 10
    assert catcher.connections_opened == 1


async def test_bytes_arrive_unchanged_and_envelope_is_the_bare_address(catcher, pool):
    await pool.send(FROM, ["Alice <alice@example.test>"], MESSAGE)
    [caught] = await catcher.wait_for(1)
    assert caught.data == MESSAGE  # not re-serialised; dot-stuffing undone by the server
    assert caught.mail_from == "no-reply@acme.test"
    assert caught.rcpt_tos == ["alice@example.test"]


async def test_send_time_is_observed(catcher, pool):
    before = REGISTRY.get_sample_value("streamer_smtp_send_seconds_count") or 0
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    catcher.fail_next(550)
    with pytest.raises(SmtpPermanent):
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert REGISTRY.get_sample_value("streamer_smtp_send_seconds_count") == before + 2


# --- replies: the code decides, whatever the stage --------------------------------------------


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_4xx_is_transient_at_every_stage_and_the_connection_stays_usable(catcher, pool, stage):
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    catcher.fail_next(451, "4.3.0 try again later", stage=stage)
    with pytest.raises(SmtpTransient) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert (info.value.code, info.value.stage) == (451, stage)
    assert "try again later" in str(info.value)
    assert await pool.send(FROM, ["bob@example.test"], MESSAGE)  # recovery after RSET
    assert len(catcher.messages) == 2
    assert catcher.connections_opened == 1


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("code", [550, 554])
async def test_5xx_is_permanent_at_every_stage(catcher, pool, stage, code):
    catcher.fail_next(code, stage=stage)
    with pytest.raises(SmtpPermanent) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert (info.value.code, info.value.stage, info.value.permanent) == (code, stage, True)
    assert catcher.messages == []
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert catcher.connections_opened == 1


async def test_one_refused_recipient_sends_nothing(catcher, pool):
    catcher.fail_next(550, "5.1.1 no such user", stage="RCPT")
    with pytest.raises(SmtpPermanent) as info:
        await pool.send(FROM, ["ghost@example.test", "bob@example.test"], MESSAGE)
    assert "ghost@example.test" in str(info.value)
    assert catcher.messages == []  # all or nothing: a retry cannot duplicate for bob


async def test_mixed_refusals_are_permanent_if_any_is_5xx(catcher, pool):
    catcher.fail_next(451, stage="RCPT")
    catcher.fail_next(550, stage="RCPT")
    with pytest.raises(SmtpPermanent) as info:
        await pool.send(FROM, ["a@example.test", "b@example.test"], MESSAGE)
    assert info.value.code == 550


async def test_invalid_addresses_are_permanent_without_connecting(catcher, pool):
    for rcpt in (
        ["not-an-address"],
        ["bob@example.test\r\nRCPT TO:<evil@x>"],
        ["a b@example.test"],
        [],
        ["a@example.test, b@example.test"],
        ["a@"],
        ["@example.test"],
        "bob@example.test",
    ):
        with pytest.raises(SmtpPermanent):
            await pool.send(FROM, rcpt, MESSAGE)
    with pytest.raises(SmtpPermanent):
        await pool.send("evil\r\n@acme.test", ["bob@example.test"], MESSAGE)
    assert catcher.connections_opened == 0


async def test_non_ascii_address_uses_smtputf8(catcher, pool):
    await pool.send(FROM, ["zoë@exämple.test"], MESSAGE)
    [caught] = await catcher.wait_for(1)
    assert caught.rcpt_tos == ["zoë@exämple.test"]


# --- the server going away ----------------------------------------------------------------------


async def test_server_down_is_transient():
    pool = SmtpPool(make_config(free_port(), username=USER, password=PASSWORD))
    with pytest.raises(SmtpTransient) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert info.value.stage == "connect"
    assert PASSWORD not in full_text(info.value)
    with pytest.raises(SmtpTransient):
        await pool.check()
    await pool.close()


async def test_server_restart_is_transparent(catcher):
    pool = SmtpPool(make_config(catcher.port, pool_size=2))
    await asyncio.gather(*(pool.send(FROM, ["bob@example.test"], MESSAGE) for _ in range(4)))
    port = catcher.port
    await catcher.stop()
    restarted = MailCatcher()
    await restarted.start(port=port)
    try:
        for _ in range(3):
            await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert len(restarted.messages) == 3
    finally:
        await pool.close()
        await restarted.stop()


async def test_server_restart_not_yet_noticed_is_transparent():
    """The server restarts while our loop is busy: the pooled connection still looks open and
    only fails when MAIL is sent on it, so the pool must reopen and go on, once."""
    catcher = MailCatcher()
    port = catcher.start_in_thread()
    pool = SmtpPool(make_config(port))
    try:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        catcher.stop_in_thread()  # blocking on purpose: our loop sees nothing of the hang-up yet
        catcher.start_in_thread(port=port)
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert len(catcher.messages) == 2
        assert catcher.connections_opened == 2
        assert pool.connections_opened == 2
    finally:
        await pool.close()
        await catcher.stop()


async def test_idle_connection_closed_by_server_is_reopened():
    catcher = MailCatcher(idle_timeout=0.2)
    port = await catcher.start()
    pool = SmtpPool(make_config(port))
    try:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        await wait_until(lambda: catcher.active_connections == 0, what="the server closing the idle connection")
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert len(catcher.messages) == 2
        assert catcher.connections_opened == 2
    finally:
        await pool.close()
        await catcher.stop()


async def test_stale_connection_discovered_on_mail_is_retried_once(catcher, pool):
    """A pooled connection that answers MAIL with 421 (server closing) is replaced transparently."""
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    catcher.fail_next(421, stage="MAIL")
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert len(catcher.messages) == 2
    assert catcher.connections_opened == 2


async def test_stale_retry_happens_only_once(catcher, pool):
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    catcher.fail_next(421, stage="MAIL", count=2)
    with pytest.raises(SmtpTransient) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert info.value.code == 421
    assert catcher.connections_opened == 2


async def test_421_on_a_fresh_connection_is_not_retried(catcher, pool):
    catcher.fail_next(421, stage="MAIL")
    with pytest.raises(SmtpTransient):
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert catcher.connections_opened == 1


async def test_no_resend_once_data_has_started(catcher, pool):
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    catcher.fail_next(421, stage="DATA")
    with pytest.raises(SmtpTransient) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert info.value.stage == "DATA"
    assert catcher.connections_opened == 1  # no second attempt on a new connection
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert len(catcher.messages) == 2


# --- TLS and AUTH ---------------------------------------------------------------------------------


async def test_starttls_with_auth(server_tls, client_tls):
    catcher = MailCatcher(tls_context=server_tls, require_starttls=True, auth=(USER, PASSWORD))
    port = await catcher.start()
    pool = SmtpPool(make_config(port, security="starttls", username=USER, password=PASSWORD), tls_context=client_tls)
    try:
        await pool.check()
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        [caught] = await catcher.wait_for(1)
        assert caught.tls and caught.auth_user == USER
    finally:
        await pool.close()
        await catcher.stop()


async def test_starttls_required_but_not_offered_fails(catcher):
    pool = SmtpPool(make_config(catcher.port, security="starttls"))
    with pytest.raises(SmtpTransient) as info:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert "STARTTLS" in str(info.value)
    assert catcher.messages == []


async def test_implicit_tls(server_tls, client_tls):
    catcher = MailCatcher(tls_context=server_tls, implicit_tls=True, auth=(USER, PASSWORD))
    port = await catcher.start()
    pool = SmtpPool(make_config(port, security="tls", username=USER, password=PASSWORD), tls_context=client_tls)
    try:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        [caught] = await catcher.wait_for(1)
        assert caught.tls and caught.auth_user == USER
    finally:
        await pool.close()
        await catcher.stop()


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_untrusted_certificate_is_transient(server_tls, security):
    catcher = MailCatcher(tls_context=server_tls, implicit_tls=security == "tls")
    port = await catcher.start()
    pool = SmtpPool(make_config(port, security=security))  # system CAs: the throwaway CA is unknown
    try:
        with pytest.raises(SmtpTransient) as info:
            await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert info.value.stage == "connect"
        assert catcher.messages == []
    finally:
        await pool.close()
        await catcher.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_mechanisms(mechanism):
    catcher = MailCatcher(auth=(USER, PASSWORD), auth_mechanisms=(mechanism,))
    port = await catcher.start()
    pool = SmtpPool(make_config(port, username=USER, password=PASSWORD))
    try:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert catcher.logins == [LoginAttempt(mechanism, USER, True)]
        assert catcher.messages[0].auth_user == USER
    finally:
        await pool.close()
        await catcher.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_wrong_password_is_transient_and_never_shown(mechanism):
    catcher = MailCatcher(auth=(USER, "the-right-one"), auth_mechanisms=(mechanism,))
    port = await catcher.start()
    pool = SmtpPool(make_config(port, username=USER, password=PASSWORD))
    try:
        with pytest.raises(SmtpTransient) as info:
            await pool.send(FROM, ["bob@example.test"], MESSAGE)
        assert (info.value.code, info.value.stage) == (535, "connect")
        with pytest.raises(SmtpTransient) as checked:
            await pool.check()
        for exc in (info.value, checked.value):
            text = full_text(exc)
            assert PASSWORD not in text
            assert base64.b64encode(PASSWORD.encode()).decode() not in text
        assert PASSWORD not in repr(pool)
        assert catcher.logins[-1].success is False
        assert catcher.messages == []
    finally:
        await pool.close()
        await catcher.stop()


async def test_password_echoed_by_server_is_redacted():
    exc = aiosmtplib.SMTPAuthenticationError(535, f"bad credentials {PASSWORD}")
    err = classify(exc, secrets=[PASSWORD])
    assert PASSWORD not in str(err) and "[redacted]" in str(err)


# --- readiness and shutdown ---------------------------------------------------------------------


async def test_check_uses_and_keeps_a_pooled_connection(catcher, pool):
    await pool.check()
    await pool.check()
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert catcher.connections_opened == 1


async def test_check_while_every_slot_is_busy(catcher):
    pool = SmtpPool(make_config(catcher.port, pool_size=1))
    try:
        await pool.send(FROM, ["bob@example.test"], MESSAGE)
        async with pool._slots:  # as if a send were in flight
            await asyncio.wait_for(pool.check(), 5)
    finally:
        await pool.close()


async def test_close_quits_idle_connections_and_refuses_new_sends(catcher, pool):
    await asyncio.gather(*(pool.send(FROM, ["bob@example.test"], MESSAGE) for _ in range(8)))
    assert catcher.active_connections > 0
    await pool.close()
    for _ in range(50):
        if catcher.active_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert catcher.active_connections == 0
    with pytest.raises(SmtpTransient):
        await pool.send(FROM, ["bob@example.test"], MESSAGE)


async def test_cancelled_send_does_not_poison_the_pool(catcher, pool):
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    held = catcher.hold_next("MAIL")
    task = asyncio.create_task(pool.send(FROM, ["bob@example.test"], MESSAGE))
    await held.wait_arrived()  # the task now waits for the reply to MAIL
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    held.release()
    await pool.send(FROM, ["bob@example.test"], MESSAGE)
    assert catcher.messages[-1].rcpt_tos == ["bob@example.test"]


# --- classify: pure unit tests ----------------------------------------------------------------


def refused(code: int, rcpt: str = "bob@example.test") -> aiosmtplib.SMTPRecipientRefused:
    return aiosmtplib.SMTPRecipientRefused(code, "refused", rcpt)


@pytest.mark.parametrize(
    "exc, kind, code, stage",
    [
        (aiosmtplib.SMTPSenderRefused(550, "no", "a@x"), SmtpPermanent, 550, "MAIL"),
        (aiosmtplib.SMTPSenderRefused(451, "later", "a@x"), SmtpTransient, 451, "MAIL"),
        (refused(550), SmtpPermanent, 550, "RCPT"),
        (aiosmtplib.SMTPRecipientsRefused([refused(451)]), SmtpTransient, 451, "RCPT"),
        (aiosmtplib.SMTPRecipientsRefused([refused(550)]), SmtpPermanent, 550, "RCPT"),
        (aiosmtplib.SMTPRecipientsRefused([refused(451, "a@x"), refused(552, "b@x")]), SmtpPermanent, 552, "RCPT"),
        (aiosmtplib.SMTPDataError(550, "rejected"), SmtpPermanent, 550, "DATA"),
        (aiosmtplib.SMTPDataError(451, "later"), SmtpTransient, 451, "DATA"),
        (aiosmtplib.SMTPDataError(421, "closing"), SmtpTransient, 421, "DATA"),
        (aiosmtplib.SMTPResponseException(554, "no"), SmtpPermanent, 554, None),
        (aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response line"), SmtpTransient, -1, None),
        (aiosmtplib.SMTPConnectError("refused"), SmtpTransient, None, "connect"),
        (aiosmtplib.SMTPConnectResponseError(554, "go away"), SmtpTransient, 554, "connect"),
        (aiosmtplib.SMTPHeloError(501, "bad helo"), SmtpTransient, 501, "connect"),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), SmtpTransient, 535, "connect"),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), SmtpTransient, None, None),
        (aiosmtplib.SMTPReadTimeoutError("Timed out"), SmtpTransient, None, None),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), SmtpTransient, None, "connect"),
        (ConnectionRefusedError(111, "Connection refused"), SmtpTransient, None, None),
        (ConnectionResetError(104, "Connection reset by peer"), SmtpTransient, None, None),
        (OSError(113, "No route to host"), SmtpTransient, None, None),
        (TimeoutError(), SmtpTransient, None, None),
        (ssl.SSLCertVerificationError("certificate verify failed"), SmtpTransient, None, "connect"),
        (aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."), SmtpTransient, None, None),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server"), SmtpPermanent, None, None),
        (ValueError("Address contains characters not permitted"), SmtpPermanent, None, None),
    ],
)
def test_classify(exc, kind, code, stage):
    err = classify(exc)
    assert type(err) is kind
    assert isinstance(err, SmtpError)
    assert (err.code, err.stage) == (code, stage)
    assert err.message and "\n" not in err.message


def test_classify_same_code_same_answer_whatever_the_stage():
    for code, kind in ((450, SmtpTransient), (451, SmtpTransient), (550, SmtpPermanent), (553, SmtpPermanent)):
        answers = {
            type(classify(e))
            for e in (
                aiosmtplib.SMTPSenderRefused(code, "x", "a@x"),
                refused(code),
                aiosmtplib.SMTPDataError(code, "x"),
            )
        }
        assert answers == {kind}


def test_classify_connect_stage_is_transient_even_for_5xx():
    assert type(classify(aiosmtplib.SMTPResponseException(554, "TLS not available"), stage="connect")) is SmtpTransient


def test_classify_keeps_an_smtp_error_and_describes_causes():
    err = SmtpPermanent(550, "gone", stage="RCPT")
    assert classify(err) is err
    lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
    lost.__cause__ = ConnectionResetError("reset by peer")
    assert "reset by peer" in classify(lost).message
    multi = classify(aiosmtplib.SMTPDataError(554, "first line\nsecond line"))
    assert multi.message == "first line second line"
    assert str(multi) == "DATA: 554 first line second line"


def test_errors_survive_pickling():
    err = pickle.loads(pickle.dumps(SmtpTransient(451, "later", stage="RCPT")))
    assert (type(err), err.code, err.message, err.stage) == (SmtpTransient, 451, "later", "RCPT")


_ATOM = st.text(alphabet="abcXYZ09.!#$%&'*+/=?^_`{|}~-\" <>,@\r\n\\[]()", min_size=1, max_size=12)


@settings(max_examples=500, deadline=None)
@given(_ATOM, _ATOM)
def test_the_plain_address_shortcut_agrees_with_the_full_parse(local, domain):
    """The envelope's fast path may only accept what the full parse accepts, unchanged."""
    from email.utils import getaddresses

    from aiosmtplib.email import parse_address

    from streamer.smtp import _PLAIN_ADDRESS

    raw = f"{local}@{domain}"
    if _PLAIN_ADDRESS.match(raw):
        pairs = getaddresses([raw])
        assert len(pairs) == 1 and parse_address(pairs[0][1]) == raw
