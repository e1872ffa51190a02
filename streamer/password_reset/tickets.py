"""Delivery side: the Auth0 password-change ticket for a `password_reset_requested` event."""

from __future__ import annotations

from streamer.auth0.errors import Auth0Permanent
from streamer.delivery import PasswordChangeTickets
from streamer.logs import get_logger
from streamer.password_reset.vault import NewPasswordVault

log = get_logger(__name__)


#: What a reset ticket needs of Auth0: the password-change endpoint only.
TicketApi = PasswordChangeTickets


async def create_reset_ticket(
    api: TicketApi,
    vault: NewPasswordVault | None,
    *,
    log_id: str,
    user_id: str,
    result_url: str | None = None,
    ttl_sec: int | None = None,
    legacy_flow: bool = False,
) -> str:
    """The password-change ticket for a `password_reset_requested` event.

    Always pops the event's new password from the vault. Current Auth0 tenants refuse
    `new_password` (see the `streamer.password_reset` docstring), so it is sent only with
    `legacy_flow=True`, and dropped (one retry without it) if Auth0 answers 400. On a transient
    error the password is put back so that the delivery's retry can use it.
    """
    password = vault.take(log_id) if vault is not None else None
    if password is not None and legacy_flow:
        try:
            return await api.create_password_change_ticket(
                user_id=user_id, result_url=result_url, ttl_sec=ttl_sec, new_password=password
            )
        except Auth0Permanent as exc:
            if exc.status != 400:
                raise
            log.warning(
                "auth0_refused_new_password",
                log_id=log_id,
                error_code=exc.error_code,
                hint="this tenant uses Change Password flow v2: the ticket is created without it",
            )
        except Exception:
            if vault is not None:
                vault.put(log_id, password)
            raise
    return await api.create_password_change_ticket(user_id=user_id, result_url=result_url, ttl_sec=ttl_sec)
