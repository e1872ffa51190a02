"""With `password_reset.new_password`: the emailed link that confirms the password typed on the form.

Auth0 no longer takes `new_password` on password-change tickets, so streamer applies the
password itself, with `PATCH /api/v2/users/{id}`, once its owner confirms from the email:

- at send time (the delivery of the `password_reset_requested` email) the password, held in
  memory since the form (NewPasswordVault), is sealed with a fresh random key
  (`sealed.py`); the store keeps the ciphertext (`pending_passwords`, replacing that user's
  older request), the link carries the key: `{server.public_url}/password-reset/{tenant}/confirm
  ?ticket=<id>.<key>&lang=<locale>`. The parameter is named `ticket` on purpose: the log
  redaction masks any `?ticket=` URL, as it does Auth0's.
- the key exists in the email only, so neither a copy of the database nor the email alone
  reveals the password; nothing about it is logged.
- the pages that open the link are in `confirm_pages.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from streamer.auth0.errors import Auth0Error
from streamer.password_reset.sealed import new_token, seal
from streamer.store.base import PendingPassword, Store

#: Auth0's default ticket lifetime, used when the rule's ticket sets no `ttl_sec`.
DEFAULT_TTL_S = 432000
CONFIRM_PATH = "/password-reset/{tenant}/confirm"
#: Auth0's password-policy refusals (the message starts with the name) → our page's reason.
POLICY_ERRORS = {
    "PasswordStrengthError": "strength",
    "PasswordHistoryError": "history",
    "PasswordDictionaryError": "dictionary",
    "PasswordNoUserInfoError": "user_info",
}


@dataclass(frozen=True)
class ConfirmLink:
    url: str
    replaced: int  # older pending requests of the user this one replaced


def policy_refusal(error: Auth0Error) -> str | None:
    """'strength' | 'history' | 'dictionary' | 'user_info' when Auth0 refused the password by
    policy (400 whose message names the policy error), else None."""
    if error.status != 400:
        return None
    text = f"{error.error_code or ''} {error}"
    for name, reason in POLICY_ERRORS.items():
        if name in text:
            return reason
    return None


def confirm_url(public_url: str, tenant: str, ticket: str, locale: str | None) -> str:
    params = {"ticket": ticket}
    if locale:
        params["lang"] = locale
    return public_url.rstrip("/") + CONFIRM_PATH.format(tenant=quote(tenant, safe="")) + "?" + urlencode(params)


async def issue_confirm_link(
    store: Store,
    password: str,
    *,
    public_url: str,
    tenant: str,
    user_id: str,
    connection: str,
    ttl_sec: int | None,
    locale: str | None,
    now: float,
) -> ConfirmLink:
    """Seal `password` under a new key, store the ciphertext (replacing the user's older request)
    and return the link that carries the key. The key is in the returned URL only."""
    token = new_token()
    ttl = ttl_sec if ttl_sec else DEFAULT_TTL_S
    row = PendingPassword(
        id=token.pending_id,
        tenant=tenant,
        user_id=user_id,
        connection=connection,
        state="pending",
        sealed=seal(password, token, tenant=tenant, user_id=user_id),
        created_at=now,
        expires_at=now + ttl,
        updated_at=now,
    )
    replaced = await store.save_pending_password(row, now=now)
    return ConfirmLink(url=confirm_url(public_url, tenant, str(token), locale), replaced=replaced)


def event_connection(context: Mapping) -> str:
    """The database connection the form found the user in (the event's `connection`)."""
    event = context.get("event") if isinstance(context, Mapping) else None
    return str(event.get("connection") or "") if isinstance(event, Mapping) else ""
