"""Reading bounce and complaint reports that arrive as email (pure: bytes in, findings out).

- Delivery status notifications, RFC 3464: `multipart/report; report-type=delivery-status` with a
  `message/delivery-status` part of per-recipient blocks (Final-Recipient, Action, Status).
- Abuse reports, RFC 5965 (ARF, what mailbox providers' feedback loops send): `multipart/report;
  report-type=feedback-report` with a `message/feedback-report` part (Feedback-Type,
  Original-Mail-From, Original-Rcpt-To) and the original message or its headers.

The stdlib `email` parser already splits both report parts into header blocks. Anything else (an
auto-reply, a free-text bounce) yields nothing: acting on guesses would suppress good addresses.
"""

from __future__ import annotations

import email
from dataclasses import dataclass, field
from email import policy
from email.message import Message

from streamer.suppression.policy import Kind, classify_status

#: Feedback types that are no complaint about the mail itself.
_NOT_COMPLAINTS = {"not-spam"}


@dataclass(frozen=True)
class Finding:
    kind: Kind
    address: str  # as the report states it (may be empty: FBLs often redact recipients)
    detail: str


@dataclass
class ParsedReport:
    format: str | None  # "dsn", "arf" or None (not a report)
    findings: list[Finding] = field(default_factory=list)
    #: Envelope senders the report says the original mail had (ARF Original-Mail-From, the returned
    #: message's Return-Path): where a VERP token can be found when the report came to another address.
    original_senders: list[str] = field(default_factory=list)


def _value(block: Message, name: str) -> str:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _address_field(value: str) -> str:
    """`rfc822; ana@example.com` → `ana@example.com` (RFC 3464 address-type prefix)."""
    _, sep, address = value.partition(";")
    return (address if sep else value).strip().strip("<>").strip()


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []


def _returned_headers(report: Message) -> list[Message]:
    """The original message (message/rfc822) or its headers (text/rfc822-headers) inside a report."""
    found = []
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            found += _blocks(part)
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True) or b""
            found.append(email.message_from_bytes(raw, policy=policy.default))
    return found


def parse_report(data: bytes) -> ParsedReport:
    message = email.message_from_bytes(data, policy=policy.default)
    if message.get_content_type() != "multipart/report":
        return ParsedReport(None)
    report_type = (message.get_param("report-type") or "").lower()
    originals = [_address_field(str(h.get("Return-Path", ""))) for h in _returned_headers(message)]
    if report_type == "delivery-status":
        parsed = ParsedReport("dsn", original_senders=[o for o in originals if o])
        for part in message.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _blocks(part)[1:]:  # the first block is per-message
                recipient = _address_field(_value(block, "Final-Recipient") or _value(block, "Original-Recipient"))
                status, action = _value(block, "Status"), _value(block, "Action")
                kind = classify_status(status, action)
                if kind is None:
                    continue
                diagnostic = _value(block, "Diagnostic-Code")
                parsed.findings.append(Finding(kind, recipient, f"{status} {diagnostic}".strip()[:300]))
        return parsed
    if report_type == "feedback-report":
        parsed = ParsedReport("arf")
        for part in message.walk():
            if part.get_content_type() != "message/feedback-report":
                continue
            for block in _blocks(part):
                feedback_type = _value(block, "Feedback-Type").lower() or "abuse"
                sender = _address_field(_value(block, "Original-Mail-From"))
                if sender:
                    parsed.original_senders.append(sender)
                if feedback_type in _NOT_COMPLAINTS:
                    continue
                parsed.findings.append(
                    Finding(
                        Kind.COMPLAINT,
                        _address_field(_value(block, "Original-Rcpt-To")),
                        f"feedback-type {feedback_type}",
                    )
                )
        parsed.original_senders += [o for o in originals if o]
        return parsed
    return ParsedReport(None)
