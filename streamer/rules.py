"""Rules: which emails an event makes due (pure functions, no I/O).

A rule's `if` is a sandboxed Jinja2 expression over `event`, `user`, `client`, `tenant`,
`locale` and `recipient` (`recipient.suppressed`, `recipient.reason`: the address is on the
tenant's suppression list and why; `recipient.unsubscribed`: the rules the user unsubscribed
from). Names outside those are rejected when the config is checked; a missing attribute
(`user.app_metadata.plan` for a user without one) is simply falsy, since Auth0 omits empty
fields. `result_url` is a sandboxed template over the same names, strict about undefined names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import jinja2
from jinja2 import meta
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streamer.config import Config, Cooldown, OnceKey, RuleConfig, TenantConfig
from streamer.outbox import DueEmail
from streamer.templates.filters import to_datetime

CONTEXT_NAMES = frozenset({"event", "user", "client", "tenant", "locale", "recipient"})
#: What rules see as `recipient` when nothing is known about the address (and in `check`'s samples).
NO_RECIPIENT_FACTS: dict[str, Any] = {"suppressed": False, "reason": None, "unsubscribed": []}

#: What `x.name` can find on a plain dict besides its keys: its type's attributes (methods).
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _RuleEnvironment(ImmutableSandboxedEnvironment):
    """Immutable: an expression cannot change the (shared, cached) profiles it reads.

    Rules read plain dicts (`user.email_verified`, `event.type`): Jinja tries the attribute
    first, which on a dict fails with an AttributeError raised and caught on every read, most of
    the cost of a simple `if`. A plain dict has no attributes but its type's, so a name outside
    those is looked up as a key directly: the same result, without the exception.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


_expressions = _RuleEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
_strings = _RuleEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class RuleError(ValueError):
    """A rule that cannot be compiled or evaluated; the message names the rule and key."""


class Condition:
    """A compiled `if`. Jinja's TemplateExpression walks the environment's globals (a ChainMap)
    twice and builds a new Context on every call, most of the cost of a simple condition; here
    the globals are merged once and one Context is refilled per call (a condition runs to the
    end without awaiting, so calls on the event loop never overlap)."""

    def __init__(self, source: str):
        template = _expressions.compile_expression(source, undefined_to_none=False)._template
        self._template = template
        self._globals = dict(template.globals)
        self._context = new_context(template.environment, template.name, template.blocks, {}, shared=True)
        self.uses_locale = "locale" in meta.find_undeclared_variables(_expressions.parse("{{ (" + source + ") }}"))

    def __call__(self, variables: dict[str, Any]) -> Any:
        context = self._context  # reused: the event loop evaluates one condition at a time
        context.parent = {**self._globals, **variables}
        context.vars = {}
        context.exported_vars = set()
        for _ in self._template.root_render_func(context):
            pass
        return context.vars["result"]


@dataclass(frozen=True)
class CompiledRule:
    config: RuleConfig
    condition: Condition | None
    result_url: jinja2.Template | None
    once_key: jinja2.Template | None = None

    @property
    def name(self) -> str:
        return self.config.name


def _unknown_names(source: str) -> set[str]:
    return meta.find_undeclared_variables(_expressions.parse(source)) - CONTEXT_NAMES


def _compiled(where: str, build: Callable[[], Any], *, names_in: str, what: str) -> Any:
    """Compile with `build`; a syntax error or a name outside CONTEXT_NAMES is a RuleError."""
    try:
        unknown = _unknown_names(names_in)
        compiled = build()
    except jinja2.TemplateSyntaxError as exc:
        raise RuleError(f"{where}: invalid {what}: {exc.message}") from None
    if unknown:
        raise RuleError(
            f"{where}: unknown name(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(CONTEXT_NAMES))}"
        )
    return compiled


def compile_rule(rule: RuleConfig, index: int = 0) -> CompiledRule:
    where = f"rules.{index} ({rule.name})"
    condition = result_url = once_key = None
    if rule.if_ is not None:
        source = rule.if_
        condition = _compiled(
            f"{where}.if", lambda: Condition(source), names_in="{{ (" + source + ") }}", what="expression"
        )
    if rule.ticket is not None and rule.ticket.result_url:
        url = rule.ticket.result_url
        result_url = _compiled(
            f"{where}.ticket.result_url", lambda: _strings.from_string(url), names_in=url, what="template"
        )
    if isinstance(rule.once, OnceKey):
        key = rule.once.key
        once_key = _compiled(f"{where}.once.key", lambda: _expressions.from_string(key), names_in=key, what="template")
    return CompiledRule(rule, condition, result_url, once_key)


def compile_rules(rules: list[RuleConfig]) -> list[CompiledRule]:
    """Compile every rule; raise RuleError listing all problems, one per line."""
    compiled, problems = [], []
    for index, rule in enumerate(rules):
        try:
            compiled.append(compile_rule(rule, index))
        except RuleError as exc:
            problems.append(str(exc))
    if problems:
        raise RuleError("\n".join(problems))
    return compiled


def tenant_view(name: str, tenant: TenantConfig) -> dict[str, Any]:
    """What rules and templates see as `tenant` (never the secrets)."""
    return {"name": name, "domain": tenant.domain, "vars": dict(tenant.vars)}


def client_view(event: dict[str, Any]) -> dict[str, Any]:
    return {"id": event.get("client_id") or "", "name": event.get("client_name") or ""}


def user_view(profile: dict[str, Any]) -> dict[str, Any]:
    """Auth0 omits empty metadata; rules and templates may rely on both being present."""
    user = dict(profile)
    for key in ("user_metadata", "app_metadata"):
        if not isinstance(user.get(key), dict):
            user[key] = {}
    return user


def matches(rule: CompiledRule, context: dict[str, Any]) -> bool:
    if rule.condition is None:
        return True
    try:
        return bool(rule.condition(context))
    except Exception as exc:  # noqa: BLE001 - a rule error must not stop the other rules
        raise RuleError(f"rule {rule.name}: `if` failed: {type(exc).__name__}: {exc}") from None


def render_result_url(rule: CompiledRule, context: dict[str, Any]) -> str | None:
    if rule.result_url is None:
        return None
    try:
        return rule.result_url.render(context).strip()
    except jinja2.TemplateError as exc:
        raise RuleError(f"rule {rule.name}: ticket.result_url failed: {exc}") from None


def host_allowed(url: str, allowed_hosts: list[str]) -> bool:
    """`https://app.acme.test/x` against ["app.acme.test", "*.acme.test"]; http(s) only."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        return False
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]


def once_keys(
    rule: RuleConfig, tenant: str, user_id: str, log_id: str, rendered_key: str | None = None
) -> tuple[str, float | None, str]:
    """(once ledger key, cooldown seconds or None, outbox idempotency key)."""
    if isinstance(rule.once, OnceKey):
        once = f"{tenant}/{rule.name}/user/{user_id}/key/{_digest(rendered_key or '')}"
        return once, None, once
    if isinstance(rule.once, Cooldown):
        once = f"{tenant}/{rule.name}/user/{user_id}"
        return once, rule.once.cooldown, f"{once}/{_digest(log_id)}"
    if rule.once == "per_user":
        once = f"{tenant}/{rule.name}/user/{user_id}"
    else:
        once = f"{tenant}/{rule.name}/event/{log_id}"
    return once, None, once


class SkipReason(StrEnum):
    """Why a listening rule queued nothing: the metric label (a closed set) of a Skipped."""

    USER_NOT_FOUND = "user_not_found"
    NO_EMAIL = "no_email"
    RULE_ERROR = "rule_error"
    UNSUBSCRIBED = "unsubscribed"


def dated(event: dict[str, Any], received_at: float) -> dict[str, Any]:
    """`event`, or a copy whose `date` is when streamer received it when its own is missing or
    unreadable: Auth0 always sends one, hand-made and replayed files may not, and `event.date`
    in a template must not turn into a dead email."""
    if to_datetime(event.get("date")) is not None:
        return event
    moment = datetime.fromtimestamp(received_at, UTC)
    return {**event, "date": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


@dataclass(frozen=True)
class Skipped:
    rule: str
    #: For people (logs, `streamer resend`): the words, with an error's details.
    reason: str
    #: For counting: which kind of skip.
    kind: SkipReason


UNSUBSCRIBED = "user unsubscribed from this rule's emails"


def decide(
    rules: list[CompiledRule],
    event: dict[str, Any],
    *,
    tenant: str,
    tenant_ctx: dict[str, Any],
    user: dict[str, Any] | None,
    locale_for: Callable[[CompiledRule], str],
    accepted_at: float,
    recipient: dict[str, Any] | None = None,
) -> tuple[list[DueEmail], list[Skipped]]:
    """The emails `event` makes due. `user` is the Auth0 profile (None: not found).
    `locale_for(rule)` gives the locale that rule's template will render in. `recipient` is what
    the store knows about the user's address and preferences (see NO_RECIPIENT_FACTS); a rule with
    `unsubscribe: true` is not due for a user who unsubscribed from it."""
    due: list[DueEmail] = []
    skipped: list[Skipped] = []
    listening = [rule for rule in rules if event.get("type") in rule.config.on]
    if not listening:
        return due, skipped
    event = dated(event, accepted_at)
    if user is None:
        return due, [Skipped(rule.name, "user not found in Auth0", SkipReason.USER_NOT_FOUND) for rule in listening]
    profile = user_view(user)
    facts = recipient if recipient is not None else NO_RECIPIENT_FACTS
    shared = {"event": event, "user": profile, "client": client_view(event), "tenant": tenant_ctx, "recipient": facts}
    for rule in listening:
        if rule.config.unsubscribe and rule.name in facts.get("unsubscribed", ()):
            skipped.append(Skipped(rule.name, UNSUBSCRIBED, SkipReason.UNSUBSCRIBED))
            continue
        # The locale costs a lookup through the template tree: only when the `if` reads it or the email is due.
        locale = locale_for(rule) if rule.condition is not None and rule.condition.uses_locale else None
        context = {**shared, "locale": locale} if locale is not None else shared
        try:
            if not matches(rule, context):
                continue
        except RuleError as exc:
            skipped.append(Skipped(rule.name, str(exc), SkipReason.RULE_ERROR))
            continue
        if locale is None:
            locale = locale_for(rule)
            context = {**shared, "locale": locale}
        recipient = profile.get("email")
        if not isinstance(recipient, str) or "@" not in recipient:
            skipped.append(Skipped(rule.name, "user has no email address", SkipReason.NO_EMAIL))
            continue
        user_id = profile.get("user_id") or event.get("user_id") or ""
        try:
            rendered_key = rule.once_key.render(context).strip() if rule.once_key is not None else None
        except Exception as exc:  # noqa: BLE001 - like a failing `if`: this rule only, never the batch
            skipped.append(
                Skipped(
                    rule.name, f"rule {rule.name}: once.key failed: {type(exc).__name__}: {exc}", SkipReason.RULE_ERROR
                )
            )
            continue
        once, cooldown, key = once_keys(rule.config, tenant, user_id, event["log_id"], rendered_key)
        due.append(
            DueEmail(
                tenant=tenant,
                rule=rule.name,
                template=rule.config.template,
                once_key=once,
                cooldown_s=cooldown,
                key=key,
                user_id=user_id,
                log_id=event["log_id"],
                recipient=recipient,
                locale=locale,
                accepted_at=accepted_at,
                context={"event": event, "user": profile, "client": shared["client"], "recipient": facts},
            )
        )
    return due, skipped


def reads_recipient(rule: RuleConfig) -> bool:
    """Whether the rule's `if`, `once.key` or `ticket.result_url` may read `recipient` (conservative)."""
    sources = [
        rule.if_,
        rule.once.key if isinstance(rule.once, OnceKey) else None,
        rule.ticket.result_url if rule.ticket else None,
    ]
    return any("recipient" in source for source in sources if source)


def rules_for_types(rules: list[CompiledRule]) -> set[str]:
    return {code for rule in rules for code in rule.config.on}


def check_result_urls(
    config: Config, rules: list[CompiledRule], sample_user: dict[str, Any], sample_event: dict[str, Any]
) -> list[str]:
    """Render every ticket.result_url for every tenant with sample data; report hosts not allowed."""
    problems = []
    for index, rule in enumerate(rules):
        if rule.result_url is None:
            continue
        for name, tenant in config.tenants.items():
            context = {
                "event": sample_event,
                "user": user_view(sample_user),
                "client": client_view(sample_event),
                "tenant": tenant_view(name, tenant),
                "locale": config.templates.default_locale,
                "recipient": NO_RECIPIENT_FACTS,
            }
            try:
                url = render_result_url(rule, context) or ""
            except RuleError as exc:
                problems.append(f"rules.{index} ({rule.name}).ticket.result_url: tenant {name}: {exc}")
                continue
            if not host_allowed(url, config.redirects.allowed_hosts):
                host = urlsplit(url).hostname or url
                problems.append(
                    f"rules.{index} ({rule.name}).ticket.result_url: tenant {name}: host {host!r} "
                    f"is not in redirects.allowed_hosts"
                )
    return problems
