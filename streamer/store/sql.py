"""What the SQL stores share beneath their SQL: a tiny dialect and two primitives.

Logic written once above the backends (`outbox_sql`, `records_sql`) writes its statements with
`?` placeholders and runs them through `_change` and `_select`; each backend says how (SQLite:
its group commit; PostgreSQL: its pool) and keeps its own SQL only where the two differ in
substance: claiming, settling, ingesting and locking.
"""

from __future__ import annotations

import itertools
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from streamer.store.base import Store

#: A `?` outside quoted literals (a literal is matched whole, and kept).
_PLACEHOLDER = re.compile(r"'[^']*'|\?")


@dataclass(frozen=True)
class Dialect:
    #: `$1, $2 …` (PostgreSQL) instead of `?` (SQLite).
    numbered: bool
    #: What a claim that ends (sent, failed, requeued …) clears.
    release: str
    #: The recipient equals a parameter, in any case.
    recipient_is: str
    #: What whole emails (`OUTBOX_COLUMNS`) are read from: SQLite keeps the context in a table of
    #: its own (its migration 0006), so that the rows that change state stay small.
    emails: str = "outbox"

    def sql(self, text: str) -> str:
        """`text` written with `?` placeholders, in this dialect."""
        if not self.numbered:
            return text
        counter = itertools.count(1)
        return _PLACEHOLDER.sub(lambda m: m[0] if m[0] != "?" else f"${next(counter)}", text)


class SqlStore(Store):
    """A store that runs SQL: the primitives the shared logic needs."""

    dialect: ClassVar[Dialect]

    @abstractmethod
    async def _change_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run writing statements (in this dialect) in one transaction; rows changed by each."""

    async def _change(self, sql: str, args: Sequence[Any]) -> int:
        """One writing statement in its own transaction; rows changed."""
        [changed] = await self._change_all([(sql, args)])
        return changed

    @abstractmethod
    async def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """Run one query (in this dialect); its rows."""

    def _param(self, value: str) -> str:
        """A text parameter as the database can store it (PostgreSQL: no NUL)."""
        return value
