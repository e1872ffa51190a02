"""Everything `streamer check` verifies beyond the config schema, without network access.

`run` calls the same function and refuses to start on any error, so a config that passes
`check` is the config that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.config import Config
from streamer.rules import RuleError, check_result_urls, compile_rules
from streamer.sample_context import sample_context
from streamer.store import StoreUrlError, open_store
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
        why = ("it creates a ticket" if rule.ticket is not None
               else f"its template {rule.template} is transactional" if rule.template in TRANSACTIONAL_TEMPLATES
               else f"it answers {', '.join(sorted(TRANSACTIONAL_EVENTS & set(rule.on)))}"
               if TRANSACTIONAL_EVENTS & set(rule.on) else None)
        if why:
            problems.append(f"{where}: not allowed here ({why}): verification, password reset and "
                            "password-changed emails are transactional and carry no unsubscribe link")
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
        ticket_templates=with_ticket | (set(templates.template_names()) - used))
    for problem in problems:
        line = str(problem.with_root(config.templates_dir)).replace(f": {problem.level}: ", ": ", 1)
        (report.errors if problem.level == "error" else report.warnings).append(line)
    names = set(templates.template_names())
    for index, rule in enumerate(config.rules):
        if rule.template not in names:
            report.errors.append(f"{config.source}: rules.{index} ({rule.name}).template: no template "
                                 f"{rule.template!r} in {config.templates_dir}")
    sample = sample_context("verify_email", config.templates.default_locale)
    report.errors += [f"{config.source}: {p}" for p in check_result_urls(config, rules, sample["user"], sample["event"])]
    if config.password_reset.enabled and "password_reset_requested" not in config.listened_types():
        report.warnings.append(f"{config.source}: password_reset.enabled: no rule listens to "
                               "password_reset_requested, so the hosted form would send nothing "
                               "(see the password-reset rule in config/streamer.example.yaml)")
    report.errors += unsubscribe_problems(config)
    if any(rule.unsubscribe for rule in config.rules) and not (config.server.public_url or "").startswith("https://"):
        report.warnings.append(f"{config.source}: server.public_url: mailbox providers only offer one-click "
                               "unsubscribe (RFC 8058) for an https:// link")
    if config.unsubscribe.mailto and config.suppression.inbound is None:
        report.warnings.append(f"{config.source}: unsubscribe.mailto: without suppression.inbound nothing reads the "
                               "mail sent to it; route it to the inbound listener or leave mailto out")
    for name, tenant in config.tenants.items():
        if tenant.webhook_token is None and not tenant.poll.enabled:
            report.warnings.append(f"{config.source}: tenants.{name}: no source: set webhook_token (log stream) "
                                   "or poll.enabled: true, or it only receives `streamer replay` input")
    return report
