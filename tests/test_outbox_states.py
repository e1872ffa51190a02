"""The outbox state machine has one home, `streamer.outbox.TRANSITIONS`: the CLI's choices, the
stores' SQL and the README are built from it or checked against it (adding a state or a
transition is one edit there). What each store does with it: tests/test_store_contract.py."""

import argparse
import re
import textwrap
from pathlib import Path

import pytest

from streamer.cli import build_parser
from streamer.outbox import TRANSITIONS, Command, EmailState, allows, sources, transitions_table
from streamer.store import open_store, outbox_sql
from streamer.store.sql import Dialect
from streamer.store.sqlite import CLAIM_EMAILS, OLDEST_OPEN, OUTBOX_COUNTS

from support.outbox import NOW, due

README = Path(__file__).resolve().parents[1] / "README.md"


def _choices(*path: str) -> list[str]:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        parser = sub.choices[name]
    [state] = [a for a in parser._actions if a.dest == "state"]  # noqa: SLF001
    return list(state.choices)


@pytest.mark.parametrize("command", [Command.RETRY, Command.CANCEL])
def test_the_cli_offers_exactly_the_states_the_table_lets_a_command_touch(command):
    assert _choices("outbox", command.value) == [state.value for state in sources(command)]


def test_the_cli_lists_every_state():
    assert _choices("outbox", "list") == [state.value for state in EmailState]


@pytest.mark.parametrize("command", list(Command))
def test_the_sql_names_exactly_the_table_states(command):
    transition = TRANSITIONS[command]
    if transition.target is None:
        sql = outbox_sql.PURGE_EMAILS
    elif command is Command.REQUEUE:
        sql = outbox_sql.requeue_sql(Dialect(numbered=False, release="", recipient_is=""))
    else:
        sql = outbox_sql.transition_sql(command, "updated_at = ?")
    named = {state for state in EmailState if f"'{state.value}'" in sql}
    expected = set(transition.sources) | ({transition.target} if transition.target else set())
    assert named == expected


def test_the_sqlite_gauges_and_claim_use_the_table():
    assert outbox_sql.states_sql(sources(Command.CLAIM)) in CLAIM_EMAILS
    assert "'sent'" not in OUTBOX_COUNTS and all(f"'{s.value}'" in OUTBOX_COUNTS for s in EmailState if s != "sent")
    assert {s for s in EmailState if f"'{s.value}'" in OLDEST_OPEN} == {*sources(Command.CLAIM), EmailState.SENDING}


def test_an_email_being_sent_or_sent_cannot_be_retried_or_cancelled():
    for state in (EmailState.SENDING, EmailState.SENT):
        assert not allows(Command.RETRY, state) and not allows(Command.CANCEL, state)


def test_the_readme_shows_the_table_as_it_is():
    assert textwrap.indent(transitions_table(), "  ") in README.read_text("utf-8")


def test_dialects_number_their_placeholders():
    pg = Dialect(numbered=True, release="", recipient_is="")
    assert (
        pg.sql("UPDATE outbox SET a = ? WHERE id = ? AND b IN ('x?')")
        == "UPDATE outbox SET a = $1 WHERE id = $2 AND b IN ('x?')"
    )


async def test_the_released_postgresql_check_allows_exactly_the_table_states(postgres_url):
    """The CHECK on outbox.state is in released migration files (never edited): a new state needs a
    migration that widens it, and this test says so."""
    import asyncpg

    import pg

    url = await pg.create_database(postgres_url)
    store = open_store(url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        check = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'outbox_state_check'"
        )
    finally:
        await conn.close()
    assert set(re.findall(r"'(\w+)'", check)) == {state.value for state in EmailState}


# --- a send outcome that arrives late: its lease ran out, the row moved on meanwhile ---------------

LEASE_S = 60


async def _claimed_then_requeued(store) -> int:
    """An email whose sender is still at it after its lease ran out: the row is queued again."""
    await store.settle_events([], [due()], now=NOW)
    [email] = await store.claim_emails(limit=1, now=NOW, lease_s=LEASE_S)
    assert await store.requeue_stale(now=NOW + LEASE_S + 1) == 1
    return email.id


async def _late(store, outcome: str, email_id: int) -> None:
    now = NOW + 10 * LEASE_S
    if outcome == "sent":
        await store.mark_sent(email_id, now=now)
    elif outcome == "failed":
        await store.mark_failed(email_id, error="451 late", next_attempt_at=now, now=now)
    else:
        await getattr(store, f"mark_{outcome}")(email_id, error="late", now=now)


@pytest.mark.parametrize("outcome", ["failed", "dead", "suppressed"])
async def test_a_late_failure_keeps_the_operators_cancel(store, outcome):
    """A late `failed` would queue a cancelled email again; `dead`/`suppressed` would overwrite the
    operator's decision. Nothing was sent: the cancel stands."""
    email_id = await _claimed_then_requeued(store)
    assert await store.cancel_email(email_id, now=NOW + 2 * LEASE_S)
    await _late(store, outcome, email_id)
    email = await store.get_email(email_id)
    assert (email.state, email.last_error) == (EmailState.CANCELLED, None)
    assert await store.claim_emails(limit=1, now=NOW + 100 * LEASE_S, lease_s=LEASE_S) == []


@pytest.mark.parametrize("outcome", ["failed", "dead", "suppressed"])
async def test_a_late_failure_does_not_reopen_an_email_another_attempt_sent(store, outcome):
    """The row was claimed again and sent meanwhile: a late `failed` would send it a second time."""
    email_id = await _claimed_then_requeued(store)
    [again] = await store.claim_emails(limit=1, now=NOW + 2 * LEASE_S, lease_s=LEASE_S)
    await store.mark_sent(again.id, now=NOW + 2 * LEASE_S)
    await _late(store, outcome, email_id)
    assert (await store.get_email(email_id)).state is EmailState.SENT
    assert await store.claim_emails(limit=1, now=NOW + 100 * LEASE_S, lease_s=LEASE_S) == []


async def test_a_late_sent_is_recorded_even_over_a_cancel(store):
    """The SMTP server took it: the row must say so, whatever the operator did meanwhile."""
    email_id = await _claimed_then_requeued(store)
    assert await store.cancel_email(email_id, now=NOW + 2 * LEASE_S)
    await _late(store, "sent", email_id)
    assert (await store.get_email(email_id)).state is EmailState.SENT


@pytest.mark.parametrize("outcome", ["failed", "dead", "suppressed"])
async def test_a_late_failure_still_counts_on_a_requeued_email(store, outcome):
    """Requeued and not yet claimed again: the outcome of the attempt is the news about the email."""
    email_id = await _claimed_then_requeued(store)
    await _late(store, outcome, email_id)
    assert (await store.get_email(email_id)).state is EmailState(outcome)
