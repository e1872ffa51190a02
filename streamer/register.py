"""`streamer register`: create or update the tenant's Auth0 custom-webhook log stream.

Idempotent: a stream named `streamer-<tenant>` (or one already pointing at our URL) is updated,
otherwise one is created. Its filters cover just the categories our rules listen to, so Auth0
does not send (and we do not pay for) events nobody uses.
"""

from __future__ import annotations

from typing import Any

from streamer.config import Config

#: Auth0 log-stream filter category of each event type a rule may listen to (FACTS.md §b).
CATEGORY_OF_TYPE = {
    "ss": "auth.signup.success", "fs": "auth.signup.fail",
    "s": "auth.login.success", "scoa": "auth.login.success", "sens": "auth.login.success",
    "f": "auth.login.fail", "fp": "auth.login.fail", "fu": "auth.login.fail",
    "sv": "user.success", "svr": "user.success", "scp": "user.success", "scpr": "user.success",
    "sce": "user.success", "scu": "user.success", "scpn": "user.success", "sdu": "user.success",
    "fv": "user.fail", "fvr": "user.fail", "fcp": "user.fail", "fcpr": "user.fail", "fce": "user.fail",
    "limit_wc": "system.notification", "limit_mu": "system.notification",
}
#: Types streamer itself emits (the hosted form); Auth0 never sends them.
LOCAL_TYPES = {"password_reset_requested"}


def stream_filters(types: set[str]) -> list[dict[str, str]] | None:
    """Categories for `types`; None (= all events) if a type has no known category."""
    remote = types - LOCAL_TYPES
    if any(t not in CATEGORY_OF_TYPE for t in remote):
        return None
    categories = sorted({CATEGORY_OF_TYPE[t] for t in remote} | {"user.success"})  # svr warnings
    return [{"type": "category", "name": name} for name in categories]


def missing_categories(stream: dict[str, Any], types: set[str]) -> list[str]:
    """Categories of the event types our rules listen to that the stream's filters leave out
    (a rule added after `streamer register` ran); none when the stream sends everything."""
    filters = stream.get("filters")
    names = {f.get("name") for f in filters if isinstance(f, dict)} if isinstance(filters, list) else set()
    if not names:
        return []
    wanted = {CATEGORY_OF_TYPE[t] for t in types - LOCAL_TYPES if t in CATEGORY_OF_TYPE}
    return sorted(wanted - names)


def stream_body(config: Config, tenant: str, public_url: str) -> dict[str, Any]:
    token = config.tenants[tenant].webhook_token
    if token is None:
        from streamer.cli import UserError

        raise UserError(f"tenants.{tenant}.webhook_token is not set: Auth0 must send a token the daemon can check")
    body: dict[str, Any] = {
        "name": f"streamer-{tenant}",
        "sink": {"httpEndpoint": f"{public_url.rstrip('/')}/logs/{tenant}", "httpContentType": "application/json",
                 "httpContentFormat": "JSONARRAY", "httpAuthorization": f"Bearer {token.get_secret_value()}"},
    }
    filters = stream_filters(config.listened_types())
    if filters is not None:
        body["filters"] = filters
    return body


async def register(config: Config, tenant: str, public_url: str) -> str:
    from streamer.auth0 import ManagementApi

    if not public_url.startswith("https://"):
        from streamer.cli import UserError

        raise UserError("Auth0 only delivers log streams to https:// URLs")
    body = stream_body(config, tenant, public_url)
    async with ManagementApi(config.tenants[tenant], name=tenant) as api:
        streams = await api.list_log_streams()
        endpoint = body["sink"]["httpEndpoint"]
        mine = [s for s in streams if s.get("type") == "http" and (
            s.get("name") == body["name"] or (s.get("sink") or {}).get("httpEndpoint") == endpoint)]
        if mine:
            stream = await api.update_log_stream(mine[0]["id"], {**body, "status": "active"})
            return f"updated log stream {stream.get('id', mine[0]['id'])} → {endpoint}"
        stream = await api.create_log_stream({**body, "type": "http"})
        return f"created log stream {stream.get('id')} → {endpoint}"
