"""When a user profile is good enough for an event, and what an event itself proves (pure).

Rules must never decide on data older than the event they handle. Auth0 offers two reads:
get-by-id, current but one call per user, and the users search, one call per 50 users but
eventually consistent: a user written a moment ago is absent from it, or found as they were.
The Management API budget (2 to 16 calls/s) is what limits a real tenant, so the processor
reads in bulk wherever that is provably as good, and this module says when it is:

* a profile read (by any means) after the event happened reflects it (`read_at >= date`);
* a search result that shows the user at all reflects a signup or login: those events do not
  change what rules read, so the user as created or last changed is the state at the event;
* an `sv` proves `email_verified` became true at its date (Auth0's own log of the verification):
  that field is taken from the event (`PROVEN`), whatever the index still shows;
* a user known to be deleted (`sdu`) has no profile for any event dated before the deletion's
  arrival: no email goes out for it;
* other profile-changing events (email, password, username, phone changed) prove nothing the
  rules can read from the event, so their profile must be read after the event.

Everything here is a pure function of its inputs or a bounded in-memory table.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Event types after which a profile from before the event is wrong for the rules.
PROFILE_CHANGING_TYPES = frozenset({"sv", "sce", "scp", "scu", "scpn"})
#: What an event proves about the profile at its date (fields rules read).
PROVEN: Mapping[str, Mapping[str, Any]] = {"sv": {"email_verified": True}}
#: The user was created a moment ago: the search index may not have them yet.
NEW_USER_TYPES = frozenset({"ss"})
#: Changing events whose effect only a read after them shows.
READ_AFTER_TYPES = PROFILE_CHANGING_TYPES - PROVEN.keys()
#: The user was deleted (no profile, no email).
DELETED_TYPES = frozenset({"sdu"})
#: A user missing from the search longer than this after the event is not "not indexed yet":
#: read by id (the user may be deleted). Auth0's index lags by seconds; this is ample.
MAX_INDEX_WAIT_S = 30.0
#: Users remembered with the facts their recent events proved (least recently used dropped),
#: for this long: a fact only matters while reads older than its event can still be used (the
#: index lag, the 30 s profile cache, events waiting at most MAX_INDEX_WAIT_S).
FACTS_SIZE = 10_000
FACTS_KEEP_S = 120.0


def epoch(value: Any) -> float | None:
    """Auth0's `2026-03-01T14:01:07.412Z` as epoch seconds (None if absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)  # Python 3.11 reads the trailing Z
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


@dataclass(frozen=True)
class Need:
    """One event's claim on a user's profile."""

    user_id: str
    type: str
    date: float  # when the event happened (epoch)


@dataclass(frozen=True)
class Requirement:
    """What one user's profile must satisfy for every event of a batch."""

    user_id: str
    newest: float  # the newest event date: a read after it is always good
    oldest: float  # the oldest event date: how long the index may still lag
    needs_read_after: bool  # an event whose effect only a read after it can show
    new_user: bool = False  # a signup: the index may not have the user yet


def requirements(needs: Iterable[Need]) -> dict[str, Requirement]:
    """Combine the needs of a batch per user (one pass: it runs for every event)."""
    combined: dict[str, Requirement] = {}
    for need in needs:
        read_after, new = need.type in READ_AFTER_TYPES, need.type in NEW_USER_TYPES
        known = combined.get(need.user_id)
        if known is None:
            combined[need.user_id] = Requirement(need.user_id, need.date, need.date, read_after, new)
        else:
            combined[need.user_id] = Requirement(
                need.user_id,
                max(known.newest, need.date),
                min(known.oldest, need.date),
                known.needs_read_after or read_after,
                known.new_user or new,
            )
    return combined


def read_is_good(read_at: float, requirement: Requirement) -> bool:
    """A profile read at `read_at` (our clock) serves events up to then."""
    return read_at >= requirement.newest


def search_is_good(found: bool, requirement: Requirement) -> bool:
    """A search result (or its absence) serves the requirement without a read by id."""
    return found and not requirement.needs_read_after


@dataclass
class _Facts:
    proven: dict[str, Any]
    since: float  # date of the newest proving event
    deleted: bool = False
    learnt: float = 0.0  # when (our monotonic clock), for expiry


class KnownFacts:
    """What recent events proved about users, to lay over any profile read before them.

    Bounded: FACTS_SIZE users, least recently updated dropped first, none kept longer than
    FACTS_KEEP_S (an entry only matters while reads can be older than its event).
    """

    def __init__(self, size: int = FACTS_SIZE, keep_s: float = FACTS_KEEP_S, clock=time.monotonic):
        self.size = size
        self.keep_s = keep_s
        self.clock = clock
        self._facts: OrderedDict[str, _Facts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._facts)

    def learn(self, user_id: str, event_type: str, date: float) -> None:
        if event_type in DELETED_TYPES:
            self._put(user_id, _Facts({}, date, deleted=True))
            return
        proven = PROVEN.get(event_type)
        if not proven:
            return
        facts = self._facts.get(user_id)
        if facts is None or facts.deleted:
            facts = _Facts({}, date)
        facts.proven.update(proven)
        facts.since = max(facts.since, date)
        self._put(user_id, facts)

    def _put(self, user_id: str, facts: _Facts) -> None:
        now = self.clock()
        facts.learnt = now
        self._facts[user_id] = facts
        self._facts.move_to_end(user_id)
        while len(self._facts) > self.size or next(iter(self._facts.values())).learnt < now - self.keep_s:
            self._facts.popitem(last=False)

    def deleted(self, user_id: str) -> bool:
        facts = self._facts.get(user_id)
        return facts is not None and facts.deleted

    def apply(self, user_id: str, profile: dict[str, Any] | None, read_at: float | None) -> dict[str, Any] | None:
        """The profile with what events after its read proved laid over it (`read_at` None: a
        search result, as of its own updated_at)."""
        facts = self._facts.get(user_id)
        if facts is None or profile is None:
            return profile
        if facts.deleted:
            return None
        if read_at is None:
            read_at = epoch(profile.get("updated_at")) or 0.0
        if read_at >= facts.since:
            return profile
        changed = {k: v for k, v in facts.proven.items() if profile.get(k) != v}
        return {**profile, **changed} if changed else profile


class IndexLag:
    """How far the users search lags behind new users, learnt from our own searches.

    A new user missing at age a (seconds after the signup) means the lag is above a; found at
    age a, at most a. Waiting for that long and then reading 50 users per call is what keeps a
    burst of signups near one call per email. Bounded: the last 256 observations of 10 minutes.
    """

    KEEP_S = 600.0
    FIRST_WAIT_S = 1.0
    GROWTH = 1.5  # the next probe at most 1.5 × the age of the last miss …
    MIN_STEP_S = 0.75  # … and at most max(0.75 s, a quarter of it) later
    MARGIN_S = 0.1

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: deque[tuple[float, bool, float]] = deque(maxlen=256)  # (when, found, age)

    def observe(self, found: bool, age: float) -> None:
        if age >= 0:
            self._seen.append((self.clock(), found, age))

    def _recent(self) -> list[tuple[float, bool, float]]:
        cutoff = self.clock() - self.KEEP_S
        while self._seen and self._seen[0][0] < cutoff:
            self._seen.popleft()
        return list(self._seen)

    def wait(self) -> float:
        """Seconds after an event its new user is worth searching for."""
        recent = self._recent()
        missed = max((age for _, found, age in recent if not found), default=None)
        if missed is None:
            return 0.0
        found_after = [age for _, found, age in recent if found and age > missed]
        if found_after:
            return min(found_after) + self.MARGIN_S
        step = min(missed * (self.GROWTH - 1), max(self.MIN_STEP_S, missed / 4))
        return max(self.FIRST_WAIT_S, missed + step)
