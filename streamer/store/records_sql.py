"""The tables beside the pipeline, their one-statement reads and writes written once for both stores:
the suppression list, VERP return paths, unsubscribes and pending passwords. What needs a
backend's own locking (suppress, soft bounces, saving or restoring a pending password) or its own
way of matching many keys stays in the backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from streamer.store.base import PendingPassword
from streamer.store.sql import SqlStore
from streamer.suppression.policy import Reason, Suppression, normalize_address

SUPPRESSION_COLUMNS = "tenant, address, reason, source, detail, created_at, updated_at"
PENDING_COLUMNS = "id, tenant, user_id, connection, state, sealed, created_at, expires_at, updated_at"
#: Saving a pending password (under the backend's per-user lock): the user's older one is replaced,
#: then the new row goes in, its values in PendingPassword's field order (`pending_row`).
REPLACE_PENDING = (
    "UPDATE pending_passwords SET state = 'replaced', sealed = NULL, updated_at = ? "
    "WHERE tenant = ? AND user_id = ? AND state = 'pending'"
)
INSERT_PENDING = f"INSERT INTO pending_passwords({PENDING_COLUMNS}) VALUES ({', '.join('?' * 9)})"


def pending_row(pending: PendingPassword) -> tuple[Any, ...]:
    """The row of PENDING_COLUMNS (PendingPassword's fields are declared in that order)."""
    return astuple(pending)


def suppression_from_row(row: Sequence[Any]) -> Suppression:
    tenant, address, reason, source, detail, created_at, updated_at = row
    return Suppression(tenant, address, Reason(reason), source, detail, created_at, updated_at)


class SqlRecords(SqlStore):
    async def _one(self, sql: str, args: Sequence[Any]) -> Sequence[Any] | None:
        rows = await self._select(self.dialect.sql(sql), args)
        return rows[0] if rows else None

    async def get_pending_password(self, pending_id: str) -> PendingPassword | None:
        row = await self._one(f"SELECT {PENDING_COLUMNS} FROM pending_passwords WHERE id = ?", (pending_id,))
        return PendingPassword(*row) if row else None

    async def use_pending_password(self, pending_id: str, *, now: float) -> bool:
        return bool(
            await self._change(
                self.dialect.sql(
                    "UPDATE pending_passwords SET state = 'used', sealed = NULL, updated_at = ? "
                    "WHERE id = ? AND state = 'pending' AND expires_at > ? AND sealed IS NOT NULL"
                ),
                (now, pending_id, now),
            )
        )

    async def purge_pending_passwords(self, *, now: float, before: float) -> int:
        _, deleted = await self._change_all(
            [
                (
                    self.dialect.sql(
                        "UPDATE pending_passwords SET sealed = NULL, updated_at = ? "
                        "WHERE expires_at <= ? AND sealed IS NOT NULL"
                    ),
                    (now, now),
                ),
                (self.dialect.sql("DELETE FROM pending_passwords WHERE expires_at < ?"), (before,)),
            ]
        )
        return deleted

    async def unsuppress(self, tenant: str, address: str) -> bool:
        key = (self._param(tenant), self._param(normalize_address(address)))
        _, removed = await self._change_all(
            [
                (self.dialect.sql("DELETE FROM soft_bounces WHERE tenant = ? AND address = ?"), key),
                (self.dialect.sql("DELETE FROM suppressions WHERE tenant = ? AND address = ?"), key),
            ]
        )
        return removed == 1

    async def list_suppressions(
        self, *, tenant: str | None = None, address: str | None = None, limit: int = 100
    ) -> list[Suppression]:
        where: list[str] = []
        args: list[Any] = []
        if tenant:
            where.append("tenant = ?")
            args.append(self._param(tenant))
        if address:
            where.append("address = ?")
            args.append(self._param(normalize_address(address)))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._select(
            self.dialect.sql(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions {clause} ORDER BY updated_at DESC LIMIT ?"
            ),
            (*args, limit),
        )
        return [suppression_from_row(row) for row in rows]

    async def remember_return_path(self, token: str, tenant: str, address: str, *, now: float) -> None:
        await self._change(
            self.dialect.sql(
                "INSERT INTO return_paths(token, tenant, address, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING"
            ),
            (self._param(token), self._param(tenant), self._param(normalize_address(address)), now),
        )

    async def find_return_path(self, token: str) -> tuple[str, str] | None:
        row = await self._one("SELECT tenant, address FROM return_paths WHERE token = ?", (self._param(token),))
        return (row[0], row[1]) if row else None

    async def set_unsubscribed(self, tenant: str, user_id: str, rule: str, *, now: float) -> bool:
        return (
            await self._change(
                self.dialect.sql(
                    "INSERT INTO unsubscribes(tenant, user_id, rule, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING"
                ),
                (self._param(tenant), self._param(user_id), self._param(rule), now),
            )
            == 1
        )
