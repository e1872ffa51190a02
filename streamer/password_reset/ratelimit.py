"""In-memory sliding-window rate limits, and the keys a client and an address are limited by."""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds; memory bounded by `max_keys`."""

    def __init__(self, limit: int, window_s: float, *, clock: Callable[[], float], max_keys: int = 100_000):
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def retry_after(self, key: str) -> float:
        """0 when one more hit is allowed now, else the seconds until it will be."""
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None or len(hits) < self.limit:
            return 0.0
        return max(hits[-self.limit] + self.window_s - now, 0.001)

    def hit(self, key: str) -> None:
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._evict(now)
            hits = self._hits[key] = deque(maxlen=max(self.limit, 1))
        hits.append(now)

    def _evict(self, now: float) -> None:
        for key in list(self._hits):
            self._recent(key, now)
        while len(self._hits) >= self.max_keys:
            del self._hits[next(iter(self._hits))]


def ip_key(remote: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def address_key(address: str, remote: str | None) -> str:
    """The per-address limit's key: the address *as asked for by one client* (ip_key).

    Keyed on the address alone, a stranger who asks for your reset three times locks you out
    of the form for the window. Keyed per client, the stranger fills only their own bucket and
    you, from your own network, still get through. What bounds the mails one mailbox receives
    when many clients ask for it is the rule's `once: {cooldown: …}` (the example's
    password-reset rule sends at most one per 5 minutes); each of those clients is also held
    to `per_ip`. The bucket is no lockout either way: the link in the mailbox is the user's own.
    """
    return f"{address}\n{ip_key(remote)}"
