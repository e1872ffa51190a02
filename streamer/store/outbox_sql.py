"""The outbox written once for both stores: the row mapper and the state changes that are plain SQL.

Every state name in the SQL comes from `streamer.outbox.TRANSITIONS` (`states_sql`), so the
state machine has one home. A backend supplies the dialect and primitives of `streamer.store.sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streamer.outbox import TRANSITIONS, Command, EmailState, OutboxEmail, sources, target
from streamer.store.sql import Dialect, SqlStore

#: The columns of an `OutboxEmail`, in its field order (`email_from_row`).
OUTBOX_COLUMNS = (
    "id, key, tenant, rule, template, user_id, log_id, recipient, locale, state, attempts, "
    "next_attempt_at, last_error, created_at, updated_at, sent_at, accepted_at, context"
)
_STATE, _CONTEXT = 9, 17


def states_sql(states: Sequence[EmailState]) -> str:
    """`('queued', 'failed')`: literals, not parameters, so that a partial index on the same list
    is usable (SQLite matches its WHERE clause). The names are the enum's, never input."""
    return f"({', '.join(repr(str(state.value)) for state in states)})"


def email_from_row(row: Sequence[Any], loads: Callable[[str], Any] = orjson.loads) -> OutboxEmail:
    """A row of `OUTBOX_COLUMNS` → the email (`context` is stored as JSON text in both stores)."""
    values = list(row)
    values[_STATE] = EmailState(values[_STATE])
    values[_CONTEXT] = loads(values[_CONTEXT])
    return OutboxEmail(*values)


def transition_sql(command: Command, assignments: str) -> str:
    """`UPDATE … SET state = <target>, <assignments> WHERE id = ? AND state IN <sources>`."""
    return (
        f"UPDATE outbox SET state = '{target(command).value}', {assignments} "
        f"WHERE id = ? AND state IN {states_sql(sources(command))}"
    )


def requeue_sql(dialect: Dialect, condition: str | None = None) -> str:
    """Claims handed back (Command.REQUEUE), all or where `condition` holds; first parameter: now."""
    return dialect.sql(
        f"UPDATE outbox SET state = '{target(Command.REQUEUE).value}', {dialect.release}, "
        f"updated_at = ? WHERE state IN {states_sql(sources(Command.REQUEUE))}"
        + (f" AND {condition}" if condition else "")
    )


#: Retention (Command.PURGE); parameter: the cutoff.
PURGE_EMAILS = f"DELETE FROM outbox WHERE state IN {states_sql(TRANSITIONS[Command.PURGE].sources)} AND updated_at < ?"


class SqlOutbox(SqlStore):
    """The outbox methods of `Store` over `_change` and `_select`, for stores that speak SQL."""

    def _email(self, row: Sequence[Any]) -> OutboxEmail:
        return email_from_row(row)

    async def _transition(self, command: Command, email_id: int, assignments: str, args: Sequence[Any]) -> bool:
        return bool(await self._change(self.dialect.sql(transition_sql(command, assignments)), (*args, email_id)))

    async def mark_sent(self, email_id: int, *, now: float) -> None:
        await self._transition(
            Command.MARK_SENT,
            email_id,
            f"sent_at = ?, updated_at = ?, {self.dialect.release}, last_error = NULL",
            (now, now),
        )

    async def mark_failed(self, email_id: int, *, error: str, next_attempt_at: float, now: float) -> None:
        await self._transition(
            Command.MARK_FAILED,
            email_id,
            f"last_error = ?, next_attempt_at = ?, updated_at = ?, {self.dialect.release}",
            (self._param(error[:1000]), next_attempt_at, now),
        )

    async def mark_dead(self, email_id: int, *, error: str, now: float) -> None:
        await self._transition(
            Command.MARK_DEAD,
            email_id,
            f"last_error = ?, updated_at = ?, {self.dialect.release}",
            (self._param(error[:1000]), now),
        )

    async def mark_suppressed(self, email_id: int, *, error: str, now: float) -> None:
        await self._transition(
            Command.MARK_SUPPRESSED,
            email_id,
            f"last_error = ?, updated_at = ?, {self.dialect.release}",
            (self._param(error[:1000]), now),
        )

    async def mark_unsubscribed(self, email_id: int, *, error: str, now: float) -> None:
        await self._transition(
            Command.MARK_UNSUBSCRIBED,
            email_id,
            f"last_error = ?, updated_at = ?, {self.dialect.release}",
            (self._param(error[:1000]), now),
        )

    async def retry_email(self, email_id: int, *, now: float) -> bool:
        return await self._transition(
            Command.RETRY, email_id, "attempts = 0, next_attempt_at = ?, updated_at = ?", (now, now)
        )

    async def cancel_email(self, email_id: int, *, now: float) -> bool:
        return await self._transition(Command.CANCEL, email_id, "updated_at = ?", (now,))

    async def requeue_stale(self, *, now: float) -> int:
        return await self._change(requeue_sql(self.dialect, "lease_until < ?"), (now, now))

    async def list_emails(
        self,
        *,
        states: tuple[EmailState, ...] | None,
        tenant: str | None = None,
        rule: str | None = None,
        user_id: str | None = None,
        recipient: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEmail]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += [state.value for state in states]
        for column, value in (("tenant", tenant), ("rule", rule), ("user_id", user_id)):
            if value:
                where.append(f"{column} = ?")
                args.append(self._param(value))
        if recipient:
            where.append(self.dialect.recipient_is)
            args.append(self._param(recipient))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._select(
            self.dialect.sql(f"SELECT {OUTBOX_COLUMNS} FROM {self.dialect.emails} {clause} ORDER BY id DESC LIMIT ?"),
            (*args, limit),
        )
        return [self._email(row) for row in rows]

    async def list_users_emails(
        self, *, states: tuple[EmailState, ...], tenant: str, user_ids: list[str], limit: int = 100
    ) -> dict[str, list[OutboxEmail]]:
        found: dict[str, list[OutboxEmail]] = {}
        for start in range(0, len(user_ids), 500):  # well under either database's limit of parameters
            chunk = user_ids[start : start + 500]
            rows = await self._select(
                self.dialect.sql(
                    f"SELECT {OUTBOX_COLUMNS} FROM (SELECT *, "
                    "row_number() OVER (PARTITION BY user_id ORDER BY id DESC) "
                    f"AS newest FROM {self.dialect.emails} "
                    f"WHERE user_id IN ({', '.join('?' * len(chunk))}) AND tenant = ? "
                    f"AND state IN ({', '.join('?' * len(states))})) AS pending WHERE newest <= ? ORDER BY id DESC"
                ),
                (*[self._param(user_id) for user_id in chunk], self._param(tenant), *[s.value for s in states], limit),
            )
            for email in map(self._email, rows):
                found.setdefault(email.user_id, []).append(email)
        return found

    async def get_email(self, email_id: int) -> OutboxEmail | None:
        rows = await self._select(
            self.dialect.sql(f"SELECT {OUTBOX_COLUMNS} FROM {self.dialect.emails} WHERE id = ?"), (email_id,)
        )
        return self._email(rows[0]) if rows else None
