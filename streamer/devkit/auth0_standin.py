"""A local Auth0 tenant: the Management API endpoints streamer uses, served by aiohttp.

It is the only Auth0 stand-in the tests use, and `streamer dev` embeds it, so it follows
Auth0's documented behaviour (see shared/auth0/FACTS.md) rather than streamer's wishes:
client-credentials tokens that expire, Bearer checks on every /api/v2 call, Auth0's error
bodies, the x-ratelimit-* headers of a token bucket, users search with its lagging index,
first-level metadata merges, one-time tickets that append `sv`/`scp` log events when used,
checkpoint paging of the tenant logs with a Link header, log streams that actually deliver.

Deliberate differences, because it runs on a developer's machine:
* ticket URLs point at the stand-in (`{base_url}/u/...`), not `https://{domain}/u/...`, so the
  links in the emails can be clicked;
* `new_password` on password-change tickets is refused (400 invalid_body) as current Auth0
  does, unless `legacy_password_flow=True` emulates a tenant with Change Password flow v1.

`PATCH /api/v2/users/{id}` with `password` applies a database connection's password policy
(`password_policy`, on by default: Auth0's "fair" strength, a small dictionary, no personal
info, a history of 5) and refuses with Auth0's 400 bodies, `{"statusCode": 400, "error":
"Bad Request", "message": "PasswordStrengthError: Password is too weak"}` and likewise
`PasswordDictionaryError: Password is too common`, `PasswordNoUserInfoError: Password contains
user information`, `PasswordHistoryError: Password has previously been used`. An accepted
change logs `scp`, which streamer's "password changed" rule listens to.

Test hooks: `calls`, `tickets`, `logs`, `users`, `add_user`, `add_log`, `fail_next`,
`set_rate_limit`, `unindexed` / `freeze_search` (search index lag), `stream_deliveries`.

A real tenant, as the bench and `streamer dev` use it (`realistic_tenant()`, or the options): `search_lag_s`
(a user written less than that long ago is absent from `GET /api/v2/users`, or found as they
were; get-by-id and users-by-email are always current), `latency_s` per call, and `plan`, the
Management API rate limits of an Auth0 plan with its separate buckets (`RATE_LIMIT_PLANS`).
The defaults (no lag, no latency, no limit) are the ideal tenant most tests want.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import hashlib
import html
import ipaddress
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from streamer.auth0.log_streams import CATEGORY_OF_TYPE

DEFAULT_TICKET_TTL_S = 432000            # 5 days, Auth0's default for both ticket kinds
MAX_PER_PAGE = 100
DEFAULT_TAKE = 50
UNLIMITED_HEADER_LIMIT = 1000             # what the headers say when no limit is emulated
SCOPES = ("read:users update:users update:users_app_metadata delete:users create:user_tickets read:logs "
          "read:logs_users "
          "read:log_streams create:log_streams update:log_streams delete:log_streams")
#: Scopes each Management API endpoint wants (any one of them), as Auth0 documents them.
ENDPOINT_SCOPES: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (method, re.compile(pattern), scopes) for method, pattern, scopes in (
        ("GET", r"/api/v2/users(/[^/]+)?$", ("read:users",)),
        ("GET", r"/api/v2/users-by-email$", ("read:users",)),
        ("PATCH", r"/api/v2/users/[^/]+$", ("update:users", "update:users_app_metadata")),
        ("DELETE", r"/api/v2/users/[^/]+$", ("delete:users",)),
        ("POST", r"/api/v2/tickets/", ("create:user_tickets",)),
        ("GET", r"/api/v2/logs(/[^/]+)?$", ("read:logs", "read:logs_users")),
        ("GET", r"/api/v2/log-streams", ("read:log_streams",)),
        ("POST", r"/api/v2/log-streams$", ("create:log_streams",)),
        ("PATCH", r"/api/v2/log-streams/", ("update:log_streams",)),
        ("DELETE", r"/api/v2/log-streams/", ("delete:log_streams",))))
VERIFIED_MESSAGE = "Your email was verified. You can continue using the application."
#: Auth0's password-policy refusals on user create/update (400, no errorCode), by policy.
PASSWORD_POLICY_ERRORS = {
    "strength": "PasswordStrengthError: Password is too weak",
    "dictionary": "PasswordDictionaryError: Password is too common",
    "user_info": "PasswordNoUserInfoError: Password contains user information",
    "history": "PasswordHistoryError: Password has previously been used",
}
COMMON_PASSWORDS = frozenset({"password1!", "passw0rd!", "p@ssw0rd", "p@ssword1", "welcome1!", "qwerty123!",
                              "letmein123!", "password123!", "iloveyou1!", "admin123!"})

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 410: "Gone", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_DEFAULT_CODES = {400: "invalid_body", 403: "insufficient_scope", 404: "inexistent_user", 409: "conflict",
                  429: "too_many_requests", 500: "internal_error", 502: "bad_gateway",
                  503: "service_unavailable", 504: "gateway_timeout"}
_DEFAULT_MESSAGES = {429: "Global limit has been reached", 500: "Internal Server Error",
                     503: "Service Unavailable", 404: "Not Found", 400: "Bad Request"}

#: Log-stream filter categories (others → "other"): the table register and the watch use.
STREAM_CATEGORIES = CATEGORY_OF_TYPE

#: Management API rate limits by plan (FACTS f: burst, refill per second). "global" is "all other
#: endpoints combined"; the other buckets are endpoint groups Auth0 limits on their own.
RATE_LIMIT_PLANS: dict[str, dict[str, tuple[int, float]]] = {
    "free": {"global": (2, 2.0)},
    "essentials": {"global": (10, 150 / 60), "read_users": (40, 500 / 60), "write_users": (20, 200 / 60),
                   "delete_users": (20, 200 / 60), "read_logs": (10, 100 / 60)},
    "enterprise": {"global": (50, 16.0)},
    "enterprise-nonprod": {"global": (10, 2.0)},
}
RATE_LIMIT_PLANS["professional"] = RATE_LIMIT_PLANS["b2b"] = RATE_LIMIT_PLANS["essentials"]
#: Endpoint groups with a bucket of their own on some plans: (method, path pattern, bucket).
_ENDPOINT_BUCKETS = tuple((method, re.compile(pattern), name) for method, pattern, name in (
    ("GET", r"/api/v2/users(/|-by-email|$)", "read_users"),
    ("POST", r"/api/v2/users(/|$)", "write_users"),
    ("PATCH", r"/api/v2/users/", "write_users"),
    ("DELETE", r"/api/v2/users/", "delete_users"),
    ("GET", r"/api/v2/logs(/|$)", "read_logs")))

_EMAIL_TICKET_PROPS = {"user_id", "result_url", "client_id", "organization_id", "ttl_sec", "includeEmailInRedirect",
                       "identity"}
_PASSWORD_TICKET_PROPS = {"result_url", "user_id", "client_id", "organization_id", "connection_id", "email",
                          "ttl_sec", "mark_email_as_verified", "includeEmailInRedirect", "identity"}
_STREAM_CREATE_PROPS = {"name", "type", "isPriority", "filters", "pii_config", "startFrom", "sink"}
_STREAM_PATCH_PROPS = {"name", "status", "isPriority", "filters", "pii_config", "sink"}
_STREAM_STATUSES = {"active", "paused", "suspended"}


# --- pure helpers ---------------------------------------------------------------------------


class ApiProblem(Exception):
    """Raised by handlers; becomes an Auth0 error body."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def error_body(status: int, message: str | None = None, error_code: str | None = None) -> dict[str, Any]:
    """Auth0's Management API error shape: statusCode, error, message, errorCode."""
    body: dict[str, Any] = {"statusCode": status, "error": _REASONS.get(status, "Error"),
                            "message": message or _DEFAULT_MESSAGES.get(status, _REASONS.get(status, "Error"))}
    code = error_code or _DEFAULT_CODES.get(status)
    if status == 401:  # Auth0's 401s carry attributes.error instead of errorCode
        body["attributes"] = {"error": body["message"]}
    elif code:
        body["errorCode"] = code
    return body


def api_error(status: int, message: str | None = None, error_code: str | None = None,
              headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message, error_code), status=status, headers=headers)


def iso_ms(moment: datetime) -> str:
    """`2026-03-01T14:01:07.412Z`, Auth0's date format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_log_id(moment: datetime, sequence: int) -> str:
    """56 digits: `900` + yyyyMMddHHmmssSSS (ingest time) + 36 digits; sorts by time."""
    stamp = moment.astimezone(UTC).strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}"
    return f"900{stamp}{sequence % 10**36:036d}"


def log_id_key(log_id: str) -> tuple[int, str]:
    return len(log_id), log_id


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
        return {"x-ratelimit-limit": str(self.burst), "x-ratelimit-remaining": str(int(math.floor(self.tokens))),
                "x-ratelimit-reset": str(int(math.ceil(full_at)))}


_VALUE = r'"(?:[^"\\]|\\.)*"'
_TERM = re.compile(r'\s*(?P<field>[A-Za-z_$][\w.$]*):(?:(?P<quoted>' + _VALUE + r')|\((?P<group>[^()]*)\)'
                   r'|(?P<bare>[^\s"()]+))\s*')
_AND = re.compile(r"AND\s+")


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def parse_query(q: str) -> list[tuple[str, list[str]]]:
    """The Lucene subset streamer sends: `f:"a"`, `f:("a" OR "b")`, `f:bare`, joined by AND.

    Returns [(field, accepted values)]; raises ValueError for anything else.
    """
    terms: list[tuple[str, list[str]]] = []
    pos = 0
    while True:
        match = _TERM.match(q, pos)
        if not match:
            raise ValueError(f"cannot parse query at character {pos}")
        if match.group("quoted") is not None:
            values = [_unquote(match.group("quoted"))]
        elif match.group("group") is not None:
            group = match.group("group")
            quoted = re.findall(_VALUE, group)
            rest = re.sub(_VALUE, " ", group).split()
            if not quoted or rest != ["OR"] * (len(quoted) - 1):
                raise ValueError("a group must be quoted values separated by OR")
            values = [_unquote(v) for v in quoted]
        else:
            values = [match.group("bare")]
        terms.append((match.group("field"), values))
        pos = match.end()
        if pos >= len(q):
            return terms
        joiner = _AND.match(q, pos)
        if not joiner:
            raise ValueError(f"expected AND at character {pos}")
        pos = joiner.end()


def _field(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def matches(obj: dict[str, Any], terms: list[tuple[str, list[str]]]) -> bool:
    """Every term matches (values: exact; `*` wildcards; booleans as true/false; email ignores case)."""
    for name, values in terms:
        actual = _field(obj, name)
        if actual is None:
            return False
        if isinstance(actual, bool):
            actual = "true" if actual else "false"
        text = str(actual)
        if name == "email":
            text = text.lower()
        wanted = [v.lower() if name == "email" else v for v in values]
        if not any(fnmatch.fnmatchcase(text, w) if "*" in w else text == w for w in wanted):
            return False
    return True


def project(obj: dict[str, Any], fields: str | None, include: bool) -> dict[str, Any]:
    """Auth0's `fields` + `include_fields`."""
    if not fields:
        return obj
    names = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in obj.items() if (k in names) == include}


def merge_metadata(current: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
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


def public_user(profile: dict[str, Any]) -> dict[str, Any]:
    """A stored profile as Auth0 returns it: empty metadata objects omitted."""
    user = copy.deepcopy(profile)
    for key in ("user_metadata", "app_metadata"):
        if key in user and not user[key]:
            del user[key]
    return user


def connection_id(name: str) -> str:
    return "con_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_sample_users() -> list[dict[str, Any]]:
    """The seeded users of `streamer dev` (ana.silva fr-CA unverified, bruno.costa google …)."""
    text = resources.files("streamer.devkit").joinpath("sample_users.json").read_text(encoding="utf-8")
    return json.loads(text)


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;"
        "line-height:1.5}label{display:block;margin-top:1rem}input{width:100%;padding:.5rem;font-size:1rem}"
        "button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}[role=alert]{color:#a00}</style>"
        f"</head><body><main><h1>{html.escape(title)}</h1>{body}"
        '<p><small>Auth0 stand-in (local development)</small></p></main></body></html>')
    return web.Response(text=document, status=status, content_type="text/html", charset="utf-8")


# --- the server -----------------------------------------------------------------------------


def is_loopback_url(url: str) -> bool:
    """Only loopback endpoints (127.0.0.0/8, ::1, localhost) are delivered to."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Auth0StandIn:
    """One emulated tenant. `await start()` → base_url; `await stop()` when done."""

    def __init__(self, *, domain: str = "acme-test.us.auth0.com", client_id: str = "standin-client",
                 client_secret: str = "standin-secret", users: list[dict] | None = None,
                 rate_limit: tuple[int, float] | None = None, token_ttl_s: int = 86400,
                 legacy_password_flow: bool = False, search_lag_s: float = 0.0, latency_s: float = 0.0,
                 plan: str | None = None):
        self.domain = domain
        self.tenant_name = domain.split(".")[0]
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.legacy_password_flow = legacy_password_flow
        self.base_url = ""
        self.users: dict[str, dict] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.tickets: dict[str, dict] = {}
        self.logs: list[dict] = []
        self.log_streams: dict[str, dict] = {}
        #: (stream id, HTTP status or 0 for no answer, number of events) per delivery attempt.
        self.stream_deliveries: list[tuple[str, int, int]] = []
        #: Batches failing every attempt in a row before Auth0 suspends the stream ("disabled
        #: because of successive errors"; Auth0 does not publish the number).
        self.stream_suspend_after = 3
        #: Events a stream has not delivered yet: while paused or suspended (Auth0 keeps them and
        #: delivers them on re-activation) and after a failed batch (retried until it works).
        self.stream_held: dict[str, list[dict]] = {}
        self._stream_failures: dict[str, int] = {}
        #: Users the search index does not know yet (Auth0's index lags behind new users).
        self.unindexed: set[str] = set()
        #: Stale copies the search returns instead of the live profile (index lag on updates).
        self.search_snapshots: dict[str, dict] = {}
        self._passwords: dict[str, str] = {}           # user_id -> sha256, never the password
        self._password_history: dict[str, list[str]] = {}  # user_id -> sha256 of earlier passwords
        #: The database connection's password policy; None turns it off.
        self.password_policy: dict[str, Any] | None = {"min_length": 8, "history_size": 5}
        #: Accepted password changes by PATCH: {"user_id", "connection"} (never the password).
        self.password_changes: list[dict[str, Any]] = []
        self._tokens: dict[str, float] = {}            # access token -> expiry (epoch)
        self._token_scopes: dict[str, frozenset[str]] = {}
        #: What the M2M application is granted; a token carries the grant of the moment it was issued.
        self.granted_scopes = SCOPES
        self._failures: list[list[Any]] = []           # [path prefix, status, remaining count]
        self._bucket: TokenBucket | None = None
        #: Buckets of endpoint groups limited on their own (the plan's), by name.
        self._endpoint_buckets: dict[str, TokenBucket] = {}
        #: Seconds the users search index lags behind writes; each user's recent versions
        #: (monotonic time written, profile or None once deleted), oldest first, for that lag.
        self.search_lag_s = search_lag_s
        self._versions: dict[str, list[tuple[float, dict | None]]] = {}
        #: Seconds each Management API and token call takes before it is answered.
        self.latency_s = latency_s
        self._log_sequence = 0
        self._last_log_id = 0
        self._runner: web.AppRunner | None = None
        self._stream_queue: asyncio.Queue | None = None
        self._stream_task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        if plan is not None:
            self.set_plan(plan)
        if rate_limit is not None:
            self.set_rate_limit(*rate_limit)
        for profile in users or []:
            self.add_user(profile, indexed=True)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware])
        route = app.router
        route.add_post("/oauth/token", self._oauth_token)
        route.add_get("/api/v2/users", self._search_users)
        route.add_get("/api/v2/users/{id}", self._get_user)
        route.add_patch("/api/v2/users/{id}", self._patch_user)
        route.add_delete("/api/v2/users/{id}", self._delete_user)
        route.add_get("/api/v2/users-by-email", self._users_by_email)
        route.add_post("/api/v2/tickets/email-verification", self._email_ticket)
        route.add_post("/api/v2/tickets/password-change", self._password_ticket)
        route.add_get("/api/v2/logs", self._get_logs)
        route.add_get("/api/v2/logs/{id}", self._get_log)
        route.add_get("/api/v2/log-streams", self._list_streams)
        route.add_post("/api/v2/log-streams", self._create_stream)
        route.add_get("/api/v2/log-streams/{id}", self._get_stream)
        route.add_patch("/api/v2/log-streams/{id}", self._patch_stream)
        route.add_delete("/api/v2/log-streams/{id}", self._delete_stream)
        route.add_get("/u/email-verification", self._use_email_ticket)
        route.add_get("/u/reset-verify", self._reset_form)
        route.add_post("/u/reset-verify", self._reset_submit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.base_url = f"http://{shown}:{bound_port}"
        self._stream_queue = asyncio.Queue()
        self._stream_task = asyncio.create_task(self._deliver_streams(), name="auth0-standin-log-streams")
        return self.base_url

    async def stop(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            try:
                await self._stream_task
            except asyncio.CancelledError:
                pass
            self._stream_task = None
        self._stream_queue = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Auth0StandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- test hooks ---------------------------------------------------------------------------

    @property
    def audience(self) -> str:
        return f"https://{self.domain}/api/v2/"

    def add_user(self, profile: dict, *, indexed: bool | None = None) -> dict:
        """Store a user (Auth0 shape; defaults filled in). `indexed=False` hides it from search
        until `index_all()`; `True` makes it a long-standing user the index already has; None
        (a signup now) follows `search_lag_s`."""
        user = copy.deepcopy(profile)
        user_id = user.setdefault("user_id", "auth0|" + secrets.token_hex(12))
        now = iso_ms(datetime.now(UTC))
        provider, _, sub = user_id.partition("|")
        if "identities" not in user:
            social = provider not in ("auth0", "email", "sms")
            user["identities"] = [{"connection": provider if social else "Username-Password-Authentication",
                                   "provider": provider, "user_id": sub, "isSocial": social}]
        if "email" in user:
            user.setdefault("email_verified", False)
            user.setdefault("name", user["email"])
            user.setdefault("nickname", user["email"].split("@")[0])
        user.setdefault("created_at", now)
        user.setdefault("updated_at", now)
        user.setdefault("logins_count", 0)
        user.pop("password", None)
        self.users[user_id] = public_user(user)
        if indexed is False:
            self.unindexed.add(user_id)
        else:
            self.unindexed.discard(user_id)
        self._versions.pop(user_id, None)
        if self.search_lag_s > 0:   # long-standing users are in the index since "always"
            self._versions[user_id] = [(-math.inf if indexed else time.monotonic(), public_user(user))]
        return public_user(user)

    def set_search_lag(self, seconds: float) -> None:
        """From now on the users search lags `seconds` behind writes (users so far are indexed)."""
        self.search_lag_s = seconds
        self._versions = ({uid: [(-math.inf, copy.deepcopy(u))] for uid, u in self.users.items()}
                          if seconds > 0 else {})

    def user_changed(self, user_id: str) -> None:
        """A write to the user (or its deletion) the search index sees only `search_lag_s` later;
        call it after changing `users[...]` directly. The stand-in's own writes call it."""
        if self.search_lag_s <= 0:
            return
        now = time.monotonic()
        versions = self._versions.setdefault(user_id, [])
        current = self.users.get(user_id)
        versions.append((now, copy.deepcopy(current) if current is not None else None))
        # Only the newest version the index already shows is still needed, and the ones after it.
        settled = [i for i, (t, _) in enumerate(versions) if t <= now - self.search_lag_s]
        if settled:
            del versions[:settled[-1]]

    def delete_user(self, user_id: str) -> None:
        """Delete a user as `DELETE /api/v2/users/{id}` does (an `sdu` log event; search lags)."""
        user = self._user_or_404(user_id)
        del self.users[user_id]
        self.user_changed(user_id)
        identity = (user.get("identities") or [{}])[0]
        connection = identity.get("connection", "Username-Password-Authentication")
        self.add_log({"type": "sdu", "description": "", "client_id": "", "client_name": "", "ip": "127.0.0.1",
                      "user_agent": "unknown", "hostname": self.domain, "tenant_name": self.tenant_name,
                      "connection": connection, "connection_id": connection_id(connection),
                      "strategy": identity.get("provider", "auth0"), "strategy_type": "database",
                      "user_id": user_id, "user_name": user.get("email", ""),
                      "details": {"body": {"tenant": self.tenant_name, "connection": connection,
                                           "user_id": user_id, "email": user.get("email")}}})

    def _search_view(self, user_id: str, now: float) -> dict | None:
        """The user as the search index shows it now (None: not in the index)."""
        if user_id in self.unindexed:
            return None
        if user_id in self.search_snapshots:
            return self.search_snapshots[user_id]
        versions = self._versions.get(user_id)
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
        for versions in self._versions.values():
            versions[:] = [(-math.inf, versions[-1][1])]

    def add_log(self, event: dict) -> dict:
        """Append a tenant log event, filling `date`, `log_id` and `_id`.

        A given numeric `log_id` not used yet is kept (to replay known events); otherwise a new
        one is made from the ingest time, always above every id so far, as checkpoints need.
        """
        stored = copy.deepcopy(event)
        now = datetime.now(UTC)
        stored.setdefault("date", iso_ms(now))
        given = str(stored.get("log_id") or "")
        if given.isdigit() and all(e["log_id"] != given for e in self.logs):
            log_id = given
        else:
            self._log_sequence += 1
            log_id = make_log_id(now, self._log_sequence)
            if int(log_id) <= self._last_log_id:
                log_id = str(self._last_log_id + 1)
        self._last_log_id = max(self._last_log_id, int(log_id))
        stored["log_id"] = stored["_id"] = log_id
        self.logs.append(stored)
        self._queue_for_streams(stored)
        return stored

    def fail_next(self, path_prefix: str, status: int, count: int = 1) -> None:
        """The next `count` requests whose path starts with `path_prefix` get `status` (Auth0 bodies)."""
        self._failures.append([path_prefix, status, count])

    def set_rate_limit(self, burst: int, per_second: float) -> None:
        self._bucket = TokenBucket(burst, per_second, updated=time.time())

    def clear_rate_limit(self) -> None:
        self._bucket = None
        self._endpoint_buckets = {}

    def set_plan(self, plan: str) -> None:
        """The rate limits of an Auth0 plan (RATE_LIMIT_PLANS), each bucket starting full."""
        if plan not in RATE_LIMIT_PLANS:
            raise ValueError(f"unknown plan {plan!r}; one of {', '.join(sorted(RATE_LIMIT_PLANS))}")
        buckets = {name: TokenBucket(burst, rate, updated=time.time())
                   for name, (burst, rate) in RATE_LIMIT_PLANS[plan].items()}
        self._bucket = buckets.pop("global")
        self._endpoint_buckets = buckets

    def _bucket_for(self, method: str, path: str) -> TokenBucket | None:
        """The endpoint group's own bucket when the plan has one, else the global one."""
        if self._endpoint_buckets:
            for wanted, pattern, name in _ENDPOINT_BUCKETS:
                if method == wanted and pattern.match(path) and name in self._endpoint_buckets:
                    return self._endpoint_buckets[name]
        return self._bucket

    def password_matches(self, user_id: str, password: str) -> bool:
        return self._passwords.get(user_id) == hashlib.sha256(password.encode()).hexdigest()

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token handed out (to assert that none leaks into logs or storage)."""
        return list(self._tokens)

    def expire_tokens(self) -> None:
        """Every access token issued so far is now expired (the next API call gets 401)."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    def issue_token(self, ttl_s: int | None = None) -> str:
        """A valid access token without going through /oauth/token (for raw HTTP tests)."""
        return self._new_token(self.token_ttl_s if ttl_s is None else ttl_s)

    # --- middleware: call log, failures, rate limit, bearer check ------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self._handle(request, handler)
        self.calls.append((request.method, request.path, response.status))
        return response

    @staticmethod
    async def _answer(request: web.Request, handler: Any) -> web.StreamResponse:
        """The handler's response, with problems and router errors as Auth0-style answers."""
        try:
            return await handler(request)
        except ApiProblem as problem:
            return api_error(problem.status, problem.message, problem.error_code)
        except web.HTTPException as exc:  # unknown route, wrong method
            if request.path.startswith("/api/v2"):
                return api_error(exc.status, exc.reason, "not_found" if exc.status == 404 else None)
            return web.Response(status=exc.status, text=exc.reason)

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        is_api = path.startswith("/api/v2/") or path == "/api/v2"
        if self.latency_s > 0 and (is_api or path == "/oauth/token"):
            await asyncio.sleep(self.latency_s)
        now = time.time()
        headers: dict[str, str] = {}
        if is_api:
            bucket = self._bucket_for(request.method, path)
            allowed = bucket.take(now) if bucket else True
            headers = self._rate_headers(now, bucket)
            if not allowed:
                return api_error(429, "Global limit has been reached", "too_many_requests", headers)
        injected = self._injected_status(path)
        if injected is not None:
            if injected == 429:
                headers = {**headers, "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(math.ceil(now + 1)))}
            if path == "/oauth/token":
                return web.json_response({"error": "server_error" if injected >= 500 else "access_denied",
                                          "error_description": _REASONS.get(injected, "Error")}, status=injected)
            return api_error(injected, None, None, headers or None)
        if is_api:
            problem = self._bearer_problem(request.headers.get("Authorization", ""), now)
            if problem is not None:
                return api_error(401, problem, None, headers)
            wanted = self._scope_problem(request.method, path, request.headers["Authorization"].partition(" ")[2])
            if wanted is not None:
                return api_error(403, f"Insufficient scope, expected any of: {wanted}", "insufficient_scope", headers)
        response = await self._answer(request, handler)
        response.headers.update(headers)
        return response

    def _rate_headers(self, now: float, bucket: TokenBucket | None = None) -> dict[str, str]:
        bucket = bucket or self._bucket
        if bucket is not None:
            return bucket.headers(now)
        limit = str(UNLIMITED_HEADER_LIMIT)
        return {"x-ratelimit-limit": limit, "x-ratelimit-remaining": limit,
                "x-ratelimit-reset": str(int(math.ceil(now)))}

    def _injected_status(self, path: str) -> int | None:
        for failure in self._failures:
            if path.startswith(failure[0]) and failure[2] > 0:
                failure[2] -= 1
                if failure[2] == 0:
                    self._failures.remove(failure)
                return int(failure[1])
        return None

    def _bearer_problem(self, authorization: str, now: float) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            return "Missing authentication"
        if scheme.lower() != "bearer" or not token.strip():
            return "Bad HTTP authentication header format"
        expiry = self._tokens.get(token.strip())
        if expiry is None:
            return "Invalid token"
        if expiry <= now:
            return "Expired token"
        return None

    def _scope_problem(self, method: str, path: str, token: str) -> str | None:
        """The scopes the endpoint wants, comma-separated, when the token carries none of them."""
        granted = self._token_scopes.get(token.strip(), frozenset())
        for wanted_method, pattern, scopes in ENDPOINT_SCOPES:
            if method == wanted_method and pattern.match(path):
                return None if granted.intersection(scopes) else ",".join(scopes)
        return None

    def _new_token(self, ttl_s: int) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": "standin"}
        claims = {"iss": f"https://{self.domain}/", "sub": f"{self.client_id}@clients", "aud": self.audience,
                  "iat": now, "exp": now + ttl_s, "scope": self.granted_scopes, "gty": "client-credentials",
                  "azp": self.client_id, "jti": secrets.token_hex(8)}
        token = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()),
                          _b64(secrets.token_bytes(64))])
        self._tokens[token] = time.time() + ttl_s
        self._token_scopes[token] = frozenset(self.granted_scopes.split())
        return token

    # --- /oauth/token -------------------------------------------------------------------------

    async def _oauth_token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            try:
                data = await request.json()
            except ValueError:
                data = None
        else:
            data = dict(await request.post())
        if not isinstance(data, dict):
            return web.json_response({"error": "invalid_request", "error_description": "Invalid request body"},
                                     status=400)
        grant = data.get("grant_type")
        if grant != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type",
                                      "error_description": f"Unsupported grant type: {grant}"}, status=403)
        if data.get("client_id") != self.client_id or data.get("client_secret") != self.client_secret:
            return web.json_response({"error": "access_denied", "error_description": "Unauthorized"}, status=401)
        if data.get("audience") != self.audience:
            described = f"Service not enabled within domain: {data.get('audience')}"
            return web.json_response({"error": "access_denied", "error_description": described}, status=403)
        return web.json_response({"access_token": self._new_token(self.token_ttl_s), "expires_in": self.token_ttl_s,
                                  "scope": self.granted_scopes, "token_type": "Bearer"},
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # --- users --------------------------------------------------------------------------------

    def _user_or_404(self, user_id: str) -> dict:
        user = self.users.get(user_id)
        if user is None:
            raise ApiProblem(404, "The user does not exist.", "inexistent_user")
        return user

    @staticmethod
    def _fields(request: web.Request) -> tuple[str | None, bool]:
        include = request.query.get("include_fields", "true").lower() != "false"
        return request.query.get("fields"), include

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        return web.json_response(project(public_user(user), *self._fields(request)))

    async def _search_users(self, request: web.Request) -> web.Response:
        page = _int_param(request, "page", 0, 0, 10**6)
        per_page = _int_param(request, "per_page", 50, 1, MAX_PER_PAGE)
        include_totals = request.query.get("include_totals", "false").lower() == "true"
        q = request.query.get("q")
        try:
            terms = parse_query(q) if q else []
        except ValueError as exc:
            raise ApiProblem(400, f"Query validation error: 'invalid query string: {exc}'.",
                             "invalid_query_string") from None
        id_terms = [values for name, values in terms if name == "user_id" and not any("*" in v for v in values)]
        known = self.users.keys() | self._versions.keys()   # a deleted user stays found for the lag
        if id_terms:  # `user_id:("a" OR "b")`, the batch lookup: a direct index read, not a scan
            candidates = [uid for uid in dict.fromkeys(id_terms[0]) if uid in known]
        else:
            candidates = list(self.users) + [uid for uid in self._versions if uid not in self.users]
        moment = time.monotonic()
        index = [view for uid in candidates if (view := self._search_view(uid, moment)) is not None]
        found = [user for user in index if matches(user, terms)]
        sort = request.query.get("sort")
        if sort:
            name, _, direction = sort.partition(":")
            found.sort(key=lambda u: str(_field(u, name) or ""), reverse=direction == "-1")
        if page * per_page >= 1000:
            raise ApiProblem(400, "You can only page through the first 1000 records. See "
                             "https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
                             "invalid_paging")
        window = [project(public_user(u), *self._fields(request)) for u in found[page * per_page:(page + 1) * per_page]]
        if include_totals:
            return web.json_response({"start": page * per_page, "limit": per_page, "length": len(window),
                                      "total": len(found), "users": window})
        return web.json_response(window)

    async def _users_by_email(self, request: web.Request) -> web.Response:
        email = request.query.get("email")
        if not email:
            raise ApiProblem(400, "Query validation error: 'Missing required property: email' on property email.",
                             "invalid_query_string")
        fields = self._fields(request)
        found = [project(public_user(u), *fields) for u in self.users.values() if u.get("email") == email]
        return web.json_response(found)

    async def _patch_user(self, request: web.Request) -> web.Response:
        user = self._user_or_404(request.match_info["id"])
        body = await _json_object(request)
        if not body:
            raise ApiProblem(400, "Payload validation error: 'Too few properties defined (0), minimum 1'.")
        if "user_id" in body and body["user_id"] != user["user_id"]:
            raise ApiProblem(400, "Payload validation error: 'Additional properties not allowed: user_id'.")
        for key in ("app_metadata", "user_metadata"):
            if key in body and not isinstance(body[key], dict):
                raise ApiProblem(400, f"Payload validation error: 'Expected type object but found type "
                                 f"{type(body[key]).__name__}' on property {key}.")
        refusal = self._policy_refusal(user, str(body["password"])) if "password" in body else None
        if refusal is not None:  # Auth0's policy errors carry no errorCode
            return web.json_response({"statusCode": 400, "error": "Bad Request", "message": refusal}, status=400)
        for key, value in body.items():
            if key in ("app_metadata", "user_metadata"):
                user[key] = merge_metadata(user.get(key), value)
            elif key == "password":
                continue  # set below, once the whole body is accepted
            elif key in ("connection", "client_id", "verify_email", "verify_phone_number", "verify_password"):
                continue  # request modifiers, not profile fields
            else:
                user[key] = value
        user["updated_at"] = iso_ms(datetime.now(UTC))
        if "password" in body:
            self._set_password(user["user_id"], str(body["password"]))
            user["last_password_reset"] = user["updated_at"]
            self.password_changes.append({"user_id": user["user_id"], "connection": body.get("connection")})
            no_ticket = {"client_id": "", "result_url": None, "mark_email_as_verified": False,
                         "include_email_in_redirect": False}
            self.add_log(self._ticket_event("scp", no_ticket, user, request))
        self.users[user["user_id"]] = public_user(user)
        self.user_changed(user["user_id"])
        return web.json_response(public_user(user))

    def _set_password(self, user_id: str, password: str) -> None:
        digest = hashlib.sha256(password.encode()).hexdigest()
        previous = self._passwords.get(user_id)
        if previous is not None:
            self._password_history.setdefault(user_id, []).append(previous)
        self._passwords[user_id] = digest

    def _policy_refusal(self, user: dict, password: str) -> str | None:
        """Auth0's message for a password the connection's policy refuses, else None."""
        policy = self.password_policy
        if policy is None:
            return None
        classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
        if len(password) < policy.get("min_length", 8) or classes < 3:
            return PASSWORD_POLICY_ERRORS["strength"]
        if password.lower() in COMMON_PASSWORDS:
            return PASSWORD_POLICY_ERRORS["dictionary"]
        lowered = password.lower()
        personal = [str(user.get("email") or "").split("@")[0], str(user.get("given_name") or ""),
                    str(user.get("family_name") or ""), str(user.get("nickname") or "")]
        if any(len(part) >= 3 and part.lower() in lowered for part in personal):
            return PASSWORD_POLICY_ERRORS["user_info"]
        digest = hashlib.sha256(password.encode()).hexdigest()
        size = policy.get("history_size", 0)
        earlier = ([self._passwords[user["user_id"]]] if user["user_id"] in self._passwords else [])
        earlier += self._password_history.get(user["user_id"], [])[-size:] if size else []
        if size and digest in earlier:
            return PASSWORD_POLICY_ERRORS["history"]
        return None

    async def _delete_user(self, request: web.Request) -> web.Response:
        self.delete_user(request.match_info["id"])
        return web.Response(status=204)

    # --- tickets ------------------------------------------------------------------------------

    def _new_ticket(self, kind: str, user: dict, body: dict) -> str:
        ticket_id = secrets.token_urlsafe(24)
        ttl = body.get("ttl_sec") or DEFAULT_TICKET_TTL_S
        self.tickets[ticket_id] = {
            "kind": kind, "user_id": user["user_id"], "result_url": body.get("result_url"), "ttl_sec": ttl,
            "client_id": body.get("client_id"), "used": False, "expires_at": time.time() + ttl,
            "include_email_in_redirect": bool(body.get("includeEmailInRedirect", False)),
            "mark_email_as_verified": bool(body.get("mark_email_as_verified", False)),
        }
        if "new_password" in body:
            self.tickets[ticket_id]["new_password"] = body["new_password"]
        return ticket_id

    @staticmethod
    def _check_ticket_body(body: dict, allowed: set[str]) -> None:
        extra = sorted(set(body) - allowed)
        if extra:
            raise ApiProblem(400, f"Payload validation error: 'Additional properties not allowed: {','.join(extra)}'.")
        ttl = body.get("ttl_sec")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
            raise ApiProblem(400, "Payload validation error: 'Expected type integer, minimum 0' on property ttl_sec.")
        if body.get("result_url") and (body.get("client_id") or body.get("organization_id")):
            raise ApiProblem(400, "The result_url parameter cannot be used together with client_id or "
                             "organization_id.")

    async def _email_ticket(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        self._check_ticket_body(body, _EMAIL_TICKET_PROPS)
        if not body.get("user_id"):
            raise ApiProblem(400, "Payload validation error: 'Missing required property: user_id'.")
        user = self._user_or_404(body["user_id"])
        ticket_id = self._new_ticket("email_verification", user, body)
        return web.json_response({"ticket": f"{self.base_url}/u/email-verification?ticket={ticket_id}#"}, status=201)

    async def _password_ticket(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        allowed = _PASSWORD_TICKET_PROPS | ({"new_password"} if self.legacy_password_flow else set())
        self._check_ticket_body(body, allowed)
        if body.get("user_id") and (body.get("email") or body.get("connection_id")):
            raise ApiProblem(400, "Payload validation error: 'user_id cannot be used together with email or "
                             "connection_id'.")
        if body.get("user_id"):
            user = self._user_or_404(body["user_id"])
        elif body.get("email") and body.get("connection_id"):
            candidates = [u for u in self.users.values() if u.get("email") == body["email"]
                          and any(connection_id(i.get("connection", "")) == body["connection_id"]
                                  for i in u.get("identities", []))]
            if not candidates:
                raise ApiProblem(404, "The user does not exist.", "inexistent_user")
            user = candidates[0]
        elif body.get("email"):
            raise ApiProblem(400, "Payload validation error: 'Missing required property: connection_id'.")
        else:
            raise ApiProblem(400, "Payload validation error: 'Missing required property: user_id'.")
        ticket_id = self._new_ticket("password_change", user, body)
        return web.json_response({"ticket": f"{self.base_url}/u/reset-verify?ticket={ticket_id}#"}, status=201)

    def _ticket_problem(self, ticket_id: str | None, kind: str) -> web.Response | None:
        ticket = self.tickets.get(ticket_id or "")
        if ticket is None or ticket["kind"] != kind or ticket["user_id"] not in self.users:
            return _page("Invalid link", '<p role="alert">This link is not valid.</p>', 400)
        if ticket["used"]:
            return _page("Link already used", '<p role="alert">This URL can be used only once.</p>', 410)
        if ticket["expires_at"] <= time.time():
            return _page("Link expired", '<p role="alert">Access expired.</p>', 410)
        return None

    def _ticket_event(self, kind: str, ticket: dict, user: dict, request: web.Request) -> dict:
        """The `sv`/`scp` log event of a used ticket (shape of the samples, without the ticket id)."""
        identity = (user.get("identities") or [{}])[0]
        connection = identity.get("connection", "Username-Password-Authentication")
        provider = identity.get("provider", "auth0")
        query: dict[str, Any] = {
            "email": user.get("email"), "user_id": user["user_id"], "tenant": self.tenant_name,
            "client_id": ticket.get("client_id") or "", "connection": connection, "resultUrl": ticket["result_url"],
        }
        if kind == "sv":
            query["idp_user_id"] = None
            details_body: dict[str, Any] = {"tenant": self.tenant_name}
            title, description = "Email Verification", VERIFIED_MESSAGE
        else:
            query["markEmailAsVerified"] = ticket["mark_email_as_verified"]
            details_body = {"tenant": self.tenant_name, "newPassword": "*****", "confirmNewPassword": "*****"}
            title, description = "Change Password", "Password changed successfully"
        query["includeEmailInRedirect"] = ticket["include_email_in_redirect"]
        return {
            "type": kind, "description": description, "client_id": ticket.get("client_id") or "",
            "client_name": "", "ip": request.remote or "127.0.0.1",
            "user_agent": request.headers.get("User-Agent", "unknown"), "hostname": self.domain,
            "tenant_name": self.tenant_name, "environment_name": "standin", "isMobile": False,
            "$event_schema": {"version": "1.0.0"}, "connection": connection,
            "connection_id": connection_id(connection), "strategy": provider,
            "strategy_type": "database" if provider == "auth0" else "social", "user_id": user["user_id"],
            "user_name": user.get("email", ""),
            "details": {"title": title, "email": user.get("email"), "body": details_body, "query": query},
        }

    async def _use_email_ticket(self, request: web.Request) -> web.Response:
        ticket_id = request.query.get("ticket")
        problem = self._ticket_problem(ticket_id, "email_verification")
        if problem is not None:
            return problem
        ticket = self.tickets[ticket_id]
        ticket["used"] = True
        user = self.users[ticket["user_id"]]
        user["email_verified"] = True
        user["updated_at"] = iso_ms(datetime.now(UTC))
        self.user_changed(user["user_id"])
        self.add_log(self._ticket_event("sv", ticket, user, request))
        if ticket["result_url"]:
            params = {"supportSignUp": "true", "supportForgotPassword": "true"}
            if ticket["include_email_in_redirect"] and user.get("email"):
                params["email"] = user["email"]
            params.update({"message": VERIFIED_MESSAGE, "success": "true", "code": "success"})
            return _redirect(_with_query(ticket["result_url"], params))
        return _page("Email verified", f"<p>{html.escape(VERIFIED_MESSAGE)}</p>")

    def _reset_page(self, ticket_id: str, ticket: dict, error: str | None = None, status: int = 200) -> web.Response:
        action = html.escape(f"/u/reset-verify?ticket={ticket_id}", quote=True)
        alert = f'<p role="alert" id="form-error">{html.escape(error)}</p>' if error else ""
        described = ' aria-describedby="form-error"' if error else ""
        user = self.users[ticket["user_id"]]
        intro = f"<p>Change the password of {html.escape(user.get('email') or user['user_id'])}.</p>"
        if "new_password" in ticket:
            form = (f'{alert}<form method="post" action="{action}"><p>Confirm to set the password you chose.</p>'
                    '<button type="submit">Confirm new password</button></form>')
        else:
            form = (f'{alert}<form method="post" action="{action}" novalidate>'
                    '<label for="newPassword">New password</label>'
                    f'<input id="newPassword" name="newPassword" type="password" autocomplete="new-password" '
                    f'required minlength="8"{described}>'
                    '<label for="confirmNewPassword">Confirm new password</label>'
                    '<input id="confirmNewPassword" name="confirmNewPassword" type="password" '
                    f'autocomplete="new-password" required minlength="8"{described}>'
                    '<button type="submit">Reset password</button></form>')
        return _page("Change your password", intro + form, status)

    async def _reset_form(self, request: web.Request) -> web.Response:
        ticket_id = request.query.get("ticket")
        problem = self._ticket_problem(ticket_id, "password_change")
        if problem is not None:
            return problem
        return self._reset_page(ticket_id, self.tickets[ticket_id])

    async def _reset_submit(self, request: web.Request) -> web.Response:
        ticket_id = request.query.get("ticket")
        problem = self._ticket_problem(ticket_id, "password_change")
        if problem is not None:
            return problem
        ticket = self.tickets[ticket_id]
        if "new_password" in ticket:
            password = str(ticket["new_password"])
        else:
            form = await request.post()
            password, confirm = str(form.get("newPassword", "")), str(form.get("confirmNewPassword", ""))
            if len(password) < 8:
                return self._reset_page(ticket_id, ticket, "The password must have at least 8 characters.", 400)
            if password != confirm:
                return self._reset_page(ticket_id, ticket, "The passwords do not match.", 400)
        ticket["used"] = True
        ticket.pop("new_password", None)
        user = self.users[ticket["user_id"]]
        self._passwords[user["user_id"]] = hashlib.sha256(password.encode()).hexdigest()
        now = iso_ms(datetime.now(UTC))
        user["last_password_reset"] = user["updated_at"] = now
        if ticket["mark_email_as_verified"]:
            user["email_verified"] = True
        self.user_changed(user["user_id"])
        self.add_log(self._ticket_event("scp", ticket, user, request))
        if ticket["result_url"]:
            return _redirect(ticket["result_url"])
        return _page("Password changed", "<p>Your password has been changed successfully.</p>")

    # --- logs ---------------------------------------------------------------------------------

    async def _get_logs(self, request: web.Request) -> web.Response:
        if "from" in request.query:
            return self._logs_by_checkpoint(request)
        page = _int_param(request, "page", 0, 0, 10**6)
        per_page = _int_param(request, "per_page", 50, 1, MAX_PER_PAGE)
        if page * per_page >= 1000:
            raise ApiProblem(400, f"Requesting page {page + 1} exceeds the allowed maximum of 1000 records: "
                             "please consider searching by checkpoint", "invalid_paging")
        q = request.query.get("q") or request.query.get("search")
        try:
            terms = parse_query(q) if q else []
        except ValueError as exc:
            raise ApiProblem(400, f"Query validation error: 'invalid query string: {exc}'.",
                             "invalid_query_string") from None
        found = [e for e in self.logs if matches(e, terms)]
        ascending = request.query.get("sort", "date:-1").strip() == "date:1"
        found.sort(key=lambda e: (e.get("date", ""), log_id_key(e["log_id"])), reverse=not ascending)
        window = [project(e, *self._fields(request)) for e in found[page * per_page:(page + 1) * per_page]]
        if request.query.get("include_totals", "false").lower() == "true":
            return web.json_response({"start": page * per_page, "limit": per_page, "length": len(window),
                                      "total": len(found), "logs": window})
        return web.json_response(window)

    def _logs_by_checkpoint(self, request: web.Request) -> web.Response:
        start = request.query.get("from", "")
        if not start.isdigit():
            raise ApiProblem(400, "Query validation error: 'String does not match pattern ^\\d+$' on property from.",
                             "invalid_query_string")
        take = _int_param(request, "take", DEFAULT_TAKE, 1, MAX_PER_PAGE)
        newer = sorted((e for e in self.logs if log_id_key(e["log_id"]) > log_id_key(start)),
                       key=lambda e: log_id_key(e["log_id"]))[:take]
        following = newer[-1]["log_id"] if newer else start
        link = f'<{self.base_url}/api/v2/logs?{urlencode({"from": following, "take": take})}>; rel="next"'
        return web.json_response(newer, headers={"Link": link})

    async def _get_log(self, request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        for event in self.logs:
            if event["log_id"] == wanted:
                return web.json_response(event)
        raise ApiProblem(404, "log not found", "inexistent_log")

    # --- log streams --------------------------------------------------------------------------

    def _stream_or_404(self, stream_id: str) -> dict:
        stream = self.log_streams.get(stream_id)
        if stream is None:
            raise ApiProblem(404, "The log stream does not exist.", "inexistent_log_stream")
        return stream

    async def _list_streams(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.log_streams.values()))

    async def _get_stream(self, request: web.Request) -> web.Response:
        return web.json_response(self._stream_or_404(request.match_info["id"]))

    @staticmethod
    def _check_stream(body: dict, allowed: set[str]) -> None:
        extra = sorted(set(body) - allowed)
        if extra:
            raise ApiProblem(400, f"Payload validation error: 'Additional properties not allowed: {','.join(extra)}'.")
        if "status" in body and body["status"] not in _STREAM_STATUSES:
            raise ApiProblem(400, "Payload validation error: 'Invalid value' on property status.")
        if "filters" in body and not (isinstance(body["filters"], list)
                                      and all(isinstance(f, dict) and f.get("name") for f in body["filters"])):
            raise ApiProblem(400, "Payload validation error: 'Expected an array of {type, name}' on property "
                             "filters.")
        if "sink" in body and not isinstance(body["sink"], dict):
            raise ApiProblem(400, "Payload validation error: 'Expected type object' on property sink.")

    async def _create_stream(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        self._check_stream(body, _STREAM_CREATE_PROPS)
        if not body.get("type"):
            raise ApiProblem(400, "Payload validation error: 'Missing required property: type'.")
        if not isinstance(body.get("sink"), dict):
            raise ApiProblem(400, "Payload validation error: 'Missing required property: sink'.")
        if body["type"] == "http" and not body["sink"].get("httpEndpoint"):
            raise ApiProblem(400, "Payload validation error: 'Missing required property: httpEndpoint' on property "
                             "sink.")
        stream_id = f"lst_{len(self.log_streams) + 1 + secrets.randbelow(10**6) * 100:016d}"
        stream = {"id": stream_id, "name": body.get("name") or f"{body['type']} stream", "type": body["type"],
                  "status": "active", "sink": body["sink"]}
        for key in ("filters", "isPriority", "pii_config"):
            if key in body:
                stream[key] = body[key]
        self.log_streams[stream_id] = stream
        return web.json_response(stream)

    async def _patch_stream(self, request: web.Request) -> web.Response:
        stream = self._stream_or_404(request.match_info["id"])
        body = await _json_object(request)
        self._check_stream(body, _STREAM_PATCH_PROPS)
        was = stream.get("status")
        for key, value in body.items():
            stream[key] = {**stream.get("sink", {}), **value} if key == "sink" else value
        if was != "active" and stream.get("status") == "active":
            self._stream_failures.pop(stream["id"], None)
            for event in self.stream_held.pop(stream["id"], []):   # what Auth0 kept, in order
                self._queue_event(stream["id"], event)
        return web.json_response(stream)

    async def _delete_stream(self, request: web.Request) -> web.Response:
        self._stream_or_404(request.match_info["id"])
        del self.log_streams[request.match_info["id"]]
        return web.Response(status=204)

    def _queue_for_streams(self, event: dict) -> None:
        if self._stream_queue is None:
            return
        category = STREAM_CATEGORIES.get(str(event.get("type")), "other")
        for stream in self.log_streams.values():
            if stream.get("type") != "http":
                continue
            names = {f.get("name") for f in stream.get("filters") or []}
            if names and category not in names:
                continue
            if stream.get("status") == "active":
                self._queue_event(stream["id"], event)
            else:
                self.stream_held.setdefault(stream["id"], []).append(event)

    def _queue_event(self, stream_id: str, event: dict) -> None:
        if self._stream_queue is not None:
            self._stream_queue.put_nowait((stream_id, event))

    def _queue_events(self, stream_id: str, events: list[dict]) -> None:
        for event in events:
            self._queue_event(stream_id, event)

    async def _deliver_streams(self) -> None:
        """Auth0 delivers log events to http streams in batches, at least once, 3 attempts per
        batch; a batch that failed them all is tried again later, and successive failed batches
        suspend the stream (its events are kept until it is active again)."""
        assert self._stream_queue is not None
        while True:
            batch = [await self._stream_queue.get()]
            await asyncio.sleep(0.05)  # let a burst of events form one batch
            while not self._stream_queue.empty() and len(batch) < 100:
                batch.append(self._stream_queue.get_nowait())
            by_stream: dict[str, list[dict]] = {}
            for stream_id, event in batch:
                by_stream.setdefault(stream_id, []).append(event)
            for stream_id, events in by_stream.items():
                stream = self.log_streams.get(stream_id)
                if stream is None:
                    continue
                if stream.get("status") == "active":
                    await self._post_to_stream(stream, events)
                else:                                    # paused or suspended meanwhile: kept
                    self.stream_held.setdefault(stream_id, []).extend(events)

    async def _post_to_stream(self, stream: dict, events: list[dict]) -> None:
        sink = stream.get("sink", {})
        if not is_loopback_url(sink.get("httpEndpoint", "")):
            # A stand-in never sends traffic off this machine: the stream is kept, not delivered.
            self.stream_deliveries.append((stream["id"], -1, len(events)))
            return
        records = [{"log_id": e["log_id"], "data": e} for e in events]
        shape = sink.get("httpContentFormat", "JSONARRAY")
        if shape == "JSONLINES":
            body = "\n".join(json.dumps(r) for r in records)
        elif shape == "JSONOBJECT":
            body = json.dumps({"logs": records})
        else:
            body = json.dumps(records)
        headers = {"Content-Type": sink.get("httpContentType") or "application/json"}
        if sink.get("httpAuthorization"):
            headers["Authorization"] = sink["httpAuthorization"]
        for header in sink.get("httpCustomHeaders") or []:
            if isinstance(header, dict) and header.get("header"):
                headers[str(header["header"])] = str(header.get("value", ""))
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(3):
            try:
                async with self._session.post(sink["httpEndpoint"], data=body.encode(), headers=headers) as answer:
                    status = answer.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                status = 0
            self.stream_deliveries.append((stream["id"], status, len(events)))
            if 200 <= status < 300:
                self._stream_failures.pop(stream["id"], None)
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        failures = self._stream_failures[stream["id"]] = self._stream_failures.get(stream["id"], 0) + 1
        if failures >= self.stream_suspend_after and stream.get("status") == "active":
            stream["status"] = "suspended"
        if stream.get("status") == "active":                # retried later, until it works
            asyncio.get_running_loop().call_later(0.5, self._queue_events, stream["id"], events)
        else:
            self.stream_held.setdefault(stream["id"], []).extend(events)


def realistic_tenant(**options: Any) -> Auth0StandIn:
    """A stand-in that behaves like a real tenant under load: 10 requests/s with a burst of 10,
    50 ms per call, users search 3 s behind writes (each overridable by keyword)."""
    settings: dict[str, Any] = {"search_lag_s": 3.0, "latency_s": 0.05, "rate_limit": (10, 10.0)}
    settings.update(options)
    return Auth0StandIn(**settings)


# --- request parsing ------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiProblem(400, f"Query validation error: 'Expected type integer but found type string' on property "
                         f"{name}.", "invalid_query_string") from None
    if value < low:
        raise ApiProblem(400, f"Query validation error: 'Value {value} is less than minimum {low}' on property {name}.",
                         "invalid_query_string")
    if value > high:
        raise ApiProblem(400, f"Query validation error: 'Value {value} is greater than maximum {high}' on property "
                         f"{name}.", "invalid_query_string")
    return value


async def _json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(400, "Invalid request payload JSON format", "invalid_body") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, f"Payload validation error: 'Expected type object but found type "
                         f"{'array' if isinstance(body, list) else type(body).__name__}'.", "invalid_body")
    return body
