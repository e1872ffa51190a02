"""Relays' bounce and complaint notifications → reports (pure), from their documented payloads.

- Amazon SES (the `Message` of an SNS notification; docs: "Amazon SNS notification contents for
  Amazon SES"): `notificationType` (or `eventType` for event publishing) Bounce / Complaint /
  Delivery. `bounce.bounceType` Permanent → hard, Transient and Undetermined → soft, one report per
  `bounce.bouncedRecipients[].emailAddress`; `complaint.complainedRecipients[].emailAddress` →
  complaint, unless `complaintFeedbackType` is `not-spam`.
- Postmark (bounce and spam-complaint webhooks): `RecordType` Bounce with `Type`/`TypeCode`
  (HardBounce 1, BadEmailAddress 100000 → hard; Transient 2, DnsError 256, SoftBounce 4096,
  SpamNotification 512, Blocked 100006 … → soft; AutoResponder, Subscribe, AddressChange … →
  not a bounce), or `RecordType` SpamComplaint → complaint; the address is `Email`.
"""

from __future__ import annotations

from typing import Any

from streamer.suppression.policy import Kind, Report

_SES_BOUNCE = {"Permanent": Kind.HARD, "Transient": Kind.SOFT, "Undetermined": Kind.SOFT}
_POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_POSTMARK_SOFT = {
    "Transient",
    "SoftBounce",
    "DnsError",
    "SpamNotification",
    "Blocked",
    "DMARCPolicy",
    "Unknown",
    "VirusNotification",
    "ChallengeVerification",
}


def _addresses(items: Any, key: str) -> list[str]:
    if not isinstance(items, list):
        return []
    return [item[key] for item in items if isinstance(item, dict) and isinstance(item.get(key), str) and item[key]]


def ses_reports(notification: dict[str, Any]) -> list[Report]:
    kind_name = notification.get("notificationType") or notification.get("eventType")
    if kind_name == "Bounce":
        bounce = notification.get("bounce") or {}
        kind = _SES_BOUNCE.get(bounce.get("bounceType"), Kind.SOFT)
        subtype = str(bounce.get("bounceSubType") or "")
        reports = []
        for recipient in bounce.get("bouncedRecipients") or []:
            if not isinstance(recipient, dict) or not isinstance(recipient.get("emailAddress"), str):
                continue
            detail = " ".join(str(recipient.get(k) or "") for k in ("status", "diagnosticCode")).strip()
            reports.append(
                Report(
                    kind,
                    recipient["emailAddress"],
                    f"{bounce.get('bounceType')}/{subtype} {detail}".strip()[:300],
                    "ses",
                )
            )
        return reports
    if kind_name == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        if feedback == "not-spam":
            return []
        return [
            Report(Kind.COMPLAINT, address, f"feedback-type {feedback}", "ses")
            for address in _addresses(complaint.get("complainedRecipients"), "emailAddress")
        ]
    return []


def postmark_reports(payload: dict[str, Any]) -> list[Report]:
    address = payload.get("Email")
    if not isinstance(address, str) or not address:
        return []
    record = payload.get("RecordType")
    if record == "SpamComplaint":
        return [Report(Kind.COMPLAINT, address, "spam complaint", "postmark")]
    if record != "Bounce":
        return []
    bounce_type = str(payload.get("Type") or "")
    if bounce_type in _POSTMARK_HARD:
        kind = Kind.HARD
    elif bounce_type in _POSTMARK_SOFT:
        kind = Kind.SOFT
    elif bounce_type == "SpamComplaint":
        kind = Kind.COMPLAINT
    else:
        return []  # AutoResponder, Subscribe, Unsubscribe, AddressChange, OpenRelayTest …
    detail = f"{bounce_type} {payload.get('Details') or payload.get('Description') or ''}".strip()
    return [Report(kind, address, detail[:300], "postmark")]
