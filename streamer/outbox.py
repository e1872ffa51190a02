"""The outbox's vocabulary: email states, the row, and the retry decision (pure).

An email moves queued → sending → sent, or → failed (waiting to retry) → sending …, or → dead
(permanent error or `max_attempts` reached), or → cancelled by an operator, or → suppressed (the
recipient is on the tenant's suppression list: nothing was sent, and nothing is wrong with the email). Rows are never
deleted before `retention_days`, so dead letters stay visible in `streamer outbox list`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streamer.backoff import Backoff


class EmailState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"


#: States an operator usually wants to see: not yet delivered, or given up on.
OPEN_STATES = (EmailState.QUEUED, EmailState.SENDING, EmailState.FAILED, EmailState.DEAD)
#: States the depth gauges count: all but `sent`, which only grows (until purged) and has a counter.
COUNTED_STATES = (*OPEN_STATES, EmailState.CANCELLED, EmailState.SUPPRESSED)
#: States `outbox retry` accepts (suppressed: after `streamer suppression remove`).
RETRYABLE_STATES = (EmailState.FAILED, EmailState.DEAD, EmailState.CANCELLED, EmailState.SUPPRESSED)
#: States `outbox cancel` accepts.
CANCELLABLE_STATES = (EmailState.QUEUED, EmailState.FAILED)


@dataclass(frozen=True)
class DueEmail:
    """An email the rules decided on, before it is queued."""

    tenant: str
    rule: str
    template: str
    #: The `once` ledger key: (rule, user) or (rule, log_id).
    once_key: str
    #: For `once: {cooldown}`: seconds before the same once_key may send again.
    cooldown_s: float | None
    #: The outbox idempotency key (UNIQUE); also seeds the Message-ID.
    key: str
    user_id: str
    log_id: str
    recipient: str
    locale: str
    accepted_at: float
    context: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class OutboxEmail:
    id: int
    key: str
    tenant: str
    rule: str
    template: str
    user_id: str
    log_id: str
    recipient: str
    locale: str
    state: EmailState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float
    sent_at: float | None
    accepted_at: float
    context: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    """Whether and when to retry a failed send: `max_attempts`, then the shared `Backoff`
    (initial_s, max_s) with jitter."""

    max_attempts: int
    initial_s: float
    max_s: float

    def next_delay(self, attempts: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after the `attempts`-th failed attempt, or None: give up (dead)."""
        if attempts >= self.max_attempts:
            return None
        return Backoff(self.initial_s, self.max_s, jitter=True).delay(attempts, rng)
