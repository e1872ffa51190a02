"""SQLite store: one connection on one thread, writes group-committed.

Why not aiosqlite: it hops to its thread once per statement, and we want whole transactions in
one hop. Why group commit: a durable commit costs an fsync; concurrent webhook requests and
outbox updates that arrive while one commit is in flight are written together in the next one,
each in its own SAVEPOINT so one failure does not fail the others. An operation's future
resolves only after its transaction is committed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from streamer.events import scrub, user_id_of
from streamer.outbox import (
    CANCELLABLE_STATES,
    RETRYABLE_STATES,
    DueEmail,
    EmailState,
    OutboxEmail,
)
from streamer.store.base import InboxEvent, IngestResult, Store

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events(
  tenant TEXT NOT NULL, log_id TEXT NOT NULL, type TEXT NOT NULL, user_id TEXT, body TEXT NOT NULL,
  received_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL, last_error TEXT, processed_at REAL,
  PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_pending ON events(next_attempt_at, log_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_processed ON events(processed_at) WHERE state = 'done';
CREATE TABLE IF NOT EXISTS checkpoints(tenant TEXT PRIMARY KEY, log_id TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS once_keys(key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, rule TEXT NOT NULL,
  template TEXT NOT NULL, user_id TEXT NOT NULL, log_id TEXT NOT NULL, recipient TEXT NOT NULL,
  locale TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL, lease_until REAL, last_error TEXT, created_at REAL NOT NULL,
  updated_at REAL NOT NULL, sent_at REAL, accepted_at REAL NOT NULL, context TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt_at) WHERE state IN ('queued', 'failed');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, id);
CREATE INDEX IF NOT EXISTS outbox_leased ON outbox(lease_until) WHERE state = 'sending';
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
"""

_OUTBOX_COLUMNS = ("id, key, tenant, rule, template, user_id, log_id, recipient, locale, state, attempts, "
                   "next_attempt_at, last_error, created_at, updated_at, sent_at, accepted_at, context")


def _row_to_email(row: tuple) -> OutboxEmail:
    values = list(row)
    values[9] = EmailState(values[9])
    values[17] = json.loads(values[17])
    return OutboxEmail(*values)


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "FULL"):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._flushing = False

    # --- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        await self._run(self._connect)

    async def close(self) -> None:
        while self._flushing or self._pending:
            await asyncio.sleep(0.01)
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return await self._run(fn, self._conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside the next group commit; resolve once it is committed."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    outcomes = await self._run(self._commit_group, [fn for fn, _ in group])
                except BaseException as exc:  # the commit itself failed: every op in it failed
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), (ok, value) in zip(group, outcomes):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    def _commit_group(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        """Fast path: all operations in one plain transaction. If one fails, roll back and
        run them again, each in its own SAVEPOINT, so only the failing one fails."""
        conn = self._conn
        assert conn is not None, "store is not open"
        if len(fns) > 1:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [fn(conn) for fn in fns]
                conn.execute("COMMIT")
                return [(True, result) for result in results]
            except Exception:  # noqa: BLE001 - retried one by one below
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, fn(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:  # noqa: BLE001 - handed to that op's caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    # --- inbox ------------------------------------------------------------------------------
    async def add_events(self, tenant: str, events: list[dict[str, Any]], *, now: float,
                         checkpoint: str | None = None) -> IngestResult:
        rows = [(tenant, e["log_id"], e["type"], user_id_of(e), json.dumps(scrub(e), separators=(",", ":")),
                 now, now) for e in events]

        def insert(conn: sqlite3.Connection) -> IngestResult:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO events(tenant, log_id, type, user_id, body, received_at, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
            new = conn.total_changes - before
            if checkpoint is not None:
                conn.execute(
                    "INSERT INTO checkpoints(tenant, log_id, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(tenant) DO UPDATE SET log_id = excluded.log_id, updated_at = excluded.updated_at",
                    (tenant, checkpoint, now))
            return IngestResult(new=new, duplicate=len(rows) - new)

        return await self._write(insert)

    async def get_checkpoint(self, tenant: str) -> str | None:
        row = await self._read(lambda c: c.execute(
            "SELECT log_id FROM checkpoints WHERE tenant = ?", (tenant,)).fetchone())
        return row[0] if row else None

    async def claim_events(self, *, limit: int, now: float, lease_s: float) -> list[InboxEvent]:
        def claim(conn: sqlite3.Connection) -> list[InboxEvent]:
            rows = conn.execute(
                "UPDATE events SET next_attempt_at = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE (tenant, log_id) IN (SELECT tenant, log_id FROM events WHERE state = 'pending' "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at, log_id LIMIT ?) "
                "RETURNING tenant, log_id, type, user_id, body, received_at, attempts",
                (now + lease_s, now, limit)).fetchall()
            rows.sort(key=lambda r: r[1])
            return [InboxEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

        return await self._write(claim)

    async def settle_events(self, keys: list[tuple[str, str]], emails: list[DueEmail], *,
                            now: float) -> list[DueEmail]:
        def settle(conn: sqlite3.Connection) -> list[DueEmail]:
            queued = []
            for email in emails:
                if email.cooldown_s is None:
                    cursor = conn.execute("INSERT INTO once_keys(key, at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                          (email.once_key, now))
                else:
                    cursor = conn.execute(
                        "INSERT INTO once_keys(key, at) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET at = excluded.at WHERE once_keys.at <= ?",
                        (email.once_key, now, now - email.cooldown_s))
                if cursor.rowcount != 1:
                    continue
                cursor = conn.execute(
                    "INSERT INTO outbox(key, tenant, rule, template, user_id, log_id, recipient, locale, state, "
                    "next_attempt_at, created_at, updated_at, accepted_at, context) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                    (email.key, email.tenant, email.rule, email.template, email.user_id, email.log_id,
                     email.recipient, email.locale, now, now, now, email.accepted_at,
                     json.dumps(scrub(email.context), separators=(",", ":"), default=str)))
                if cursor.rowcount == 1:
                    queued.append(email)
            conn.executemany("UPDATE events SET state = 'done', processed_at = ?, last_error = NULL "
                             "WHERE tenant = ? AND log_id = ?", [(now, t, l) for t, l in keys])
            return queued

        return await self._write(settle)

    async def defer_events(self, keys: list[tuple[str, str]], *, until: float, error: str) -> None:
        await self._write(lambda c: c.executemany(
            "UPDATE events SET next_attempt_at = ?, last_error = ? WHERE tenant = ? AND log_id = ? "
            "AND state = 'pending'", [(until, error[:500], t, l) for t, l in keys]))

    # --- outbox -----------------------------------------------------------------------------
    async def claim_emails(self, *, limit: int, now: float, lease_s: float) -> list[OutboxEmail]:
        def claim(conn: sqlite3.Connection) -> list[OutboxEmail]:
            rows = conn.execute(
                f"UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1, updated_at = ? "
                f"WHERE id IN (SELECT id FROM outbox WHERE state IN ('queued', 'failed') AND next_attempt_at <= ? "
                f"ORDER BY next_attempt_at LIMIT ?) RETURNING {_OUTBOX_COLUMNS}",
                (now + lease_s, now, now, limit)).fetchall()
            return sorted((_row_to_email(r) for r in rows), key=lambda e: e.next_attempt_at)

        return await self._write(claim)

    async def resume_after_restart(self, *, now: float) -> int:
        def release(conn: sqlite3.Connection) -> int:
            events = conn.execute("UPDATE events SET next_attempt_at = ? WHERE state = 'pending' "
                                  "AND next_attempt_at > ? AND last_error IS NULL", (now, now)).rowcount
            emails = conn.execute("UPDATE outbox SET state = 'queued', lease_until = NULL, updated_at = ? "
                                  "WHERE state = 'sending'", (now,)).rowcount
            return events + emails

        return await self._write(release)

    async def requeue_stale(self, *, now: float) -> int:
        return await self._write(lambda c: c.execute(
            "UPDATE outbox SET state = 'queued', lease_until = NULL, updated_at = ? "
            "WHERE state = 'sending' AND lease_until < ?", (now, now)).rowcount)

    async def _update_state(self, sql: str, args: tuple) -> None:
        await self._write(lambda c: c.execute(sql, args))

    async def mark_sent(self, email_id: int, *, now: float) -> None:
        await self._update_state(
            "UPDATE outbox SET state = 'sent', sent_at = ?, updated_at = ?, lease_until = NULL, last_error = NULL "
            "WHERE id = ?", (now, now, email_id))

    async def mark_failed(self, email_id: int, *, error: str, next_attempt_at: float, now: float) -> None:
        await self._update_state(
            "UPDATE outbox SET state = 'failed', last_error = ?, next_attempt_at = ?, updated_at = ?, "
            "lease_until = NULL WHERE id = ?", (error[:1000], next_attempt_at, now, email_id))

    async def mark_dead(self, email_id: int, *, error: str, now: float) -> None:
        await self._update_state(
            "UPDATE outbox SET state = 'dead', last_error = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
            (error[:1000], now, email_id))

    async def list_emails(self, *, states: tuple[EmailState, ...] | None, tenant: str | None = None,
                          limit: int = 100) -> list[OutboxEmail]:
        where, args = [], []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += [s.value for s in states]
        if tenant:
            where.append("tenant = ?")
            args.append(tenant)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox {clause} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall())
        return [_row_to_email(r) for r in rows]

    async def get_email(self, email_id: int) -> OutboxEmail | None:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (email_id,)).fetchone())
        return _row_to_email(row) if row else None

    async def _transition(self, email_id: int, sql: str, args: tuple, from_states: tuple[EmailState, ...]) -> bool:
        placeholders = ", ".join("?" * len(from_states))
        return bool(await self._write(lambda c: c.execute(
            f"{sql} WHERE id = ? AND state IN ({placeholders})",
            (*args, email_id, *[s.value for s in from_states])).rowcount))

    async def retry_email(self, email_id: int, *, now: float) -> bool:
        return await self._transition(
            email_id, "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ?",
            (now, now), RETRYABLE_STATES)

    async def cancel_email(self, email_id: int, *, now: float) -> bool:
        return await self._transition(
            email_id, "UPDATE outbox SET state = 'cancelled', updated_at = ?", (now,), CANCELLABLE_STATES)

    async def stats(self, *, now: float) -> dict[str, Any]:
        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            counts = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
            oldest = conn.execute("SELECT min(created_at) FROM outbox WHERE state IN "
                                  "('queued', 'sending', 'failed')").fetchone()[0]
            pending = conn.execute("SELECT count(*) FROM events WHERE state = 'pending'").fetchone()[0]
            return {"outbox": {s.value: counts.get(s.value, 0) for s in EmailState},
                    "oldest_open_age_s": (now - oldest) if oldest else 0.0, "inbox_pending": pending}

        return await self._read(read)

    async def purge(self, *, before: float) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            events = conn.execute("DELETE FROM events WHERE state = 'done' AND processed_at < ?", (before,)).rowcount
            emails = conn.execute("DELETE FROM outbox WHERE state IN ('sent', 'cancelled', 'dead') "
                                  "AND updated_at < ?", (before,)).rowcount
            return events + emails

        return await self._write(purge)
