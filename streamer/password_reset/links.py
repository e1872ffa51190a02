"""The links of password-reset emails, as the daemon plugs them into delivery.

Without `password_reset.new_password` (or without the password in this process's memory) the link
is an Auth0 password-change ticket. With it, the password typed on the form is sealed and stored
(`confirm.py`) and the link opens the daemon's confirmation page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamer.delivery import ResetLink, TransientFailure
from streamer.logs import get_logger
from streamer.outbox import OutboxEmail
from streamer.password_reset.confirm import event_connection, issue_confirm_link
from streamer.password_reset.event import EVENT_TYPE
from streamer.password_reset.tickets import create_reset_ticket
from streamer.password_reset.vault import NewPasswordVault
from streamer.store.base import Store

log = get_logger(__name__)


@dataclass
class ResetLinks:
    """A `delivery.ResetLinkMaker` that knows the passwords the hosted form captured."""

    vault: NewPasswordVault
    #: Set with `password_reset.new_password: true`: where sealed passwords wait for their owner.
    pending_store: Store | None = None
    #: `server.public_url`: the confirmation links point to it.
    public_url: str | None = None

    async def __call__(self, api: Any, email: OutboxEmail, *, result_url: str | None, ttl_sec: int | None) -> ResetLink:
        password = self._new_password(email)
        if password is None:
            return ResetLink(
                await create_reset_ticket(
                    api, self.vault, log_id=email.log_id, user_id=email.user_id, result_url=result_url, ttl_sec=ttl_sec
                )
            )
        assert self.pending_store is not None and self.public_url
        try:
            link = await issue_confirm_link(
                self.pending_store,
                password,
                public_url=self.public_url,
                tenant=email.tenant,
                user_id=email.user_id,
                connection=event_connection(email.context),
                ttl_sec=ttl_sec,
                locale=email.locale,
                now=time.time(),
            )
        except Exception as exc:  # noqa: BLE001 - the store is unavailable: try again later
            self.vault.put(email.log_id, password)
            raise TransientFailure(f"storing the pending password: {type(exc).__name__}") from None
        log.info(
            "password_confirm_link_issued",
            tenant=email.tenant,
            user_id=email.user_id,
            log_id=email.log_id,
            replaced=link.replaced,
        )
        # A retried send seals the password again, under a new key.
        return ResetLink(link.url, confirmation=True, on_retry=lambda: self.vault.put(email.log_id, password))

    def _new_password(self, email: OutboxEmail) -> str | None:
        """The password typed on the form, when this email is to confirm it (new_password mode).

        None sends the Auth0 reset ticket instead: the password is not in this process's memory
        (a restart or another replica between the form and the send), so the user chooses it
        again on Auth0's page rather than getting no email at all.
        """
        if self.pending_store is None or (email.context.get("event") or {}).get("type") != EVENT_TYPE:
            return None
        password = self.vault.take(email.log_id)
        if password is None:
            log.warning(
                "password_confirm_unavailable",
                tenant=email.tenant,
                log_id=email.log_id,
                reason="not_in_memory",
                hint="the process restarted (or another replica took the email) between the form and "
                "the send: the email carries an Auth0 reset ticket instead",
            )
        elif not self.public_url:
            log.warning(
                "password_confirm_unavailable",
                tenant=email.tenant,
                log_id=email.log_id,
                reason="no_public_url",
                hint="set server.public_url: the confirmation link points to it",
            )
            return None
        return password
