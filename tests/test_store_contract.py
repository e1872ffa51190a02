"""The store contract, run against every implementation: dedup, once ledger, outbox state machine."""

import asyncio
import json
import sqlite3
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from streamer import outbox as outbox_module
from streamer.events import parse_body, scrub
from streamer.outbox import TRANSITIONS, Command, EmailState, Transition, allows, sources
from streamer.store.base import StoreInUse
from streamer.store.sqlite import SqliteStore
from streamer.suppression.policy import Reason

from conftest import sample_event
from support.outbox import NOW, due


async def test_events_are_deduplicated_by_tenant_and_log_id(store):
    events = [sample_event("ss"), sample_event("s")]
    first = await store.add_events("acme", events, now=NOW)
    again = await store.add_events("acme", events, now=NOW)
    other_tenant = await store.add_events("globex", events[:1], now=NOW)
    assert (first.new, first.duplicate) == (2, 0)
    assert (again.new, again.duplicate) == (0, 2)
    assert other_tenant.new == 1


async def test_concurrent_ingest_is_group_committed_and_loses_nothing(store):
    batches = [[sample_event("ss", log_id=f"900{i:04d}{j}") for j in range(5)] for i in range(200)]
    results = await asyncio.gather(*(store.add_events("acme", b, now=NOW) for b in batches))
    assert sum(r.new for r in results) == 1000
    stats = await store.stats(now=NOW)
    assert stats["inbox_pending"] == 1000


async def test_overlapping_batches_committed_together_store_each_log_id_once(store):
    """Batches written in one group commit that share log_ids (Auth0 sending a batch again while
    the first try is still being written): each log_id is new once, a duplicate otherwise."""
    batches = [[sample_event("ss", log_id=f"OV{i + j}") for j in range(4)] for i in range(6)]  # OV0 … OV8
    results = await asyncio.gather(*(store.add_events("acme", b, now=NOW) for b in batches))
    assert sum(r.new for r in results) == 9
    assert sum(r.duplicate for r in results) == 6 * 4 - 9
    claimed = await store.claim_events(limit=100, now=NOW, lease_s=60)
    assert sorted(e.log_id for e in claimed) == sorted(f"OV{k}" for k in range(9))


async def test_events_are_claimed_once_then_settled(store):
    signup = sample_event("ss")
    signup["details"]["body"]["password"] = "hunter2"  # Auth0 masks it as "*****"; a real one must go
    await store.add_events("acme", [signup, sample_event("s")], now=NOW)
    claimed = await store.claim_events(limit=10, now=NOW, lease_s=60)
    assert [e.type for e in claimed] == ["ss", "s"]
    assert claimed[0].event["details"]["body"]["password"] == "[removed]"  # scrubbed before storing
    assert await store.claim_events(limit=10, now=NOW + 1, lease_s=60) == []  # leased
    queued = await store.settle_events([(e.tenant, e.log_id) for e in claimed], [due()], now=NOW + 2)
    assert len(queued) == 1
    assert await store.claim_events(limit=10, now=NOW + 100, lease_s=60) == []  # done, not re-claimed


async def test_an_unsettled_claim_comes_back_after_its_lease(store):
    await store.add_events("acme", [sample_event("ss")], now=NOW)
    assert len(await store.claim_events(limit=10, now=NOW, lease_s=60)) == 1
    again = await store.claim_events(limit=10, now=NOW + 61, lease_s=60)
    assert len(again) == 1 and again[0].attempts == 2


async def test_deferred_events_wait_until_their_time(store):
    await store.add_events("acme", [sample_event("ss")], now=NOW)
    [event] = await store.claim_events(limit=10, now=NOW, lease_s=60)
    await store.defer_events([(event.tenant, event.log_id)], until=NOW + 30, error="Auth0 down")
    assert await store.claim_events(limit=10, now=NOW + 29, lease_s=60) == []
    assert len(await store.claim_events(limit=10, now=NOW + 30, lease_s=60)) == 1


async def test_once_per_user_queues_one_email_across_events(store):
    first = await store.settle_events([], [due("L1"), due("L2")], now=NOW)
    second = await store.settle_events([], [due("L3")], now=NOW + 5)
    assert len(first) == 1 and second == []


async def test_cooldown_allows_a_new_email_after_the_window(store):
    def cool(log_id):
        return due(log_id, rule="reset", cooldown=300, key=f"acme/reset/user/auth0|1/{log_id}")

    assert len(await store.settle_events([], [cool("A")], now=NOW)) == 1
    assert await store.settle_events([], [cool("B")], now=NOW + 299) == []
    assert len(await store.settle_events([], [cool("C")], now=NOW + 301)) == 1


async def test_outbox_state_machine(store):
    await store.settle_events([], [due("L1", user="u1"), due("L2", user="u2")], now=NOW)
    claimed = await store.claim_emails(limit=10, now=NOW, lease_s=60)
    assert [e.state for e in claimed] == [EmailState.SENDING] * 2 and claimed[0].attempts == 1
    assert claimed[0].context["user"]["email"] == "ana@example.com"
    assert await store.claim_emails(limit=10, now=NOW, lease_s=60) == []
    first, second = claimed
    await store.mark_failed(first.id, error="451 try later", next_attempt_at=NOW + 10, now=NOW)
    await store.mark_dead(second.id, error="550 no such user", now=NOW)
    assert await store.claim_emails(limit=10, now=NOW + 9, lease_s=60) == []
    [retried] = await store.claim_emails(limit=10, now=NOW + 10, lease_s=60)
    assert retried.id == first.id and retried.attempts == 2
    await store.mark_sent(first.id, now=NOW + 11)
    open_rows = await store.list_emails(states=(EmailState.QUEUED, EmailState.FAILED, EmailState.DEAD))
    assert [(e.id, e.state, e.last_error) for e in open_rows] == [(second.id, EmailState.DEAD, "550 no such user")]
    assert await store.cancel_email(second.id, now=NOW) is False  # dead cannot be cancelled
    assert await store.retry_email(second.id, now=NOW + 20) is True
    assert (await store.get_email(second.id)).attempts == 0
    assert await store.cancel_email(second.id, now=NOW + 21) is True
    assert await store.retry_email(first.id, now=NOW) is False  # sent cannot be retried
    stats = await store.stats(now=NOW + 30)
    assert stats["outbox"]["cancelled"] == 1 and "sent" not in stats["outbox"]  # sent: a counter, not a scan
    assert [e.id for e in await store.list_emails(states=(EmailState.SENT,))] == [first.id]


async def test_list_emails_narrows_by_state_tenant_and_rule_newest_first(store):
    await store.settle_events(
        [], [due("L1", user="u1"), due("L2", user="u2", rule="welcome"), due("L3", user="u3", rule="welcome")], now=NOW
    )
    welcome = await store.list_emails(states=(EmailState.QUEUED,), rule="welcome")
    assert [e.log_id for e in welcome] == ["L3", "L2"]
    assert [e.log_id for e in await store.list_emails(states=None, tenant="acme", rule="verify")] == ["L1"]
    assert await store.list_emails(states=None, tenant="globex") == []
    assert [e.log_id for e in await store.list_emails(states=None, rule="welcome", limit=1)] == ["L3"]
    assert [e.log_id for e in await store.list_emails(states=None, user_id="u2")] == ["L2"]
    assert len(await store.list_emails(states=None, recipient="ANA@Example.com")) == 3  # any case
    assert await store.list_emails(states=None, recipient="bob@example.com") == []


async def test_the_emails_of_several_users_are_read_at_once_each_users_newest_first(store):
    await store.settle_events(
        [],
        [due(f"L{i}", user=f"u{i % 3}", once_key=f"k{i}") for i in range(9)]
        + [replace(due("G1", user="u1", once_key="g1"), tenant="globex")],
        now=NOW,
    )
    [newest_of_u2] = await store.list_emails(states=None, user_id="u2", limit=1)
    assert await store.cancel_email(newest_of_u2.id, now=NOW)
    open_states = (EmailState.QUEUED, EmailState.FAILED)
    found = await store.list_users_emails(
        states=open_states, tenant="acme", user_ids=["u0", "u1", "u2", "nobody"], limit=2
    )
    assert {user: [e.log_id for e in emails] for user, emails in found.items()} == {
        "u0": ["L6", "L3"],
        "u1": ["L7", "L4"],
        "u2": ["L5", "L2"],
    }
    for user, emails in found.items():  # the same emails as one list_emails per user
        assert emails == await store.list_emails(states=open_states, tenant="acme", user_id=user, limit=2)
    assert await store.list_users_emails(states=open_states, tenant="acme", user_ids=[]) == {}


async def test_stale_sending_rows_are_requeued(store):
    await store.settle_events([], [due()], now=NOW)
    [email] = await store.claim_emails(limit=1, now=NOW, lease_s=60)
    assert await store.requeue_stale(now=NOW + 30) == 0
    assert await store.requeue_stale(now=NOW + 61) == 1
    [again] = await store.claim_emails(limit=1, now=NOW + 62, lease_s=60)
    assert again.id == email.id and again.attempts == 2


async def test_purge_keeps_the_once_ledger(store):
    await store.settle_events([], [due("L1")], now=NOW)
    [email] = await store.claim_emails(limit=1, now=NOW, lease_s=60)
    await store.mark_sent(email.id, now=NOW)
    assert await store.purge(before=NOW + 1) == 1
    assert await store.get_email(email.id) is None
    assert await store.settle_events([], [due("L9")], now=NOW + 2) == []


async def test_checkpoint_is_committed_with_the_events(store):
    assert await store.get_checkpoint("acme") is None
    await store.add_events("acme", [sample_event("ss")], now=NOW, checkpoint="900123")
    assert await store.get_checkpoint("acme") == "900123"
    await store.add_events("acme", [], now=NOW, checkpoint="900124")
    assert await store.get_checkpoint("acme") == "900124"


async def test_one_failing_write_in_a_group_commit_does_not_fail_the_others(sqlite_store):
    """Concurrent writes share a commit; a failing one is isolated (SQLite's group commit)."""

    def broken(conn):
        conn.execute("INSERT INTO checkpoints(tenant, log_id, updated_at) VALUES ('x', 'y', 0)")
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    good = [sqlite_store.add_events("acme", [sample_event("ss", log_id=f"G{i}")], now=NOW) for i in range(5)]
    results = await asyncio.gather(sqlite_store._write(broken), *good, return_exceptions=True)
    assert isinstance(results[0], sqlite3.OperationalError)
    assert [r.new for r in results[1:]] == [1] * 5
    assert await sqlite_store.get_checkpoint("x") is None  # the failed op's first statement rolled back
    with pytest.raises(sqlite3.OperationalError):
        await sqlite_store._write(broken)


def _sync_level_of_each_commit(statements: list[str]) -> list[str]:
    """The `synchronous` level each COMMIT ran at, from the statements the connection traced."""
    level, levels = "FULL", []
    for statement in statements:
        if statement.startswith("PRAGMA synchronous="):
            level = statement.split("=", 1)[1]
        elif statement == "COMMIT":
            levels.append(level)
    return levels


async def test_only_a_commit_of_claims_alone_skips_its_fsync(sqlite_store):
    """A claim lost in a power cut is harmless (the email is still queued; a restart hands claims
    back anyway), so a commit of claims alone skips the fsync; every other commit, and any group a
    durable change joins, is FULL. A process crash loses neither: the WAL is written either way."""
    await sqlite_store.settle_events([], [due(log_id=f"L{i}", user=f"auth0|{i}") for i in range(3)], now=NOW)
    traced: list[str] = []
    sqlite_store._conn.set_trace_callback(traced.append)
    [first] = await sqlite_store.claim_emails(limit=1, now=NOW, lease_s=60)
    await sqlite_store.mark_sent(first.id, now=NOW)
    await sqlite_store.claim_emails_checked(limit=1, now=NOW, lease_s=60)
    together = await asyncio.gather(
        sqlite_store.claim_emails(limit=1, now=NOW, lease_s=60),
        sqlite_store.suppress("acme", "x@example.com", reason=Reason.MANUAL, source="test", detail="", now=NOW),
    )
    await sqlite_store.claim_events(limit=10, now=NOW, lease_s=60)
    sqlite_store._conn.set_trace_callback(None)
    assert len(together[0]) == 1
    assert _sync_level_of_each_commit(traced) == ["NORMAL", "FULL", "NORMAL", "FULL", "NORMAL"]


async def test_a_restart_releases_the_dead_process_claims_but_not_deferrals(sqlite_store):
    """kill -9 while events are claimed: the next `run` must not wait out the lease."""
    await sqlite_store.add_events("acme", [sample_event("ss"), sample_event("s")], now=NOW)
    claimed = await sqlite_store.claim_events(limit=10, now=NOW, lease_s=120)
    deferred = claimed[1]
    await sqlite_store.defer_events([(deferred.tenant, deferred.log_id)], until=NOW + 600, error="Auth0 down")
    await sqlite_store.settle_events([], [due("L1")], now=NOW)
    await sqlite_store.claim_emails(limit=1, now=NOW, lease_s=300)
    assert await sqlite_store.resume_after_restart(now=NOW + 1) == 2  # one event lease, one sending email
    [again] = await sqlite_store.claim_events(limit=10, now=NOW + 1, lease_s=120)
    assert again.log_id == claimed[0].log_id
    assert len(await sqlite_store.claim_emails(limit=1, now=NOW + 1, lease_s=300)) == 1


# --- SQLite inbox: raw bodies, a persisted cursor, in-memory leases --------------------------------


async def _claim_in_a_new_process(path) -> list:
    """What a freshly started `run` claims from the file: nothing handed over in memory."""
    store = SqliteStore(path)
    await store.open()
    try:
        return await store.claim_events(limit=10, now=NOW, lease_s=60)
    finally:
        await store.close()


def _inbox_bodies(path) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [bytes(body) for (body,) in db.execute("SELECT body FROM inbox ORDER BY id")]


async def test_a_clean_webhook_body_is_stored_as_sent_and_read_back_as_the_same_events(sqlite_store):
    events = [sample_event("ss", log_id="A1"), sample_event("s", log_id="A2")]
    raw = json.dumps([{"log_id": e["log_id"], "data": e} for e in events]).encode()
    await sqlite_store.add_events("acme", parse_body(raw).events, now=NOW, raw=raw)
    # One event already seen: the stored body holds only the new one, encoded again.
    await sqlite_store.add_events("acme", parse_body(raw).events + [sample_event("sv", log_id="A3")], now=NOW, raw=raw)
    first, second = _inbox_bodies(sqlite_store.path)
    assert first == raw
    assert [e["log_id"] for e in parse_body(second).events] == ["A3"]
    claimed = await sqlite_store.claim_events(limit=10, now=NOW, lease_s=60)
    assert [e.event for e in claimed] == parse_body(raw).events + [scrub(sample_event("sv", log_id="A3"))]
    assert claimed[2].event["details"]["body"]["ticket"] == "[removed]"


async def test_a_new_process_starts_after_the_last_settled_row(tmp_path):
    first = SqliteStore(tmp_path / "s.db")
    await first.open()
    await first.add_events("acme", [sample_event("ss", log_id="B1"), sample_event("s", log_id="B2")], now=NOW)
    await first.add_events("acme", [sample_event("ss", log_id="B3")], now=NOW)
    claimed = await first.claim_events(limit=10, now=NOW, lease_s=60)
    await first.settle_events([(e.tenant, e.log_id) for e in claimed if e.log_id != "B3"], [], now=NOW)
    assert (await first.stats(now=NOW))["inbox_pending"] == 1
    await first.close()  # B3 stays claimed but unsettled: as after kill -9

    second = SqliteStore(tmp_path / "s.db")
    await second.open()
    try:
        [again] = await second.claim_events(limit=10, now=NOW, lease_s=60)
        assert again.log_id == "B3"
        await second.settle_events([(again.tenant, again.log_id)], [], now=NOW)
        assert await second.claim_events(limit=10, now=NOW + 1000, lease_s=60) == []
        assert (await second.stats(now=NOW))["inbox_pending"] == 0
        assert (await second.add_events("acme", [sample_event("ss", log_id="B1")], now=NOW)).duplicate == 1
    finally:
        await second.close()


async def test_settling_part_of_a_row_keeps_the_cursor_before_it(sqlite_store, tmp_path):
    await sqlite_store.add_events("acme", [sample_event("ss", log_id="C1"), sample_event("s", log_id="C2")], now=NOW)
    c1, c2 = await sqlite_store.claim_events(limit=10, now=NOW, lease_s=60)
    await sqlite_store.settle_events([(c1.tenant, c1.log_id)], [], now=NOW)
    assert (await sqlite_store.stats(now=NOW))["inbox_pending"] == 2  # the row is not finished
    again = await sqlite_store.claim_events(limit=10, now=NOW + 61, lease_s=60)
    assert [e.log_id for e in again] == ["C2"] and again[0].attempts == 2
    await sqlite_store.defer_events([(c2.tenant, c2.log_id)], until=NOW + 100, error="Auth0 down")
    assert (await sqlite_store.stats(now=NOW))["inbox_pending"] == 1  # now a retry of its own
    [retried] = await sqlite_store.claim_events(limit=10, now=NOW + 100, lease_s=60)
    assert (retried.log_id, retried.type, retried.attempts) == ("C2", "s", 3)


async def test_a_schema_1_database_is_migrated_without_losing_or_repeating_events(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE events(tenant TEXT NOT NULL, log_id TEXT NOT NULL, type TEXT NOT NULL, user_id TEXT,
              body TEXT NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
              attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
              processed_at REAL, PRIMARY KEY (tenant, log_id)) WITHOUT ROWID;""")
        for log_id, state in (("D1", "done"), ("D2", "pending")):
            db.execute(
                "INSERT INTO events(tenant, log_id, type, body, received_at, state, next_attempt_at) "
                "VALUES ('acme', ?, 'ss', ?, ?, ?, ?)",
                (log_id, json.dumps(sample_event("ss", log_id=log_id)), NOW, state, NOW),
            )
    store = SqliteStore(path)
    await store.open()
    try:
        [pending] = await store.claim_events(limit=10, now=NOW, lease_s=60)
        assert pending.log_id == "D2"
        again = await store.add_events(
            "acme", [sample_event("ss", log_id="D1"), sample_event("ss", log_id="D2")], now=NOW
        )
        assert again.duplicate == 2
    finally:
        await store.close()


@pytest.mark.parametrize("statement", ["CLAIM_EMAILS", "CLAIM_RETRIES"])
def test_claims_walk_the_due_index_instead_of_sorting_the_whole_backlog(statement):
    """A regression: the outbox claim read and sorted every queued row, once per claim."""
    from streamer.store import sqlite as module

    db = sqlite3.connect(":memory:")
    db.executescript(module.SCHEMA)
    for migration in module.MIGRATIONS:  # the schema a store has
        db.executescript(migration.sql)
    sql = getattr(module, statement)
    plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, (0,) * sql.count("?")))
    assert "TEMP B-TREE" not in plan and "_due" in plan, plan


async def test_purge_drops_processed_rows_and_keeps_the_backlog_deduplicated(sqlite_store):
    await sqlite_store.add_events("acme", [sample_event("ss", log_id="E1")], now=NOW)
    [done] = await sqlite_store.claim_events(limit=1, now=NOW, lease_s=60)
    await sqlite_store.settle_events([(done.tenant, done.log_id)], [], now=NOW)
    await sqlite_store.add_events("acme", [sample_event("ss", log_id="E2")], now=NOW + 1)  # not processed yet
    await sqlite_store.purge(before=NOW + 10)
    assert len(_inbox_bodies(sqlite_store.path)) == 1
    assert (await sqlite_store.add_events("acme", [sample_event("ss", log_id="E2")], now=NOW + 20)).duplicate == 1
    assert (await sqlite_store.stats(now=NOW))["inbox_pending"] == 1


async def test_an_unreadable_row_is_logged_and_does_not_stop_the_rows_after_it(tmp_path):
    first = SqliteStore(tmp_path / "s.db")
    await first.open()
    await first.add_events("acme", [sample_event("ss", log_id="F1")], now=NOW)
    await first.add_events("acme", [sample_event("ss", log_id="F2")], now=NOW)
    await first._write(lambda c: c.execute("UPDATE inbox SET body = x'00ff' WHERE id = 1"))
    await first.close()
    with capture_logs() as logs:
        claimed = await _claim_in_a_new_process(tmp_path / "s.db")
    assert [e.log_id for e in claimed] == ["F2"]
    assert [entry["event"] for entry in logs] == ["inbox_row_unreadable"]


async def test_events_handed_over_in_memory_equal_those_read_back_from_the_file(tmp_path, monkeypatch):
    from streamer.store import sqlite as module

    monkeypatch.setattr(module, "FRESH_LIMIT", 3)  # the fourth and fifth rows must come from the file
    signup = sample_event("ss", log_id="G1")
    signup["details"]["body"]["password"] = "hunter2"
    batches = [[signup], *([sample_event("s", log_id=f"G{i}")] for i in range(2, 6))]
    writer = SqliteStore(tmp_path / "s.db")
    await writer.open()
    for batch in batches:
        await writer.add_events("acme", batch, now=NOW)
    assert writer._fresh_events <= 3
    from_memory = await writer.claim_events(limit=10, now=NOW, lease_s=60)
    assert writer._fresh_events == 0
    await writer.close()
    from_file = await _claim_in_a_new_process(tmp_path / "s.db")
    assert [e.event for e in from_memory] == [e.event for e in from_file]
    assert [e.log_id for e in from_file] == ["G1", "G2", "G3", "G4", "G5"]
    assert from_memory[0].event["details"]["body"]["password"] == "[removed]"


async def test_stats_report_the_oldest_open_email_and_the_open_states(store):
    assert (await store.stats(now=NOW))["oldest_open_age_s"] == 0.0
    await store.settle_events([], [due("L1", user="u1")], now=NOW)
    await store.settle_events([], [due("L2", user="u2")], now=NOW + 10)
    stats = await store.stats(now=NOW + 100)
    assert stats["oldest_open_age_s"] == 100.0 and stats["outbox"]["queued"] == 2
    [first] = await store.claim_emails(limit=1, now=NOW + 100, lease_s=60)
    await store.mark_sent(first.id, now=NOW + 101)
    stats = await store.stats(now=NOW + 110)
    assert stats["oldest_open_age_s"] == 100.0 and stats["outbox"] == {
        "queued": 1,
        "sending": 0,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
        "suppressed": 0,
    }


@pytest.mark.parametrize("shape", ["array", "lines", "logs_object", "bare_array"])
async def test_every_webhook_format_stored_as_sent_reads_back_after_a_restart(tmp_path, shape):
    events = [sample_event("s", log_id=f"H{i}") for i in range(3)]
    entries = [e if shape == "bare_array" else {"log_id": e["log_id"], "data": e} for e in events]
    raw = {
        "array": lambda: json.dumps(entries),
        "bare_array": lambda: json.dumps(entries),
        "lines": lambda: "\n".join(json.dumps(e) for e in entries) + "\n",
        "logs_object": lambda: json.dumps({"logs": entries}),
    }[shape]().encode()
    writer = SqliteStore(tmp_path / "s.db")
    await writer.open()
    await writer.add_events("acme", parse_body(raw).events, now=NOW, raw=raw)
    await writer.close()
    assert _inbox_bodies(tmp_path / "s.db") == [raw]
    claimed = await _claim_in_a_new_process(tmp_path / "s.db")
    assert [e.event for e in claimed] == parse_body(raw).events
    assert [e.log_id for e in claimed] == ["H0", "H1", "H2"]


# --- pending passwords (password_reset.new_password) ------------------------------------------------


def pending(pending_id="P1", user="auth0|1", expires_at=NOW + 3600, sealed=b"\x00nonce-and-ciphertext"):
    from streamer.store import PendingPassword

    return PendingPassword(
        id=pending_id,
        tenant="acme",
        user_id=user,
        connection="Username-Password-Authentication",
        state="pending",
        sealed=sealed,
        created_at=NOW,
        expires_at=expires_at,
        updated_at=NOW,
    )


async def test_a_pending_password_is_used_once(store):
    assert await store.save_pending_password(pending(), now=NOW) == 0
    row = await store.get_pending_password("P1")
    assert (row.state, row.sealed, row.user_id, row.expires_at) == (
        "pending",
        b"\x00nonce-and-ciphertext",
        "auth0|1",
        NOW + 3600,
    )
    first, second = await asyncio.gather(
        store.use_pending_password("P1", now=NOW + 1), store.use_pending_password("P1", now=NOW + 1)
    )
    assert sorted([first, second]) == [False, True]
    used = await store.get_pending_password("P1")
    assert (used.state, used.sealed) == ("used", None)  # the ciphertext is gone with its use
    assert await store.get_pending_password("nope") is None


async def test_a_newer_pending_password_replaces_the_older_one_of_that_user_only(store):
    await store.save_pending_password(pending("P1"), now=NOW)
    await store.save_pending_password(pending("Q1", user="auth0|2"), now=NOW)
    assert await store.save_pending_password(pending("P2"), now=NOW + 5) == 1
    old = await store.get_pending_password("P1")
    assert (old.state, old.sealed) == ("replaced", None)
    assert not await store.use_pending_password("P1", now=NOW + 6)
    assert (await store.get_pending_password("Q1")).state == "pending"
    assert await store.use_pending_password("P2", now=NOW + 6)


async def test_an_expired_pending_password_cannot_be_used_and_is_wiped_then_purged(store):
    await store.save_pending_password(pending("P1", expires_at=NOW + 10), now=NOW)
    assert not await store.use_pending_password("P1", now=NOW + 10)
    assert (await store.get_pending_password("P1")).state == "pending"
    await store.purge_pending_passwords(now=NOW + 11, before=NOW)
    assert (await store.get_pending_password("P1")).sealed is None  # kept a while: "expired", not "unknown"
    assert await store.purge_pending_passwords(now=NOW + 20, before=NOW + 15) == 1
    assert await store.get_pending_password("P1") is None


async def test_a_restored_pending_password_works_again_unless_a_newer_one_came(store):
    await store.save_pending_password(pending("P1"), now=NOW)
    assert await store.use_pending_password("P1", now=NOW + 1)
    assert await store.restore_pending_password("P1", b"sealed-again", now=NOW + 2)
    assert (await store.get_pending_password("P1")).sealed == b"sealed-again"
    assert await store.use_pending_password("P1", now=NOW + 3)
    await store.save_pending_password(pending("P2"), now=NOW + 4)
    assert not await store.restore_pending_password("P1", b"sealed-again", now=NOW + 5)
    assert (await store.get_pending_password("P2")).state == "pending"


# --- suppression list, return paths, unsubscribes (issue 13) -------------------------------------


async def test_suppressions_are_per_tenant_case_blind_and_outlive_the_outbox_retention(store):
    from streamer.suppression.policy import Reason

    assert (
        await store.suppress(
            "acme", "Ana@Example.com", reason=Reason.HARD_BOUNCE, source="dsn", detail="5.1.1 user unknown", now=NOW
        )
        is True
    )
    assert (
        await store.suppress(
            "acme", "ana@example.com", reason=Reason.COMPLAINT, source="arf", detail="abuse", now=NOW + 1
        )
        is False
    )  # already on it: updated
    found = await store.get_suppressions("acme", ["ANA@example.com", "bob@example.com"])
    assert list(found) == ["ana@example.com"]
    entry = found["ana@example.com"]
    assert (entry.reason, entry.source, entry.detail, entry.created_at, entry.updated_at) == (
        Reason.COMPLAINT,
        "arf",
        "abuse",
        NOW,
        NOW + 1,
    )
    assert await store.get_suppressions("globex", ["ana@example.com"]) == {}
    await store.purge(before=NOW + 10**9)
    assert [s.address for s in await store.list_suppressions(tenant="acme")] == ["ana@example.com"]
    assert await store.list_suppressions(tenant="globex") == []
    assert await store.unsuppress("acme", "ANA@example.com") is True
    assert await store.unsuppress("acme", "ana@example.com") is False
    assert await store.get_suppressions("acme", ["ana@example.com"]) == {}


async def test_soft_bounces_suppress_only_after_the_threshold_within_the_window(store):
    async def bounce(at):
        return await store.record_soft_bounce(
            "acme", "bob@example.com", source="dsn", detail="4.2.2 full", now=at, window_s=100, threshold=3
        )

    assert [await bounce(NOW), await bounce(NOW + 10)] == [False, False]
    assert await bounce(NOW + 150) is False  # the first two fell out of the window
    assert await store.get_suppressions("acme", ["bob@example.com"]) == {}
    assert await bounce(NOW + 160) is False
    assert await bounce(NOW + 170) is True  # three within 100 s
    [entry] = (await store.get_suppressions("acme", ["bob@example.com"])).values()
    assert entry.reason.value == "soft_bounce" and "3 soft bounces" in entry.detail


async def test_a_suppressed_email_has_its_own_state_and_can_be_retried(store):
    await store.settle_events([], [due("L1", user="u1")], now=NOW)
    [email] = await store.claim_emails(limit=10, now=NOW, lease_s=60)
    await store.mark_suppressed(email.id, error="recipient suppressed: hard_bounce", now=NOW + 1)
    row = await store.get_email(email.id)
    assert (row.state, row.last_error) == (EmailState.SUPPRESSED, "recipient suppressed: hard_bounce")
    assert (await store.stats(now=NOW))["outbox"]["suppressed"] == 1
    assert await store.claim_emails(limit=10, now=NOW + 100, lease_s=60) == []
    assert await store.retry_email(email.id, now=NOW + 2) is True
    assert (await store.get_email(email.id)).state == EmailState.QUEUED


async def test_a_checked_claim_brings_the_suppression_entries_of_its_recipients(store):
    """What the dispatcher holds back comes with the claim (SQLite: in the same round trip)."""
    from streamer.suppression.policy import Reason

    await store.settle_events([], [due("L1", user="u1"), due("L2", user="u2")], now=NOW)
    claimed = await store.claim_emails(limit=10, now=NOW, lease_s=60)
    recipients = {e.user_id: e.recipient for e in claimed}
    await store.mark_failed(claimed[0].id, error="451", next_attempt_at=NOW, now=NOW)
    await store.mark_failed(claimed[1].id, error="451", next_attempt_at=NOW, now=NOW)
    await store.suppress(
        "acme", recipients["u2"].upper(), reason=Reason.HARD_BOUNCE, source="dsn", detail="5.1.1", now=NOW
    )
    await store.suppress("globex", recipients["u1"], reason=Reason.HARD_BOUNCE, source="dsn", detail="5.1.1", now=NOW)
    emails, found = await store.claim_emails_checked(limit=10, now=NOW + 1, lease_s=60)
    assert sorted(e.user_id for e in emails) == ["u1", "u2"]
    assert {e.state for e in emails} == {EmailState.SENDING}
    assert list(found) == ["acme"]
    assert list(found["acme"].suppressions) == [recipients["u2"].lower()]
    assert found["acme"].suppressions[recipients["u2"].lower()].reason is Reason.HARD_BOUNCE
    assert found["acme"].unsubscribed == {}
    assert await store.claim_emails_checked(limit=10, now=NOW + 2, lease_s=60) == ([], {})


async def test_a_checked_claim_brings_the_unsubscribes_from_the_rules_asked_about(store):
    """Only the users of emails whose rule offers unsubscribing are looked up (none: no read)."""
    emails = [due("L1", user="u1", rule="digest"), due("L2", user="u2", rule="verify"), due("L3", user="u3")]
    await store.settle_events([], emails, now=NOW)
    for user, rule in (("u1", "digest"), ("u1", "news"), ("u2", "digest")):
        await store.set_unsubscribed("acme", user, rule, now=NOW)
    claimed, found = await store.claim_emails_checked(
        limit=10, now=NOW + 1, lease_s=60, unsubscribable=frozenset({"digest"})
    )
    assert len(claimed) == 3
    assert found["acme"].unsubscribed == {"u1": {"digest", "news"}}  # u2's email is of another rule


async def test_a_failed_suppression_read_holds_back_only_that_tenants_emails(store, monkeypatch):
    """The claim stands; the tenant whose read failed is None (its emails wait for their lease)."""
    from streamer.store import sqlite as sqlite_module

    if isinstance(store, SqliteStore):  # the read runs inside the claim's transaction
        read = sqlite_module._suppressions_in

        def read_or_fail(conn, tenant, addresses):
            if tenant == "globex":
                raise sqlite3.OperationalError("disk I/O error")
            return read(conn, tenant, addresses)

        monkeypatch.setattr(sqlite_module, "_suppressions_in", read_or_fail)
    else:  # a read of its own after the claim
        get = store.get_suppressions

        async def get_or_fail(tenant, addresses):
            if tenant == "globex":
                raise ConnectionResetError("connection reset by peer")
            return await get(tenant, addresses)

        monkeypatch.setattr(store, "get_suppressions", get_or_fail)
    await store.settle_events([], [due("L1", user="u1"), replace(due("L2", user="u2"), tenant="globex")], now=NOW)
    with capture_logs() as logs:
        emails, found = await store.claim_emails_checked(limit=10, now=NOW, lease_s=60)
    assert sorted((e.tenant, e.state) for e in emails) == [("acme", EmailState.SENDING), ("globex", EmailState.SENDING)]
    assert found["globex"] is None and found["acme"].suppressions == {}
    assert [(e["event"], e["tenant"]) for e in logs if e["log_level"] == "error"] == [
        ("suppression_lookup_failed", "globex")
    ]
    assert await store.claim_emails_checked(limit=10, now=NOW + 1, lease_s=60) == ([], {})  # the claim was kept


async def test_return_paths_and_unsubscribes_are_remembered(store):
    await store.remember_return_path("tok1", "acme", "Ana@Example.com", now=NOW)
    await store.remember_return_path("tok1", "acme", "ana@example.com", now=NOW + 1)  # idempotent
    assert await store.find_return_path("tok1") == ("acme", "ana@example.com")
    assert await store.find_return_path("nope") is None
    assert await store.set_unsubscribed("acme", "auth0|1", "new-device", now=NOW) is True
    assert await store.set_unsubscribed("acme", "auth0|1", "new-device", now=NOW) is False
    await store.set_unsubscribed("acme", "auth0|1", "digest", now=NOW)
    assert await store.get_unsubscribed("acme", ["auth0|1", "auth0|2"]) == {"auth0|1": {"new-device", "digest"}}
    assert await store.get_unsubscribed("globex", ["auth0|1"]) == {}


# --- the state machine (streamer.outbox.TRANSITIONS): each store does what the table says, no more ---

LEASE_S = 10**6


async def _one_email_in_each_state(store) -> dict[EmailState, int]:
    """An email in every state, reached through the store's own calls; all due by NOW + 10."""
    await store.settle_events([], [due(f"L-{state.value}", user=state.value) for state in EmailState], now=NOW)
    ids = {EmailState(e.user_id): e.id for e in await store.claim_emails(limit=20, now=NOW, lease_s=LEASE_S)}
    await store.mark_sent(ids[EmailState.SENT], now=NOW + 1)
    await store.mark_dead(ids[EmailState.DEAD], error="550", now=NOW + 1)
    await store.mark_suppressed(ids[EmailState.SUPPRESSED], error="suppressed", now=NOW + 1)
    for state in (EmailState.FAILED, EmailState.QUEUED, EmailState.CANCELLED):
        await store.mark_failed(ids[state], error="451", next_attempt_at=NOW + 1, now=NOW + 1)
    assert await store.retry_email(ids[EmailState.QUEUED], now=NOW + 2)
    assert await store.cancel_email(ids[EmailState.CANCELLED], now=NOW + 2)
    assert {state: (await store.get_email(i)).state for state, i in ids.items()} == {s: s for s in EmailState}
    return ids


async def _apply(store, command: Command, email_id: int) -> None:
    """`command` on one email (CLAIM, REQUEUE and PURGE act on every email they may touch)."""
    now = NOW + 10
    if command is Command.CLAIM:
        await store.claim_emails(limit=20, now=now, lease_s=60)
    elif command is Command.REQUEUE:
        await store.requeue_stale(now=NOW + 2 * LEASE_S)
    elif command is Command.PURGE:
        await store.purge(before=NOW + 10 * LEASE_S)
    elif command is Command.MARK_SENT:
        await store.mark_sent(email_id, now=now)
    elif command is Command.MARK_FAILED:
        await store.mark_failed(email_id, error="451", next_attempt_at=now, now=now)
    elif command in (Command.MARK_DEAD, Command.MARK_SUPPRESSED, Command.MARK_UNSUBSCRIBED):
        await getattr(store, command.value)(email_id, error="x", now=now)
    else:
        change = store.retry_email if command is Command.RETRY else store.cancel_email
        before = (await store.get_email(email_id)).state
        assert await change(email_id, now=now) is allows(command, before)


@pytest.mark.parametrize("command", list(Command))
async def test_each_command_moves_exactly_the_states_the_table_allows(store, command):
    ids = await _one_email_in_each_state(store)
    for email_id in ids.values():
        await _apply(store, command, email_id)
        if command in (Command.CLAIM, Command.REQUEUE, Command.PURGE):
            break  # they act on the whole outbox at once
    after = {state: getattr(await store.get_email(email_id), "state", None) for state, email_id in ids.items()}
    transition = TRANSITIONS[command]
    assert after == {state: transition.target if allows(command, state) else state for state in EmailState}


async def test_the_stores_read_the_table_so_one_edit_changes_a_transition(store, monkeypatch):
    """Letting `cancel` take dead emails too is one edit of TRANSITIONS: both stores follow it."""
    ids = await _one_email_in_each_state(store)
    assert await store.cancel_email(ids[EmailState.DEAD], now=NOW + 10) is False
    wider = Transition((*sources(Command.CANCEL), EmailState.DEAD), EmailState.CANCELLED)
    monkeypatch.setattr(outbox_module, "TRANSITIONS", {**TRANSITIONS, Command.CANCEL: wider})
    assert await store.cancel_email(ids[EmailState.DEAD], now=NOW + 10) is True
    assert (await store.get_email(ids[EmailState.DEAD])).state is EmailState.CANCELLED


async def test_an_exclusive_sqlite_open_takes_the_one_run_lock_until_close(tmp_path):
    """`streamer run` opens its store exclusively; `streamer outbox …` may open it alongside."""
    path = tmp_path / "store.db"
    running = SqliteStore(path)
    await running.open(exclusive=True)
    second = SqliteStore(path)
    with pytest.raises(StoreInUse, match="another `streamer run` is using"):
        await second.open(exclusive=True)
    reader = SqliteStore(path)
    await reader.open()
    await reader.close()
    await running.close()
    again = SqliteStore(path)
    await again.open(exclusive=True)  # released by close()
    await again.close()
