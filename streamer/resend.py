"""`streamer resend`: support's "send it again" for one user, now that Auth0 no longer sends it.

With Auth0's own emails switched off, the dashboard's "send verification email" no longer helps
a user whose link expired or got lost. This queues the rule's email for that user once more,
through the same path as any other: the running daemon creates the ticket at send time, renders
in the user's language and sends. The rule's `if` still applies (no verification email for a
verified user) unless forced; its `once` does not, since asking again is the point.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from streamer.auth0.client import user_id_problem
from streamer.config import Config
from streamer.locale import make_locale_resolver
from streamer.message import InvalidAddress, bare_address
from streamer.outbox import DueEmail
from streamer.rules import CompiledRule, compile_rules, decide, tenant_view
from streamer.store import Store
from streamer.templates import Templates


class ResendRefused(Exception):
    """Nothing was queued; the message says why and what to do."""


def resend_event(rule: CompiledRule, user_id: str, client_id: str | None, now: float) -> dict[str, Any]:
    """A stand-in log event of the rule's first type, marked as made by `streamer resend`."""
    event: dict[str, Any] = {
        "log_id": f"resend-{uuid.uuid4().hex}",
        "type": rule.config.on[0],
        "user_id": user_id,
        "date": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "description": "queued again by streamer resend",
    }
    if client_id:
        event["client_id"] = client_id
    return event


def due_again(
    config: Config,
    rule: CompiledRule,
    tenant: str,
    profile: dict[str, Any] | None,
    event: dict[str, Any],
    templates: Templates,
    *,
    force: bool,
    now: float,
) -> DueEmail:
    """The email to queue (pure apart from template lookups); raises ResendRefused."""
    locale_of = make_locale_resolver(templates, config.templates.default_locale, config.tenant_default_locales())
    client_id = event.get("client_id")
    chosen = dataclasses.replace(rule, condition=None) if force else rule
    due, skipped = decide(
        [chosen],
        event,
        tenant=tenant,
        tenant_ctx=tenant_view(tenant, config.tenants[tenant]),
        user=profile,
        locale_for=lambda r: locale_of(tenant, client_id, r.config.template, profile or {}),
        accepted_at=now,
    )
    if skipped:
        raise ResendRefused(f"not queued: {skipped[0].reason}")
    if not due:
        raise ResendRefused(
            f"not queued: the rule's if ({rule.config.if_}) is false for this user now; add --force to send it anyway"
        )
    email = due[0]
    try:
        bare_address(email.recipient)
    except InvalidAddress as exc:
        raise ResendRefused(f"not queued: the user's email address cannot be used: {exc}") from None
    once = f"{tenant}/{rule.name}/resend/{event['log_id']}"  # never blocks, never blocks others
    return dataclasses.replace(email, once_key=once, cooldown_s=None, key=once)


async def find_user_id(api: Any, address: str) -> str:
    """The one Auth0 user with this email address (support usually has the address, not the id).
    Auth0's lookup is case-sensitive and it stores most addresses in lower case: as typed, then lower."""
    try:
        bare_address(address, "--to")
    except InvalidAddress as exc:
        raise ResendRefused(str(exc)) from None
    users = await api.users_by_email(address)
    if not users and address != address.lower():
        users = await api.users_by_email(address.lower())
    if not users:
        raise ResendRefused(f"no Auth0 user has the address {address}")
    if len(users) > 1:
        ids = ", ".join(str(u.get("user_id")) for u in users)
        raise ResendRefused(f"several Auth0 users have the address {address} ({ids}): give --user")
    return str(users[0].get("user_id"))


async def resend(
    config: Config,
    store: Store,
    api: Any,
    *,
    tenant: str,
    rule_name: str,
    user_id: str | None = None,
    address: str | None = None,
    client_id: str | None = None,
    force: bool = False,
) -> int:
    """Queue the email for `user_id` (or the user with `address`); returns its outbox id."""
    rules = {rule.name: rule for rule in compile_rules(config.rules)}
    rule = rules.get(rule_name)
    if rule is None:
        raise ResendRefused(f"unknown rule {rule_name!r}; the config has: {', '.join(sorted(rules))}")
    if user_id and user_id_problem(user_id):
        raise ResendRefused(f"--user: {user_id_problem(user_id)}")
    user_id = user_id or await find_user_id(api, address or "")
    profile = (await api.get_users([user_id])).get(user_id)
    now = time.time()
    templates = Templates(config.templates_dir, default_locale=config.templates.default_locale)
    email = due_again(
        config, rule, tenant, profile, resend_event(rule, user_id, client_id, now), templates, force=force, now=now
    )
    if not await store.settle_events([], [email], now=now):
        raise ResendRefused("not queued: the store refused it (try again)")
    recent = await store.list_emails(states=None, user_id=email.user_id, rule=rule.name, limit=50)
    return next(queued.id for queued in recent if queued.key == email.key)
