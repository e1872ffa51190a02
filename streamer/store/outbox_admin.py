"""What `streamer outbox` does, as values: which emails a listing shows, and what a retry or a
cancel did to each one. The CLI only prints them; the state rules are `streamer.outbox.TRANSITIONS`."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.outbox import OPEN_STATES, Command, EmailState, OutboxEmail
from streamer.store.base import Store

#: The operator commands that act on emails chosen by ID or by state.
BULK_COMMANDS = (Command.RETRY, Command.CANCEL)


def shown_states(*, state: EmailState | None, everything: bool, one_person: bool) -> tuple[EmailState, ...] | None:
    """The states a listing shows (None: all). Looking up one user or address ("did they get it?")
    shows sent emails too, unless `state` says otherwise."""
    if state is not None:
        return (state,)
    return None if everything or one_person else OPEN_STATES


async def list_emails(
    store: Store,
    *,
    state: EmailState | None = None,
    everything: bool = False,
    tenant: str | None = None,
    rule: str | None = None,
    user_id: str | None = None,
    recipient: str | None = None,
    limit: int = 100,
) -> list[OutboxEmail]:
    states = shown_states(state=state, everything=everything, one_person=bool(user_id or recipient))
    return await store.list_emails(
        states=states, tenant=tenant, rule=rule, user_id=user_id, recipient=recipient, limit=limit
    )


@dataclass(frozen=True)
class Refusal:
    """An email the command did not touch: its state is not one the command may change (None: no such email)."""

    email_id: int
    state: EmailState | None


@dataclass(frozen=True)
class BulkOutcome:
    command: Command
    #: The emails asked for, oldest first when chosen by state.
    selected: list[int]
    done: list[int]
    refused: list[Refusal]


async def apply(
    store: Store,
    command: Command,
    *,
    ids: list[int],
    state: EmailState | None = None,
    tenant: str | None = None,
    rule: str | None = None,
    now: float,
) -> BulkOutcome:
    """RETRY or CANCEL the emails `ids`, or (with `state`) every email in that state, of one
    tenant or rule if given. Emails whose state the command may not change are refused, not failed."""
    if command not in BULK_COMMANDS:
        raise ValueError(f"{command} is not an operator command")
    selected = list(ids)
    if state is not None:
        chosen = await store.list_emails(states=(state,), tenant=tenant, rule=rule, limit=10**9)
        selected = [email.id for email in reversed(chosen)]
    done: list[int] = []
    refused: list[Refusal] = []
    for email_id in selected:
        changed = (
            await store.retry_email(email_id, now=now)
            if command is Command.RETRY
            else await store.cancel_email(email_id, now=now)
        )
        if changed:
            done.append(email_id)
        else:
            email = await store.get_email(email_id)
            refused.append(Refusal(email_id, email.state if email else None))
    return BulkOutcome(command, selected, done, refused)
