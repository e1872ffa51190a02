"""An in-process SMTP server that keeps what it receives, for tests and `streamer dev`.

It runs aiosmtpd's SMTP protocol on the caller's own event loop (no thread, so a test needs no
locks and no sleeps), or in a thread of its own for synchronous callers. Besides catching mail it
can play a misbehaving server: refuse the next commands with chosen replies (`fail_next`), require
STARTTLS or AUTH, speak implicit TLS, and drop idle connections, so delivery code is tested against
real replies on a real socket. Messages are parsed only when a helper is first used, so catching
stays cheap at hundreds of messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.parser
import email.policy
import hmac
import re
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["CaughtMessage", "LoginAttempt", "MailCatcher"]

FailStage = Literal["MAIL", "RCPT", "DATA"]

# Replies, in aiosmtpd's wording where it has one.
STATUS_OK: Final = "250 OK"
STATUS_AUTH_REQUIRED: Final = "530 5.7.0 Authentication required"
#: Default texts for `fail_next` when the caller gives only a code.
DEFAULT_FAILURE_TEXT: Final = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox unavailable, try again later",
    451: "4.3.0 Local error in processing, try again later",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 Mailbox unavailable",
    552: "5.3.4 Message size exceeds fixed limit",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.6.0 Transaction failed",
}
SERVICE_UNAVAILABLE: Final = 421  # RFC 5321: the server closes the connection after this reply
FAIL_STAGES: Final = ("MAIL", "RCPT", "DATA")
SERVER_NAME: Final = "mailcatcher.localhost"
SUBSCRIBER_QUEUE_SIZE: Final = 1000

_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'()\[\]]+")


# --- caught messages ----------------------------------------------------------------------------


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            self.links.extend(value for name, value in attrs if name == "href" and value)


@dataclass(eq=False)
class CaughtMessage:
    """One accepted message: the envelope, the exact bytes, and lazy views of the content."""

    id: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: datetime
    #: True if the session was encrypted (STARTTLS or implicit TLS).
    tls: bool = False
    #: The AUTH login of the session, if it authenticated.
    auth_user: str | None = None
    peer: Any = field(default=None, repr=False)

    @cached_property
    def parsed(self) -> EmailMessage:
        """The message parsed with the modern email API (line endings normalised to \\n)."""
        parser = email.parser.BytesParser(policy=email.policy.default)
        return parser.parsebytes(self.data.replace(b"\r\n", b"\n"))  # type: ignore[return-value]

    @property
    def filename(self) -> str:
        return f"{self.received_at.strftime('%Y%m%dT%H%M%S.%fZ')}-{self.id}.eml"

    @property
    def subject(self) -> str:
        return str(self.parsed.get("subject", ""))

    @property
    def to(self) -> list[str]:
        """Addresses of the To header (not the envelope: see `rcpt_tos`)."""
        return [addr for _name, addr in getaddresses([str(v) for v in self.parsed.get_all("to", [])]) if addr]

    @property
    def from_(self) -> str:
        return str(self.parsed.get("from", ""))

    def _part(self, subtype: str) -> str | None:
        part = self.parsed.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        return part.get_content()

    @property
    def html(self) -> str | None:
        return self._part("html")

    @property
    def text(self) -> str | None:
        return self._part("plain")

    @property
    def links(self) -> list[str]:
        """URLs of the HTML links (entities decoded), then any others in the text, without repeats."""
        found: list[str] = []
        if (html := self.html) is not None:
            parser = _LinkParser()
            parser.feed(html)
            parser.close()
            found += parser.links
        if (text := self.text) is not None:
            found += [url.rstrip(".,;:!?") for url in _URL_IN_TEXT.findall(text)]
        return list(dict.fromkeys(found))


@dataclass(frozen=True)
class LoginAttempt:
    """An AUTH attempt as the catcher saw it (never the password)."""

    mechanism: str
    username: str
    success: bool


# --- the aiosmtpd side --------------------------------------------------------------------------


@dataclass(eq=False)
class Hold:
    """A command whose reply the catcher holds back (see `MailCatcher.hold_next`)."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    async def wait_arrived(self, timeout: float = 10) -> None:
        """Until the command came in (its sender now waits for the reply)."""
        if not await asyncio.to_thread(self.arrived.wait, timeout):
            raise TimeoutError("the held command did not arrive")

    def release(self) -> None:
        """Send the reply."""
        self.released.set()


class _Session(Session):
    """aiosmtpd's session without the deprecation warning its own AUTH code triggers on every login."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _CatcherSMTP(SMTP):
    """aiosmtpd's protocol, plus connection bookkeeping and "421 means hang up"."""

    def __init__(self, catcher: MailCatcher, *args: Any, **kwargs: Any) -> None:
        self._catcher = catcher
        super().__init__(*args, **kwargs)

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        is_new = self.transport is None  # STARTTLS calls this again for the same connection
        super().connection_made(transport)
        if is_new:
            self._catcher._connection_made(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._catcher._connection_lost(self)

    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status if isinstance(status, bytes) else str(status).encode()
        if text.startswith(str(SERVICE_UNAVAILABLE).encode()) and self.transport is not None:
            self.transport.close()


class _Handler:
    """aiosmtpd hooks: scripted failures first, then accept."""

    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._catcher.auth is not None and not session.authenticated:
            return STATUS_AUTH_REQUIRED
        await self._catcher._hold("MAIL")
        if failure := self._catcher._take_failure("MAIL"):
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return STATUS_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        await self._catcher._hold("RCPT")
        if failure := self._catcher._take_failure("RCPT"):
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return STATUS_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._catcher._hold("DATA")
        if failure := self._catcher._take_failure("DATA"):
            return failure
        message = self._catcher._catch(envelope, session)
        return f"{STATUS_OK} queued as {message.id}"


# --- the catcher --------------------------------------------------------------------------------


class MailCatcher:
    """A local SMTP server that keeps every message it accepts, in memory (and optionally on disk)."""

    def __init__(
        self,
        *,
        save_dir: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth: tuple[str, str] | None = None,
        implicit_tls: bool = False,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        idle_timeout: float = 300,
        hostname: str = SERVER_NAME,
    ) -> None:
        """`tls_context` (a server context) offers STARTTLS, or with `implicit_tls` wraps the whole
        connection as on port 465. `auth=(user, password)` requires AUTH before MAIL, with the
        `auth_mechanisms` offered (over TLS only when STARTTLS is available). `idle_timeout`
        drops silent connections like a real server does (aiosmtpd's default: 300 s)."""
        if (require_starttls or implicit_tls) and tls_context is None:
            raise ValueError("require_starttls and implicit_tls need a tls_context")
        if require_starttls and implicit_tls:
            raise ValueError("require_starttls and implicit_tls exclude each other")
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.idle_timeout = idle_timeout
        self.hostname = hostname
        self.messages: list[CaughtMessage] = []
        self.logins: list[LoginAttempt] = []
        #: Connections accepted since creation (a pool that reuses connections keeps this low).
        self.connections_opened = 0
        self.host: str | None = None
        self.port: int | None = None
        self._handler = _Handler(self)
        self._failures: dict[str, collections.deque[str]] = {stage: collections.deque() for stage in FAIL_STAGES}
        self._holds: dict[str, collections.deque[Hold]] = {stage: collections.deque() for stage in FAIL_STAGES}
        self._all_holds: list[Hold] = []
        self._connections: set[_CatcherSMTP] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # messages may arrive on the catcher's thread
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[CaughtMessage]]] = []

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._server else "stopped"
        return f"MailCatcher({where}, messages={len(self.messages)})"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on the running loop; return the port (pass 0 for a free one)."""
        if self._server is not None:
            raise RuntimeError("the mail catcher is already running")
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            self._new_protocol, host, port, ssl=self.tls_context if self.implicit_tls else None
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and hang up on every client, as a server going down would."""
        if self._thread is not None:
            await asyncio.to_thread(self.stop_in_thread)
            return
        await self._stop_here()

    async def _stop_here(self) -> None:
        with self._lock:
            for hold in self._all_holds:
                hold.release()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        if server is not None:
            await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10) -> int:
        """Run on an event loop in a daemon thread, for synchronous callers; return the port."""
        if self._thread is not None or self._server is not None:
            raise RuntimeError("the mail catcher is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="mailcatcher", daemon=True)
        thread.start()
        try:
            bound = asyncio.run_coroutine_threadsafe(self.start(host, port), loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            raise
        self._thread = thread
        return bound

    def stop_in_thread(self, timeout: float = 10) -> None:
        """Stop a catcher started with `start_in_thread` and end its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop_here(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None

    async def __aenter__(self) -> MailCatcher:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _new_protocol(self) -> _CatcherSMTP:
        starttls_context = None if self.implicit_tls else self.tls_context
        offered = set(self.auth_mechanisms)
        return _CatcherSMTP(
            self,
            self._handler,
            hostname=self.hostname,
            ident="streamer mailcatcher",
            tls_context=starttls_context,
            require_starttls=self.require_starttls,
            timeout=self.idle_timeout,
            # Credentials only over TLS when STARTTLS is on offer; implicit TLS is TLS already
            # (aiosmtpd only knows about STARTTLS) and a plain catcher must still test AUTH.
            auth_require_tls=starttls_context is not None,
            auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m not in offered],
            authenticator=self._authenticate,
            enable_SMTPUTF8=True,
            loop=self._loop,
        )

    # -- scripted failures -----------------------------------------------------------------------

    def fail_next(self, code: int, message: str | None = None, *, stage: FailStage = "RCPT", count: int = 1) -> None:
        """Answer the next `count` commands of `stage` with `code` instead of accepting them.

        421 also closes the connection, as RFC 5321 says a server does with that reply.
        """
        if stage not in FAIL_STAGES:
            raise ValueError(f"stage must be one of {', '.join(FAIL_STAGES)}")
        if not 400 <= code <= 599:
            raise ValueError("fail_next needs a 4xx or 5xx code")
        if count < 1:
            raise ValueError("count must be at least 1")
        text = " ".join((message or DEFAULT_FAILURE_TEXT.get(code, "Refused by mail catcher")).split())
        with self._lock:
            self._failures[stage].extend([f"{code} {text}"] * count)

    def clear_failures(self) -> None:
        with self._lock:
            for queue in self._failures.values():
                queue.clear()

    def hold_next(self, stage: FailStage = "MAIL") -> Hold:
        """Hold back the reply to the next command of `stage` until `release()`: a test can then
        act while the client is known to be waiting for that reply. Stopping releases it."""
        if stage not in FAIL_STAGES:
            raise ValueError(f"stage must be one of {', '.join(FAIL_STAGES)}")
        hold = Hold()
        with self._lock:
            self._holds[stage].append(hold)
            self._all_holds.append(hold)
        return hold

    async def _hold(self, stage: str) -> None:
        with self._lock:
            queue = self._holds[stage]
            hold = queue.popleft() if queue else None
        if hold is not None:
            hold.arrived.set()
            await asyncio.to_thread(hold.released.wait)

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            queue = self._failures[stage]
            return queue.popleft() if queue else None

    # -- auth --------------------------------------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        ok = self.auth is not None and (
            hmac.compare_digest(auth_data.login, self.auth[0].encode())
            & hmac.compare_digest(auth_data.password, self.auth[1].encode())
        )
        self.logins.append(LoginAttempt(mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    # -- catching ----------------------------------------------------------------------------------

    def _catch(self, envelope: Envelope, session: Session) -> CaughtMessage:
        data = envelope.original_content
        if data is None:
            data = envelope.content if isinstance(envelope.content, bytes) else b""
        message = CaughtMessage(
            id=uuid.uuid4().hex[:16],
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(data),
            received_at=datetime.now(UTC),
            tls=self.implicit_tls or session.ssl is not None,
            auth_user=session.auth_data if session.authenticated else None,
            peer=session.peer,
        )
        if self.save_dir is not None:
            (self.save_dir / message.filename).write_bytes(message.data)
        with self._lock:
            self.messages.append(message)
            waiters = list(self._waiters)
            subscribers = list(self._subscribers)
        for loop, event in waiters:
            _call_in(loop, event.set)
        for loop, queue in subscribers:
            _call_in(loop, _offer, queue, message)
        return message

    def _connection_made(self, protocol: _CatcherSMTP) -> None:
        self.connections_opened += 1
        self._connections.add(protocol)

    def _connection_lost(self, protocol: _CatcherSMTP) -> None:
        self._connections.discard(protocol)

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, message_id: str) -> CaughtMessage | None:
        return next((m for m in self.messages if m.id == message_id), None)

    def clear(self) -> None:
        """Forget caught messages (files in save_dir stay)."""
        with self._lock:
            self.messages.clear()

    async def wait_for(self, count: int, timeout: float = 10) -> list[CaughtMessage]:
        """Wait until at least `count` messages were caught; return them all (a copy)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = asyncio.Event()
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
                self._waiters.append((loop, event))
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"caught {len(self.messages)} of {count} messages within {timeout} s")
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    raise TimeoutError(f"caught {len(self.messages)} of {count} messages within {timeout} s") from None
            finally:
                with self._lock:
                    self._waiters.remove((loop, event))

    def subscribe(self, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> asyncio.Queue[CaughtMessage]:
        """A queue that receives each new message (for a live page); drop it with `unsubscribe`.

        Bounded: a subscriber that stops reading loses new notifications instead of growing memory.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                raise RuntimeError("subscribe() needs a running event loop or a started catcher") from None
            loop = self._loop
        queue: asyncio.Queue[CaughtMessage] = asyncio.Queue(maxsize)
        with self._lock:
            self._subscribers.append((loop, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[CaughtMessage]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]


def _offer(queue: asyncio.Queue[CaughtMessage], message: CaughtMessage) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        pass


def _call_in(loop: asyncio.AbstractEventLoop, func: Callable[..., object], *args: object) -> None:
    """Run `func` on `loop`: now if that is the current loop, else scheduled thread-safely."""
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop is current:
        func(*args)
        return
    try:
        loop.call_soon_threadsafe(func, *args)
    except RuntimeError:
        pass  # that loop is closed: nobody is waiting any more


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()


# --- standalone: python -m streamer.devkit.mailcatcher ------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; prints `READY <port>` once listening (used by bench/ scripts)."""
    parser = argparse.ArgumentParser(prog="python -m streamer.devkit.mailcatcher", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--save-dir", type=Path)
    args = parser.parse_args(argv)

    async def serve() -> None:
        catcher = MailCatcher(save_dir=args.save_dir)
        port = await catcher.start(args.host, args.port)
        print(f"READY {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await catcher.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
