"""Everything `streamer check` verifies beyond the config schema, without network access.

`run` calls the same function and refuses to start on any error, so a config that passes
`check` is the config that runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from streamer.colors import DEFAULT_BUTTON_COLOR, brand_color_problem, parse_hex_color
from streamer.config import Config
from streamer.dkim_signing import check_keys
from streamer.rules import (
    CompiledRule,
    RuleError,
    check_result_urls,
    compile_rules,
    matches,
    render_result_url,
    tenant_view,
    user_view,
)
from streamer.sample_context import sample_context
from streamer.store import StoreUrlError, open_store
from streamer.suppression.inbound_tls import check_inbound_tls
from streamer.templates import Templates

#: Transactional mail: a user cannot opt out of it, so no unsubscribe link (Gmail/Yahoo's sender
#: rules and RFC 8058 are about mail one can do without).
TRANSACTIONAL_TEMPLATES = frozenset({"verify_email", "password_change", "password_changed"})
TRANSACTIONAL_EVENTS = frozenset({"scp", "password_reset_requested"})


def unsubscribe_problems(config: Config) -> list[str]:
    """`unsubscribe: true` only on optional notices, and only with what its links need."""
    problems = []
    for index, rule in enumerate(config.rules):
        if not rule.unsubscribe:
            continue
        where = f"{config.source}: rules.{index} ({rule.name}).unsubscribe"
        why = (
            "it creates a ticket"
            if rule.ticket is not None
            else f"its template {rule.template} is transactional"
            if rule.template in TRANSACTIONAL_TEMPLATES
            else f"it answers {', '.join(sorted(TRANSACTIONAL_EVENTS & set(rule.on)))}"
            if TRANSACTIONAL_EVENTS & set(rule.on)
            else None
        )
        if why:
            problems.append(
                f"{where}: not allowed here ({why}): verification, password reset and "
                "password-changed emails are transactional and carry no unsubscribe link"
            )
        if config.unsubscribe.secret is None:
            problems.append(f"{where}: needs unsubscribe.secret (it signs the links)")
        if not config.server.public_url:
            problems.append(f"{where}: needs server.public_url (the links point at this daemon)")
    return problems


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_config(config: Config) -> CheckReport:
    report = CheckReport()
    try:
        open_store(config.store_url)
    except StoreUrlError as exc:
        report.errors.append(f"{config.source}: store: {exc}")
    try:
        rules = compile_rules(config.rules)
    except RuleError as exc:
        report.errors += [f"{config.source}: {line}" for line in str(exc).splitlines()]
        rules = []
    if not config.templates_dir.is_dir():
        report.errors.append(f"{config.source}: templates.dir: {config.templates_dir} is not a directory")
        return report
    templates = Templates(config.templates_dir, default_locale=config.templates.default_locale)
    used = {rule.template for rule in config.rules}
    # A template no rule uses yet may be meant for a ticket rule: check it with a ticket_url too.
    with_ticket = {rule.template for rule in config.rules if rule.ticket is not None}
    problems = templates.check(
        required=sorted(used),
        tenant_vars={name: tenant.vars for name, tenant in config.tenants.items()},
        ticket_templates=with_ticket | (set(templates.template_names()) - used),
    )
    for problem in problems:
        line = str(problem.with_root(config.templates_dir)).replace(f": {problem.level}: ", ": ", 1)
        (report.errors if problem.level == "error" else report.warnings).append(line)
    names = set(templates.template_names())
    for index, rule in enumerate(config.rules):
        if rule.template not in names:
            report.errors.append(
                f"{config.source}: rules.{index} ({rule.name}).template: no template "
                f"{rule.template!r} in {config.templates_dir}"
            )
    sample = sample_context("verify_email", config.templates.default_locale)
    url_problems = check_result_urls(config, rules, sample["user"], sample["event"])
    report.errors += [
        _at_rule_line(config, p) for p in url_problems if "ticket.result_url failed" not in p
    ]  # evaluate_rules reports those, per event type
    report.errors += evaluate_rules(config, rules)
    if config.password_reset.enabled and "password_reset_requested" not in config.listened_types():
        report.warnings.append(
            f"{config.source}: password_reset.enabled: no rule listens to "
            "password_reset_requested, so the hosted form would send nothing "
            "(see the password-reset rule in config/streamer.example.yaml)"
        )
    if config.password_reset.enabled and config.password_reset.new_password and not config.server.public_url:
        report.errors.append(
            f"{config.source}: password_reset.new_password: set server.public_url: the "
            "confirmation link in the email points to it (without it the email carries an "
            "Auth0 reset ticket and the typed password is dropped)"
        )
    for name, tenant in config.tenants.items():
        wanted = tenant.vars.get("brand_color")
        color_problem = None if wanted is None else brand_color_problem(wanted)
        if color_problem:
            level = report.warnings if parse_hex_color(wanted) else report.errors
            level.append(
                f"{config.source}: tenants.{name}.vars.brand_color: {color_problem} (buttons use "
                f"{DEFAULT_BUTTON_COLOR} until then)"
            )
    dkim_errors, dkim_warnings = check_keys(config)
    report.errors += dkim_errors
    report.warnings += dkim_warnings
    report.errors += unsubscribe_problems(config)
    tls_errors, tls_warnings = check_inbound_tls(config)
    report.errors += tls_errors
    report.warnings += tls_warnings
    if any(rule.unsubscribe for rule in config.rules) and not (config.server.public_url or "").startswith("https://"):
        report.warnings.append(
            f"{config.source}: server.public_url: mailbox providers only offer one-click "
            "unsubscribe (RFC 8058) for an https:// link"
        )
    if config.unsubscribe.mailto and config.suppression.inbound is None:
        report.warnings.append(
            f"{config.source}: unsubscribe.mailto: without suppression.inbound nothing reads the "
            "mail sent to it; route it to the inbound listener or leave mailto out"
        )
    for name, tenant in config.tenants.items():
        if tenant.webhook_token is None and not tenant.poll.enabled:
            report.warnings.append(
                f"{config.source}: tenants.{name}: no source: set webhook_token (log stream) "
                "or poll.enabled: true, or it only receives `streamer replay` input"
            )
    return report


def _at_rule_line(config: Config, problem: str) -> str:
    """`rules.3 (name).ticket.result_url: …` → `file:line: rules.3 …`."""
    index = re.match(r"rules\.(\d+) ", problem)
    where = config.where("rules", int(index.group(1)), "ticket", "result_url") if index else config.source
    return f"{where}: {problem}"


def evaluate_rules(config: Config, rules: list[CompiledRule]) -> list[str]:
    """Run every rule's `if`, `once.key` and `ticket.result_url` on the sample context of each
    event type it listens to, for each tenant: one that fails there (a type error, a filter on
    the wrong value, an undefined name in result_url) would pass the syntax check and then
    silently never send. One line per rule, key and error, `file:line` first."""
    failures: dict[tuple[int, str, str], list[str]] = {}
    for index, rule in enumerate(rules):
        for code in rule.config.on:
            for name, tenant in config.tenants.items():
                context = _sample(config, rule, code, name, tenant)
                for key, evaluate in (
                    ("if", lambda c, r=rule: matches(r, c)),
                    ("once.key", lambda c, r=rule: r.once_key and r.once_key.render(c)),
                    ("ticket.result_url", lambda c, r=rule: render_result_url(r, c)),
                ):
                    try:
                        evaluate(context)
                    except Exception as exc:  # noqa: BLE001 - RuleError, jinja2 errors, anything: reported
                        message = (
                            str(exc).removeprefix(f"rule {rule.name}: ")
                            if isinstance(exc, RuleError)
                            else f"{type(exc).__name__}: {exc}"
                        )
                        failures.setdefault((index, key, message), []).append(f"{code}/{name}")
    problems = []
    for (index, key, message), where in failures.items():
        rule = rules[index]
        path: tuple[str | int, ...] = ("rules", index, *(key.split(".")))
        on = ", ".join(sorted({w.split("/")[0] for w in where}))
        problems.append(
            f"{config.where(*path)}: rules.{index} ({rule.name}).{key}: fails on the sample "
            f"context for event type {on}: {message}"
        )
    return problems


#: The sample_context template whose event has this type.
SAMPLE_FOR_TYPE = {
    "ss": "verify_email",
    "sv": "welcome",
    "s": "new_device",
    "scp": "password_changed",
    "password_reset_requested": "password_change",
}


def _sample(config: Config, rule: CompiledRule, code: str, tenant_name: str, tenant: Any) -> dict[str, Any]:
    """What decide() gives a rule for a `code` event of the sample user, in tenant `tenant_name`."""
    sample = sample_context(
        rule.config.template, config.templates.default_locale, tenant_name=tenant_name, tenant_vars=tenant.vars
    )
    # The richest sample of that very type (a login `s` carries location_info and riskAssessment).
    of_type = SAMPLE_FOR_TYPE.get(code)
    event = (
        sample_context(of_type, config.templates.default_locale, tenant_name=tenant_name)["event"]
        if of_type
        else {**sample["event"], "type": code}
    )
    return {
        "event": event,
        "user": user_view(sample["user"]),
        "client": sample["client"],
        "tenant": tenant_view(tenant_name, tenant),
        "locale": sample["locale"],
    }
