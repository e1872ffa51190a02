"""Delivering one outbox email: ticket → render → message → SMTP → optional Auth0 mark.

The ticket is created at send time, so its TTL starts when the user can see it, and its URL
only ever lives in memory. Every failure leaves here as one of two types, because the
dispatcher needs to know only one thing: is trying again worth it?
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2

from streamer.auth0.errors import Auth0Permanent, Auth0Transient, UserNotFound
from streamer.config import Config, DkimKeyConfig, TenantConfig
from streamer.dkim_signing import SigningKey, choose_key, load_keys, sign
from streamer.locale import fallback_chain
from streamer.logs import get_logger, redact_text
from streamer.message import InvalidAddress, build_message, envelope
from streamer.outbox import OutboxEmail
from streamer.render import render
from streamer.rules import CompiledRule, RuleError, host_allowed, render_result_url, tenant_view
from streamer.smtp import SmtpPermanent, SmtpTransient
from streamer.store import Store
from streamer.suppression.verp import ReturnPaths
from streamer.templates import TemplateError, Templates, greeting_name
from streamer.unsubscribe import UnsubscribeTokens, links

log = get_logger(__name__)


class TransientFailure(Exception):
    """Worth another attempt later (SMTP 4xx, network, Auth0 429/5xx)."""


class PermanentFailure(Exception):
    """Will fail the same way every time (SMTP 5xx, bad address, broken template, 4xx from Auth0)."""


#: Return-path tokens already stored by this process (a bounded memo: most recipients get few emails).
_REMEMBERED_LIMIT = 100_000


class PasswordChangeTickets(Protocol):
    """What a password-reset link needs of Auth0 (also the hosted form's, streamer.password_reset)."""

    async def create_password_change_ticket(
        self,
        *,
        user_id: str,
        result_url: str | None = None,
        ttl_sec: int | None = None,
        new_password: str | None = None,
    ) -> str: ...


class TicketApi(PasswordChangeTickets, Protocol):
    async def create_email_verification_ticket(
        self, *, user_id: str, result_url: str | None = None, ttl_sec: int | None = None, client_id: str | None = None
    ) -> str: ...

    async def update_app_metadata(self, user_id: str, values: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ResetLink:
    """What a password-reset email links to: an Auth0 password-change ticket, or (with
    `password_reset.new_password`) the daemon's page that confirms the password typed on the form."""

    url: str
    #: The link confirms a password typed on the form (templates say so: `password_confirmation`).
    confirmation: bool = False
    #: Called when this send fails and will be retried: the maker may have used up something
    #: the retry needs again (the password it held in memory).
    on_retry: Callable[[], None] | None = None


class ResetLinkMaker(Protocol):
    """Makes the link of a password-reset email. The hosted reset form plugs in its own (it holds
    the new password the user typed, see streamer.password_reset); without it, a plain ticket."""

    def __call__(
        self, api: Any, email: OutboxEmail, *, result_url: str | None, ttl_sec: int | None
    ) -> Awaitable[ResetLink]: ...


async def plain_reset_link(
    api: TicketApi, email: OutboxEmail, *, result_url: str | None, ttl_sec: int | None
) -> ResetLink:
    return ResetLink(
        await api.create_password_change_ticket(user_id=email.user_id, result_url=result_url, ttl_sec=ttl_sec)
    )


class Sender(Protocol):
    async def send(self, mail_from: str, rcpt_to: list[str], message: bytes) -> str: ...


@dataclass(frozen=True)
class DeliverySettings:
    """What delivery reads of the config, and nothing more: a delivery cannot depend on a setting
    it was not given (the retry policy is the dispatcher's, see streamer.outbox.RetryPolicy)."""

    #: `smtp.from`: the From header, and the envelope sender unless VERP replaces it.
    from_addr: str
    #: Reply-To by tenant: the tenant's, else smtp.reply_to, else None (Config.reply_to decides).
    reply_to: Mapping[str, str | None]
    tenants: Mapping[str, TenantConfig]
    default_locale: str
    #: Hosts a ticket's result_url may point at (redirects.allowed_hosts).
    allowed_hosts: list[str]
    #: Base of the unsubscribe links (server.public_url), and the optional mailto: target.
    public_url: str | None
    unsubscribe_mailto: str | None
    #: DKIM keys, loaded (and test-signed) once; `check` has already validated them.
    dkim_keys: list[tuple[DkimKeyConfig, SigningKey]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, config: Config) -> DeliverySettings:
        return cls(
            from_addr=config.smtp.from_,
            reply_to={name: config.reply_to(name) for name in config.tenants},
            tenants=config.tenants,
            default_locale=config.templates.default_locale,
            allowed_hosts=config.redirects.allowed_hosts,
            public_url=config.server.public_url,
            unsubscribe_mailto=config.unsubscribe.mailto,
            dkim_keys=load_keys(config),
        )


@dataclass
class Deliverer:
    settings: DeliverySettings
    rules: dict[str, CompiledRule]
    apis: Mapping[str, TicketApi]
    templates: Templates
    smtp: Sender
    #: How the links of password-reset emails are made (the daemon passes the hosted form's, which
    #: knows the new passwords it captured in memory).
    reset_link: ResetLinkMaker = plain_reset_link

    #: For the suppression list, return-path tokens and unsubscribe links (issue 13); None: not used.
    store: Store | None = None
    return_paths: ReturnPaths | None = None
    unsubscribe_tokens: UnsubscribeTokens | None = None
    _remembered: set[str] = field(default_factory=set, repr=False)

    async def _mail_from(self, email: OutboxEmail, default: str) -> str:
        """The envelope sender: the VERP return path for this tenant and recipient, when configured."""
        if self.return_paths is None or self.store is None:
            return default
        token = self.return_paths.token(email.tenant, email.recipient)
        if token not in self._remembered:
            await self.store.remember_return_path(token, email.tenant, email.recipient, now=time.time())
            if len(self._remembered) >= _REMEMBERED_LIMIT:
                self._remembered.clear()
            self._remembered.add(token)
        return self.return_paths.address(token)

    def _list_unsubscribe(self, rule: CompiledRule, email: OutboxEmail) -> tuple[str, str | None] | None:
        public_url = self.settings.public_url
        if not rule.config.unsubscribe or self.unsubscribe_tokens is None or not public_url:
            return None
        token = self.unsubscribe_tokens.make(email.tenant, email.user_id, email.rule)
        return links(public_url, token, email.locale, self.settings.unsubscribe_mailto)

    def _context(self, email: OutboxEmail) -> dict[str, Any]:
        tenant = self.settings.tenants[email.tenant]
        return {**email.context, "tenant": tenant_view(email.tenant, tenant), "locale": email.locale}

    async def _link(self, rule: CompiledRule, email: OutboxEmail, context: dict[str, Any]) -> ResetLink | None:
        ticket = rule.config.ticket
        if ticket is None:
            return None
        try:
            result_url = render_result_url(rule, context)
        except RuleError as exc:
            raise PermanentFailure(str(exc)) from None
        if result_url and not host_allowed(result_url, self.settings.allowed_hosts):
            raise PermanentFailure(f"ticket.result_url host is not in redirects.allowed_hosts: {result_url[:200]}")
        api = self.apis[email.tenant]
        try:
            if ticket.kind == "email_verification":
                client_id = None if result_url else (context.get("client") or {}).get("id") or None
                return ResetLink(
                    await api.create_email_verification_ticket(
                        user_id=email.user_id, result_url=result_url, ttl_sec=ticket.ttl_sec, client_id=client_id
                    )
                )
            return await self.reset_link(api, email, result_url=result_url, ttl_sec=ticket.ttl_sec)
        except UserNotFound:
            raise PermanentFailure("user no longer exists in Auth0 (ticket endpoint answered 404)") from None
        except Auth0Transient as exc:
            raise TransientFailure(f"Auth0 ticket: {exc}") from None
        except Auth0Permanent as exc:
            if exc.status in (401, 403):
                # Our credentials or scopes, not this email: keep it until the operator fixes them.
                raise TransientFailure(
                    f"Auth0 refused streamer's credentials or scopes (fix the tenant's "
                    f"client_id/client_secret or the M2M application's scopes): {exc}"
                ) from None
            raise PermanentFailure(f"Auth0 ticket: {exc}") from None

    async def deliver(self, email: OutboxEmail) -> None:
        rule = self.rules.get(email.rule)
        if rule is None:
            raise PermanentFailure(f"rule {email.rule!r} is no longer in the config")
        if email.tenant not in self.settings.tenants:
            raise PermanentFailure(f"tenant {email.tenant!r} is no longer in the config")
        context = self._context(email)
        link = await self._link(rule, email, context)
        try:
            await self._send(rule, email, context, link)
        except TransientFailure:
            if link is not None and link.on_retry is not None:
                link.on_retry()
            raise

    async def _send(
        self, rule: CompiledRule, email: OutboxEmail, context: dict[str, Any], link: ResetLink | None
    ) -> None:
        ticket_url = link.url if link else None
        if link is not None and link.confirmation:
            context["password_confirmation"] = True
        user = context.get("user") or {}
        chain = fallback_chain(email.locale, self.settings.default_locale)
        try:
            rendered = render(
                self.templates,
                email.template,
                tenant=email.tenant,
                client_id=(context.get("client") or {}).get("id") or None,
                locale_chain=chain,
                context={**context, "ticket_url": ticket_url},
            )
        except (TemplateError, jinja2.TemplateError) as exc:
            raise PermanentFailure(f"template {email.template}: {exc}") from None
        try:
            message = build_message(
                from_addr=self.settings.from_addr,
                to_addr=email.recipient,
                to_name=greeting_name(user) or None,
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                locale=rendered.locale,
                message_id_key=email.key,
                reply_to=self.settings.reply_to[email.tenant],
                feedback=(email.rule, email.tenant),
                list_unsubscribe=self._list_unsubscribe(rule, email),
            )
            mail_from, rcpt_to = envelope(self.settings.from_addr, email.recipient)
        except InvalidAddress as exc:
            raise PermanentFailure(f"invalid address: {exc}") from None
        except ValueError as exc:  # Feedback-ID parts, List-Unsubscribe links
            raise PermanentFailure(f"header: {exc}") from None
        dkim_keys = self.settings.dkim_keys
        key = choose_key(dkim_keys, mail_from.rpartition("@")[2], email.tenant) if dkim_keys else None
        if key is not None:
            message = sign(message, key)  # last: it covers the final headers
        del ticket_url, link, rendered  # the link lives in `message` only, until it is sent
        mail_from = await self._mail_from(email, mail_from)  # VERP: after DKIM chose by the From domain
        try:
            await self.smtp.send(mail_from, rcpt_to, message)
        except SmtpPermanent as exc:
            raise PermanentFailure(f"SMTP {exc}") from None
        except SmtpTransient as exc:
            raise TransientFailure(f"SMTP {exc}") from None

    async def mark(self, email: OutboxEmail) -> None:
        """Write the rule's `mark` to Auth0 after a send; a failure is logged, the email stays sent."""
        rule = self.rules.get(email.rule)
        if rule is None or rule.config.mark is None:
            return
        try:
            await self.apis[email.tenant].update_app_metadata(email.user_id, dict(rule.config.mark.app_metadata))
        except Exception as exc:  # noqa: BLE001 - best effort, the email was sent
            log.warning(
                "mark_failed", tenant=email.tenant, rule=email.rule, user_id=email.user_id, error=redact_text(str(exc))
            )
