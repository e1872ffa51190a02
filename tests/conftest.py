"""Shared fixtures: real stores, a real SMTP catcher, the Auth0 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def sample_event(name: str, **changes) -> dict:
    event = json.loads((FIXTURES / "events" / f"{name}.json").read_text())
    event.update(changes)
    return event


@pytest.fixture
async def sqlite_store(tmp_path):
    from streamer.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite"])
async def store(request, tmp_path):
    """Every store implementation must pass the same contract tests."""
    from streamer.store import open_store

    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    await store.open()
    yield store
    await store.close()
