"""Versioned schema migrations: numbered SQL files, each applied once, in order.

A database records the version it is at (`meta.schema_version`); starting a store applies every
file numbered above it, in one transaction, under a lock (PostgreSQL: an advisory lock, so that
replicas starting together migrate once; SQLite: its one process). Changing the schema = adding
the next file to each store's folder:

    streamer/store/postgres_migrations/NNNN_what_it_does.sql   (numbered from 0001)
    streamer/store/sqlite_migrations/NNNN_what_it_does.sql     (from 0003: 1 and 2 are sqlite.py's SCHEMA)

Never edit a released file: a database that already applied it would not see the change. Two
branches that both added "0003_…" conflict on purpose: `load` refuses gaps and duplicates, so
the second one to merge renumbers its file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationSetError(RuntimeError):
    """The shipped migration files are inconsistent (a packaging or merge mistake)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def __str__(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load(folder: str = "postgres_migrations", *, first: int = 1) -> list[Migration]:
    """The migrations shipped in `streamer/store/<folder>/`, by version; numbered `first`, `first`+1, …
    without gaps. No folder: none."""
    found: list[Migration] = []
    root = resources.files("streamer.store").joinpath(folder)
    for entry in root.iterdir() if root.is_dir() else ():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(first, first + len(found))):
        raise MigrationSetError(
            f"migrations in {folder} must be numbered {first}, {first + 1} … once each; found "
            f"{', '.join(map(str, found)) or 'none'}"
        )
    return found


def pending(migrations: list[Migration], current: int) -> list[Migration]:
    """What a database at version `current` still needs, oldest first."""
    return [m for m in migrations if m.version > current]


def latest(migrations: list[Migration]) -> int:
    return migrations[-1].version if migrations else 0
