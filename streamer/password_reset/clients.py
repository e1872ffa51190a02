"""Which application the form is for: `?client_id=` checked against the tenant's `vars.clients`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from streamer.config import TenantConfig

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class ClientInfo:
    id: str = ""
    name: str = ""
    locale: str | None = None


def client_info(tenant: TenantConfig, client_id: str | None) -> ClientInfo:
    """`vars.clients[client_id]` → (id, name, locale); unknown or malformed ids → ClientInfo()."""
    if not client_id or not _CLIENT_ID.match(client_id):
        return ClientInfo()
    clients = tenant.vars.get("clients") if isinstance(tenant.vars, Mapping) else None
    if not isinstance(clients, Mapping):
        return ClientInfo(id=client_id)
    entry = clients.get(client_id)
    if entry is None:
        return ClientInfo()
    if not isinstance(entry, Mapping):
        return ClientInfo(id=client_id)
    name = entry.get("name")
    locale = entry.get("locale")
    return ClientInfo(
        id=client_id,
        name=str(name) if isinstance(name, str) else "",
        locale=locale if isinstance(locale, str) else None,
    )
