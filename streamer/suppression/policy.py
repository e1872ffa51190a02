"""The suppression list's vocabulary and its decisions (pure): what a bounce or complaint means.

An address on the list is never mailed again for its tenant (the outbox marks such emails
`suppressed`), until an operator removes it. Hard bounces and complaints put an address on the
list at once; soft bounces only after `count` of them within `window` (a full mailbox for a week
is a dead mailbox, one full mailbox is not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"  # the soft-bounce threshold was reached
    COMPLAINT = "complaint"
    MANUAL = "manual"  # `streamer suppression add`


class Kind(StrEnum):
    """What one report says about one recipient."""

    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class Suppression:
    tenant: str
    address: str
    reason: Reason
    source: str  # dsn, arf, ses, postmark, cli
    detail: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Report:
    """One recipient's outcome, read from a DSN, an ARF report or a provider's webhook."""

    kind: Kind
    address: str
    detail: str
    source: str


def normalize_address(address: str) -> str:
    """The list's key: the bare address, lower case (Auth0 stores emails lower-cased too)."""
    return address.strip().strip("<>").strip().lower()


_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
#: 5.x.y codes that say "not now" or "not this message" rather than "no such mailbox": a full
#: mailbox (5.2.2), a message too large (5.2.3, 5.3.4), a policy or content block (5.7.x). Suppressing
#: on those would drop good addresses after one spam-filter hiccup.
_SOFT_PERMANENT = {(2, 2), (2, 3), (3, 4)}


def classify_status(status: str | None, action: str | None = None) -> Kind | None:
    """An RFC 3464 Status (`5.1.1`) and Action (`failed`, `delayed` …) → hard, soft or None (no bounce)."""
    action = (action or "failed").strip().lower()
    if action not in ("failed", "delayed"):
        return None  # delivered, relayed, expanded
    match = _STATUS.match(status or "")
    if not match:
        return Kind.SOFT if action == "failed" else None
    klass, subject, detail = (int(g) for g in match.groups())
    if klass == 2 or action == "delayed":
        return None  # still being retried by the remote queue: no bounce yet
    if klass == 4:
        return Kind.SOFT
    if (subject, detail) in _SOFT_PERMANENT or subject == 7:
        return Kind.SOFT
    return Kind.HARD


@dataclass(frozen=True)
class SoftBouncePolicy:
    """`count` soft bounces within `window_s` seconds suppress the address."""

    count: int
    window_s: float

    def reached(self, bounces_in_window: int) -> bool:
        return bounces_in_window >= self.count
