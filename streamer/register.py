"""`streamer register`: create or update the tenant's Auth0 custom-webhook log stream.

Idempotent: a stream named `streamer-<tenant>` (or one already pointing at our URL) is updated,
otherwise one is created. Its filters cover just the categories our rules listen to, so Auth0
does not send (and we do not pay for) events nobody uses.
"""

from __future__ import annotations

from typing import Any

from streamer.auth0.log_streams import find_stream
from streamer.auth0.log_streams import stream_body as _stream_body
from streamer.config import Config


class RegisterRefused(Exception):
    """Nothing was created or changed; the message says why."""


def stream_body(config: Config, tenant: str, public_url: str) -> dict[str, Any]:
    token = config.tenants[tenant].webhook_token
    if token is None:
        raise RegisterRefused(
            f"tenants.{tenant}.webhook_token is not set: Auth0 must send a token the daemon can check"
        )
    return _stream_body(tenant, public_url, token.get_secret_value(), config.listened_types())


async def register(config: Config, tenant: str, public_url: str) -> str:
    from streamer.auth0 import ManagementApi

    if not public_url.startswith("https://"):
        raise RegisterRefused("Auth0 only delivers log streams to https:// URLs")
    body = stream_body(config, tenant, public_url)
    endpoint = body["sink"]["httpEndpoint"]
    async with ManagementApi(config.tenants[tenant], name=tenant) as api:
        mine = find_stream(await api.list_log_streams(), tenant, public_url)
        if mine is not None:
            stream = await api.update_log_stream(mine["id"], {**body, "status": "active"})
            return f"updated log stream {stream.get('id', mine['id'])} → {endpoint}"
        stream = await api.create_log_stream({**body, "type": "http"})
        return f"created log stream {stream.get('id')} → {endpoint}"
