"""Auth0 custom-webhook log streams as streamer sees them: filter categories, the stream body
`streamer register` writes, the endpoint that is ours, and filters that leave events out.

One home, because `streamer register`, the daemon's stream watch, `streamer check --online`
and the Auth0 stand-in must agree on every detail: a category table that differs between
them means a stream registered in the sandbox silently never gets some events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Auth0 log-stream filter category of each event type streamer knows (FACTS.md §b); any other
#: type is in `OTHER` as far as the stand-in is concerned, and makes `stream_filters` ask for all.
CATEGORY_OF_TYPE: dict[str, str] = {
    "ss": "auth.signup.success",
    "fs": "auth.signup.fail",
    "s": "auth.login.success",
    "scoa": "auth.login.success",
    "sens": "auth.login.success",
    "f": "auth.login.fail",
    "fp": "auth.login.fail",
    "fu": "auth.login.fail",
    "slo": "auth.logout.success",
    "flo": "auth.logout.fail",
    "sv": "user.success",
    "svr": "user.success",
    "scp": "user.success",
    "scpr": "user.success",
    "sce": "user.success",
    "scu": "user.success",
    "scpn": "user.success",
    "sdu": "user.success",
    "fv": "user.fail",
    "fvr": "user.fail",
    "fcp": "user.fail",
    "fcpr": "user.fail",
    "fce": "user.fail",
    "limit_wc": "system.notification",
    "limit_mu": "system.notification",
    "api_limit": "system.notification",
    "api_limit_warning": "system.notification",
}
OTHER = "other"
#: Types streamer itself emits (the hosted form); Auth0 never sends them.
LOCAL_TYPES = frozenset({"password_reset_requested"})
#: Always asked for: `svr` tells that Auth0 still sends its own verification emails.
ALWAYS = "user.success"


def category_of(event_type: str) -> str:
    return CATEGORY_OF_TYPE.get(event_type, OTHER)


def stream_name(tenant: str) -> str:
    return f"streamer-{tenant}"


def our_endpoint(public_url: str | None, tenant: str) -> str | None:
    """Where Auth0 posts this tenant's events to this daemon (None without a public URL)."""
    return f"{public_url.rstrip('/')}/logs/{tenant}" if public_url else None


def stream_filters(types: Iterable[str]) -> list[dict[str, str]] | None:
    """Categories for `types`; None (= all events) if a type has no known category."""
    remote = set(types) - LOCAL_TYPES
    if any(t not in CATEGORY_OF_TYPE for t in remote):
        return None
    categories = sorted({CATEGORY_OF_TYPE[t] for t in remote} | {ALWAYS})
    return [{"type": "category", "name": name} for name in categories]


def filter_names(stream: Mapping[str, Any]) -> set[str]:
    """The categories a stream's filters name (empty: the stream sends everything)."""
    filters = stream.get("filters")
    if not isinstance(filters, list):
        return set()
    return {str(f.get("name")) for f in filters if isinstance(f, dict) and f.get("name")}


def missing_categories(stream: Mapping[str, Any], types: Iterable[str]) -> list[str]:
    """Categories of the event types our rules listen to that the stream's filters leave out
    (a rule added after `streamer register` ran); none when the stream sends everything."""
    names = filter_names(stream)
    if not names:
        return []
    wanted = {CATEGORY_OF_TYPE[t] for t in set(types) - LOCAL_TYPES if t in CATEGORY_OF_TYPE}
    return sorted(wanted - names)


def stream_body(tenant: str, public_url: str, token: str, types: Iterable[str]) -> dict[str, Any]:
    """The custom-webhook stream `streamer register` creates or updates (without type/status)."""
    body: dict[str, Any] = {
        "name": stream_name(tenant),
        "sink": {
            "httpEndpoint": our_endpoint(public_url, tenant),
            "httpContentType": "application/json",
            "httpContentFormat": "JSONARRAY",
            "httpAuthorization": f"Bearer {token}",
        },
    }
    filters = stream_filters(types)
    if filters is not None:
        body["filters"] = filters
    return body


def find_stream(streams: Iterable[Any], tenant: str, public_url: str | None) -> dict[str, Any] | None:
    """The http stream delivering to this daemon: the one posting to our URL, else the one
    `streamer register` names `streamer-<tenant>`."""
    http = [s for s in streams if isinstance(s, dict) and s.get("type") == "http"]
    endpoint = our_endpoint(public_url, tenant)
    by_endpoint = [
        s for s in http if endpoint and isinstance(s.get("sink"), dict) and s["sink"].get("httpEndpoint") == endpoint
    ]
    by_name = [s for s in http if s.get("name") == stream_name(tenant)]
    found = by_endpoint or by_name
    return found[0] if found else None
