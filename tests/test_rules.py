"""Rule decisions are pure: tested here without any I/O."""

import pytest

from streamer.config import parse_config
from streamer.rules import (
    RuleError,
    SkipReason,
    check_result_urls,
    compile_rules,
    decide,
    host_allowed,
    once_keys,
    render_result_url,
    tenant_view,
)

from conftest import sample_event

CONFIG = """\
smtp: {host: localhost, from: "Acme <no-reply@acme.test>"}
redirects: {allowed_hosts: ["app.acme.test", "*.acme.test"]}
tenants:
  acme: {domain: acme.eu.auth0.com, client_id: c, client_secret: s, vars: {app_url: "https://app.acme.test"}}
rules:
  - name: verify-email
    on: [ss, s]
    if: "not user.email_verified"
    once: per_user
    ticket: {kind: email_verification, result_url: "{{ tenant.vars.app_url }}/verified?lang={{ locale }}"}
    template: verify_email
  - name: welcome
    on: [sv, ss, s]
    if: "user.email_verified and (event.type == 'sv' or user.logins_count <= 1)"
    once: per_user
    template: welcome
  - name: changed
    on: [scp]
    once: per_event
    template: password_changed
"""

UNVERIFIED = {
    "user_id": "auth0|65f0c0ffee0000000000a001",
    "email": "ana.silva@example.com",
    "email_verified": False,
    "logins_count": 1,
}


def setup():
    config = parse_config(CONFIG, env={})
    return config, compile_rules(config.rules), tenant_view("acme", config.tenants["acme"])


def run(event, user, locale="fr"):
    _, rules, tenant = setup()
    return decide(
        rules, event, tenant="acme", tenant_ctx=tenant, user=user, locale_for=lambda rule: locale, accepted_at=1.0
    )


def test_signup_of_unverified_user_makes_one_verification_email():
    due, skipped = run(sample_event("ss"), UNVERIFIED)
    assert [d.rule for d in due] == ["verify-email"] and skipped == []
    email = due[0]
    assert email.recipient == "ana.silva@example.com" and email.locale == "fr"
    assert email.once_key == email.key == "acme/verify-email/user/auth0|65f0c0ffee0000000000a001"
    assert email.context["user"]["app_metadata"] == {}  # always present for templates


def test_verified_user_gets_welcome_on_sv_and_not_on_later_logins():
    verified = {**UNVERIFIED, "email_verified": True, "logins_count": 5}
    assert [d.rule for d in run(sample_event("sv"), verified)[0]] == ["welcome"]
    assert run(sample_event("s"), verified)[0] == []


def test_social_first_login_is_welcomed():
    google = {"user_id": "google-oauth2|1", "email": "b@example.com", "email_verified": True, "logins_count": 1}
    assert [d.rule for d in run(sample_event("ss_google"), google)[0]] == ["welcome"]


def test_missing_user_and_missing_email_are_skipped_with_reasons():
    [missing] = run(sample_event("s"), None)[1][:1]
    assert missing.reason == "user not found in Auth0" and missing.kind is SkipReason.USER_NOT_FOUND
    [no_email] = run(sample_event("ss"), {**UNVERIFIED, "email": None})[1][:1]
    assert no_email.reason == "user has no email address" and no_email.kind is SkipReason.NO_EMAIL


def test_a_rule_error_is_a_rule_error_whatever_its_message_says():
    config = parse_config(CONFIG.replace('''if: "not user.email_verified"''', '''if: "'x'.index('y')"'''), env={})
    _, skipped = decide(
        compile_rules(config.rules),
        sample_event("s"),
        tenant="acme",
        tenant_ctx=tenant_view("acme", config.tenants["acme"]),
        user=UNVERIFIED,
        locale_for=lambda rule: "en",
        accepted_at=1.0,
    )
    [error] = [s for s in skipped if s.rule == "verify-email"]
    assert "substring not found" in error.reason and error.kind is SkipReason.RULE_ERROR


def test_a_failing_condition_is_reported_not_raised():
    user = {**UNVERIFIED, "email_verified": True}
    user.pop("logins_count")
    due, skipped = run(sample_event("ss"), user)  # `undefined <= 1` fails for the welcome rule
    assert due == [] and skipped[0].rule == "welcome" and "failed" in skipped[0].reason


def test_per_event_and_cooldown_keys():
    _, rules, _ = setup()
    assert once_keys(rules[2].config, "acme", "u", "L1") == ("acme/changed/event/L1", None, "acme/changed/event/L1")
    config = parse_config(CONFIG.replace("once: per_event", "once: {cooldown: 5m}"), env={})
    once, cooldown, key = once_keys(config.rules[2], "acme", "u", "L1")
    assert once == "acme/changed/user/u" and cooldown == 300 and key.startswith(once + "/")
    assert key != once_keys(config.rules[2], "acme", "u", "L2")[2]


def test_result_url_is_rendered_from_tenant_vars_and_locale():
    _, rules, tenant = setup()
    url = render_result_url(rules[0], {"tenant": tenant, "locale": "fr", "user": {}, "event": {}, "client": {}})
    assert url == "https://app.acme.test/verified?lang=fr"


@pytest.mark.parametrize(
    "expression, message",
    [
        ("not usr.email_verified", r"unknown name\(s\) usr"),
        ("user.email_verified and", "invalid expression"),
    ],
)
def test_bad_expressions_are_config_errors(expression, message):
    config = parse_config(CONFIG.replace('"not user.email_verified"', repr(expression)), env={})
    with pytest.raises(RuleError, match=message):
        compile_rules(config.rules)


def test_sandbox_blocks_python_internals():
    config = parse_config(CONFIG.replace('"not user.email_verified"', '"user.__class__.__mro__"'), env={})
    rules = compile_rules(config.rules)
    due, skipped = decide(
        rules,
        sample_event("ss"),
        tenant="acme",
        tenant_ctx={},
        user=UNVERIFIED,
        locale_for=lambda r: "en",
        accepted_at=0,
    )
    assert not any(d.rule == "verify-email" for d in due)


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://app.acme.test/x", True),
        ("https://deep.sub.acme.test/", True),
        ("http://app.acme.test", True),
        ("https://acme.test/", False),
        ("https://evil.test/?x=app.acme.test", False),
        ("https://app.acme.test.evil.test/", False),
        ("javascript:alert(1)", False),
        ("//app.acme.test/", False),
        ("https://APP.ACME.TEST/", True),
        ("https://user@evil.test/", False),
    ],
)
def test_host_allow_list(url, allowed):
    assert host_allowed(url, ["app.acme.test", "*.acme.test"]) is allowed


def test_check_reports_result_url_hosts_outside_the_allow_list():
    config = parse_config(CONFIG.replace('"https://app.acme.test"', '"https://evil.test"'), env={})
    problems = check_result_urls(config, compile_rules(config.rules), UNVERIFIED, sample_event("ss"))
    assert problems == [
        "rules.0 (verify-email).ticket.result_url: tenant acme: host 'evil.test' is not in redirects.allowed_hosts"
    ]


def test_once_key_sends_once_per_user_and_device():
    text = (
        CONFIG
        + """  - name: new-device
    on: [s]
    if: "user.logins_count > 1"
    once: {key: "{{ event.ip }} {{ event.user_agent }}"}
    template: new_device
"""
    )
    config = parse_config(text, env={})
    rules = compile_rules(config.rules)
    user = {**UNVERIFIED, "email_verified": True, "logins_count": 4}

    def keys(event):
        due, _ = decide(rules, event, tenant="acme", tenant_ctx={}, user=user, locale_for=lambda r: "en", accepted_at=0)
        return [d.once_key for d in due if d.rule == "new-device"]

    known = keys(sample_event("s"))
    again = keys(sample_event("s", log_id="another"))
    phone = keys(sample_event("s_new_device"))
    assert len(known) == 1 and known == again and phone != known
    assert known[0].startswith("acme/new-device/user/auth0|65f0c0ffee0000000000a001/key/")
    bad = parse_config(text.replace("{{ event.ip }}", "{{ evnt.ip }}"), env={})
    with pytest.raises(RuleError, match=r"once.key: unknown name\(s\) evnt"):
        compile_rules(bad.rules)


def test_rules_cannot_modify_the_profile_they_read():
    config = parse_config(
        CONFIG.replace('"not user.email_verified"', '"user.app_metadata.update(x=1) or True"'), env={}
    )
    user = {**UNVERIFIED, "app_metadata": {}}
    due, skipped = decide(
        compile_rules(config.rules),
        sample_event("ss"),
        tenant="acme",
        tenant_ctx={},
        user=user,
        locale_for=lambda r: "en",
        accepted_at=0,
    )
    assert user["app_metadata"] == {} and skipped and "verify-email" not in [d.rule for d in due]


def test_an_if_may_read_the_locale_and_the_locale_is_resolved_only_when_needed():
    config = parse_config(CONFIG.replace('"not user.email_verified"', "\"locale.startswith('fr')\""), env={})
    rules = compile_rules(config.rules)
    asked = []

    def locale_for(rule):
        asked.append(rule.name)
        return current

    current = "fr-CA"
    due, _ = decide(
        rules, sample_event("ss"), tenant="acme", tenant_ctx={}, user=UNVERIFIED, locale_for=locale_for, accepted_at=0
    )
    assert [(d.rule, d.locale) for d in due] == [("verify-email", "fr-CA")]
    current = "de"
    due, _ = decide(
        rules, sample_event("ss"), tenant="acme", tenant_ctx={}, user=UNVERIFIED, locale_for=locale_for, accepted_at=0
    )
    assert due == []
    # A rule whose `if` ignores the locale and is false never asks for one.
    plain = compile_rules(parse_config(CONFIG, env={}).rules)
    asked.clear()
    returning = {**UNVERIFIED, "email_verified": True, "logins_count": 5}
    assert decide(
        plain, sample_event("ss"), tenant="acme", tenant_ctx={}, user=returning, locale_for=locale_for, accepted_at=0
    ) == ([], [])
    assert asked == []


def test_a_condition_that_failed_for_one_event_evaluates_cleanly_for_the_next():
    config = parse_config(CONFIG.replace('"not user.email_verified"', '"10 / user.logins_count > 5"'), env={})
    rules = compile_rules(config.rules)

    def run_once(logins: int) -> tuple[list, list]:
        return decide(
            rules,
            sample_event("ss"),
            tenant="acme",
            tenant_ctx={},
            user={**UNVERIFIED, "logins_count": logins},
            locale_for=lambda r: "en",
            accepted_at=0,
        )

    due, skipped = run_once(0)
    assert any("ZeroDivisionError" in s.reason for s in skipped)
    assert [d.rule for d in run_once(1)[0]] == ["verify-email"]
    assert [d.rule for d in run_once(4)[0]] == []


def test_a_once_key_that_fails_skips_its_rule_only_and_never_raises():
    config = parse_config(
        CONFIG
        + """\
  - name: new-device
    on: [s]
    once: {key: "{{ event.ip | int // 0 }}"}
    template: new_device
""",
        env={},
    )
    due, skipped = decide(
        compile_rules(config.rules),
        sample_event("s"),
        tenant="acme",
        tenant_ctx=tenant_view("acme", config.tenants["acme"]),
        user=UNVERIFIED,
        locale_for=lambda rule: "en",
        accepted_at=1.0,
    )
    assert [d.rule for d in due] == ["verify-email"]
    assert [(s.rule, "ZeroDivisionError" in s.reason) for s in skipped] == [("new-device", True)]


def test_an_event_without_a_readable_date_is_dated_when_received():
    event = sample_event("scp")
    del event["date"]
    [email], _ = run(event, UNVERIFIED)
    assert email.context["event"]["date"] == "1970-01-01T00:00:01.000Z" and "date" not in event
    [email], _ = run(sample_event("scp", date="not a date"), UNVERIFIED)
    assert email.context["event"]["date"] == "1970-01-01T00:00:01.000Z"
    [email], _ = run(sample_event("scp"), UNVERIFIED)
    assert email.context["event"]["date"] == sample_event("scp")["date"]


_READS = [
    "user.email_verified",
    "user.logins_count <= 1",
    "user.app_metadata.plan",
    "user.missing.deeper",
    "user.missing is defined",
    "event.details.body.email",
    "user.keys",  # a key named like a dict method: the method wins, as in Jinja
    "user.get('email')",
    "user.items() | list | length",
    "user['keys']",
    "user.__class__",
    "user.__class__.__mro__",
    "user.app_metadata.update(x=1)",
    "event.type == 'ss' and user.identities[0].provider",
]


@pytest.mark.parametrize("expression", _READS)
def test_a_rule_reads_a_dict_exactly_as_jinjas_own_sandbox_does(expression):
    """The rules' environment reads a plain dict's keys without Jinja's failed attribute lookup
    first (rules._RuleEnvironment): same value, same undefined, same refusal as the stock sandbox."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from streamer.rules import _expressions

    user = {
        **UNVERIFIED,
        "keys": "a key, not the method",
        "app_metadata": {"plan": "pro"},
        "identities": [{"provider": "auth0"}],
    }
    context = {"user": user, "event": sample_event("ss")}
    stock = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)

    def outcome(environment):
        try:
            value = environment.compile_expression(expression, undefined_to_none=False)(**context)
            return ("value", repr(value), type(value).__name__, str(value) if not callable(value) else "callable")
        except Exception as exc:  # noqa: BLE001 - the refusal itself is what is compared
            return ("error", type(exc).__name__)

    assert outcome(_expressions) == outcome(stock)
