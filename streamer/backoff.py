"""Exponential backoff: the one formula for every "try again later" in streamer (pure).

The outbox's retries, the processor's wait for a user profile Auth0 could not give, the poller
after a failed poll and the Management API client after a 429/5xx all wait the same way, so
there is one place to read (and tune) how streamer backs off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_MAX_DOUBLINGS = 60  # 2^60 · any sensible initial_s is far past any max_s; keeps the float finite


@dataclass(frozen=True)
class Backoff:
    """The n-th wait (n ≥ 1) is b = min(max_s, initial_s · 2^(n-1)); with `jitter`, a uniform
    draw in [b/2, b] ("equal jitter"), so replicas that failed together do not retry together."""

    initial_s: float
    max_s: float
    jitter: bool = False

    def delay(self, n: int, rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(0, n - 1), _MAX_DOUBLINGS))
        return (rng or random).uniform(base / 2, base) if self.jitter else base
