"""Pace Management API calls from the tenant's own x-ratelimit-* headers.

Auth0 limits a tenant with a token bucket (burst = `x-ratelimit-limit`, refilled at a rate it
does not announce) and answers 429 when the bucket is empty. Waiting for 429s and retrying
wastes calls and, on a shared tenant, starves the other clients, so we keep a local model of
the bucket and make callers wait *before* sending:

* the bucket size comes from `x-ratelimit-limit`;
* the refill rate is estimated from (limit − remaining) / (reset − time the request was sent):
  `x-ratelimit-reset` is the epoch second at which the bucket is full again, rounded up, so each
  sample is a lower bound of the true rate, and we keep the largest recent one;
* the token count is re-synchronised from `x-ratelimit-remaining` on every answer, minus the
  requests still in flight (the server may not have counted them yet): usage by other
  processes on the same tenant shows up there too;
* before the first answer only one request is in flight (a probe), because nothing is known;
* after a 429 nothing is sent until `x-ratelimit-reset`.

The decisions (`delay_before_next`, `on_send`, `observe`) are pure functions of the state and
an explicit `now`, so tests can drive them with a simulated clock; `acquire` is the only part
that sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: How often waiters re-check while the first (probe) answer is outstanding.
PROBE_WAIT_S = 0.05
#: Refill rate assumed until the headers reveal one (calls per second); low on purpose.
DEFAULT_RATE = 1.0
#: Never wait longer than this for one slot (clock skew or a bogus reset header).
MAX_WAIT_S = 60.0
#: After a 429 without a usable reset header.
FALLBACK_BLOCK_S = 1.0


@dataclass(frozen=True)
class RateHeaders:
    limit: int
    remaining: int
    reset: float


def parse_headers(headers: Mapping[str, str]) -> RateHeaders | None:
    """The three x-ratelimit-* values, or None when any is missing or not a number."""
    lower = {str(k).lower(): v for k, v in headers.items()}
    try:
        return RateHeaders(int(float(lower["x-ratelimit-limit"])), int(float(lower["x-ratelimit-remaining"])),
                           float(lower["x-ratelimit-reset"]))
    except (KeyError, ValueError, TypeError):
        return None


@dataclass
class RateLimitPacer:
    """One per tenant (Auth0's limit is per tenant). All times are wall-clock epoch seconds."""

    clock: Callable[[], float] = time.time
    default_rate: float = DEFAULT_RATE
    max_wait_s: float = MAX_WAIT_S
    capacity: float | None = None          # bucket size, from x-ratelimit-limit
    rate: float | None = None              # estimated refill, tokens per second
    tokens: float = 0.0                    # model of the server's bucket at `t_ref`
    t_ref: float = 0.0
    blocked_until: float = 0.0             # after a 429
    unlimited: bool = False                # answers carry no rate-limit headers at all
    _samples: deque = field(default_factory=lambda: deque(maxlen=32))
    _in_flight: dict[int, float] = field(default_factory=dict)   # seq -> sent at
    _seq: int = 0
    _newest_observed: int = 0
    _lock: asyncio.Lock | None = None

    # --- pure decisions ----------------------------------------------------------------------

    def tokens_at(self, now: float) -> float:
        if self.capacity is None:
            return 0.0
        rate = self.rate or self.default_rate
        return min(self.capacity, self.tokens + max(0.0, now - self.t_ref) * rate)

    def delay_before_next(self, now: float) -> float:
        """Seconds to wait before the next request may be sent (0 = go now)."""
        if now < self.blocked_until:
            return min(self.blocked_until - now, self.max_wait_s)
        if self.unlimited:
            return 0.0
        if self.capacity is None:
            return 0.0 if not self._in_flight else PROBE_WAIT_S
        tokens = self.tokens_at(now)
        if tokens >= 1.0:
            return 0.0
        return min((1.0 - tokens) / (self.rate or self.default_rate), self.max_wait_s)

    def on_send(self, now: float) -> int:
        """Take one token for a request sent now; returns its sequence number for `observe`."""
        if self.capacity is not None:
            self.tokens = self.tokens_at(now) - 1.0
            self.t_ref = now
        self._seq += 1
        self._in_flight[self._seq] = now
        return self._seq

    def on_failure(self, seq: int) -> None:
        """The request got no answer (timeout, connection error): it tells us nothing."""
        self._in_flight.pop(seq, None)

    def observe(self, seq: int, status: int, headers: Mapping[str, str], now: float) -> None:
        """Learn from one answer's x-ratelimit-* headers."""
        sent_at = self._in_flight.pop(seq, now)
        info = parse_headers(headers)
        if info is None:
            if self.capacity is None:
                self.unlimited = True
            if status == 429:
                self._block(now + FALLBACK_BLOCK_S, now)
            return
        self.unlimited = False
        self.capacity = float(max(1, info.limit))
        deficit = info.limit - info.remaining
        span = info.reset - sent_at
        if deficit > 0 and span > 0:
            # Lower bound of the refill rate; capped at a full bucket per second as a guard
            # against clock skew (every documented Auth0 plan refills slower than that).
            self._samples.append(min(deficit / span, self.capacity))
            self.rate = max(self._samples)
        if status == 429:
            self._block(info.reset if info.reset > now else now + FALLBACK_BLOCK_S, now)
            return
        estimate = info.remaining - len(self._in_flight)
        if seq > self._newest_observed:
            self.tokens = float(estimate)
            self._newest_observed = seq
        else:  # an older answer overtaken by a newer one: it may only lower the estimate
            self.tokens = min(self.tokens_at(now), float(estimate))
        self.t_ref = now

    def _block(self, until: float, now: float) -> None:
        self.blocked_until = max(self.blocked_until, min(until, now + self.max_wait_s))
        self.tokens = -float(len(self._in_flight))
        self.t_ref = now

    # --- the only part that waits ------------------------------------------------------------

    async def acquire(self) -> tuple[int, float]:
        """Wait for a slot, take it; returns (seq, seconds waited). FIFO across callers."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while True:
                delay = self.delay_before_next(self.clock())
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
                waited += delay
            return self.on_send(self.clock()), waited
