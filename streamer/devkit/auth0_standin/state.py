"""One emulated tenant's data, shared by the resource modules: its users (with the users search
index and its lag), tickets, logs, log streams, tokens, rate-limit buckets and injected failures.

Plain data and the helpers that keep it consistent; no HTTP here. The aiohttp app carries the
tenant under `TENANT`, so every handler reaches the same state.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from streamer.devkit.auth0_standin.limits import TokenBucket

JSON = dict[str, Any]


def iso_ms(moment: datetime) -> str:
    """`2026-03-01T14:01:07.412Z`, Auth0's date format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso_ms(datetime.now(UTC))


def make_log_id(moment: datetime, sequence: int) -> str:
    """56 digits: `900` + yyyyMMddHHmmssSSS (ingest time) + 36 digits; sorts by time."""
    stamp = moment.astimezone(UTC).strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}"
    return f"900{stamp}{sequence % 10**36:036d}"


def log_id_key(log_id: str) -> tuple[int, str]:
    return len(log_id), log_id


def public_user(profile: JSON) -> JSON:
    """A stored profile as Auth0 returns it: empty metadata objects omitted."""
    user = copy.deepcopy(profile)
    for key in ("user_metadata", "app_metadata"):
        if key in user and not user[key]:
            del user[key]
    return user


def merge_metadata(current: JSON | None, patch: JSON) -> JSON:
    """First-level merge; a None value removes the key; `{}` clears everything."""
    if patch == {}:
        return {}
    merged = dict(current or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def connection_id(name: str) -> str:
    return "con_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def first_identity(user: JSON) -> tuple[str, str]:
    """(connection, provider) of the user's first identity, as Auth0 logs them."""
    identity = (user.get("identities") or [{}])[0]
    return identity.get("connection", "Username-Password-Authentication"), identity.get("provider", "auth0")


@dataclass
class InjectedFailure:
    """`fail_next`: the next `remaining` requests under `path_prefix` get `status`."""

    path_prefix: str
    status: int
    remaining: int


def take_injected_status(failures: list[InjectedFailure], path: str) -> int | None:
    """The status an injected failure imposes on this request (using it up), else None."""
    for failure in failures:
        if path.startswith(failure.path_prefix) and failure.remaining > 0:
            failure.remaining -= 1
            if failure.remaining == 0:
                failures.remove(failure)
            return failure.status
    return None


@dataclass(eq=False, repr=False)
class Tenant:
    """Everything one emulated tenant holds. Test hooks read and change these fields directly."""

    domain: str = "acme-test.us.auth0.com"
    client_id: str = "standin-client"
    client_secret: str = "standin-secret"
    token_ttl_s: int = 86400
    #: Accept `new_password` on password-change tickets (a tenant with Change Password flow v1).
    legacy_password_flow: bool = False
    #: Seconds the users search index lags behind writes.
    search_lag_s: float = 0.0
    #: Seconds each Management API and token call takes before it is answered.
    latency_s: float = 0.0
    #: What the M2M application is granted; a token carries the grant of the moment it was issued.
    granted_scopes: str = ""
    base_url: str = ""
    users: dict[str, JSON] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    tickets: dict[str, JSON] = field(default_factory=dict)
    logs: list[JSON] = field(default_factory=list)
    log_sequence: int = 0
    last_log_id: int = 0
    log_streams: dict[str, JSON] = field(default_factory=dict)
    #: (stream id, HTTP status or 0 for no answer, number of events) per delivery attempt.
    stream_deliveries: list[tuple[str, int, int]] = field(default_factory=list)
    #: Batches failing every attempt in a row before Auth0 suspends the stream ("disabled
    #: because of successive errors"; Auth0 does not publish the number).
    stream_suspend_after: int = 3
    #: Events a stream has not delivered yet: while paused or suspended (Auth0 keeps them and
    #: delivers them on re-activation) and after a failed batch (retried until it works).
    stream_held: dict[str, list[JSON]] = field(default_factory=dict)
    stream_failures: dict[str, int] = field(default_factory=dict)
    #: (stream id, event) waiting for delivery; None while the server is not running.
    stream_queue: asyncio.Queue[tuple[str, JSON]] | None = None
    #: Users the search index does not know yet (Auth0's index lags behind new users).
    unindexed: set[str] = field(default_factory=set)
    #: Stale copies the search returns instead of the live profile (index lag on updates).
    search_snapshots: dict[str, JSON] = field(default_factory=dict)
    #: Each user's recent versions (monotonic time written, profile or None once deleted),
    #: oldest first, for `search_lag_s`.
    versions: dict[str, list[tuple[float, JSON | None]]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # user_id -> sha256, never the password
    password_history: dict[str, list[str]] = field(default_factory=dict)  # sha256 of earlier ones
    #: The database connection's password policy; None turns it off.
    password_policy: JSON | None = field(default_factory=lambda: {"min_length": 8, "history_size": 5})
    #: Accepted password changes by PATCH: {"user_id", "connection"} (never the password).
    password_changes: list[JSON] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (epoch)
    token_scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    failures: list[InjectedFailure] = field(default_factory=list)
    #: The global bucket, and the buckets of endpoint groups limited on their own (the plan's).
    bucket: TokenBucket | None = None
    endpoint_buckets: dict[str, TokenBucket] = field(default_factory=dict)

    @property
    def tenant_name(self) -> str:
        return self.domain.split(".")[0]

    @property
    def audience(self) -> str:
        return f"https://{self.domain}/api/v2/"

    # --- the users search index and its lag ---------------------------------------------------

    def set_search_lag(self, seconds: float) -> None:
        """From now on the users search lags `seconds` behind writes (users so far are indexed)."""
        self.search_lag_s = seconds
        self.versions = {uid: [(-math.inf, copy.deepcopy(u))] for uid, u in self.users.items()} if seconds > 0 else {}

    def user_changed(self, user_id: str) -> None:
        """A write to the user (or its deletion) the search index sees only `search_lag_s` later;
        call it after changing `users[...]` directly. The stand-in's own writes call it."""
        if self.search_lag_s <= 0:
            return
        now = time.monotonic()
        versions = self.versions.setdefault(user_id, [])
        current = self.users.get(user_id)
        versions.append((now, copy.deepcopy(current) if current is not None else None))
        # Only the newest version the index already shows is still needed, and the ones after it.
        settled = [i for i, (t, _) in enumerate(versions) if t <= now - self.search_lag_s]
        if settled:
            del versions[: settled[-1]]

    def search_view(self, user_id: str, now: float) -> JSON | None:
        """The user as the search index shows it at monotonic `now` (None: not in the index)."""
        if user_id in self.unindexed:
            return None
        if user_id in self.search_snapshots:
            return self.search_snapshots[user_id]
        versions = self.versions.get(user_id)
        if self.search_lag_s <= 0 or not versions:
            return self.users.get(user_id)
        shown = None
        for written, profile in versions:
            if written > now - self.search_lag_s:
                break
            shown = profile
        return shown

    def freeze_search(self, user_id: str) -> None:
        """From now on the search returns the profile as it is now, until `index_all()`."""
        self.search_snapshots[user_id] = copy.deepcopy(self.users[user_id])

    def index_all(self) -> None:
        """The search index catches up."""
        self.unindexed.clear()
        self.search_snapshots.clear()
        for versions in self.versions.values():
            versions[:] = [(-math.inf, versions[-1][1])]

    # --- log streams --------------------------------------------------------------------------

    def queue_event(self, stream_id: str, event: JSON) -> None:
        """Hand an event to the stream delivery (dropped while the server is not running)."""
        if self.stream_queue is not None:
            self.stream_queue.put_nowait((stream_id, event))

    def queue_events(self, stream_id: str, events: list[JSON]) -> None:
        for event in events:
            self.queue_event(stream_id, event)


#: Where the aiohttp app keeps its tenant, for the handlers.
TENANT = web.AppKey("tenant", Tenant)


def tenant_of(request: web.Request) -> Tenant:
    return request.app[TENANT]
