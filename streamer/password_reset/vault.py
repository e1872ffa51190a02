"""New passwords typed on the form, kept in memory only until the ticket is created."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import SecretStr


class NewPasswordVault:
    """New passwords typed on the form, in memory only, for a short time: log_id → SecretStr.

    Never persisted, never logged (the repr shows a count). `take` pops: the first caller gets the
    password, later ones None; expired entries are gone. When full, the oldest entry is dropped.
    """

    def __init__(self, ttl_s: float = 900.0, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, SecretStr]] = {}

    def __repr__(self) -> str:
        return f"NewPasswordVault(entries={len(self._entries)}, ttl_s={self.ttl_s})"

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._entries)

    def __contains__(self, log_id: object) -> bool:
        self._purge(self._clock())
        return log_id in self._entries

    def _purge(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]

    def put(self, log_id: str, password: str) -> None:
        now = self._clock()
        self._purge(now)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[log_id] = (now + self.ttl_s, SecretStr(password))

    def take(self, log_id: str) -> str | None:
        entry = self._entries.pop(log_id, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1].get_secret_value()
