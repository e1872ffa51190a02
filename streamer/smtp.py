"""SMTP delivery through a small pool of persistent connections.

Opening a connection (TCP, EHLO, STARTTLS, AUTH) costs about ten times a whole transaction, so a
few connections are opened lazily and kept. Every failure is turned into one of two answers the
outbox can act on: `SmtpTransient` (try again later) or `SmtpPermanent` (give up, the email is
dead). A reply is judged by its code alone, whatever command it answered, so a 550 to RCPT and a
550 to DATA lead to the same outcome.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from email.utils import getaddresses
from functools import lru_cache
from typing import Any, ClassVar, Final, Literal

import aiosmtplib
from aiosmtplib.email import parse_address

from streamer.config import SmtpConfig
from streamer.logs import get_logger
from streamer.metrics import SMTP_SEND_SECONDS

__all__ = ["SmtpError", "SmtpPermanent", "SmtpPool", "SmtpTransient", "Stage", "classify"]

log = get_logger("streamer.smtp")

#: Where in the conversation a failure happened. "connect" covers TCP, TLS, greeting, EHLO, AUTH.
Stage = Literal["connect", "MAIL", "RCPT", "DATA"]

# Reply codes the pool acts on (RFC 5321 §4.2.3).
SERVICE_UNAVAILABLE: Final = 421  # "closing transmission channel": the connection is gone
TRANSIENT_CLASS: Final = 4  # 4yz: transient negative completion
PERMANENT_CLASS: Final = 5  # 5yz: permanent negative completion

#: QUIT at close() is a courtesy; never let a slow server hold up shutdown for long.
QUIT_TIMEOUT_S: Final = 5.0


# --- errors ---------------------------------------------------------------------------------


class SmtpError(Exception):
    """An SMTP failure already judged, so callers decide on the class alone, never on text."""

    permanent: ClassVar[bool] = False

    def __init__(self, code: int | None, message: str, *, stage: Stage | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.stage = stage

    def __str__(self) -> str:
        text = f"{self.code} {self.message}" if self.code is not None else self.message
        return f"{self.stage}: {text}" if self.stage else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, stage={self.stage!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only `stage` needs help to survive pickling
        return (_rebuild, (type(self), self.code, self.message, self.stage))


def _rebuild(cls: type[SmtpError], code: int | None, message: str, stage: Stage | None) -> SmtpError:
    return cls(code, message, stage=stage)


class SmtpTransient(SmtpError):
    """Worth retrying: 4xx replies, network trouble, TLS or login problems with the server."""


class SmtpPermanent(SmtpError):
    """Retrying cannot help: 5xx to MAIL, RCPT or DATA, or an address SMTP cannot carry."""

    permanent = True


# --- classification -------------------------------------------------------------------------

_SETUP_ERRORS = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPAuthenticationError,
    ssl.SSLError,
    ssl.CertificateError,
)


def _stage_of(exc: BaseException) -> Stage | None:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "MAIL"
    if isinstance(exc, (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPRecipientsRefused)):
        return "RCPT"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "DATA"
    if isinstance(exc, _SETUP_ERRORS):
        return "connect"
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> tuple[int | None, str]:
    """The reply code (if the server sent one) and a one-line human description."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        if len(refused) == 1:
            return refused[0].code, _one_line(f"<{refused[0].recipient}>: {refused[0].message}")
        worst = next((r for r in refused if r.code // 100 == PERMANENT_CLASS), refused[0]) if refused else None
        text = "; ".join(f"<{r.recipient}>: {r.code} {r.message}" for r in refused)
        return (worst.code if worst else None), _one_line(text or "all recipients refused")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return exc.code, _one_line(f"<{exc.recipient}>: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code, _one_line(exc.message)
    if isinstance(exc, aiosmtplib.SMTPException):
        text = exc.message
        cause = exc.__cause__
        if cause is not None and str(cause) and str(cause) not in text:
            text = f"{text} ({type(cause).__name__}: {cause})"
        return None, _one_line(text)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return None, _one_line(f"timed out{': ' + str(exc) if str(exc) else ''}")
    return None, _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def classify(exc: BaseException, *, stage: Stage | None = None, secrets: Iterable[str] = ()) -> SmtpError:
    """Judge any failure of an SMTP exchange as transient or permanent.

    The reply code decides, the same way whatever command it answered: 5xx → permanent, anything
    else (4xx, a lost or refused connection, a timeout) → transient. An address that cannot be put
    on the wire (ValueError, or SMTPUTF8 missing on the server) is permanent too. Failures while
    setting up the connection (`stage="connect"`: greeting, EHLO, STARTTLS, AUTH) are transient
    even with a 5xx: they say nothing about the message, and an operator fixing the server or the
    credentials should see the queue drain rather than every email dead. `secrets` (password
    forms) are removed from the message in case a server echoes them.
    """
    if isinstance(exc, SmtpError):
        return exc
    stage = stage or _stage_of(exc)
    code, message = _describe(exc)
    message = _scrub(message, secrets)
    if stage == "connect":
        return SmtpTransient(code, message, stage=stage)
    if code is not None and code // 100 == PERMANENT_CLASS:
        return SmtpPermanent(code, message, stage=stage)
    if code is None and isinstance(exc, (ValueError, aiosmtplib.SMTPNotSupported)):
        return SmtpPermanent(None, message, stage=stage)
    return SmtpTransient(code, message, stage=stage)


def _secret_forms(username: str | None, password: str | None) -> list[str]:
    """The password as it may travel: raw, and base64 as AUTH LOGIN and AUTH PLAIN send it."""
    if not password:
        return []
    login = base64.b64encode(password.encode()).decode()
    plain = base64.b64encode(f"\0{username or ''}\0{password}".encode()).decode()
    return sorted({password, login, plain}, key=len, reverse=True)


# --- envelope checks --------------------------------------------------------------------------


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
#: dot-atom @ LDH labels (RFC 5322 §3.4.1 without quotes or literals).
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\Z"
)


@lru_cache(maxsize=4096)
def _one_address(raw: str) -> str:
    """The addr-spec of "addr" or "Name <addr>"; ValueError for anything else (lists, CR/LF …)."""
    if not isinstance(raw, str) or _CONTROL_CHARS.search(raw):
        raise ValueError("control characters")
    if _PLAIN_ADDRESS.match(raw):  # what message.envelope() hands over: nothing left to parse
        return raw
    pairs = getaddresses([raw])
    if len(pairs) != 1 or not pairs[0][1]:
        raise ValueError("not exactly one address")
    address = parse_address(pairs[0][1])  # aiosmtplib's check: nothing that could end the command
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        raise ValueError("not local@domain")
    return address


def _check_envelope(mail_from: str, rcpt_to: Sequence[str]) -> tuple[str, list[str]]:
    """Validate addresses before touching the network: a bad address is the email's own fault.

    Strict on purpose: email.utils.parseaddr would quietly keep the first of "a@x, b@y" or the
    part before a CR LF, sending to someone the caller did not name.
    """
    if isinstance(rcpt_to, str) or not rcpt_to:
        raise SmtpPermanent(None, "no recipient given (rcpt_to must be a non-empty list)", stage="RCPT")
    try:
        sender = _one_address(mail_from) if mail_from else ""  # "" is the null reverse-path <>
    except ValueError:
        raise SmtpPermanent(None, f"invalid sender address {mail_from!r}", stage="MAIL") from None
    recipients = []
    for address in rcpt_to:
        try:
            recipients.append(_one_address(address))
        except ValueError:
            raise SmtpPermanent(None, f"invalid recipient address {address!r}", stage="RCPT") from None
    return sender, recipients


class _StaleConnection(Exception):
    """A reused connection turned out dead before anything was sent: open a new one, once."""


#: Failures that mean the connection itself is gone (SMTPServerDisconnected and timeouts are OSErrors).
_DEAD_CONNECTION = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)

_local_hostname: str | None = None


async def _ehlo_name() -> str:
    """Our FQDN for EHLO, looked up once per process (it may hit DNS)."""
    global _local_hostname
    if _local_hostname is None:
        _local_hostname = await asyncio.to_thread(socket.getfqdn)
    return _local_hostname


# --- the pool ---------------------------------------------------------------------------------


class SmtpPool:
    """Up to `pool_size` persistent SMTP connections, each carrying one transaction at a time."""

    def __init__(self, config: SmtpConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._tls_context = tls_context
        self._password = config.password.get_secret_value() if config.password else None
        self._secrets = _secret_forms(config.username, self._password)
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[aiosmtplib.SMTP] = []  # LIFO: the freshest connection is the least likely stale
        self._closed = False
        #: Connections opened so far (for tests and debugging; the catcher counts them too).
        self.connections_opened = 0

    def __repr__(self) -> str:
        cfg = self._config
        return f"SmtpPool({cfg.host}:{cfg.port}, security={cfg.security}, size={cfg.pool_size}, idle={len(self._idle)})"

    async def __aenter__(self) -> SmtpPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public API ----------------------------------------------------------------------------

    async def send(self, mail_from: str, rcpt_to: list[str], message: bytes) -> str:
        """Deliver pre-built message bytes; return the server's text for the 250 to DATA.

        All or nothing: if any recipient is refused, the envelope is reset and nothing is sent, so
        a retry never duplicates the email for the recipients that were accepted. `mail_from` may
        be a full "Name <addr>" (the config's `from`); only the address goes on the wire.
        Raises SmtpTransient or SmtpPermanent.
        """
        sender, recipients = _check_envelope(mail_from, rcpt_to)
        if self._closed:
            raise SmtpTransient(None, "the SMTP pool is closed")
        async with self._slots:
            started = time.perf_counter()
            try:
                return await self._send(sender, recipients, message)
            finally:
                SMTP_SEND_SECONDS.observe(time.perf_counter() - started)

    async def check(self) -> None:
        """Readiness: prove the server answers (NOOP on a pooled or a fresh connection)."""
        if self._closed:
            raise SmtpTransient(None, "the SMTP pool is closed")
        if self._slots.locked():
            # Every connection is busy sending: probe with a throwaway so /readyz never queues.
            conn = await self._open()
            try:
                await self._noop(conn)
            finally:
                await self._quit(conn)
            return
        async with self._slots:
            conn, reused = await self._checkout()
            try:
                await self._noop(conn)
            except SmtpError:
                if not reused:
                    raise
                conn = await self._open()  # the pooled one had gone stale
                await self._noop(conn)
            self._checkin(conn)

    async def close(self) -> None:
        """QUIT idle connections; connections busy now are closed when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    # -- connections -----------------------------------------------------------------------------

    async def _open(self) -> aiosmtplib.SMTP:
        cfg = self._config
        conn: aiosmtplib.SMTP | None = None
        try:
            conn = aiosmtplib.SMTP(
                hostname=cfg.host,
                port=cfg.port,
                timeout=cfg.timeout_s,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",  # True: required (fails if not offered); False: never
                tls_context=self._tls_context,
                username=cfg.username,
                password=self._password if cfg.username else None,
                local_hostname=await _ehlo_name(),
            )
            await conn.connect()
            if conn.is_ehlo_or_helo_needed:  # so MAIL sees the extensions (SIZE, SMTPUTF8 …)
                try:
                    await conn.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await conn.helo()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if not isinstance(exc, Exception):
                raise
            raise classify(exc, stage="connect", secrets=self._secrets) from None
        self.connections_opened += 1
        log.debug("smtp_connection_opened", host=cfg.host, port=cfg.port, security=cfg.security)
        return conn

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A pooled connection if one is alive (reused=True), else a new one."""
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn, True
            conn.close()  # the server hung up while it sat idle, and we already noticed
        return await self._open(), False

    def _checkin(self, conn: aiosmtplib.SMTP) -> None:
        if self._closed or not conn.is_connected:
            conn.close()
        else:
            self._idle.append(conn)

    @staticmethod
    def _discard(conn: aiosmtplib.SMTP) -> None:
        conn.close()

    async def _quit(self, conn: aiosmtplib.SMTP) -> None:
        try:
            if conn.is_connected:
                await asyncio.wait_for(conn.quit(), min(QUIT_TIMEOUT_S, self._config.timeout_s))
        except Exception:
            pass  # it is going away either way
        finally:
            conn.close()

    async def _noop(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.noop()
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, Exception):
                raise
            raise classify(exc, stage="connect", secrets=self._secrets) from None

    # -- one transaction ---------------------------------------------------------------------------

    async def _send(self, sender: str, recipients: list[str], message: bytes) -> str:
        conn, reused = await self._checkout()
        try:
            return await self._transaction(conn, reused, sender, recipients, message)
        except _StaleConnection as stale:
            log.info("smtp_connection_stale", reason=str(stale))
        conn = await self._open()
        return await self._transaction(conn, False, sender, recipients, message)

    def _mail_options(
        self, conn: aiosmtplib.SMTP, sender: str, recipients: list[str], message: bytes
    ) -> tuple[list[str], str]:
        options: list[str] = []
        encoding = "ascii"
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            if not conn.supports_extension("smtputf8"):
                raise aiosmtplib.SMTPNotSupported("the server does not offer SMTPUTF8, needed for a non-ASCII address")
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if not message.isascii() and conn.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if conn.supports_extension("size"):
            bare_newlines = message.count(b"\n") - message.count(b"\r\n")
            options.append(f"SIZE={len(message) + bare_newlines}")
        return options, encoding

    async def _transaction(
        self, conn: aiosmtplib.SMTP, reused: bool, sender: str, recipients: list[str], message: bytes
    ) -> str:
        """MAIL, RCPT…, DATA on one connection; leaves it pooled, reset, or closed."""
        try:
            options, encoding = self._mail_options(conn, sender, recipients, message)
        except aiosmtplib.SMTPNotSupported as exc:
            self._checkin(conn)
            raise classify(exc, stage="MAIL") from None
        stage: Stage = "MAIL"
        try:
            await conn.mail(sender, options=options, encoding=encoding)
            stage = "RCPT"
            refused: list[aiosmtplib.SMTPRecipientRefused] = []
            for recipient in recipients:
                try:
                    await conn.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if not conn.is_connected:  # 421: the server closed the channel
                        raise
                    refused.append(exc)
            if refused:
                raise aiosmtplib.SMTPRecipientsRefused(refused)
            stage = "DATA"
            response = await conn.data(message)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled mid-conversation: state unknown
                self._discard(conn)
                raise
            # Only the first command on a reused connection may be retried: nothing of this
            # message has been accepted yet. Once DATA has started we never send twice.
            if reused and stage == "MAIL" and self._is_dead(exc, conn):
                self._discard(conn)
                raise _StaleConnection(_describe(exc)[1]) from None
            await self._after_failure(conn, exc)
            raise classify(exc, stage=stage, secrets=self._secrets) from None
        self._checkin(conn)
        return response.message

    @staticmethod
    def _is_dead(exc: Exception, conn: aiosmtplib.SMTP) -> bool:
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return exc.code == SERVICE_UNAVAILABLE or not conn.is_connected
        return isinstance(exc, _DEAD_CONNECTION)

    async def _after_failure(self, conn: aiosmtplib.SMTP, exc: Exception) -> None:
        """A refusal leaves a healthy session once RSET clears the envelope; anything else is closed."""
        replied = isinstance(exc, (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused))
        if not (replied and conn.is_connected):
            self._discard(conn)
            return
        try:
            await conn.rset()
        except BaseException as rset_exc:
            self._discard(conn)
            if not isinstance(rset_exc, Exception):
                raise
            return
        self._checkin(conn)
