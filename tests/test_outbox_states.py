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
