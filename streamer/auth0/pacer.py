"""Pace Management API calls from the tenant's own x-ratelimit-* headers.

Auth0 limits a tenant with token buckets (burst = `x-ratelimit-limit`, refilled at a rate it
does not announce) and answers 429 when a bucket is empty. Free and Enterprise tenants have one
bucket for every endpoint; the self-service paid plans (Essentials, Professional, B2B) give user
reads, user writes, user deletes and log reads a bucket each, besides the one "all other
endpoints combined" (tickets, log streams). `TenantPacer` keeps one `RateLimitPacer` per bucket
(see there for how the buckets are told apart); what follows is how one bucket is paced.
 Waiting for 429s and retrying
wastes calls and, on a shared tenant, starves the other clients, so we keep a local model of
the bucket and make callers wait *before* sending. Every estimate errs on the slow side:

* the bucket size is `x-ratelimit-limit`;
* the token count is re-read from every answer's `x-ratelimit-remaining`, minus the requests
  still in flight (the server may not have counted them when it answered). Requests that
  finished while this one was in flight may have been handled before or after it; the answer
  may lower our count with them assumed before, and raise it only to the count with them
  assumed after, which is certain. Usage by other clients of the tenant shows up there too;
* the refill rate is bounded from below, and the largest recent bound is used:
  (limit − remaining − 1) / (reset − send time), because `x-ratelimit-reset` is the second,
  rounded up, at which the bucket is full again; and, between two answers at least a couple of
  seconds apart, (remaining₂ − remaining₁ + calls certainly counted in between − 1) / (time
  between them). `remaining` is a whole number, hence the − 1. Other clients, or a bucket that
  filled up in between, only make these bounds lower;
* before the first answer only one request is in flight (a probe): nothing is known yet;
* after a 429 nothing is sent until `x-ratelimit-reset`, and our share of the refill rate is
  cut (then regained slowly): a 429 despite the model means another client uses the same
  tenant, and leaving it room avoids a 429 storm between the two;
* `x-ratelimit-reset` is on the server's clock: the offset to ours is bounded by each answer's
  `Date` header (that second lies between our send and receive times), and the end of the
  interval that makes us slower is used.

The decisions (`delay_before_next`, `on_send`, `observe`, `on_failure`) are pure functions of
the state and an explicit `now`, so tests drive them with a simulated clock; `acquire` is the
only part that sleeps.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

#: How often waiters re-check while the first (probe) answer is outstanding.
PROBE_WAIT_S = 0.05
#: Refill rate assumed until the headers reveal one (calls per second); low on purpose.
DEFAULT_RATE = 1.0
#: The slowest refill Auth0 documents for a bucket of each size (FACTS f: Free 2/2, Enterprise
#: non-production 10/2, Essentials logs 10/100 per min, write users 20/200 per min, read users
#: 40/500 per min, Enterprise 50/16): until the headers prove a faster one, the first minutes
#: of a small bucket are not paced at a fraction of it (a lower bound from a reset rounded up to
#: the second can be half the real rate).
DOCUMENTED_RATES = {2: 2.0, 10: 100 / 60, 20: 200 / 60, 40: 500 / 60, 50: 16.0}
#: Never wait longer than this for one slot (clock skew or a bogus reset header).
MAX_WAIT_S = 60.0
#: After a 429 without a usable reset header.
FALLBACK_BLOCK_S = 1.0
#: Share of the refill rate we use after a 429, and what each good answer gives back.
SHARE_AFTER_429 = 0.6
SHARE_MIN = 0.2
SHARE_RECOVERY = 0.01
#: Calls at once `spare` allows when answers carry no rate-limit headers.
SPARE_UNLIMITED = 64
#: Share of the bucket a "full" bucket may miss (see `spare`).
SPARE_SLACK = 0.05
#: Window rate bounds use answers this far apart at least, kept this long, this often.
WINDOW_MIN_S = 2.0
WINDOW_MAX_AGE_S = 60.0
ANCHOR_EVERY_S = 0.5


@dataclass(frozen=True)
class RateHeaders:
    limit: int
    remaining: int
    reset: float


def parse_headers(headers: Mapping[str, str]) -> RateHeaders | None:
    """The three x-ratelimit-* values, or None when any is missing or not a number."""
    lower = {str(k).lower(): v for k, v in headers.items()}
    try:
        return RateHeaders(
            int(float(lower["x-ratelimit-limit"])),
            int(float(lower["x-ratelimit-remaining"])),
            float(lower["x-ratelimit-reset"]),
        )
    except (KeyError, ValueError, TypeError):
        return None


def parse_date(headers: Mapping[str, str]) -> float | None:
    """The HTTP `Date` header as epoch seconds (a whole second, rounded down by the server)."""
    value = next((v for k, v in headers.items() if str(k).lower() == "date"), None)
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


@dataclass
class _InFlight:
    sent_at: float
    counted_at_send: int  # answers that had taken a token when this request left
    finished_meanwhile: int = 0


@dataclass(frozen=True)
class _Anchor:
    sent_at: float
    received_at: float
    remaining: int
    counted: int  # answers that had taken a token, including this one
    in_flight: int  # requests that may be counted after this answer was written


@dataclass
class RateLimitPacer:
    """One per bucket of a tenant (`TenantPacer`). All times are wall-clock epoch seconds."""

    clock: Callable[[], float] = time.time
    default_rate: float = DEFAULT_RATE
    max_wait_s: float = MAX_WAIT_S
    capacity: float | None = None  # bucket size, from x-ratelimit-limit
    rate: float | None = None  # estimated refill, tokens per second (a lower bound)
    tokens: float = 0.0  # model of the server's bucket at `t_ref`
    t_ref: float = 0.0
    blocked_until: float = 0.0  # after a 429
    unlimited: bool = False  # answers carry no rate-limit headers at all
    share: float = 1.0  # part of the refill rate we allow ourselves
    _samples: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    _anchors: deque[_Anchor] = field(default_factory=lambda: deque(maxlen=int(WINDOW_MAX_AGE_S / ANCHOR_EVERY_S)))
    _in_flight: dict[int, _InFlight] = field(default_factory=dict)
    _seq: int = 0
    _counted: int = 0
    _offset_low: float = -math.inf  # bounds of (server clock − ours)
    _offset_high: float = math.inf
    _lock: asyncio.Lock | None = None
    _waiting: int = 0  # callers inside acquire()
    _full_at: float = math.inf  # when the last answer said the bucket is full again (our clock)

    # --- pure decisions ----------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """Server clock minus ours: the low end of what the Date headers allow (0 if unknown)."""
        return self._offset_low if math.isfinite(self._offset_low) else 0.0

    def _pace(self) -> float:
        prior = DOCUMENTED_RATES.get(int(self.capacity or 0), 0.0)
        return (max(self.rate or 0.0, prior) or self.default_rate) * self.share

    def tokens_at(self, now: float) -> float:
        if self.capacity is None:
            return 0.0
        return min(self.capacity, self.tokens + max(0.0, now - self.t_ref) * self._pace())

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
        return min((1.0 - tokens) / self._pace(), self.max_wait_s)

    def spare(self, now: float) -> int:
        """How many calls now are free: nobody waits for a slot and the bucket (our model of it, calls
        in flight taken) is full, so those tokens would otherwise be lost to the cap. Reads that only
        save latency are made with such tokens and never compete with tickets."""
        if now < self.blocked_until or self._waiting:
            return 0
        if self.unlimited:
            return SPARE_UNLIMITED
        if self.capacity is None:
            return 0 if self._in_flight else 1
        over = self._spare_tokens_at(now) - self._full()
        return int(math.floor(over)) + 1 if over >= 0 else 0

    def _spare_tokens_at(self, now: float) -> float:
        """The model, or a full bucket once x-ratelimit-reset has passed with no call since (the
        refill rate is only known from below, the reset is certain)."""
        assert self.capacity is not None
        if now >= self._full_at and not self._in_flight:
            return self.capacity
        return self.tokens_at(now)

    def _full(self) -> float:
        """Tokens from which the bucket counts as full: the model is a few tokens off in a large
        bucket (answers overtaking each other)."""
        assert self.capacity is not None
        return self.capacity - 1.0 - SPARE_SLACK * self.capacity

    def spare_in(self, now: float) -> float:
        """Seconds until `spare` may hold again (the bucket full again at our pace)."""
        if self.unlimited or self.capacity is None:
            return 0.0
        blocked = max(0.0, self.blocked_until - now)
        missing = self._full() - self._spare_tokens_at(now)
        refill = min(missing / self._pace(), max(0.0, self._full_at - now)) if missing > 0 else 0.0
        return max(blocked, refill)

    def on_send(self, now: float) -> int:
        """Take one token for a request sent now; returns its sequence number for `observe`."""
        if self.capacity is not None:
            self.tokens = self.tokens_at(now) - 1.0
            self.t_ref = now
        self._full_at = math.inf  # until an answer says when the bucket is full again
        self._seq += 1
        self._in_flight[self._seq] = _InFlight(now, self._counted)
        return self._seq

    def cancel(self, seq: int) -> None:
        """A slot taken and not used (nothing was sent): its token comes back."""
        if self._in_flight.pop(seq, None) is not None and self.capacity is not None:
            self.tokens += 1.0

    def on_failure(self, seq: int) -> None:
        """The request got no answer (timeout, connection error): it tells us nothing.

        The server may still have counted it, so the others in flight treat it as finished.
        """
        if self._in_flight.pop(seq, None) is not None:
            for other in self._in_flight.values():
                other.finished_meanwhile += 1

    def observe(self, seq: int, status: int, headers: Mapping[str, str], now: float) -> None:
        """Learn from one answer's headers."""
        request = self._in_flight.pop(seq, None) or _InFlight(now, self._counted)
        for other in self._in_flight.values():
            other.finished_meanwhile += 1
        self._learn_offset(headers, request.sent_at, now)
        info = parse_headers(headers)
        if info is None:
            if self.capacity is None:
                self.unlimited = True
            if status == 429:
                self._block(now + FALLBACK_BLOCK_S, now)
            return
        self.unlimited = False
        self.capacity = float(max(1, info.limit))
        local_reset = info.reset - self.clock_offset  # when the bucket is full, on our clock
        if not self._in_flight:
            self._full_at = local_reset
        deficit = info.limit - info.remaining - 1  # remaining is rounded down
        if deficit > 0 and local_reset > request.sent_at:
            self._add_sample(deficit / (local_reset - request.sent_at))
        if status == 429:
            self.share = max(SHARE_MIN, self.share * SHARE_AFTER_429)
            self._block(local_reset if local_reset > now else now + FALLBACK_BLOCK_S, now)
            return
        self.share = min(1.0, self.share + SHARE_RECOVERY)
        self._counted += 1
        self._window_sample(request, info.remaining, now)
        likely = float(info.remaining - len(self._in_flight))
        certain = likely - request.finished_meanwhile
        self.tokens = max(certain, min(self.tokens_at(now), likely))
        self.t_ref = now

    def _add_sample(self, sample: float) -> None:
        # Capped at a full bucket per second: every documented Auth0 plan refills slower.
        self._samples.append(min(sample, self.capacity or sample))
        self.rate = max(self._samples)

    def _window_sample(self, request: _InFlight, remaining: int, now: float) -> None:
        """Rate bound from the change of `remaining` since earlier answers."""
        while self._anchors and now - self._anchors[0].received_at > WINDOW_MAX_AGE_S:
            self._anchors.popleft()
        best = 0.0
        for anchor in self._anchors:
            span = now - anchor.sent_at
            if span < WINDOW_MIN_S:
                break
            # Counted after the anchor's answer was written and before this request was: sure.
            surely_between = request.counted_at_send - anchor.counted - anchor.in_flight
            best = max(best, (remaining - anchor.remaining + max(0, surely_between) - 1) / span)
        if best > 0:
            self._add_sample(best)
        if not self._anchors or now - self._anchors[-1].received_at >= ANCHOR_EVERY_S:
            self._anchors.append(
                _Anchor(
                    request.sent_at, now, remaining, self._counted, len(self._in_flight) + request.finished_meanwhile
                )
            )

    def _learn_offset(self, headers: Mapping[str, str], sent_at: float, now: float) -> None:
        server_second = parse_date(headers)
        if server_second is None:
            return
        low, high = server_second - now, server_second + 1.0 - sent_at
        if max(low, self._offset_low) > min(high, self._offset_high):  # a clock was stepped: start over
            self._offset_low, self._offset_high = low, high
        else:
            self._offset_low, self._offset_high = max(low, self._offset_low), min(high, self._offset_high)

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
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    delay = self.delay_before_next(self.clock())
                    if delay <= 0:
                        break
                    await asyncio.sleep(delay)
                    waited += delay
                return self.on_send(self.clock()), waited
        finally:
            self._waiting -= 1


# --- one tenant, several buckets ---------------------------------------------------------------

#: The bucket of "all other endpoints combined" (every endpoint on Free and Enterprise plans).
GLOBAL = "global"
#: Reads of users (search, by id, by email): what the processor's profile reads draw on.
READ_USERS = "read_users"
#: Endpoint families the self-service paid plans limit with buckets of their own (FACTS f: Read
#: Users GET, Write Users POST/PATCH, DELETE users, Read Logs): method, path under /api/v2.
_FAMILIES = tuple(
    (method, re.compile(pattern), family)
    for method, pattern, family in (
        ("GET", r"/users(/|-by-email|$)", READ_USERS),
        ("POST", r"/users(/|$)", "write_users"),
        ("PATCH", r"/users/", "write_users"),
        ("DELETE", r"/users/", "delete_users"),
        ("GET", r"/logs(/|$)", "read_logs"),
    )
)


def bucket_family(method: str, api_path: str) -> str:
    """The endpoint family whose bucket a request may draw on: `GET /users/{id}` → read_users,
    `POST /tickets/email-verification` → global. `api_path` is the path under /api/v2."""
    method = method.upper()
    for wanted, pattern, family in _FAMILIES:
        if method == wanted and pattern.match(api_path):
            return family
    return GLOBAL


def separate_buckets(sizes: Mapping[str, int]) -> bool:
    """Whether the families draw on buckets of their own, from the bucket size (x-ratelimit-limit)
    each has reported: Auth0's plans have either one bucket for all (Free, Enterprise) or a bucket
    per family (the self-service paid plans, where the sizes differ: 10, 40, 20, 20, 10). Two
    families with different sizes prove the second; until then, one bucket is the safe guess."""
    return len(set(sizes.values())) > 1


@dataclass
class Slot:
    """One request's place in its bucket: what `observe` or `on_failure` is told about."""

    family: str
    sent_at: float
    pacer: RateLimitPacer
    seq: int


@dataclass
class TenantPacer:
    """Paces one tenant's Management API calls, each from its own bucket.

    Calls are grouped by endpoint family (`bucket_family`). Until the answers show otherwise,
    every family shares one `RateLimitPacer`, as on the plans with one bucket; a family's first
    request goes alone (a probe), so that a family with a smaller bucket of its own never bursts
    on the model of another's. When two families report different bucket sizes, the tenant is on
    a plan with a bucket per family (`separate_buckets`), and each family gets its own pacer,
    learnt only from its own answers: user reads no longer wait behind tickets, nor tickets
    behind reads. A family whose bucket size changes (a plan changed) starts the grouping over.
    Requests in flight move to the pacer of their family's bucket when the grouping changes, so
    the new models count them.
    """

    clock: Callable[[], float] = time.time
    _shared: RateLimitPacer | None = None
    _own: dict[str, RateLimitPacer] | None = None  # by family, once the buckets are separate
    _sizes: dict[str, int] = field(default_factory=dict)  # x-ratelimit-limit each family reported
    _probing: set[str] = field(default_factory=set)  # families whose first request is in flight
    _in_flight: dict[int, Slot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self._shared is None:
            self._shared = self._new()

    def _new(self) -> RateLimitPacer:
        return RateLimitPacer(clock=self.clock)

    @property
    def separate(self) -> bool:
        """Whether each family is paced from its own bucket (the plan has a bucket per family)."""
        return self._own is not None

    def pacer_for(self, family: str) -> RateLimitPacer:
        if self._own is not None:
            if family not in self._own:
                self._own[family] = self._new()
            return self._own[family]
        assert self._shared is not None
        return self._shared

    def _must_probe(self, family: str) -> bool:
        """A family never heard from, while the shared model was learnt from others' answers."""
        return self._own is None and family not in self._sizes and self.pacer_for(family).capacity is not None

    # --- pure decisions ----------------------------------------------------------------------

    def delay_before_next(self, family: str, now: float) -> float:
        """Seconds to wait before the next request of `family` may be sent (0 = go now)."""
        if self._must_probe(family) and family in self._probing:
            return PROBE_WAIT_S
        return self.pacer_for(family).delay_before_next(now)

    def spare(self, family: str, now: float) -> int:
        """`RateLimitPacer.spare` of the family's bucket (one call for a family still to probe)."""
        if self._must_probe(family):
            return 0 if family in self._probing else min(1, self.pacer_for(family).spare(now))
        return self.pacer_for(family).spare(now)

    def spare_in(self, family: str, now: float) -> float:
        return self.pacer_for(family).spare_in(now)

    def on_send(self, family: str, now: float) -> Slot:
        """Take a slot for a request of `family` sent now."""
        pacer = self.pacer_for(family)
        return self._slot(family, pacer, pacer.on_send(now), now)

    def _slot(self, family: str, pacer: RateLimitPacer, seq: int, now: float) -> Slot:
        if self._must_probe(family):
            self._probing.add(family)
        slot = Slot(family, now, pacer, seq)
        self._in_flight[id(slot)] = slot
        return slot

    def on_failure(self, slot: Slot) -> None:
        """The request got no answer (`RateLimitPacer.on_failure`)."""
        if self._in_flight.pop(id(slot), None) is not None:
            self._probing.discard(slot.family)
            slot.pacer.on_failure(slot.seq)

    def observe(self, slot: Slot, status: int, headers: Mapping[str, str], now: float) -> None:
        """Learn from one answer: the family's bucket size first (it may regroup), then the model."""
        info = parse_headers(headers)
        if info is not None:
            self._learn_size(slot.family, info.limit)
        if self._in_flight.pop(id(slot), None) is not None:
            self._probing.discard(slot.family)
        slot.pacer.observe(slot.seq, status, headers, now)

    def _learn_size(self, family: str, size: int) -> None:
        known = self._sizes.get(family)
        if known == size:
            return
        if known is not None:  # this family's bucket changed: what the others said may be stale
            self._sizes = {family: size}
            self._regroup(separate=False)
            return
        self._sizes[family] = size
        if self._own is None and separate_buckets(self._sizes):
            self._regroup(separate=True)

    def _regroup(self, *, separate: bool) -> None:
        """New pacers for the new grouping; the requests in flight are moved to them."""
        self._own = {} if separate else None
        self._shared = None if separate else self._new()
        for slot in self._in_flight.values():
            slot.pacer = self.pacer_for(slot.family)
            slot.seq = slot.pacer.on_send(slot.sent_at)

    # --- the only part that waits ------------------------------------------------------------

    async def acquire(self, family: str) -> tuple[Slot, float]:
        """Wait for a slot of `family`'s bucket, take it; returns (slot, seconds waited)."""
        waited = 0.0
        while True:
            while self._must_probe(family) and family in self._probing:
                await asyncio.sleep(PROBE_WAIT_S)  # this family's first request is out: wait for its answer
                waited += PROBE_WAIT_S
            pacer = self.pacer_for(family)
            claimed = self._must_probe(family)
            if claimed:
                self._probing.add(family)
            try:
                seq, pacer_waited = await pacer.acquire()
            except BaseException:
                if claimed:
                    self._probing.discard(family)
                raise
            waited += pacer_waited
            if pacer is self.pacer_for(family) and (
                claimed or not self._must_probe(family) or family not in self._probing
            ):
                return self._slot(family, pacer, seq, pacer.clock()), waited
            # While this caller waited, the tenant was regrouped, or the shared model learnt from
            # another family's answer and this family's probe is out: nothing was sent, start over.
            pacer.cancel(seq)
            if claimed:
                self._probing.discard(family)
