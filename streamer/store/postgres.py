"""PostgreSQL store: the SQLite store's semantics, safe for several `streamer run` replicas on one database.

- asyncpg pool (1..10 connections). Every method is one transaction; most are one statement
  (one round trip): `add_events` inserts the whole batch with `unnest` and upserts the poll
  checkpoint in data-modifying CTEs of the same statement, and counts new rows via RETURNING.
- Claims (`claim_events`, `claim_emails`) pick rows with `FOR UPDATE SKIP LOCKED` in a CTE and
  lease them in the same UPDATE … RETURNING: two replicas never claim the same row, and never
  wait for each other.
- `settle_events` runs the `once` ledger upsert (whose RETURNING says whether the email may be
  sent), the outbox insert and the events' `done` marks in one transaction. Two replicas settling
  the same once_key serialise on its ledger row: exactly one email is queued. A deadlock or
  serialisation failure (possible when two replicas touch the same keys in another order) rolls
  the whole transaction back and it is retried.
- Schema: versioned migrations (streamer/store/postgres_migrations/NNNN_*.sql, see
  `streamer.store.migrations`) applied by `open()` in one transaction under
  `pg_advisory_xact_lock`, so replicas starting together migrate once; nothing DDL runs when
  `meta.schema_version` is already current. `streamer migrate [--check]` uses the same code.
- Liveness (`reclaim_dead`): each open store takes a replica id and holds a session advisory lock
  on it; claims carry the id. A replica whose lock stays free (its session died: kill -9, crash,
  lost host after TCP keepalives) gets its claims taken back by the survivors within seconds,
  not after the lease (which stays as the last resort).
- Leadership (`try_lead`/`release_lead`): session advisory locks on one dedicated connection held
  for the store's lifetime, so that only one replica polls a tenant's Auth0 logs (see `try_lead`).
- `url`, `repr()` and every exception raised here show the URL with its password masked.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, overload
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from streamer.events import scrub, user_id_of
from streamer.logs import get_logger
from streamer.outbox import (
    COUNTED_STATES,
    IN_FLIGHT_STATES,
    TRANSITIONS,
    Command,
    DueEmail,
    EmailState,
    OutboxEmail,
    target,
)
from streamer.store import liveness, migrations
from streamer.store.base import InboxEvent, IngestResult, PendingPassword
from streamer.store.migrations import Migration
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
from streamer.suppression.policy import Reason, Suppression, normalize_address

T = TypeVar("T")
log = get_logger(__name__)

MIGRATIONS = migrations.load("postgres_migrations")
SCHEMA_VERSION = migrations.latest(MIGRATIONS)
#: Advisory lock keys (two-int form, so they cannot collide with another application's bigint keys).
_SCHEMA_LOCK = (0x5354524D, 1)  # "STRM", schema creation/migration (transaction-scoped)
_LEAD_NAMESPACE = 0x5354524C  # "STRL", leadership: (namespace, hashtext(name)) (session-scoped)
_LIVE_NAMESPACE = 0x5354524F  # "STRO", liveness: (namespace, replica id) (session-scoped)
#: Sessions of a host that vanished (no FIN/RST) are dropped by PostgreSQL after about
#: idle + interval × count = 25 s, which frees that replica's liveness and leadership locks.
_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
_PENDING_NAMESPACE = 0x50574443  # "PWDC", one writer per user's pending password (transaction-scoped)
_RETRIES = 5
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_LEAD_CHECK_TIMEOUT_S = 5.0
#: What a call on the lead/liveness session raises when the session is gone or unusable. asyncpg's
#: InternalClientError ("another operation is in progress") comes from a connection whose backend
#: was terminated while it was idle: the session is as lost as after a network error.
_SESSION_LOST = (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
_DIALECT = Dialect(
    numbered=True, release="lease_until = NULL, claimed_by = NULL", recipient_is="lower(recipient) = lower(?)"
)


class PostgresStoreError(RuntimeError):
    """The store cannot be opened or used; the message never contains the URL's password."""


# --- secrets ----------------------------------------------------------------------------------
_SECRET_PARAMS = re.compile(r"(?i)(^|&)((?:ssl)?password)=([^&]*)")


def mask_url(url: str) -> str:
    """The URL with its password (user-info or `?password=`) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hosts = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hosts}"
        query = _SECRET_PARAMS.sub(lambda m: f"{m[1]}{m[2]}=***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except Exception:  # noqa: BLE001 - unparseable: show nothing that could be a secret
        return url.split(":", 1)[0] + "://***"


def _secrets_of(url: str) -> list[str]:
    found: list[str] = []
    try:
        netloc = urlsplit(url).netloc
        query = urlsplit(url).query
    except Exception:  # noqa: BLE001
        netloc, query = url, ""
    if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
        found.append(netloc.rsplit("@", 1)[0].split(":", 1)[1])
    found += [m[3] for m in _SECRET_PARAMS.finditer(query)]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


# --- values -----------------------------------------------------------------------------------
@overload
def _text(value: str) -> str: ...
@overload
def _text(value: None) -> None: ...
def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL (SQLite can) nor lone surrogates: replace them, don't fail the batch."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _json(value: Any) -> str:
    # ensure_ascii (the default): the text is pure ASCII, escapes included; `json` columns keep it as is.
    return json.dumps(scrub(value), separators=(",", ":"), default=str)


def _count(status: str) -> int:
    """asyncpg's command status ("UPDATE 3", "INSERT 0 1") → rows affected."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


# --- SQL --------------------------------------------------------------------------------------
_ADD_EVENTS = """
WITH new AS (
  INSERT INTO events(tenant, log_id, type, user_id, body, received_at, next_attempt_at)
  SELECT $1::text, r.log_id, r.type, r.user_id, r.body::json, $2::float8, $2::float8
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS r(log_id, type, user_id, body)
  ON CONFLICT (tenant, log_id) DO NOTHING
  RETURNING 1),
checkpoint AS (
  INSERT INTO checkpoints(tenant, log_id, updated_at)
  SELECT $1::text, $7::text, $2::float8 WHERE $7::text IS NOT NULL
  ON CONFLICT (tenant) DO UPDATE SET log_id = excluded.log_id, updated_at = excluded.updated_at)
SELECT count(*) FROM new
"""

_CLAIM_EVENTS = """
WITH due AS (
  SELECT tenant, log_id FROM events
  WHERE state = 'pending' AND next_attempt_at <= $1
  ORDER BY next_attempt_at, log_id
  LIMIT $2
  FOR UPDATE SKIP LOCKED)
UPDATE events e SET next_attempt_at = $3, attempts = e.attempts + 1, claimed_by = $4
FROM due WHERE e.tenant = due.tenant AND e.log_id = due.log_id
RETURNING e.tenant, e.log_id, e.type, e.user_id, e.body, e.received_at, e.attempts
"""


# One statement per due email: the ledger upsert gates the outbox insert (the CTE's RETURNING is
# empty when the once_key already fired / is within its cooldown). Returns the outbox id if queued.
# $1 once_key, $2 now, [$3 cooldown cutoff], then the outbox columns.
def _settle_sql(ledger: str, first: int) -> str:
    p = [f"${n}" for n in range(first, first + 10)]
    return f"""
WITH once AS (
  INSERT INTO once_keys(key, at) VALUES ($1, $2::float8)
  {ledger}
  RETURNING 1)
INSERT INTO outbox(key, tenant, rule, template, user_id, log_id, recipient, locale, state,
                   next_attempt_at, created_at, updated_at, accepted_at, context)
SELECT {", ".join(p[:8])}, '{EmailState.QUEUED.value}', $2::float8, $2::float8, $2::float8, {p[8]}::float8, {p[9]}::json
WHERE EXISTS (SELECT 1 FROM once)
ON CONFLICT (key) DO NOTHING
RETURNING id
"""


_SETTLE_ONCE = _settle_sql("ON CONFLICT (key) DO NOTHING", 3)
_SETTLE_COOLDOWN = _settle_sql("ON CONFLICT (key) DO UPDATE SET at = excluded.at WHERE once_keys.at <= $3::float8", 4)

_EVENTS_DONE = """
UPDATE events e SET state = 'done', processed_at = $1, last_error = NULL
FROM unnest($2::text[], $3::text[]) AS k(tenant, log_id)
WHERE e.tenant = k.tenant AND e.log_id = k.log_id
"""

_DEFER_EVENTS = """
UPDATE events e SET next_attempt_at = $1, last_error = $2, claimed_by = NULL
FROM unnest($3::text[], $4::text[]) AS k(tenant, log_id)
WHERE e.tenant = k.tenant AND e.log_id = k.log_id AND e.state = 'pending'
"""

_CLAIMED = states_sql((target(Command.CLAIM),))
_CLAIM_EMAILS = f"""
WITH due AS (
  SELECT id FROM outbox
  WHERE state IN {states_sql(TRANSITIONS[Command.CLAIM].sources)} AND next_attempt_at <= $1
  ORDER BY next_attempt_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED)
UPDATE outbox o SET state = '{target(Command.CLAIM).value}', lease_until = $3, attempts = o.attempts + 1,
                    updated_at = $1, claimed_by = $4
FROM due WHERE o.id = due.id
RETURNING {", ".join(f"o.{c}" for c in OUTBOX_COLUMNS.split(", "))}
"""


# Replicas whose claims exist but whose liveness lock nobody holds (pg_locks shows granted locks
# of every session; advisory locks are per database). $1 now, $2 this replica, $3 the namespace.
_FREE_CLAIMERS = f"""
SELECT DISTINCT c.replica FROM (
  SELECT claimed_by AS replica FROM outbox WHERE state IN {_CLAIMED} AND claimed_by IS NOT NULL
  UNION ALL
  SELECT claimed_by FROM events WHERE state = 'pending' AND next_attempt_at > $1 AND claimed_by IS NOT NULL) c
WHERE c.replica <> $2 AND NOT EXISTS (
  SELECT 1 FROM pg_locks l
  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = $3::bigint::oid AND l.objid = c.replica::bigint::oid)
"""

_RECLAIM_EMAILS = requeue_sql(_DIALECT, "claimed_by = ANY(?::integer[])")

_RECLAIM_EVENTS = """
UPDATE events SET next_attempt_at = $1, claimed_by = NULL
WHERE state = 'pending' AND claimed_by = ANY($2::integer[])
"""


async def _schema_version(conn: asyncpg.Connection) -> int:
    """The version a database is at (0: empty)."""
    if not await conn.fetchval("SELECT to_regclass('meta') IS NOT NULL"):
        return 0
    version = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(version) if version is not None else 0


async def _apply_migrations(conn: asyncpg.Connection, url: str) -> list[Migration]:
    """Bring the schema up to date, in one transaction under the schema lock; returns what ran.

    Replicas starting together queue on the lock; the first migrates, the others then find the
    version current and run no DDL at all. `schema_migrations` keeps when each file ran."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_SCHEMA_LOCK)
        current = await _schema_version(conn)
        if current > SCHEMA_VERSION:
            raise PostgresStoreError(
                f"the database ({url}) has schema version {current}, newer than this streamer's "
                f"{SCHEMA_VERSION}: upgrade streamer"
            )
        todo = migrations.pending(MIGRATIONS, current)
        if todo:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations(version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at double precision NOT NULL)"
            )
        for migration in todo:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(migration.version),
            )
            await conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) "
                "VALUES ($1, $2, extract(epoch from clock_timestamp()))",
                migration.version,
                migration.name,
            )
        return todo


async def schema_status(url: str) -> tuple[int, list[Migration]]:
    """(the database's schema version, the migrations it still needs), without changing anything."""
    return await _with_connection(url, lambda conn: _status(conn))


async def _status(conn: asyncpg.Connection) -> tuple[int, list[Migration]]:
    current = await _schema_version(conn)
    return current, migrations.pending(MIGRATIONS, current)


async def apply_migrations(url: str) -> tuple[int, list[Migration]]:
    """(version before, migrations applied now)."""

    async def run(conn: asyncpg.Connection) -> tuple[int, list[Migration]]:
        before = await _schema_version(conn)
        return before, await _apply_migrations(conn, mask_url(url))

    return await _with_connection(url, run)


async def _with_connection(url: str, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    store = PostgresStore(url)
    error: PostgresStoreError | None = None
    try:
        conn = await asyncpg.connect(url, timeout=30, server_settings={"application_name": "streamer-migrate"})
    except Exception as exc:  # noqa: BLE001 - re-raised below without the original (it may hold the URL)
        error = store._error("cannot open the PostgreSQL store", exc)  # noqa: SLF001
    if error is not None:
        raise error
    try:
        return await action(conn)
    except PostgresStoreError:
        raise
    except Exception as exc:  # noqa: BLE001
        error = store._error("cannot migrate the PostgreSQL store", exc)  # noqa: SLF001
    finally:
        await conn.close()
    raise error


class PostgresStore(SqlOutbox, SqlRecords):
    """`postgresql://user:password@host:port/db?…` (asyncpg URL syntax). See the module docstring."""

    dialect = _DIALECT

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10):
        self._dsn = url
        self.url = mask_url(url)
        self._secrets = _secrets_of(url)
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._lead_conn: asyncpg.Connection | None = None
        self._leads: set[str] = set()
        self._lead_mutex = asyncio.Lock()
        #: This store's replica id (from the `replica_ids` sequence), the key of its liveness lock.
        self.replica_id: int | None = None
        self._alive = False  # the liveness lock is held on the session connection
        self._suspects: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # --- plumbing ---------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> PostgresStoreError:
        detail = str(exc) or type(exc).__name__
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return PostgresStoreError(f"{what} ({self.url}): {type(exc).__name__}: {detail}")

    async def open(self, *, exclusive: bool = False) -> None:
        """Replicas share the database: `exclusive` asks nothing more (see reclaim_dead, try_lead)."""
        error: PostgresStoreError | None = None
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=30,
                server_settings={"application_name": "streamer", **_KEEPALIVES},
            )
            async with self._connection() as conn:
                await _apply_migrations(conn, self.url)
                self.replica_id = await conn.fetchval("SELECT nextval('replica_ids')::integer")
            async with self._lead_mutex:
                await self._lead_connection()
            if not self._alive:
                raise PostgresStoreError(f"replica id {self.replica_id} is taken ({self.url}): start again")
            log.info("postgres_replica", replica_id=self.replica_id, schema_version=SCHEMA_VERSION)
        except PostgresStoreError:
            await self._discard_pool()
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised below without the original (it may hold the URL)
            error = self._error("cannot open the PostgreSQL store", exc)
        if error is not None:  # raised outside the except block: no __context__ to leak through
            await self._discard_pool()
            raise error

    async def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    async def close(self) -> None:
        async with self._lead_mutex:
            await self._drop_lead_connection()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:  # noqa: BLE001 - closing anyway
                pool.terminate()

    def _connection(self) -> Any:
        if self._pool is None:
            raise PostgresStoreError("the PostgreSQL store is not open")
        return self._pool.acquire()

    async def _retrying(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `fn` (which opens its own transaction) again after a deadlock/serialisation failure:
        the failed attempt was rolled back entirely, so a retry is exact."""
        for attempt in range(_RETRIES):
            try:
                async with self._connection() as conn:
                    return await fn(conn)
            except _RETRYABLE:
                if attempt + 1 == _RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
        raise AssertionError("unreachable")

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as conn:
            status: str = await conn.execute(sql, *args)
        return status

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def _change_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        if len(statements) == 1:  # a statement is its own transaction: no BEGIN/COMMIT round trips
            [(sql, args)] = statements
            return [_count(await self._execute(sql, *args))]
        async with self._connection() as conn, conn.transaction():
            return [_count(await conn.execute(sql, *args)) for sql, args in statements]

    async def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    def _param(self, value: str) -> str:
        return _text(value)

    def _email(self, row: Sequence[Any]) -> OutboxEmail:
        return email_from_row(row, json.loads)

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
        # Sorted by log_id (stable: of two copies in one batch the first is kept, as in SQLite) so that
        # concurrent batches lock their rows in one order.
        rows = sorted(
            (
                (
                    _text(e["log_id"]),
                    _text(e["type"]),
                    _text(user_id_of(e)),
                    json.dumps(scrub(e), separators=(",", ":")),
                )
                for e in events
            ),
            key=lambda r: r[0],
        )
        columns = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [], [])
        log_ids, types, user_ids, bodies = columns

        async def insert(conn: asyncpg.Connection) -> int:
            new: int = await conn.fetchval(
                _ADD_EVENTS, _text(tenant), now, log_ids, types, user_ids, bodies, _text(checkpoint)
            )
            return new

        new = await self._retrying(insert)
        return IngestResult(new=new, duplicate=len(rows) - new)

    async def get_checkpoint(self, tenant: str) -> str | None:
        async with self._connection() as conn:
            log_id: str | None = await conn.fetchval("SELECT log_id FROM checkpoints WHERE tenant = $1", _text(tenant))
        return log_id

    async def claim_events(self, *, limit: int, now: float, lease_s: float) -> list[InboxEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(_CLAIM_EVENTS, now, limit, now + lease_s, self.replica_id)
        rows.sort(key=lambda r: r[1])
        return [InboxEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    async def settle_events(self, keys: list[tuple[str, str]], emails: list[DueEmail], *, now: float) -> list[DueEmail]:
        # Ledger rows are locked in once_key order (a stable sort: within a key the first email still
        # wins) so that two replicas settling overlapping keys rarely deadlock; the result keeps the
        # callers' order.
        order = sorted(range(len(emails)), key=lambda i: emails[i].once_key)
        tenants = [_text(t) for t, _ in keys]
        log_ids = [_text(log_id) for _, log_id in keys]

        async def settle(conn: asyncpg.Connection) -> list[DueEmail]:
            queued: set[int] = set()
            async with conn.transaction():
                for i in order:
                    email = emails[i]
                    common = (
                        _text(email.key),
                        _text(email.tenant),
                        _text(email.rule),
                        _text(email.template),
                        _text(email.user_id),
                        _text(email.log_id),
                        _text(email.recipient),
                        _text(email.locale),
                        email.accepted_at,
                        _json(email.context),
                    )
                    if email.cooldown_s is None:
                        args: tuple[Any, ...] = (_text(email.once_key), now, *common)
                        email_id = await conn.fetchval(_SETTLE_ONCE, *args)
                    else:
                        args = (_text(email.once_key), now, now - email.cooldown_s, *common)
                        email_id = await conn.fetchval(_SETTLE_COOLDOWN, *args)
                    if email_id is not None:
                        queued.add(i)
                if keys:
                    await conn.execute(_EVENTS_DONE, now, tenants, log_ids)
            return [email for i, email in enumerate(emails) if i in queued]

        return await self._retrying(settle)

    async def defer_events(self, keys: list[tuple[str, str]], *, until: float, error: str) -> None:
        if keys:
            await self._execute(
                _DEFER_EVENTS,
                until,
                _text(error[:500]),
                [_text(t) for t, _ in keys],
                [_text(log_id) for _, log_id in keys],
            )

    # --- outbox -----------------------------------------------------------------------------
    async def claim_emails(self, *, limit: int, now: float, lease_s: float) -> list[OutboxEmail]:
        async with self._connection() as conn:
            rows = await conn.fetch(_CLAIM_EMAILS, now, limit, now + lease_s, self.replica_id)
        return sorted((self._email(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))

    async def release_orphaned_emails(self, *, keep: set[int], now: float) -> int:
        return await self._change(
            requeue_sql(_DIALECT, "claimed_by = ? AND NOT (id = ANY(?::bigint[]))"),
            (now, self.replica_id, sorted(keep)),
        )

    async def release_orphaned_events(self, *, now: float) -> int:
        return _count(
            await self._execute(
                "UPDATE events SET next_attempt_at = $1, claimed_by = NULL "
                "WHERE state = 'pending' AND claimed_by = $2 AND next_attempt_at > $1",
                now,
                self.replica_id,
            )
        )

    async def reclaim_dead(self, *, now: float) -> int:
        """Hold this replica's liveness lock (taken again if its session was lost), then give the
        claims of replicas declared dead (`liveness.judge`) back: emails to `queued`, events due
        now. Returns rows released. Raises if the database cannot be reached."""
        async with self._lead_mutex:
            if self._pool is None:
                raise PostgresStoreError("the PostgreSQL store is not open")
            conn = self._lead_conn
            if conn is not None and not conn.is_closed() and self._alive:
                try:
                    await conn.fetchval("SELECT 1", timeout=_LEAD_CHECK_TIMEOUT_S)
                except _SESSION_LOST:
                    await self._drop_lead_connection()
            try:
                await self._lead_connection()
            except _SESSION_LOST as exc:
                await self._drop_lead_connection()
                self._suspects = {}
                raise self._error("cannot hold the liveness lock", exc) from None
        if not self._alive:  # our old session still holds it (a partition): judge nobody meanwhile
            self._suspects = {}
            return 0
        try:
            async with self._connection() as conn:
                free = {r[0] for r in await conn.fetch(_FREE_CLAIMERS, now, self.replica_id, _LIVE_NAMESPACE)}
                self._suspects, dead = liveness.judge(self._suspects, free, now=now)
                if not dead:
                    return 0
                async with conn.transaction():
                    emails = _count(await conn.execute(_RECLAIM_EMAILS, now, sorted(dead)))
                    events = _count(await conn.execute(_RECLAIM_EVENTS, now, sorted(dead)))
        except BaseException:
            self._suspects = {}
            raise
        return emails + events

    async def stats(self, *, now: float) -> dict[str, Any]:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT coalesce(json_object_agg(state, n), '{}')::text "
                "        FROM (SELECT state, count(*) AS n FROM outbox WHERE state = ANY($1::text[]) "
                "              GROUP BY state) s), "
                f"       (SELECT min(created_at) FROM outbox WHERE state IN {states_sql(IN_FLIGHT_STATES)}), "
                "       (SELECT count(*) FROM events WHERE state = 'pending')",
                [s.value for s in COUNTED_STATES],
            )
        counts, oldest, pending = json.loads(row[0]), row[1], row[2]
        return {
            "outbox": {s.value: counts.get(s.value, 0) for s in COUNTED_STATES},
            "oldest_open_age_s": (now - oldest) if oldest else 0.0,
            "inbox_pending": pending,
        }

    # --- pending passwords --------------------------------------------------------------------
    async def save_pending_password(self, pending: PendingPassword, *, now: float) -> int:
        async with self._connection() as conn, conn.transaction():
            # Two replicas sending for one user at once: the second waits, then replaces the first.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                _PENDING_NAMESPACE,
                f"{pending.tenant}|{pending.user_id}",
            )
            replaced = _count(
                await conn.execute(self.dialect.sql(REPLACE_PENDING), now, pending.tenant, pending.user_id)
            )
            await conn.execute(self.dialect.sql(INSERT_PENDING), *pending_row(pending))
        return replaced

    async def restore_pending_password(self, pending_id: str, sealed: bytes, *, now: float) -> bool:
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT tenant, user_id FROM pending_passwords WHERE id = $1", pending_id)
            if row is None:
                return False
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                _PENDING_NAMESPACE,
                f"{row['tenant']}|{row['user_id']}",
            )
            return bool(
                _count(
                    await conn.execute(
                        "UPDATE pending_passwords SET state = 'pending', sealed = $1, updated_at = $2 "
                        "WHERE id = $3 AND state = 'used' AND NOT EXISTS (SELECT 1 FROM pending_passwords AS newer "
                        "WHERE newer.tenant = $4 AND newer.user_id = $5 AND newer.state = 'pending')",
                        sealed,
                        now,
                        pending_id,
                        row["tenant"],
                        row["user_id"],
                    )
                )
            )

    async def purge(self, *, before: float) -> int:
        async with self._connection() as conn, conn.transaction():
            events = _count(await conn.execute("DELETE FROM events WHERE state = 'done' AND processed_at < $1", before))
            emails = _count(await conn.execute(_DIALECT.sql(PURGE_EMAILS), before))
        return events + emails

    # --- suppression list, return paths and unsubscribes --------------------------------------
    @staticmethod
    async def _upsert_suppression(
        conn: asyncpg.Connection, tenant: str, address: str, reason: Reason, source: str, detail: str, now: float
    ) -> bool:
        # xmax = 0 only for a row this statement inserted (an update sets it).
        return bool(
            await conn.fetchval(
                f"INSERT INTO suppressions({SUPPRESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) "
                "ON CONFLICT (tenant, address) DO UPDATE SET reason = excluded.reason, source = excluded.source, "
                "detail = excluded.detail, updated_at = excluded.updated_at RETURNING xmax = 0",
                _text(tenant),
                _text(address),
                reason.value,
                _text(source),
                _text(detail[:500]),
                now,
            )
        )

    async def suppress(
        self, tenant: str, address: str, *, reason: Reason, source: str, detail: str, now: float
    ) -> bool:
        async def upsert(conn: asyncpg.Connection) -> bool:
            return await self._upsert_suppression(conn, tenant, normalize_address(address), reason, source, detail, now)

        return await self._retrying(upsert)

    async def record_soft_bounce(
        self, tenant: str, address: str, *, source: str, detail: str, now: float, window_s: float, threshold: int
    ) -> bool:
        address = normalize_address(address)

        async def record(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                # One address's bounces are counted one at a time (two replicas may get two reports).
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _text(f"{tenant}\n{address}"))
                await conn.execute(
                    "DELETE FROM soft_bounces WHERE tenant = $1 AND address = $2 AND at <= $3",
                    _text(tenant),
                    _text(address),
                    now - window_s,
                )
                await conn.execute(
                    "INSERT INTO soft_bounces(tenant, address, at) VALUES ($1, $2, $3)",
                    _text(tenant),
                    _text(address),
                    now,
                )
                count = await conn.fetchval(
                    "SELECT count(*) FROM soft_bounces WHERE tenant = $1 AND address = $2",
                    _text(tenant),
                    _text(address),
                )
                if count < threshold:
                    return False
                return await self._upsert_suppression(
                    conn, tenant, address, Reason.SOFT_BOUNCE, source, f"{count} soft bounces; last: {detail}", now
                )

        return await self._retrying(record)

    async def get_suppressions(self, tenant: str, addresses: list[str]) -> dict[str, Suppression]:
        wanted = sorted({_text(normalize_address(a)) for a in addresses})
        if not wanted:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant = $1 AND address = ANY($2::text[])",
                _text(tenant),
                wanted,
            )
        return {row[1]: suppression_from_row(row) for row in rows}

    async def get_unsubscribed(self, tenant: str, user_ids: list[str]) -> dict[str, set[str]]:
        wanted = sorted({_text(u) for u in user_ids})
        if not wanted:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT user_id, rule FROM unsubscribes WHERE tenant = $1 AND user_id = ANY($2::text[])",
                _text(tenant),
                wanted,
            )
        found: dict[str, set[str]] = {}
        for user_id, rule in rows:
            found.setdefault(user_id, set()).add(rule)
        return found

    # --- leadership -------------------------------------------------------------------------
    async def try_lead(self, name: str) -> bool:
        """Become (or confirm being) the one replica that does `name` (e.g. "poll:<tenant>").

        A session-level `pg_try_advisory_lock(STRL, hashtext(name))` on a dedicated connection that
        this store holds until `close()`: the lock lasts as long as that session, so a crashed or
        partitioned replica loses it when PostgreSQL drops its session, and another one's next
        `try_lead` gets it. Call it before every unit of work (each poll): when already held it
        checks that the session is still alive (one round trip, 5 s timeout) and returns False if
        the lock was lost (and could not be taken again). Never raises for an unreachable database:
        returns False (not leading). Different names may hash alike: then they share one lock
        (the only harm: one replica leads both).
        """
        async with self._lead_mutex:
            if self._pool is None:
                raise PostgresStoreError("the PostgreSQL store is not open")
            conn = self._lead_conn
            if name in self._leads and conn is not None and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1", timeout=_LEAD_CHECK_TIMEOUT_S)
                    return True
                except _SESSION_LOST:
                    await self._drop_lead_connection()  # the session (and its locks) may be gone
            try:
                conn = await self._lead_connection()
                got = bool(
                    await conn.fetchval(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        _LEAD_NAMESPACE,
                        _text(name),
                        timeout=_LEAD_CHECK_TIMEOUT_S,
                    )
                )
            except _SESSION_LOST:
                await self._drop_lead_connection()
                return False
            if got:
                self._leads.add(name)
            return got

    async def release_lead(self, name: str) -> None:
        """Stop leading `name` (no-op if not leading). `close()` releases every lead."""
        async with self._lead_mutex:
            if name not in self._leads:
                return
            self._leads.discard(name)
            conn = self._lead_conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.fetchval(
                    "SELECT pg_advisory_unlock($1, hashtext($2))",
                    _LEAD_NAMESPACE,
                    _text(name),
                    timeout=_LEAD_CHECK_TIMEOUT_S,
                )
            except _SESSION_LOST:
                await self._drop_lead_connection()  # ending the session releases its locks

    async def _lead_connection(self) -> asyncpg.Connection:
        if self._lead_conn is None or self._lead_conn.is_closed():
            self._leads.clear()
            self._alive = False
            conn = await asyncpg.connect(
                self._dsn,
                timeout=_LEAD_CHECK_TIMEOUT_S,
                server_settings={"application_name": f"streamer-lead-{self.replica_id}", **_KEEPALIVES},
            )
            conn.add_termination_listener(self._on_lead_lost)
            self._lead_conn = conn
        if not self._alive and self.replica_id is not None:
            self._alive = bool(
                await self._lead_conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    _LIVE_NAMESPACE,
                    self.replica_id,
                    timeout=_LEAD_CHECK_TIMEOUT_S,
                )
            )
        return self._lead_conn

    def _on_lead_lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._lead_conn:
            self._leads.clear()
            self._alive = False

    async def _drop_lead_connection(self) -> None:
        conn, self._lead_conn = self._lead_conn, None
        self._leads.clear()
        self._alive = False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), _LEAD_CHECK_TIMEOUT_S)
            except Exception:  # noqa: BLE001
                conn.terminate()
