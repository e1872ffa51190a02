"""The optional inbound listener: receives bounces (RFC 3464 DSNs), complaints (RFC 5965 ARF) and
mailto unsubscribes over SMTP or LMTP (aiosmtpd), on the daemon's own event loop.

Only mail for an address streamer issued is accepted (RCPT): a return path `bounces+<token>@…` whose
token the store knows and whose MAC checks out, the bare return path (feedback loops send ARF there;
the token is then read from the report's Original-Mail-From or the returned message's Return-Path),
or the unsubscribe mailto address. So neither a forged bounce nor a stray mail can suppress an
address. The DATA answer is 250 once the outcome is stored, 451 if the store failed (the sender
retries), so a report is never lost between the two.
"""

from __future__ import annotations

import asyncio
import email
import ssl
from email import policy
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from streamer import metrics
from streamer.config import InboundConfig
from streamer.logs import get_logger
from streamer.store import Store
from streamer.suppression.policy import Kind, Report, normalize_address
from streamer.suppression.recorder import SuppressionRecorder
from streamer.suppression.reports import parse_report
from streamer.suppression.verp import ReturnPaths
from streamer.unsubscribe import (
    MAILTO_SUBJECT_PREFIX,
    UnsubscribeTokens,
    record_unsubscribe,
)

log = get_logger(__name__)

OK = "250 2.0.0 OK"
NO_SUCH_MAILBOX = "550 5.1.1 No such mailbox"
TRY_LATER = "451 4.3.0 Temporary failure, try again later"
#: When one report names several outcomes for its one recipient, the strongest wins.
_SEVERITY = {Kind.COMPLAINT: 3, Kind.HARD: 2, Kind.SOFT: 1}


class InboundHandler:
    """aiosmtpd hooks (handle_RCPT, handle_DATA) over the store."""

    def __init__(
        self,
        store: Store,
        return_paths: ReturnPaths,
        recorder: SuppressionRecorder,
        *,
        unsubscribe_tokens: UnsubscribeTokens | None = None,
        unsubscribe_address: str | None = None,
    ):
        self.store = store
        self.return_paths = return_paths
        self.recorder = recorder
        self.unsubscribe_tokens = unsubscribe_tokens
        self.unsubscribe_address = normalize_address(unsubscribe_address) if unsubscribe_address else None

    async def _owner(self, token: str) -> tuple[str, str] | None:
        """(tenant, address) of a return-path token we issued, or None."""
        found = await self.store.find_return_path(token)
        if found is None or not self.return_paths.verify(token, *found):
            return None
        return found

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        token = self.return_paths.token_of(address)
        if token is not None:
            try:
                if await self._owner(token) is None:
                    return NO_SUCH_MAILBOX
            except Exception:  # noqa: BLE001 - store hiccup: the sender retries
                log.exception("inbound_lookup_failed")
                return TRY_LATER
        elif not (
            self.return_paths.is_bare(address)
            or (self.unsubscribe_address and normalize_address(address) == self.unsubscribe_address)
        ):
            return NO_SUCH_MAILBOX
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """SMTP: one reply for the message. LMTP (RFC 2033): one reply per accepted recipient, so a
        store failure for one makes the client retry that recipient only."""
        data = envelope.original_content or b""
        statuses = []
        for recipient in envelope.rcpt_tos:
            try:
                await self.receive(recipient, data)
                statuses.append(OK)
            except Exception:  # noqa: BLE001 - the sender retries; suppress/unsubscribe writes are idempotent
                log.exception("inbound_failed")
                statuses.append(TRY_LATER)
        if isinstance(server, LMTP):
            return "\r\n".join(statuses) or OK
        return TRY_LATER if TRY_LATER in statuses else OK

    async def receive(self, recipient: str, data: bytes) -> None:
        """Act on one message for one accepted recipient."""
        if self.unsubscribe_address and normalize_address(recipient) == self.unsubscribe_address:
            await self._mailto_unsubscribe(data)
            return
        parsed = parse_report(data)
        if parsed.format is None or not parsed.findings:
            metrics.BOUNCE_REPORTS.labels("inbound", "ignored").inc()
            log.info("inbound_not_a_report", format=parsed.format)
            return
        owner = None
        tokens = [self.return_paths.token_of(recipient), *map(self.return_paths.token_of, parsed.original_senders)]
        for token in tokens:
            if token is not None and (owner := await self._owner(token)) is not None:
                break
        if owner is None:
            metrics.BOUNCE_REPORTS.labels(parsed.format, "ignored").inc()
            log.warning(
                "inbound_report_unmatched",
                format=parsed.format,
                reason="no return-path token of ours in the recipient or the report",
            )
            return
        tenant, address = owner
        finding = max(parsed.findings, key=lambda f: _SEVERITY[f.kind])
        await self.recorder.record(tenant, Report(finding.kind, address, finding.detail, parsed.format))

    async def _mailto_unsubscribe(self, data: bytes) -> None:
        subject = str(email.message_from_bytes(data, policy=policy.default).get("Subject", ""))
        token = subject.strip()
        if token.lower().startswith(MAILTO_SUBJECT_PREFIX.strip()):
            token = token[len(MAILTO_SUBJECT_PREFIX.strip()) :].strip()
        subscription = self.unsubscribe_tokens.read(token) if self.unsubscribe_tokens else None
        if subscription is None:
            log.warning("unsubscribe_mail_without_valid_token")
            return
        await record_unsubscribe(self.store, subscription, source="mailto")


class InboundListener:
    """Runs SMTP or LMTP (aiosmtpd) for the handler on the running loop."""

    def __init__(
        self,
        config: InboundConfig,
        handler: InboundHandler,
        *,
        hostname: str = "localhost",
        tls_context: ssl.SSLContext | None = None,
    ):
        self.config = config
        self.handler = handler
        self.hostname = hostname
        #: Offered as STARTTLS (suppression.inbound.tls_cert_file/tls_key_file; see inbound_tls).
        self.tls_context = tls_context
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._protocols: set[Any] = set()

    def _protocol(self) -> SMTP:
        cls = LMTP if self.config.protocol == "lmtp" else SMTP
        return cls(
            self.handler,
            hostname=self.hostname,
            ident="streamer bounces",
            data_size_limit=self.config.max_message_bytes,
            loop=asyncio.get_running_loop(),
            timeout=60,
            tls_context=self.tls_context,
            require_starttls=self.requires_starttls,
        )

    @property
    def requires_starttls(self) -> bool:
        return self.config.require_starttls and self.tls_context is not None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "inbound_listening",
            listen=f"{self.config.host}:{self.port}",
            protocol=self.config.protocol,
            starttls="required" if self.requires_starttls else "offered" if self.tls_context else "off",
        )
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            if hasattr(server, "close_clients"):  # Python 3.13+
                server.close_clients()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                pass
