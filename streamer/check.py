"""Everything `streamer check` verifies beyond the config schema, without network access.

`run` calls the same function and refuses to start on any error, so a config that passes
`check` is the config that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.colors import DEFAULT_BUTTON_COLOR, brand_color_problem, parse_hex_color
from streamer.config import Config
from streamer.dkim_signing import check_keys
from streamer.rules import RuleError, check_result_urls, compile_rules
from streamer.sample_context import sample_context
from streamer.store import StoreUrlError, open_store
from streamer.templates import Templates


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
    url_problems = check_result_urls(config, rules, sample["user"], sample["event"])
    report.errors += [f"{config.source}: {p}" for p in url_problems]
    if config.password_reset.enabled and "password_reset_requested" not in config.listened_types():
        report.warnings.append(f"{config.source}: password_reset.enabled: no rule listens to "
                               "password_reset_requested, so the hosted form would send nothing "
                               "(see the password-reset rule in config/streamer.example.yaml)")
    if config.password_reset.enabled and config.password_reset.new_password and not config.server.public_url:
        report.errors.append(f"{config.source}: password_reset.new_password: set server.public_url: the "
                             "confirmation link in the email points to it (without it the email carries an "
                             "Auth0 reset ticket and the typed password is dropped)")
    for name, tenant in config.tenants.items():
        wanted = tenant.vars.get("brand_color")
        problem = None if wanted is None else brand_color_problem(wanted)
        if problem:
            level = report.warnings if parse_hex_color(wanted) else report.errors
            level.append(f"{config.source}: tenants.{name}.vars.brand_color: {problem} (buttons use "
                         f"{DEFAULT_BUTTON_COLOR} until then)")
    dkim_errors, dkim_warnings = check_keys(config)
    report.errors += dkim_errors
    report.warnings += dkim_warnings
    for name, tenant in config.tenants.items():
        if tenant.webhook_token is None and not tenant.poll.enabled:
            report.warnings.append(f"{config.source}: tenants.{name}: no source: set webhook_token (log stream) "
                                   "or poll.enabled: true, or it only receives `streamer replay` input")
    return report
