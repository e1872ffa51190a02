"""The `password_reset_requested` event: find the account, build the event, put it in the inbox."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from streamer.auth0.errors import Auth0Error
from streamer.inbox import Inbox
from streamer.logs import get_logger
from streamer.password_reset.clients import ClientInfo
from streamer.password_reset.vault import NewPasswordVault

log = get_logger(__name__)

EVENT_TYPE = "password_reset_requested"
EVENT_SOURCE = "password_reset_form"
EVENT_DESCRIPTION = "Password reset requested on the hosted form"


class UserLookup(Protocol):
    """What the form needs from the Management API (`streamer.auth0.ManagementApi` fits)."""

    async def users_by_email(self, email: str) -> list[dict]: ...


def new_log_id(now: datetime | None = None) -> str:
    """`streamer-20260301140107398-1a2b3c4d5e6f7081`: time-ordered, unique, never an Auth0 id."""
    now = now or datetime.now(UTC)
    return f"streamer-{now.strftime('%Y%m%d%H%M%S')}{now.microsecond // 1000:03d}-{secrets.token_hex(8)}"


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_database_user(user: Mapping[str, Any]) -> bool:
    identities = user.get("identities")
    if isinstance(identities, list) and identities and isinstance(identities[0], Mapping):
        return identities[0].get("provider") == "auth0"
    return str(user.get("user_id") or "").startswith("auth0|")


async def request_reset(
    inbox: Inbox,
    apis: Mapping[str, UserLookup],
    vault: NewPasswordVault,
    tenant: str,
    address: str,
    client: ClientInfo,
    ip: str,
    user_agent: str,
    password: str | None,
    *,
    address_hash: str,
    warned_unrouted: set[str],
) -> None:
    """Look the address up and, for a database account, put the event in the inbox; never raises.

    The new password, if any, goes to `vault` under the event's log_id. `warned_unrouted`
    holds the tenants already warned that no rule listens for the event.
    """
    try:
        api = apis.get(tenant)
        if api is None:
            log.error("password_reset_no_api_for_tenant", tenant=tenant)
            return
        try:
            users = await api.users_by_email(address)
        except Auth0Error as exc:
            log.warning(
                "password_reset_lookup_failed",
                tenant=tenant,
                address_hash=address_hash,
                error_kind=type(exc).__name__,
                status=exc.status,
                error_code=exc.error_code,
                error=_without(str(exc), address),
            )
            return
        candidates = [u for u in users or [] if isinstance(u, Mapping) and u.get("user_id")]
        database_users = [u for u in candidates if is_database_user(u)]
        if not database_users:
            log.info(
                "password_reset_no_account",
                tenant=tenant,
                address_hash=address_hash,
                reason="no_database_identity" if candidates else "unknown_address",
            )
            return
        user = database_users[0]
        identities = user.get("identities") if isinstance(user.get("identities"), list) else []
        primary = identities[0] if identities and isinstance(identities[0], Mapping) else {}
        connection = primary.get("connection") or ""
        now = datetime.now(UTC)
        event = {
            "log_id": new_log_id(now),
            "type": EVENT_TYPE,
            "date": iso_ms(now),
            "user_id": str(user["user_id"]),
            "client_id": client.id,
            "client_name": client.name,
            "ip": ip,
            "user_agent": user_agent,
            "user_name": address,
            "connection": str(connection or ""),
            "description": EVENT_DESCRIPTION,
        }
        if password is not None:
            vault.put(event["log_id"], password)
        try:
            result = await inbox.accept(tenant, [event], source=EVENT_SOURCE)
        except Exception as exc:  # noqa: BLE001 - the user already has the generic answer
            if password is not None:
                vault.take(event["log_id"])
            log.error(
                "password_reset_store_failed", tenant=tenant, log_id=event["log_id"], error_kind=type(exc).__name__
            )
            return
        if not result.new:
            if password is not None:
                vault.take(event["log_id"])
            if tenant not in warned_unrouted:
                warned_unrouted.add(tenant)
                log.warning(
                    "password_reset_event_not_routed",
                    tenant=tenant,
                    event_type=EVENT_TYPE,
                    hint="no rule has `on: [password_reset_requested]`: no email will be sent",
                )
            return
        log.info(
            "password_reset_requested",
            tenant=tenant,
            log_id=event["log_id"],
            user_id=event["user_id"],
            client_id=client.id or None,
            database_users=len(database_users),
        )
    except Exception as exc:  # noqa: BLE001 - never let a bug reach the user or leak the input
        log.error("password_reset_failed", tenant=tenant, address_hash=address_hash, error_kind=type(exc).__name__)


def _without(text: str, address: str) -> str:
    return re.sub(re.escape(address), "[address]", text, flags=re.I) if address else text
