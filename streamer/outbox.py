"""The outbox's vocabulary: email states, the row, and the retry decision (pure).

An email moves queued → sending → sent, or → failed (waiting to retry) → sending …, or → dead
(permanent error or `max_attempts` reached), or → cancelled (by an operator, or because its rule
no longer applies: the user was deleted, changed, or unsubscribed), or → suppressed (the
recipient is on the tenant's suppression list: nothing was sent, and nothing is wrong with the email). Rows are never
deleted before `retention_days`, so dead letters stay visible in `streamer outbox list`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
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


class Command(StrEnum):
    """Everything that changes an email's state, by whoever does it."""

    #: The dispatcher takes due emails to send them (counted as an attempt).
    CLAIM = "claim"
    #: A claim handed back unsent: its lease ran out, the process restarted, its replica died, or
    #: the answer to the claim was lost with the connection.
    REQUEUE = "requeue"
    #: The outcomes of a send attempt (the dispatcher).
    MARK_SENT = "mark_sent"
    MARK_FAILED = "mark_failed"
    MARK_DEAD = "mark_dead"
    MARK_SUPPRESSED = "mark_suppressed"
    #: The dispatcher, before sending: the user unsubscribed from the rule since it was queued.
    MARK_UNSUBSCRIBED = "mark_unsubscribed"
    #: `streamer outbox retry` (suppressed: after `streamer suppression remove`).
    RETRY = "retry"
    #: `streamer outbox cancel`, and the processor when a user's deletion or new state voids the rule.
    CANCEL = "cancel"
    #: Retention: rows older than `retention_days` are deleted.
    PURGE = "purge"


@dataclass(frozen=True)
class Transition:
    #: The states the command may touch; an email in any other state is left as it is.
    sources: tuple[EmailState, ...]
    #: The state it moves them to; None: the row is deleted.
    target: EmailState | None
    #: Who does it, and when (the README's table).
    when: str = ""


_ALL = tuple(EmailState)

#: The states a send attempt's outcome may find its email in: still being sent, or handed back
#: (its lease ran out) and not yet settled by anyone else.
_UNSETTLED = (EmailState.QUEUED, EmailState.SENDING, EmailState.FAILED)

#: The outbox state machine: the one place that says which command may move an email from which
#: states to which. The stores build their SQL from it, the CLI its choices, the README its table
#: (`transitions_table`). An outcome may arrive late (the lease ran out, the row was requeued, even
#: cancelled or sent by another attempt). `sent` applies whatever the state: the email went out, the
#: row must say so. The others apply only to an unsettled email: a late `failed` must not queue a
#: cancelled or sent email again, and `dead`/`suppressed` must not overwrite an operator's cancel.
TRANSITIONS: Mapping[Command, Transition] = MappingProxyType(
    {
        Command.CLAIM: Transition(
            (EmailState.QUEUED, EmailState.FAILED), EmailState.SENDING, "the dispatcher, when the email is due"
        ),
        Command.REQUEUE: Transition(
            (EmailState.SENDING,), EmailState.QUEUED, "lease over, restart, dead replica: the claim is handed back"
        ),
        Command.MARK_SENT: Transition(_ALL, EmailState.SENT, "the SMTP server took it"),
        Command.MARK_FAILED: Transition(
            _UNSETTLED, EmailState.FAILED, "a temporary error: tried again after a backoff"
        ),
        Command.MARK_DEAD: Transition(_UNSETTLED, EmailState.DEAD, "a permanent error, or `max_attempts` reached"),
        Command.MARK_SUPPRESSED: Transition(
            _UNSETTLED, EmailState.SUPPRESSED, "the recipient is on the suppression list"
        ),
        Command.MARK_UNSUBSCRIBED: Transition(
            _UNSETTLED, EmailState.CANCELLED, "the user unsubscribed from the rule after it was queued"
        ),
        Command.RETRY: Transition(
            (EmailState.FAILED, EmailState.DEAD, EmailState.CANCELLED, EmailState.SUPPRESSED),
            EmailState.QUEUED,
            "`streamer outbox retry`",
        ),
        Command.CANCEL: Transition(
            (EmailState.QUEUED, EmailState.FAILED),
            EmailState.CANCELLED,
            "`streamer outbox cancel`; a user deleted or no longer matching the rule",
        ),
        Command.PURGE: Transition(
            (EmailState.SENT, EmailState.DEAD, EmailState.CANCELLED, EmailState.SUPPRESSED),
            None,
            "after `delivery.retention_days`",
        ),
    }
)


def sources(command: Command) -> tuple[EmailState, ...]:
    return TRANSITIONS[command].sources


def allows(command: Command, state: EmailState) -> bool:
    """Whether `command` may touch an email in `state`."""
    return state in TRANSITIONS[command].sources


def target(command: Command) -> EmailState:
    """The state `command` moves an email to (not for PURGE, which deletes it)."""
    result = TRANSITIONS[command].target
    if result is None:
        raise ValueError(f"{command} deletes the email: it has no target state")
    return result


def transitions_table() -> str:
    """The state machine as the Markdown table the README shows (a test keeps the two equal)."""
    lines = ["| command | from | to | when |", "|---|---|---|---|"]
    for command, transition in TRANSITIONS.items():
        origin = "any" if transition.sources == _ALL else ", ".join(s.value for s in transition.sources)
        to = transition.target.value if transition.target else "(deleted)"
        lines.append(f"| {command.value} | {origin} | {to} | {transition.when} |")
    return "\n".join(lines)


#: States an operator usually wants to see: not yet delivered, or given up on.
OPEN_STATES = (EmailState.QUEUED, EmailState.SENDING, EmailState.FAILED, EmailState.DEAD)
#: States the depth gauges count: all but `sent`, which only grows (until purged) and has a counter.
COUNTED_STATES = tuple(state for state in EmailState if state is not EmailState.SENT)
#: On their way: due to be claimed, or being sent (the oldest of them is the outbox's age).
IN_FLIGHT_STATES = (*sources(Command.CLAIM), target(Command.CLAIM))


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
