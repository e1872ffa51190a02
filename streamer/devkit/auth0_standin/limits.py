"""Auth0's Management API rate limits: the token bucket, the plans' presets with their endpoint
groups, the `x-ratelimit-*` headers and the 429 answer.

Pure: the time is passed in, so a bucket can be tested on a simulated clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: What the headers say when no limit is emulated.
UNLIMITED_HEADER_LIMIT = 1000
#: Auth0's message on a 429 of the Management API.
LIMIT_REACHED = "Global limit has been reached"

#: Management API rate limits by plan (FACTS f: burst, refill per second). "global" is "all other
#: endpoints combined"; the other buckets are endpoint groups Auth0 limits on their own.
RATE_LIMIT_PLANS: dict[str, dict[str, tuple[int, float]]] = {
    "free": {"global": (2, 2.0)},
    "essentials": {
        "global": (10, 150 / 60),
        "read_users": (40, 500 / 60),
        "write_users": (20, 200 / 60),
        "delete_users": (20, 200 / 60),
        "read_logs": (10, 100 / 60),
    },
    "enterprise": {"global": (50, 16.0)},
    "enterprise-nonprod": {"global": (10, 2.0)},
}
RATE_LIMIT_PLANS["professional"] = RATE_LIMIT_PLANS["b2b"] = RATE_LIMIT_PLANS["essentials"]
#: Endpoint groups with a bucket of their own on some plans: (method, path pattern, bucket).
ENDPOINT_BUCKETS = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("GET", r"/api/v2/users(/|-by-email|$)", "read_users"),
        ("POST", r"/api/v2/users(/|$)", "write_users"),
        ("PATCH", r"/api/v2/users/", "write_users"),
        ("DELETE", r"/api/v2/users/", "delete_users"),
        ("GET", r"/api/v2/logs(/|$)", "read_logs"),
    )
)


@dataclass
class TokenBucket:
    """Auth0's rate limit model: `burst` tokens, refilled continuously at `per_second`."""

    burst: int
    per_second: float
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.per_second)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def headers(self, now: float) -> dict[str, str]:
        """x-ratelimit-*: reset is the epoch second (rounded up) when the bucket is full again."""
        self._refill(now)
        full_at = now + (self.burst - self.tokens) / self.per_second if self.per_second > 0 else now + 3600
        return {
            "x-ratelimit-limit": str(self.burst),
            "x-ratelimit-remaining": str(int(math.floor(self.tokens))),
            "x-ratelimit-reset": str(int(math.ceil(full_at))),
        }


def plan_buckets(plan: str, now: float) -> tuple[TokenBucket, dict[str, TokenBucket]]:
    """The global bucket and the endpoint groups' buckets of an Auth0 plan, each starting full."""
    if plan not in RATE_LIMIT_PLANS:
        raise ValueError(f"unknown plan {plan!r}; one of {', '.join(sorted(RATE_LIMIT_PLANS))}")
    buckets = {name: TokenBucket(burst, rate, updated=now) for name, (burst, rate) in RATE_LIMIT_PLANS[plan].items()}
    return buckets.pop("global"), buckets


def bucket_for(
    method: str, path: str, global_bucket: TokenBucket | None, endpoint_buckets: dict[str, TokenBucket]
) -> TokenBucket | None:
    """The endpoint group's own bucket when the plan has one, else the global one."""
    if endpoint_buckets:
        for wanted, pattern, name in ENDPOINT_BUCKETS:
            if method == wanted and pattern.match(path) and name in endpoint_buckets:
                return endpoint_buckets[name]
    return global_bucket


def rate_headers(now: float, bucket: TokenBucket | None) -> dict[str, str]:
    """The `x-ratelimit-*` headers of an answer (a generous fixed limit when none is emulated)."""
    if bucket is not None:
        return bucket.headers(now)
    limit = str(UNLIMITED_HEADER_LIMIT)
    return {"x-ratelimit-limit": limit, "x-ratelimit-remaining": limit, "x-ratelimit-reset": str(int(math.ceil(now)))}


def exhausted_headers(headers: dict[str, str], now: float) -> dict[str, str]:
    """The headers of an injected 429: nothing left, full again in a second."""
    return {**headers, "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(math.ceil(now + 1)))}
