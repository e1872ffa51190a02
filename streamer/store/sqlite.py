"""SQLite store: one connection on one thread, writes group-committed.

Why not aiosqlite: it hops to its thread once per statement, and we want whole transactions in
one hop. Why group commit: a durable commit costs an fsync; concurrent webhook requests and
outbox updates that arrive while one commit is in flight are written together in the next one,
each in its own SAVEPOINT so one failure does not fail the others. An operation's future
resolves only after its transaction is committed.

The inbox is shaped for the single process SQLite allows (`run` holds a lock file): a webhook
batch is stored as one row, as the bytes Auth0 sent when nothing in it needs scrubbing, with its
log_ids in a small dedup table; the processor takes rows after a persisted cursor, keeps its
leases in memory and gets the events of rows stored moments ago handed over without reading
them back. No per-event UPDATE, so storing costs little more than parsing. Events whose users
could not be fetched move to `retries`, one row each, with their own next attempt time.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from streamer.events import BodyError, parse_body, scrub, scrubbed_json, user_id_of
from streamer.logs import get_logger
from streamer.outbox import COUNTED_STATES, IN_FLIGHT_STATES, Command, DueEmail, OutboxEmail, sources, target
from streamer.store import migrations
from streamer.store.base import (
    InboxEvent,
    IngestResult,
    PendingPassword,
    RecipientChecks,
    StoreInUse,
    recipients_by_tenant,
    users_by_tenant,
)
from streamer.store.outbox_sql import (
    OUTBOX_COLUMNS,
    PURGE_EMAILS,
    SqlOutbox,
    email_from_row,
    requeue_sql,
    states_sql,
)
from streamer.store.records_sql import (
    INSERT_PENDING,
    REPLACE_PENDING,
    SUPPRESSION_COLUMNS,
    SqlRecords,
    pending_row,
    suppression_from_row,
)
from streamer.store.sql import Dialect
from streamer.store.store_thread import StoreThread
from streamer.suppression.policy import Reason, Suppression, normalize_address

T = TypeVar("T")
log = get_logger(__name__)

#: Schema version 2, as every database had it before schema changes became numbered files: a new
#: database starts here, then `sqlite_migrations/` brings it up to date, as it does an old one.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, body BLOB NOT NULL, events INTEGER NOT NULL,
  received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS seen(tenant TEXT NOT NULL, log_id TEXT NOT NULL, at REAL NOT NULL,
  PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retries(
  tenant TEXT NOT NULL, log_id TEXT NOT NULL, body BLOB NOT NULL, received_at REAL NOT NULL,
  attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL, last_error TEXT,
  PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retries_due ON retries(next_attempt_at);
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
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '2'), ('inbox_done', '0'), ('inbox_done_at', '0');
"""


def _upsert_suppression(
    conn: sqlite3.Connection, tenant: str, address: str, reason: Reason, source: str, detail: str, now: float
) -> bool:
    known = conn.execute("SELECT 1 FROM suppressions WHERE tenant = ? AND address = ?", (tenant, address)).fetchone()
    conn.execute(
        "INSERT INTO suppressions(tenant, address, reason, source, detail, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tenant, address) DO UPDATE SET reason = excluded.reason, "
        "source = excluded.source, detail = excluded.detail, updated_at = excluded.updated_at",
        (tenant, address, reason.value, source, detail[:500], now, now),
    )
    return known is None


def _suppressions_in(conn: sqlite3.Connection, tenant: str, addresses: list[str]) -> dict[str, Suppression]:
    """Lower-cased address → entry, for those of `addresses` on the tenant's suppression list."""
    found = {}
    for chunk in _chunks(sorted({normalize_address(a) for a in addresses})):
        for row in conn.execute(
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant = ? "
            f"AND address IN ({', '.join('?' * len(chunk))})",
            (tenant, *chunk),
        ):
            found[row[1]] = suppression_from_row(row)
    return found


def _unsubscribed_in(conn: sqlite3.Connection, tenant: str, user_ids: list[str]) -> dict[str, set[str]]:
    """user_id → the rules they unsubscribed from, for those of `user_ids` who did."""
    found: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(set(user_ids))):
        for user_id, rule in conn.execute(
            f"SELECT user_id, rule FROM unsubscribes WHERE tenant = ? AND user_id IN ({', '.join('?' * len(chunk))})",
            (tenant, *chunk),
        ):
            found.setdefault(user_id, set()).add(rule)
    return found


#: Schema 1 kept one row per event with its state; pending ones become retries, all stay deduplicated.
MIGRATE_FROM_1 = """
INSERT OR IGNORE INTO seen(tenant, log_id, at) SELECT tenant, log_id, received_at FROM events;
INSERT OR IGNORE INTO retries(tenant, log_id, body, received_at, attempts, next_attempt_at, last_error)
  SELECT tenant, log_id, body, received_at, attempts, next_attempt_at, last_error FROM events WHERE state = 'pending';
DROP TABLE events;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""

#: Schema changes after version 2 (SCHEMA above): numbered files in sqlite_migrations/, from 0003
#: (see streamer.store.migrations). Applied at open, each in its own transaction.
MIGRATIONS = migrations.load("sqlite_migrations", first=3)
BASE_VERSION = 2

#: How long a commit waits for more writes when the last one carried several (PostgreSQL's commit_delay).
COMMIT_DELAY_S = 0.001
#: At most this many just-stored events are kept in memory for the processor (a few MB; the
#: processor claims 200 at a time, so a backlog beyond this is read from the file).
FRESH_LIMIT = 5_000
#: SQLite's limit on the variables of one statement is 32766; stay well below it.
_IN_CHUNK = 500


def _chunks(log_ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(log_ids), _IN_CHUNK):
        yield log_ids[start : start + _IN_CHUNK]


def _log_ids_in(conn: sqlite3.Connection, table: str, tenant: str, log_ids: list[str]) -> set[str]:
    """Which of `log_ids` the table (`seen` or `retries`) holds for the tenant."""
    found: set[str] = set()
    for chunk in _chunks(log_ids):
        found.update(
            row[0]
            for row in conn.execute(
                f"SELECT log_id FROM {table} WHERE tenant = ? AND log_id IN ({', '.join('?' * len(chunk))})",
                (tenant, *chunk),
            )
        )
    return found


def _insert_seen(conn: sqlite3.Connection, tenant: str, log_ids: list[str], now: float) -> set[str]:
    """Record log_ids as seen; return those that were new. One multi-row statement per chunk,
    not a lookup and an executemany: each statement step hands the GIL to the event loop and
    back, and on one core that costs more than the insert itself."""
    new: set[str] = set()
    for chunk in _chunks(log_ids):
        new.update(
            row[0]
            for row in conn.execute(
                f"INSERT INTO seen(tenant, log_id, at) VALUES {', '.join(['(?, ?, ?)'] * len(chunk))} "
                f"ON CONFLICT DO NOTHING RETURNING log_id",
                [value for log_id in chunk for value in (tenant, log_id, now)],
            )
        )
    return new


@dataclass
class _Lease:
    """An inbox row the processor holds: the events of it not yet settled or deferred."""

    tenant: str
    open: set[str]
    lease_until: float
    attempts: int


_DIALECT = Dialect(
    numbered=False, release="lease_until = NULL", recipient_is="recipient = ? COLLATE NOCASE", emails="outbox_emails"
)

#: Every state but `sent`, which grows with the retention and is counted as it happens
#: (streamer_emails_sent_total): the gauges run every few seconds and must not scan it.
OUTBOX_COUNTS = f"SELECT state, count(*) FROM outbox WHERE state IN {states_sql(COUNTED_STATES)} GROUP BY state"
#: Ids grow with time: the open email with the lowest id is the oldest, found in the state index.
OLDEST_OPEN = (
    "SELECT created_at FROM outbox WHERE id = (SELECT min(id) FROM outbox "
    f"WHERE state IN {states_sql(IN_FLIGHT_STATES)})"
)
#: Events stored but not yet through the rules: the rows after the cursor, and the retries.
INBOX_PENDING = (
    "SELECT (SELECT coalesce(sum(events), 0) FROM inbox WHERE id > (SELECT CAST(value AS INTEGER) "
    "FROM meta WHERE key = 'inbox_done')) + (SELECT count(*) FROM retries)"
)
#: `OUTBOX_COLUMNS` of a row of `outbox` being changed: RETURNING cannot join, so its context is a subquery.
_CHANGED_EMAIL = OUTBOX_COLUMNS.removesuffix("context") + (
    "(SELECT context FROM outbox_context WHERE outbox_context.id = outbox.id)"
)
#: INDEXED BY: without statistics SQLite picks outbox_state, reads every queued row and sorts them
#: all for each claim, which turns working off a large backlog (an SMTP outage) quadratic.
CLAIM_EMAILS = (
    f"UPDATE outbox SET state = '{target(Command.CLAIM).value}', lease_until = ?, attempts = attempts + 1, "
    f"updated_at = ? WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_due WHERE state IN "
    f"{states_sql(sources(Command.CLAIM))} AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?) "
    f"RETURNING {_CHANGED_EMAIL}"
)
CLAIM_RETRIES = (
    "UPDATE retries SET next_attempt_at = ?, attempts = attempts + 1, last_error = NULL "
    "WHERE (tenant, log_id) IN (SELECT tenant, log_id FROM retries INDEXED BY retries_due "
    "WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?) "
    "RETURNING tenant, log_id, body, received_at, attempts"
)


def _claim_emails(conn: sqlite3.Connection, *, limit: int, now: float, lease_s: float) -> list[OutboxEmail]:
    """Due emails set to `sending` (Command.CLAIM), by next attempt time."""
    rows = conn.execute(CLAIM_EMAILS, (now + lease_s, now, now, limit)).fetchall()
    return sorted((email_from_row(r) for r in rows), key=lambda e: e.next_attempt_at)


def _lock(path: Path) -> int:
    """One `streamer run` per SQLite file: two would both send (PostgreSQL is for several processes).
    An flock on `<file>.lock`, released when its descriptor closes (or the process dies)."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RuntimeError(f"{path.parent}: {exc.strerror}") from None  # the daemon: "cannot open the store: …"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(
            f"another `streamer run` is using {path}; one process per SQLite store (use PostgreSQL to run several)"
        ) from None
    return fd


class SqliteStore(SqlOutbox, SqlRecords):
    dialect = _DIALECT
    single_process = True

    def __init__(self, path: str | Path, *, synchronous: str = "FULL"):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._synchronous = synchronous
        #: For commits of changes a power cut may lose (`_write(durable=False)`): WAL, no fsync.
        self._synchronous_lazy = "NORMAL" if synchronous.upper() in ("FULL", "EXTRA") else synchronous
        self._thread = StoreThread("sqlite")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool]] = []
        self._synced = True  # whether commits run at the configured `synchronous` (else NORMAL)
        self._flushing = False
        # The processor's claims on inbox rows. Touched on the event loop only, after commits.
        self._leases: dict[int, _Lease] = {}
        self._claimed_upto = 0  # highest inbox row ever claimed by this process
        self._done = 0  # every inbox row up to this one is settled (persisted as inbox_done)
        self._claiming = asyncio.Lock()
        # Events of inbox rows this process stored and the processor has not claimed yet, so that
        # it need not read and parse them back (bounded; rows beyond it are read from the file).
        self._fresh: dict[int, tuple[str, list[dict[str, Any]], float]] = {}
        self._fresh_events = 0
        self._lock_fd: int | None = None

    # --- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._thread.run(fn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
        new = not legacy and not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        conn.executescript(SCHEMA)
        if legacy:
            conn.executescript(f"BEGIN IMMEDIATE; {MIGRATE_FROM_1} COMMIT;")
        self._migrate(conn, new=new)
        self._done = int(conn.execute("SELECT value FROM meta WHERE key = 'inbox_done'").fetchone()[0])
        self._claimed_upto = self._done
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection, *, new: bool = False) -> None:
        """Apply the pending files; `new`: the database was just made, so it says once that it was
        created (at the latest version) instead of once per file."""
        version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        latest = max(BASE_VERSION, migrations.latest(MIGRATIONS))
        if version > latest:
            conn.close()
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this streamer's {latest}: upgrade streamer"
            )
        for migration in migrations.pending(MIGRATIONS, version):
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{migration.sql}\n;UPDATE meta SET value = "
                    f"'{migration.version}' WHERE key = 'schema_version'; COMMIT;"
                )
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
                raise
            if not new:
                log.info("store_migrated", path=str(self.path), migration=str(migration))
        if new:
            log.info("store_created", path=str(self.path), version=latest)

    async def open(self, *, exclusive: bool = False) -> None:
        if exclusive:
            self._lock_fd = _lock(self.path)
        try:
            await self._run(self._connect)
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        try:
            while self._flushing or self._pending:
                await asyncio.sleep(0.01)
            if self._conn is not None:
                await self._run(self._conn.close)
                self._conn = None
            self._thread.shutdown()
        finally:
            self._unlock()

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return await self._run(fn, self._conn)

    async def _change_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        return await self._write(lambda c: [c.execute(sql, args).rowcount for sql, args in statements])

    async def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        return await self._read(lambda c: c.execute(sql, args).fetchall())

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` inside the next group commit; resolve once it is committed.

        `durable=False`: a change whose loss in a power cut (not a process crash: the WAL is
        written either way) is harmless, such as a claim, which a restart hands back anyway. A
        commit of such changes alone skips its fsync; the next durable commit covers it (the
        WAL is one ordered file)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, durable))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            previous = 0
            while self._pending:
                if previous > 1 and len(self._pending) < previous:
                    # Under concurrent load an fsync costs more CPU than the writes it commits:
                    # give the requests already on their way a moment to join this commit.
                    await asyncio.sleep(COMMIT_DELAY_S)
                group, self._pending = self._pending, []
                previous = len(group)
                try:
                    outcomes = await self._run(
                        self._commit_group, [fn for fn, _, _ in group], any(durable for _, _, durable in group)
                    )
                except BaseException as exc:  # the commit itself failed: every op in it failed
                    for _, future, _ in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future, _), (ok, value) in zip(group, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    def _commit_group(self, fns: list[Callable[[sqlite3.Connection], Any]], durable: bool) -> list[tuple[bool, Any]]:
        """Fast path: all operations in one plain transaction. If one fails, roll back and
        run them again, each in its own SAVEPOINT, so only the failing one fails."""
        conn = self._conn
        assert conn is not None, "store is not open"
        if durable != self._synced:  # a pragma SQLite refuses inside a transaction: set between them
            conn.execute(f"PRAGMA synchronous={self._synchronous if durable else self._synchronous_lazy}")
            self._synced = durable
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
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back itself (SQLITE_FULL, an I/O
                        # error): nothing of this group is stored, so every op fails with the cause.
                        raise
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
    async def add_events(
        self,
        tenant: str,
        events: list[dict[str, Any]],
        *,
        now: float,
        checkpoint: str | None = None,
        raw: bytes | None = None,
    ) -> IngestResult:
        unique = {e["log_id"]: e for e in reversed(events)}  # of two copies in one batch, the first is kept
        log_ids = list(unique)

        def insert(conn: sqlite3.Connection) -> tuple[IngestResult, int | None, list[dict[str, Any]]]:
            inserted = _insert_seen(conn, tenant, log_ids, now)
            new = [log_id for log_id in log_ids if log_id in inserted]
            row_id, stored = None, []
            if new:
                if raw is not None and len(new) == len(events):
                    body, stored = raw, events
                else:
                    stored = [scrub(unique[log_id]) for log_id in reversed(new)]
                    body = orjson.dumps(stored)
                row_id = conn.execute(
                    "INSERT INTO inbox(tenant, body, events, received_at) VALUES (?, ?, ?, ?)",
                    (tenant, body, len(new), now),
                ).lastrowid
            if checkpoint is not None:
                conn.execute(
                    "INSERT INTO checkpoints(tenant, log_id, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(tenant) DO UPDATE SET log_id = excluded.log_id, updated_at = excluded.updated_at",
                    (tenant, checkpoint, now),
                )
            return IngestResult(new=len(new), duplicate=len(events) - len(new)), row_id, stored

        result, row_id, stored = await self._write(insert)
        if row_id is not None and self._fresh_events + len(stored) <= FRESH_LIMIT:
            self._fresh[row_id] = (tenant, stored, now)
            self._fresh_events += len(stored)
        return result

    async def get_checkpoint(self, tenant: str) -> str | None:
        row = await self._read(
            lambda c: c.execute("SELECT log_id FROM checkpoints WHERE tenant = ?", (tenant,)).fetchone()
        )
        return row[0] if row else None

    async def claim_events(self, *, limit: int, now: float, lease_s: float) -> list[InboxEvent]:
        async with self._claiming:  # one claimer at a time: the leases are this process's memory
            expired = [row_id for row_id, lease in self._leases.items() if lease.lease_until <= now]
            after = self._claimed_upto

            def claim(conn: sqlite3.Connection) -> tuple[list[Any], list[int], dict[int, tuple[Any, ...]], bool]:
                retried = conn.execute(CLAIM_RETRIES, (now + lease_s, now, limit)).fetchall()
                wanted, total = list(expired), len(retried)
                for row_id, count in conn.execute(
                    "SELECT id, events FROM inbox WHERE id > ? ORDER BY id LIMIT ?", (after, max(1, limit - total))
                ):
                    if total >= limit:
                        break
                    wanted.append(row_id)
                    total += count
                unread = [row_id for row_id in wanted if row_id not in self._fresh]  # `in` is atomic
                rows = {
                    row_id: (tenant, body, received_at)
                    for row_id, tenant, body, received_at in conn.execute(
                        f"SELECT id, tenant, body, received_at FROM inbox WHERE id IN ({', '.join('?' * len(unread))})",
                        unread,
                    )
                }
                return retried, wanted, rows, conn.execute("SELECT 1 FROM retries LIMIT 1").fetchone() is not None

            retried, wanted, rows, any_retries = await self._write(claim, durable=False)
            claimed = [
                InboxEvent(
                    t, log_id, (event := orjson.loads(body))["type"], user_id_of(event), event, received_at, attempts
                )
                for t, log_id, body, received_at, attempts in retried
            ]
            for row_id in wanted:
                lease = self._leases.get(row_id)
                attempts = lease.attempts + 1 if lease else 1
                if row_id in self._fresh:  # stored by this process moments ago: no need to read it back
                    tenant, events, received_at = self._fresh.pop(row_id)
                    self._fresh_events -= len(events)
                elif row_id in rows:
                    tenant, body, received_at = rows[row_id]
                    try:  # a large row (a 5 MB webhook body) is parsed off the event loop
                        events = (
                            await asyncio.to_thread(parse_body, body) if len(body) > 256 * 1024 else parse_body(body)
                        ).events
                    except BodyError as exc:  # it parsed when stored: the file was damaged since
                        log.error("inbox_row_unreadable", row=row_id, tenant=tenant, error=str(exc))
                        events = []
                else:  # not in the file either: cannot happen (purge only deletes rows below the cursor)
                    continue
                if lease is not None:
                    events = [e for e in events if e["log_id"] in lease.open]
                elif any_retries:  # read again after a restart: its deferred events wait in `retries`
                    log_ids = [e["log_id"] for e in events]
                    deferred = await self._read(partial(_log_ids_in, table="retries", tenant=tenant, log_ids=log_ids))
                    events = [e for e in events if e["log_id"] not in deferred]
                self._leases[row_id] = _Lease(tenant, {e["log_id"] for e in events}, now + lease_s, attempts)
                self._claimed_upto = max(self._claimed_upto, row_id)
                claimed += [
                    InboxEvent(tenant, e["log_id"], e["type"], user_id_of(e), e, received_at, attempts) for e in events
                ]
            self._close_finished_leases()
            # A row read from the file because its commit was still being acknowledged: drop its copy.
            for row_id in list(itertools.takewhile(lambda r: r <= self._claimed_upto, self._fresh)):
                self._fresh_events -= len(self._fresh.pop(row_id)[1])
            return claimed

    def _close_finished_leases(self) -> None:
        for row_id in [row_id for row_id, lease in self._leases.items() if not lease.open]:
            del self._leases[row_id]

    def _done_after(self, keys: list[tuple[str, str]]) -> int:
        """The inbox cursor once `keys` are settled: below the lowest row still holding other events."""
        leaving = set(keys)
        still_open = [
            row_id
            for row_id, lease in self._leases.items()
            if any((lease.tenant, log_id) not in leaving for log_id in lease.open)
        ]
        return min(still_open) - 1 if still_open else self._claimed_upto

    def _release(self, keys: list[tuple[str, str]], done: int) -> None:
        leaving = set(keys)
        for lease in self._leases.values():
            lease.open = {log_id for log_id in lease.open if (lease.tenant, log_id) not in leaving}
        self._close_finished_leases()
        self._done = max(self._done, done)

    @staticmethod
    def _advance(conn: sqlite3.Connection, done: int, now: float) -> None:
        # max(): two settles computed concurrently each hold a cursor at or below the truth.
        conn.execute("UPDATE meta SET value = max(CAST(value AS INTEGER), ?) WHERE key = 'inbox_done'", (done,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'inbox_done_at'", (repr(now),))

    async def settle_events(self, keys: list[tuple[str, str]], emails: list[DueEmail], *, now: float) -> list[DueEmail]:
        done = self._done_after(keys)
        leased = {(lease.tenant, log_id) for lease in self._leases.values() for log_id in lease.open}
        retried = [key for key in keys if key not in leased]

        def settle(conn: sqlite3.Connection) -> list[DueEmail]:
            queued = []
            for email in emails:
                if email.cooldown_s is None:
                    cursor = conn.execute(
                        "INSERT INTO once_keys(key, at) VALUES (?, ?) ON CONFLICT DO NOTHING", (email.once_key, now)
                    )
                else:
                    cursor = conn.execute(
                        "INSERT INTO once_keys(key, at) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET at = excluded.at WHERE once_keys.at <= ?",
                        (email.once_key, now, now - email.cooldown_s),
                    )
                if cursor.rowcount != 1:
                    continue
                cursor = conn.execute(
                    "INSERT INTO outbox(key, tenant, rule, template, user_id, log_id, recipient, locale, state, "
                    "next_attempt_at, created_at, updated_at, accepted_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                    (
                        email.key,
                        email.tenant,
                        email.rule,
                        email.template,
                        email.user_id,
                        email.log_id,
                        email.recipient,
                        email.locale,
                        now,
                        now,
                        now,
                        email.accepted_at,
                    ),
                )
                if cursor.rowcount == 1:
                    conn.execute(
                        "INSERT INTO outbox_context(id, context) VALUES (?, ?)",
                        (cursor.lastrowid, scrubbed_json(email.context).decode()),
                    )
                    queued.append(email)
            if retried:
                conn.executemany("DELETE FROM retries WHERE tenant = ? AND log_id = ?", retried)
            if keys:
                self._advance(conn, done, now)
            return queued

        queued = await self._write(settle)
        self._release(keys, done)
        return queued

    async def defer_events(self, keys: list[tuple[str, str]], *, until: float, error: str) -> None:
        leased = {(lease.tenant, log_id): row_id for row_id, lease in self._leases.items() for log_id in lease.open}
        from_inbox = [key for key in keys if key in leased]
        bodies = await self._read_bodies(from_inbox, leased)
        done, now = self._done_after(from_inbox), time.time()

        def defer(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO retries(tenant, log_id, body, received_at, attempts, next_attempt_at, last_error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET next_attempt_at = excluded.next_attempt_at, "
                "last_error = excluded.last_error",
                [(t, log_id, *bodies[(t, log_id)], until, error[:500]) for t, log_id in from_inbox],
            )
            conn.executemany(
                "UPDATE retries SET next_attempt_at = ?, last_error = ? WHERE tenant = ? AND log_id = ?",
                [(until, error[:500], t, log_id) for t, log_id in keys if (t, log_id) not in leased],
            )
            if from_inbox:
                self._advance(conn, done, now)

        await self._write(defer)
        self._release(from_inbox, done)

    async def _read_bodies(
        self, keys: list[tuple[str, str]], leased: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], tuple[bytes, float, int]]:
        """(scrubbed event JSON, received_at, attempts) of events still inside their inbox rows."""
        row_ids = sorted({leased[key] for key in keys})
        if not row_ids:
            return {}
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT id, tenant, body, received_at FROM inbox WHERE id IN ({', '.join('?' * len(row_ids))})",
                row_ids,
            ).fetchall()
        )
        wanted, found = set(keys), {}
        for row_id, tenant, body, received_at in rows:
            for event in parse_body(body).events:
                if (tenant, event["log_id"]) in wanted:
                    found[(tenant, event["log_id"])] = (
                        orjson.dumps(scrub(event)),
                        received_at,
                        self._leases[row_id].attempts,
                    )
        return found

    # --- outbox -----------------------------------------------------------------------------
    async def claim_emails(self, *, limit: int, now: float, lease_s: float) -> list[OutboxEmail]:
        return await self._write(lambda conn: _claim_emails(conn, limit=limit, now=now, lease_s=lease_s), durable=False)

    async def claim_emails_checked(
        self, *, limit: int, now: float, lease_s: float, unsubscribable: frozenset[str] = frozenset()
    ) -> tuple[list[OutboxEmail], dict[str, RecipientChecks | None]]:
        """One hop to the store's thread for all: on one core each hop costs as much as its SQL.
        A tenant whose checks fail is None (its emails wait for their lease), the claim stands."""
        failures: dict[str, tuple[Exception, int]] = {}

        def claim(conn: sqlite3.Connection) -> tuple[list[OutboxEmail], dict[str, RecipientChecks | None]]:
            failures.clear()  # a group commit that failed runs its operations again
            emails = _claim_emails(conn, limit=limit, now=now, lease_s=lease_s)
            users = users_by_tenant(emails, unsubscribable)
            found: dict[str, RecipientChecks | None] = {}
            for tenant, recipients in recipients_by_tenant(emails).items():
                try:
                    found[tenant] = RecipientChecks(
                        _suppressions_in(conn, tenant, recipients),
                        _unsubscribed_in(conn, tenant, users.get(tenant, [])),
                    )
                except Exception as exc:  # noqa: BLE001 - that tenant's emails are held back, not the others'
                    if not conn.in_transaction:  # SQLite rolled the whole transaction back: the claim too
                        raise
                    failures[tenant] = (exc, len(recipients))
                    found[tenant] = None
            return emails, found

        result = await self._write(claim, durable=False)
        for tenant, (exc, count) in failures.items():
            log.error("suppression_lookup_failed", tenant=tenant, emails=count, exc_info=exc)
        return result

    async def resume_after_restart(self, *, now: float) -> int:
        held = sum(len(lease.open) for lease in self._leases.values())
        self._leases.clear()
        self._claimed_upto = self._done

        def release(conn: sqlite3.Connection) -> int:
            events = conn.execute(
                "UPDATE retries SET next_attempt_at = ? WHERE next_attempt_at > ? AND last_error IS NULL", (now, now)
            ).rowcount
            emails = conn.execute(requeue_sql(_DIALECT), (now,)).rowcount
            return events + emails

        return held + await self._write(release)

    async def stats(self, *, now: float) -> dict[str, Any]:
        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            counts = dict(conn.execute(OUTBOX_COUNTS).fetchall())
            oldest = conn.execute(OLDEST_OPEN).fetchone()
            pending = conn.execute(INBOX_PENDING).fetchone()[0]
            return {
                "outbox": {state.value: counts.get(state.value, 0) for state in COUNTED_STATES},
                "oldest_open_age_s": (now - oldest[0]) if oldest else 0.0,
                "inbox_pending": pending,
            }

        return await self._read(read)

    # --- pending passwords --------------------------------------------------------------------
    async def save_pending_password(self, pending: PendingPassword, *, now: float) -> int:
        def save(conn: sqlite3.Connection) -> int:
            replaced = conn.execute(REPLACE_PENDING, (now, pending.tenant, pending.user_id)).rowcount
            conn.execute(INSERT_PENDING, pending_row(pending))
            return replaced

        return await self._write(save)

    async def restore_pending_password(self, pending_id: str, sealed: bytes, *, now: float) -> bool:
        return bool(
            await self._write(
                lambda c: (
                    c.execute(
                        "UPDATE pending_passwords SET state = 'pending', sealed = ?, updated_at = ? "
                        "WHERE id = ? AND state = 'used' "
                        "AND NOT EXISTS (SELECT 1 FROM pending_passwords AS newer "
                        "WHERE newer.tenant = pending_passwords.tenant "
                        "AND newer.user_id = pending_passwords.user_id AND newer.state = 'pending')",
                        (sealed, now, pending_id),
                    ).rowcount
                )
            )
        )

    async def purge(self, *, before: float) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            done = conn.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'inbox_done'").fetchone()[0]
            events = conn.execute("DELETE FROM inbox WHERE id <= ? AND received_at < ?", (done, before)).rowcount
            # Forget log_ids only once their events went through the rules (dedup must cover the backlog).
            oldest_open = conn.execute("SELECT min(received_at) FROM inbox WHERE id > ?", (done,)).fetchone()[0]
            conn.execute("DELETE FROM seen WHERE at < ?", (min(before, oldest_open or before),))
            emails = conn.execute(PURGE_EMAILS, (before,)).rowcount
            return events + emails

        return await self._write(purge)

    # --- suppression list, return paths and unsubscribes --------------------------------------
    async def suppress(
        self, tenant: str, address: str, *, reason: Reason, source: str, detail: str, now: float
    ) -> bool:
        address = normalize_address(address)
        return await self._write(lambda c: _upsert_suppression(c, tenant, address, reason, source, detail, now))

    async def record_soft_bounce(
        self, tenant: str, address: str, *, source: str, detail: str, now: float, window_s: float, threshold: int
    ) -> bool:
        address = normalize_address(address)

        def record(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM soft_bounces WHERE tenant = ? AND address = ? AND at <= ?",
                (tenant, address, now - window_s),
            )
            conn.execute("INSERT INTO soft_bounces(tenant, address, at) VALUES (?, ?, ?)", (tenant, address, now))
            count = conn.execute(
                "SELECT count(*) FROM soft_bounces WHERE tenant = ? AND address = ?", (tenant, address)
            ).fetchone()[0]
            if count < threshold:
                return False
            return _upsert_suppression(
                conn, tenant, address, Reason.SOFT_BOUNCE, source, f"{count} soft bounces; last: {detail}", now
            )

        return await self._write(record)

    async def get_suppressions(self, tenant: str, addresses: list[str]) -> dict[str, Suppression]:
        if not addresses:
            return {}
        return await self._read(partial(_suppressions_in, tenant=tenant, addresses=addresses))

    async def get_unsubscribed(self, tenant: str, user_ids: list[str]) -> dict[str, set[str]]:
        if not user_ids:
            return {}
        return await self._read(partial(_unsubscribed_in, tenant=tenant, user_ids=user_ids))
