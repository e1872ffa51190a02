"""Pick the store implementation from the config's `store` URL."""

from __future__ import annotations

from streamer.store.base import InboxEvent, IngestResult, PendingPassword, Store

__all__ = ["InboxEvent", "IngestResult", "PendingPassword", "Store", "open_store", "StoreUrlError"]


class StoreUrlError(ValueError):
    pass


def open_store(url: str) -> Store:
    """`sqlite:////abs/path.db` or `postgresql://…` → an unopened Store."""
    if url.startswith("sqlite:///"):
        from streamer.store.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///") :])
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from streamer.store.postgres import PostgresStore
        except ImportError:
            raise StoreUrlError("the PostgreSQL store is not available in this version yet") from None
        return PostgresStore(url)
    raise StoreUrlError(f"unsupported store URL (expected sqlite:///… or postgresql://…): {url.split('@')[-1]}")
