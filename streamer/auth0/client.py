"""The Management API as streamer uses it, for one tenant.

Built on auth0-python's low-level `AsyncAuth0` (not `AsyncManagementClient`, which fetches
tokens with a blocking call and cannot point at a stand-in), with:

* our `TokenSource` as `async_token`;
* one httpx.AsyncClient whose transport paces every /api/v2 request with the tenant's
  `TenantPacer` (from the bucket of its endpoint family) and counts it in metrics. A transport
  wrapper rather than event hooks, because hooks do not run when a request fails without an
  answer, and the pacer must learn that the request is no longer in flight;
* the SDK's own retries (429 after x-ratelimit-reset, 5xx, connection errors) kept small;
* every failure mapped to `Auth0Transient` / `Auth0Permanent` / `UserNotFound`.

Two endpoints go through the same httpx client directly: checkpoint paging of
`GET /api/v2/logs`, which the SDK cannot do (it forces include_totals and expects an object),
and the first page of the "oldest" start.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from auth0.management import AsyncAuth0
from auth0.management.types import ChangePasswordTicketResponseContent, VerifyEmailTicketResponseContent

from streamer import metrics
from streamer.auth0.errors import (
    Auth0Error,
    Auth0Permanent,
    Auth0Transient,
    UserNotFound,
    from_status,
    map_exception,
    retry_after_from,
)
from streamer.auth0.freshness import (
    MAX_INDEX_WAIT_S,
    IndexLag,
    KnownFacts,
    Need,
    Requirement,
    read_is_good,
    requirements,
    search_is_good,
)
from streamer.auth0.pacer import READ_USERS, TenantPacer, bucket_family
from streamer.auth0.token import ENDPOINT as TOKEN_ENDPOINT
from streamer.auth0.token import SCOPE_RECHECK_S, TokenSource
from streamer.backoff import Backoff
from streamer.config import TenantConfig
from streamer.events import load_json
from streamer.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
#: A JSON object as Auth0 sends it (a user profile, a log event, a log stream).
JsonObject = dict[str, Any]

#: Ids per users search: Auth0 caps per_page at 100, and long URLs get refused.
SEARCH_CHUNK_IDS = 50
SEARCH_MAX_QUERY_CHARS = 4000
MAX_RETRY_DELAY_S = 60.0
#: Users waiting for the search index are looked at again this often at least (a spare token may
#: have come: a read by id now saves them the rest of the wait).
SPARE_POLL_S = 0.05

_ID_PATHS = [  # templated metric labels: user ids must not become label values
    (re.compile(r"^/users/[^/]+$"), "/users/{id}"),
    (re.compile(r"^/users/[^/]+/([a-z-]+)$"), r"/users/{id}/\1"),
    (re.compile(r"^/log-streams/[^/]+$"), "/log-streams/{id}"),
    (re.compile(r"^/logs/[^/]+$"), "/logs/{id}"),
]
_STATIC_PATHS = {
    "/users",
    "/users-by-email",
    "/logs",
    "/log-streams",
    "/tickets/email-verification",
    "/tickets/password-change",
}


# --- pure helpers ---------------------------------------------------------------------------


def endpoint_label(method: str, path: str) -> str:
    """`GET /users/auth0%7C123` → `GET /users/{id}`: bounded label values for metrics."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path not in _STATIC_PATHS:
        for pattern, template in _ID_PATHS:
            if pattern.match(path):
                path = pattern.sub(template, path)
                break
        else:
            path = "/" + path.strip("/").split("/", 1)[0] + "/*"
    return f"{method.upper()} {path}"


#: Longer than any id Auth0 makes ({provider}|{connection}|{IdP subject of up to 255 characters}).
MAX_USER_ID_CHARS = 512
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\|[^\x00-\x1f\x7f\ud800-\udfff]+")


class InvalidUserId(Auth0Permanent):
    """A user id no Auth0 tenant can hold; refused before any request is made."""


def user_id_problem(user_id: object) -> str | None:
    """Why `user_id` cannot be an Auth0 user id, or None when it can.

    Auth0 ids are `{provider}|{id}` (`auth0|65f0…`, `google-oauth2|1042…`, `samlp|conn|ana`).
    Anything else came from a hostile or broken event, and some of it would change the request
    made with it: `.` or `..` in a path is a dot-segment that httpx resolves, so `.` would become
    `GET /api/v2/users` (the whole user list), and a 9,000-character id makes a URL Auth0 refuses.
    With the provider prefix, the id's percent-encoded path segment always holds `%7C` and can
    never be a dot-segment.
    """
    if not isinstance(user_id, str) or not user_id:
        return "the user id is empty"
    if len(user_id) > MAX_USER_ID_CHARS:
        return f"the user id is {len(user_id)} characters long (at most {MAX_USER_ID_CHARS})"
    if not _USER_ID.fullmatch(user_id):
        return (
            f"the user id {user_id[:60]!r} is not an Auth0 user id of the form provider|id "
            "(or holds a control character)"
        )
    return None


def check_user_id(user_id: str) -> str:
    """`user_id`, or InvalidUserId before any request is made with it."""
    problem = user_id_problem(user_id)
    if problem:
        raise InvalidUserId(problem, status=None)
    return user_id


def user_id_query(user_ids: list[str]) -> str:
    """Lucene `user_id:"a"` or `user_id:("a" OR "b")`, quotes and backslashes escaped."""
    quoted = ['"' + uid.replace("\\", "\\\\").replace('"', '\\"') + '"' for uid in user_ids]
    return f"user_id:{quoted[0]}" if len(quoted) == 1 else f"user_id:({' OR '.join(quoted)})"


def chunk_ids(
    user_ids: list[str], *, max_ids: int = SEARCH_CHUNK_IDS, max_query_chars: int = SEARCH_MAX_QUERY_CHARS
) -> list[list[str]]:
    """Split ids into groups whose search query stays short enough for one URL."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for uid in user_ids:
        # Each id adds its quoted form plus ' OR ' (encoded, 8 chars); the frame adds ~30.
        cost = len(quote(user_id_query([uid]))) + 8
        if current and (len(current) + 1 > max_ids or 30 + size + cost > max_query_chars):
            chunks.append(current)
            current, size = [], 0
        current.append(uid)
        size += cost
    if current:
        chunks.append(current)
    return chunks


def next_from(link_url: str | None) -> str | None:
    """The `from` value of a Link rel="next" URL."""
    if not link_url:
        return None
    values = parse_qs(urlsplit(link_url).query).get("from")
    return values[0] if values else None


def log_id_key(event: Mapping[str, Any]) -> tuple[int, str]:
    """Sort key for log_ids: numeric order of the decimal strings."""
    log_id = str(event.get("log_id") or event.get("_id") or "")
    return len(log_id), log_id


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_stale(profile: Mapping[str, Any] | None, fresh_since: str | None) -> bool:
    """A profile last updated before the event that mentions it may predate that event's effect.

    The users search index lags behind writes (a fresh `email_verified: true` can still read
    false there); such profiles are fetched again by id. Unknown times are not stale.
    """
    if profile is None or not fresh_since:
        return False
    updated, since = _parse_time(profile.get("updated_at")), _parse_time(fresh_since)
    if updated is None or since is None:
        return False
    try:
        return updated < since
    except TypeError:  # naive vs aware
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):  # back to Auth0's own format: 2026-03-01T14:01:07.412Z
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def plain(obj: Any) -> Any:
    """SDK pydantic model → JSON-shaped dict with Auth0's own key names and date format."""
    if hasattr(obj, "model_dump"):
        return _jsonable(obj.model_dump(mode="python", by_alias=True, exclude_none=True))
    return obj


def normalize_user(obj: Any) -> dict[str, Any]:
    """A user as rules see it: `user_metadata` and `app_metadata` always present."""
    user = dict(plain(obj) or {})
    for key in ("user_metadata", "app_metadata"):
        if not isinstance(user.get(key), dict):
            user[key] = {}
    return user


def env_proxy(url: str) -> str | None:
    """The proxy from HTTPS_PROXY/HTTP_PROXY/NO_PROXY for `url`; httpx ignores them once a
    transport is given, and the token fetch (a plain client) does honour them."""
    parts = urlsplit(url)
    # proxy_bypass_environment is public in urllib.request but missing from typeshed's stubs.
    if not parts.hostname or urllib.request.proxy_bypass_environment(parts.hostname):  # type: ignore[attr-defined]
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


def retry_delay(headers: Mapping[str, str], attempt: int) -> float:
    """Wait before retrying a raw call: what Auth0 said, else 1, 2, 4 … s."""
    hinted = retry_after_from(headers)
    delay = hinted if hinted is not None else Backoff(1.0, MAX_RETRY_DELAY_S).delay(attempt + 1)
    return min(max(delay, 0.05), MAX_RETRY_DELAY_S)


# --- plumbing -------------------------------------------------------------------------------


class _TtlCache:
    """Recently fetched profiles: a batch of events for one user costs one call."""

    MISS = object()

    def __init__(self, ttl_s: float, max_size: int):
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any:
        item = self._items.get(key)
        if item is None:
            return self.MISS
        if item[0] <= now:
            del self._items[key]
            return self.MISS
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, value: Any, now: float) -> None:
        if self.ttl_s <= 0:
            return
        self._items[key] = (now + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)


class _PacedTransport(httpx.AsyncBaseTransport):
    """Waits for the pacer before each /api/v2 request, tells it the answer, counts the call."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        pacer: TenantPacer,
        api_path: str,
        record: Callable[[str, str, str, float], None],
    ):
        self._inner = inner
        self._pacer = pacer
        self._api_path = api_path
        self._record = record

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
        if not path.startswith(self._api_path + "/"):
            return await self._inner.handle_async_request(request)
        api_path = path[len(self._api_path) :]
        slot, waited = await self._pacer.acquire(bucket_family(request.method, api_path))
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._pacer.on_failure(slot)
            self._record(request.method, api_path, "error", waited)
            raise
        self._pacer.observe(slot, response.status_code, response.headers, self._pacer.clock())
        self._record(request.method, api_path, str(response.status_code), waited)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- the API --------------------------------------------------------------------------------


class ManagementApi:
    """Management API calls for one tenant; share one instance per tenant (it holds the pacer)."""

    def __init__(
        self,
        tenant: TenantConfig,
        *,
        name: str | None = None,
        max_retries: int = 2,
        timeout_s: float = 30.0,
        cache_ttl_s: float = 30.0,
        cache_size: int = 4096,
        pacer: TenantPacer | None = None,
        token_source: TokenSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        scope_recheck_s: float = SCOPE_RECHECK_S,
    ):
        self.tenant_name = name or tenant.domain
        self.calls_made = 0
        self.pacer = pacer or TenantPacer()
        self._secret = tenant.client_secret.get_secret_value()
        self._max_retries = max_retries
        self._clock = clock
        self._api_base = f"{tenant.base_url}/api/v2"
        inner = httpx.AsyncHTTPTransport(proxy=env_proxy(self._api_base))
        transport = _PacedTransport(inner, self.pacer, urlsplit(self._api_base).path, self._record)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout_s)
        self._owns_tokens = token_source is None
        self.tokens = token_source or TokenSource(tenant, timeout_s=timeout_s, scope_recheck_s=scope_recheck_s)
        self._sdk = AsyncAuth0(
            base_url=self._api_base,
            token="unused",
            async_token=self.tokens.get,
            httpx_client=self._http,
            max_retries=max_retries,
            timeout=timeout_s,
        )
        self._cache = _TtlCache(cache_ttl_s, cache_size)
        self._pending: dict[str, asyncio.Future[JsonObject | None]] = {}
        #: read_profiles' reads: (epoch read by id, or None for a search result; profile or None).
        self._reads = _TtlCache(cache_ttl_s, cache_size)
        #: What recent events proved about users (bounded), and the users search's lag.
        self.facts = KnownFacts()
        self.index_lag = IndexLag()

    def __repr__(self) -> str:
        return f"ManagementApi(tenant={self.tenant_name!r}, base={self._api_base!r})"

    async def __aenter__(self) -> ManagementApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        if self._owns_tokens:
            await self.tokens.close()

    # --- users ------------------------------------------------------------------------------

    async def get_users(
        self, user_ids: Iterable[str], *, fresh_since: Mapping[str, str] | None = None
    ) -> dict[str, JsonObject | None]:
        """Profiles by id (None for users that do not exist), with as few calls as possible.

        One search call per ~50 ids, then `GET /users/{id}` for ids the search did not return
        (its index lags behind new users) and for results older than `fresh_since[id]` (the
        event's date, when the caller wants a profile that reflects that event). Results are
        cached briefly; concurrent callers asking for the same id share one fetch.
        """
        ids = list(dict.fromkeys(uid for uid in user_ids if uid))
        since = dict(fresh_since or {})
        out: dict[str, JsonObject | None] = {uid: None for uid in ids if user_id_problem(uid)}  # no such user
        ids_to_fetch = [uid for uid in ids if uid not in out]
        lead: list[str] = []
        follow: dict[str, asyncio.Future[JsonObject | None]] = {}
        now = self._clock()
        for uid in ids_to_fetch:
            hit = self._cache.get(uid, now)
            if hit is not _TtlCache.MISS and not is_stale(hit, since.get(uid)):
                out[uid] = hit
            elif uid in self._pending:
                follow[uid] = self._pending[uid]
            else:
                self._pending[uid] = asyncio.get_running_loop().create_future()
                lead.append(uid)
        if lead:
            try:
                fetched = await self._fetch_users(lead, since)
            except BaseException as exc:
                for uid in lead:
                    self._settle(uid, exc=exc)
                raise
            now = self._clock()
            for uid in lead:
                self._cache.put(uid, fetched.get(uid), now)
                self._settle(uid, value=fetched.get(uid))
            out.update(fetched)
        again: list[str] = []
        for uid, future in follow.items():
            try:
                value = await asyncio.shield(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                again.append(uid)  # the caller that fetched it was cancelled, not us
                continue
            if is_stale(value, since.get(uid)):
                again.append(uid)
            else:
                out[uid] = value
        if again:
            refetched = await self._get_users_by_id(again)
            now = self._clock()
            for uid, value in refetched.items():
                self._cache.put(uid, value, now)
            out.update(refetched)
        # Shallow copies: callers may replace top-level keys; nested values are shared and must
        # be treated as read-only (rules and templates run in immutable sandboxes).
        return {uid: (dict(profile) if (profile := out.get(uid)) is not None else None) for uid in ids}

    def forget_user(self, user_id: str) -> None:
        """Drop a cached profile (e.g. after a change made outside this client)."""
        self._cache.drop(user_id)
        self._reads.drop(user_id)

    async def read_profiles(self, needs: Iterable[Need]) -> dict[str, JsonObject | None | float]:
        """For each user of `needs`: a profile good for all its events (streamer.auth0.freshness),
        None (no such user), or the epoch time to ask again.

        Bulk first: one search per 50 users, new users only once the index can have them (its
        lag is learnt from our searches). A read by id is made when only it can serve (an event
        that must be read after, a user missing for longer than any index lag), or when it costs
        nothing anyone waits for (`RateLimitPacer.spare` of the user reads' bucket): spare tokens
        buy latency, and while the bucket is the bottleneck the reads stay at the floor.
        """
        wanted = requirements(needs)
        out: dict[str, JsonObject | None | float] = {}
        to_search: list[Requirement] = []
        now = self._clock()
        for uid, req in wanted.items():
            if self.facts.deleted(uid):
                out[uid] = None
                continue
            hit = self._reads.get(uid, now)
            if hit is not _TtlCache.MISS:
                read_at, profile = hit
                if (read_at is not None and read_is_good(read_at, req)) or (
                    read_at is None and search_is_good(profile is not None, req)
                ):
                    out[uid] = self._with_facts(uid, profile, read_at)
                    continue
            to_search.append(req)
        unresolved = await self._search_for(to_search, out)
        if unresolved:
            await self._read_by_id(unresolved, out)
        return out

    def _with_facts(self, uid: str, profile: JsonObject | None, read_at: float | None) -> JsonObject | None:
        """Lay what events proved over a profile read before them (a search result: read as of
        its own updated_at)."""
        return self.facts.apply(uid, profile, read_at)

    async def _search_for(
        self, reqs: list[Requirement], out: dict[str, JsonObject | None | float]
    ) -> list[Requirement]:
        """Search what the index can serve; returns the requirements left for a read by id."""
        unresolved = [r for r in reqs if r.needs_read_after]
        rest = [r for r in reqs if not r.needs_read_after]
        wall, wait = time.time(), self.index_lag.wait()
        settled = [r for r in rest if not r.new_user]
        fresh = sorted((r for r in rest if r.new_user), key=lambda r: r.oldest)
        unresolved += [r for r in fresh if wall - r.oldest < wait]  # the index cannot have them yet
        searchable = [r for r in fresh if wall - r.oldest >= wait]
        found: dict[str, JsonObject] = {}
        if settled:
            pages = await asyncio.gather(*(self._search(chunk) for chunk in chunk_ids([r.user_id for r in settled])))
            found.update((u["user_id"], u) for page in pages for u in page if u.get("user_id"))
        reached = list(settled)
        by_id = {r.user_id: r for r in searchable}
        chunks = chunk_ids(list(by_id))
        if chunks:  # the oldest first, as a probe: if it finds nobody, the younger ones wait too
            probe = await self._search_new(chunks[0], by_id, found)
            reached += [by_id[uid] for uid in chunks[0]]
            if probe:
                await asyncio.gather(*(self._search_new(chunk, by_id, found) for chunk in chunks[1:]))
                reached += [by_id[uid] for chunk in chunks[1:] for uid in chunk]
            else:
                unresolved += [by_id[uid] for chunk in chunks[1:] for uid in chunk]
        now = self._clock()
        for req in reached:
            profile = found.get(req.user_id)
            if profile is None:
                unresolved.append(req)
                continue
            self._reads.put(req.user_id, (None, profile), now)
            out[req.user_id] = self._with_facts(req.user_id, profile, None)
        return unresolved

    async def _search_new(self, chunk: list[str], reqs: Mapping[str, Requirement], found: dict[str, JsonObject]) -> int:
        """Search new users; tell the index-lag estimate who was there. Returns how many were."""
        page = {u["user_id"]: u for u in await self._search(chunk) if u.get("user_id")}
        found.update(page)
        searched_at = time.time()
        for uid in chunk:
            self.index_lag.observe(uid in page, searched_at - reqs[uid].oldest)
        return len(page)

    async def _read_by_id(self, reqs: list[Requirement], out: dict[str, JsonObject | None | float]) -> None:
        """Read by id what must be, and what spare tokens allow; the rest waits for the index."""
        wall = time.time()
        forced = [r for r in reqs if r.needs_read_after or wall - r.oldest >= MAX_INDEX_WAIT_S]
        optional = sorted((r for r in reqs if r not in forced), key=lambda r: r.oldest)
        if forced:
            await self._read_into(forced, out)
        while optional and (free := self.pacer.spare(READ_USERS, self.pacer.clock())):
            chosen, optional = optional[:free], optional[free:]
            await self._read_into(chosen, out)
        if optional:
            # Back when the index should have them, or sooner when a spare token is due.
            wall = time.time()
            again = max(self.index_lag.wait(), IndexLag.FIRST_WAIT_S)
            spare_at = wall + max(SPARE_POLL_S, self.pacer.spare_in(READ_USERS, self.pacer.clock()))
            for req in optional:
                out[req.user_id] = max(
                    wall + SPARE_POLL_S,
                    min(req.oldest + again, spare_at, req.oldest + MAX_INDEX_WAIT_S, wall + MAX_INDEX_WAIT_S),
                )

    async def _read_into(self, reqs: list[Requirement], out: dict[str, JsonObject | None | float]) -> None:
        profiles = await asyncio.gather(*(self._get_user(r.user_id) for r in reqs))
        read_at = time.time()
        now = self._clock()
        for req, profile in zip(reqs, profiles, strict=True):
            self._reads.put(req.user_id, (read_at, profile), now)
            out[req.user_id] = self._with_facts(req.user_id, profile, read_at)

    async def users_by_email(self, email: str) -> list[JsonObject]:
        users = await self._call("GET /users-by-email", lambda: self._sdk.users.list_users_by_email(email=email))
        return [normalize_user(u) for u in users or []]

    async def update_app_metadata(self, user_id: str, values: dict[str, Any]) -> None:
        """Merge `values` into app_metadata (first level; None removes a key; nested objects replaced)."""
        check_user_id(user_id)
        updated = await self._call("PATCH /users/{id}", lambda: self._sdk.users.update(user_id, app_metadata=values))
        self._cache.put(user_id, normalize_user(updated), self._clock())
        self._reads.put(user_id, (time.time(), normalize_user(updated)), self._clock())

    async def set_password(self, user_id: str, password: str, *, connection: str | None = None) -> None:
        """`PATCH /users/{id}` with the new password (scope `update:users`).

        `connection` names the database connection whose password changes: Auth0 needs it for a
        secondary identity and accepts it for the primary one, so it is sent whenever known.
        The tenant's password policy refusals come back as 400 (`PasswordStrengthError: …`,
        see streamer.password_reset.confirm.policy_refusal). The password is in no message.
        """
        options = {"connection": connection} if connection else {}
        updated = await self._call(
            "PATCH /users/{id}",
            lambda: self._sdk.users.update(user_id, password=password, **options),
            secrets=[password],
        )
        self._cache.put(user_id, normalize_user(updated), self._clock())

    # --- tickets ----------------------------------------------------------------------------

    async def create_email_verification_ticket(
        self, *, user_id: str, result_url: str | None = None, ttl_sec: int | None = None, client_id: str | None = None
    ) -> str:
        """A one-time link that verifies the user's email (result_url and client_id are exclusive)."""
        check_user_id(user_id)
        options = {
            k: v
            for k, v in {"result_url": result_url, "ttl_sec": ttl_sec, "client_id": client_id}.items()
            if v is not None
        }
        # The SDK's clients are untyped (Any); its answer models are not.
        answer: VerifyEmailTicketResponseContent = await self._call(
            "POST /tickets/email-verification", lambda: self._sdk.tickets.verify_email(user_id=user_id, **options)
        )
        return answer.ticket

    async def create_password_change_ticket(
        self,
        *,
        user_id: str,
        result_url: str | None = None,
        ttl_sec: int | None = None,
        new_password: str | None = None,
    ) -> str:
        """A one-time link to the password reset page.

        `new_password` is only accepted by legacy tenants (Change Password flow v1); current
        Auth0 answers 400 invalid_body, which surfaces as Auth0Permanent. Never in messages.
        """
        check_user_id(user_id)
        options = {k: v for k, v in {"result_url": result_url, "ttl_sec": ttl_sec}.items() if v is not None}
        request_options: dict[str, Any] | None = None
        if new_password is not None:
            request_options = {"additional_body_parameters": {"new_password": new_password}}
        answer: ChangePasswordTicketResponseContent = await self._call(
            "POST /tickets/password-change",
            lambda: self._sdk.tickets.change_password(user_id=user_id, request_options=request_options, **options),
            secrets=[new_password],
        )
        return answer.ticket

    # --- logs -------------------------------------------------------------------------------

    async def latest_log_id(self) -> str | None:
        """The newest log's id (search mode, newest first): where `poll.start: now` begins."""
        response = await self._raw_get(
            "/logs", {"sort": "date:-1", "page": 0, "per_page": 1, "include_totals": "false"}
        )
        body = self._json(response, "GET /logs")
        events = body.get("logs", []) if isinstance(body, dict) else body
        events = [e for e in events if isinstance(e, dict)]
        return str(events[0].get("log_id") or events[0].get("_id")) if events else None

    async def read_logs(self, from_log_id: str | None, take: int = 100) -> tuple[list[JsonObject], str | None]:
        """One page of tenant logs after `from_log_id`, and the `from` for the next page.

        With a checkpoint: `GET /logs?from=&take=` (ordered by log_id; the next `from` is the
        Link rel="next" value, else the last log_id; an empty page keeps the same `from`).
        Without one ("oldest"): Auth0 documents no checkpoint that means "the beginning", so
        the first page is the search mode sorted by date ascending (`sort=date:1`), and its
        highest log_id becomes the checkpoint; from then on it is checkpoint mode. Returns
        ([], None) when the tenant has no logs yet.
        """
        take = max(1, min(100, int(take)))
        if from_log_id is None:
            response = await self._raw_get(
                "/logs", {"sort": "date:1", "page": 0, "per_page": take, "include_totals": "false"}
            )
            body = self._log_page(response)
            events = body.get("logs", []) if isinstance(body, dict) else body
            events = sorted((e for e in events if isinstance(e, dict)), key=log_id_key)
            return events, (str(events[-1].get("log_id") or events[-1].get("_id")) if events else None)
        response = await self._raw_get("/logs", {"from": from_log_id, "take": take})
        events = self._log_page(response)
        if not isinstance(events, list):
            raise Auth0Transient(
                "GET /logs: checkpoint answer is not a JSON array", status=response.status_code, endpoint="GET /logs"
            )
        events = [e for e in events if isinstance(e, dict)]
        following = next_from(response.links.get("next", {}).get("url"))
        if following is None:
            following = str(events[-1].get("log_id") or from_log_id) if events else from_log_id
        return events, following

    # --- log streams ------------------------------------------------------------------------

    async def list_log_streams(self) -> list[JsonObject]:
        streams = await self._call("GET /log-streams", lambda: self._sdk.log_streams.list())
        return [plain(s) for s in streams or []]

    async def create_log_stream(self, body: dict[str, Any]) -> JsonObject:
        """`body` in Auth0's wire shape (camelCase sink keys), sent as is."""
        created = await self._call(
            "POST /log-streams",
            lambda: self._sdk.log_streams.create(request=body, request_options={"additional_body_parameters": body}),
            secrets=_stream_secrets(body),
        )
        stream: JsonObject = plain(created)
        return stream

    async def update_log_stream(self, stream_id: str, body: dict[str, Any]) -> JsonObject:
        updated = await self._call(
            "PATCH /log-streams/{id}",
            lambda: self._sdk.log_streams.update(stream_id, request_options={"additional_body_parameters": body}),
            secrets=_stream_secrets(body),
        )
        stream: JsonObject = plain(updated)
        return stream

    # --- internals --------------------------------------------------------------------------

    def _record(self, method: str, api_path: str, status: str, waited: float) -> None:
        endpoint = endpoint_label(method, api_path)
        self.calls_made += 1
        metrics.AUTH0_CALLS.labels(self.tenant_name, endpoint, status).inc()
        if status == "429":
            metrics.AUTH0_RATE_LIMITED.labels(self.tenant_name).inc()
            log.warning("auth0_rate_limited", tenant=self.tenant_name, endpoint=endpoint)
        if waited > 0:
            metrics.AUTH0_PACING_SECONDS.labels(self.tenant_name).inc(waited)

    def _settle(self, uid: str, *, value: Any = None, exc: BaseException | None = None) -> None:
        future = self._pending.pop(uid, None)
        if future is None or future.done():
            return
        if exc is None:
            future.set_result(value)
        elif isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits

    async def _call(self, endpoint: str, make: Callable[[], Awaitable[T]], *, secrets: Iterable[str | None] = ()) -> T:
        """Run one SDK call; map its failure; after a 401, drop the token and try once more."""
        secrets = [self._secret, *secrets]
        for attempt in (0, 1):
            try:
                return await make()
            except Exception as exc:  # noqa: BLE001 - every failure leaves as an Auth0Error
                error = map_exception(exc, endpoint=endpoint, secrets=secrets)
            if attempt == 0 and self._token_rejected(error):
                continue
            raise error
        raise AssertionError("unreachable")

    def _token_rejected(self, error: Auth0Error) -> bool:
        """A 401 from the API (not from /oauth/token): the token expired or was replaced. A 403
        with a token old enough that scopes may have been granted since: try a new one."""
        if error.endpoint == TOKEN_ENDPOINT:
            return False
        if error.status == 401:
            self.tokens.invalidate(self.tokens.generation)
            return True
        return error.status == 403 and self.tokens.invalidate_after_refusal(self.tokens.generation)

    async def _search(self, chunk: list[str]) -> list[JsonObject]:
        """One search call, raw: the SDK's model conversion costs ~0.2 ms per user returned."""
        response = await self._raw_get(
            "/users",
            {"q": user_id_query(chunk), "search_engine": "v3", "page": 0, "per_page": 100, "include_totals": "false"},
        )
        body = self._json(response, "GET /users")
        users = body.get("users", []) if isinstance(body, dict) else body
        return [normalize_user(u) for u in users if isinstance(u, dict)]  # first page only: no extra call

    async def _get_user(self, user_id: str) -> JsonObject | None:
        if user_id_problem(user_id):
            return None  # no tenant holds it, and the id must not become a path
        try:
            return normalize_user(await self._call("GET /users/{id}", lambda: self._sdk.users.get(user_id)))
        except UserNotFound:
            return None

    async def _get_users_by_id(self, user_ids: list[str]) -> dict[str, JsonObject | None]:
        profiles = await asyncio.gather(*(self._get_user(uid) for uid in user_ids))
        return dict(zip(user_ids, profiles, strict=True))

    async def _fetch_users(self, user_ids: list[str], since: Mapping[str, str]) -> dict[str, JsonObject | None]:
        wanted = set(user_ids)
        found: dict[str, JsonObject | None] = {}
        for page in await asyncio.gather(*(self._search(chunk) for chunk in chunk_ids(user_ids))):
            for user in page:
                uid = user.get("user_id")
                if uid in wanted and not is_stale(user, since.get(uid)):
                    found[uid] = user
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            found.update(await self._get_users_by_id(missing))
        return found

    async def _raw_get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        """GET through the paced client with our token, retrying like the SDK does."""
        endpoint = endpoint_label("GET", path)
        refreshed = False
        attempt = 0
        while True:
            token = await self.tokens.get()
            try:
                response = await self._http.get(
                    f"{self._api_base}{path}",
                    params=params,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            except Exception as exc:  # noqa: BLE001 - mapped below
                if attempt < self._max_retries and isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError)):
                    await asyncio.sleep(retry_delay({}, attempt))
                    attempt += 1
                    continue
                raise map_exception(exc, endpoint=endpoint, secrets=[self._secret, token]) from None
            status = response.status_code
            if status < 400:
                return response
            if status == 401 and not refreshed:
                refreshed = True
                self.tokens.invalidate(self.tokens.generation)
                continue
            if status == 403 and not refreshed and self.tokens.invalidate_after_refusal(self.tokens.generation):
                refreshed = True
                continue
            if (status in (408, 429) or status >= 500) and attempt < self._max_retries:
                await asyncio.sleep(retry_delay(response.headers, attempt))
                attempt += 1
                continue
            raise from_status(
                status,
                self._json(response, endpoint, strict=False),
                response.headers,
                endpoint=endpoint,
                secrets=[self._secret, token],
            )

    @staticmethod
    def _log_page(response: httpx.Response) -> Any:
        """A page of log events, parsed as webhook bodies are: an entry with a value no store can
        keep (a 5,000-digit number …) must reach the poller, which quarantines it alone."""
        try:
            return load_json(response.content)
        except (ValueError, UnicodeDecodeError):  # BodyError, JSONDecodeError
            raise Auth0Transient(
                f"GET /logs: answer is not JSON (HTTP {response.status_code})",
                status=response.status_code,
                endpoint="GET /logs",
            ) from None

    @staticmethod
    def _json(response: httpx.Response, endpoint: str, *, strict: bool = True) -> Any:
        try:
            return response.json()
        except ValueError:
            if strict:
                raise Auth0Transient(
                    f"{endpoint}: answer is not JSON (HTTP {response.status_code})",
                    status=response.status_code,
                    endpoint=endpoint,
                ) from None
            return response.text[:200]


def _stream_secrets(body: Mapping[str, Any]) -> list[str | None]:
    sink = body.get("sink") if isinstance(body, Mapping) else None
    return [sink.get("httpAuthorization")] if isinstance(sink, Mapping) else []


__all__ = [
    "ManagementApi",
    "Auth0Error",
    "Auth0Permanent",
    "Auth0Transient",
    "UserNotFound",
    "InvalidUserId",
    "endpoint_label",
    "chunk_ids",
    "user_id_query",
    "user_id_problem",
    "check_user_id",
    "next_from",
    "is_stale",
    "normalize_user",
]
