"""Config loading: env expansion, YAML quirks, and errors that name file, line and key path."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import ConfigError, expand_env, load_config, parse_config, parse_duration, parse_rate

MINIMAL = """\
smtp: {host: localhost, port: 2525, security: none, from: "Acme <no-reply@acme.test>"}
tenants:
  acme:
    domain: acme.eu.auth0.com
    client_id: cid
    client_secret: "${SECRET:-s3cret}"
rules:
  - name: verify-email
    on: [ss, s]
    if: "not user.email_verified"
    once: per_user
    template: verify_email
"""


def problems_of(text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="streamer.yaml", env=env or {})
    return info.value.problems


def test_minimal_config_loads_with_defaults():
    config = parse_config(MINIMAL, env={})
    assert config.rules[0].on == ["ss", "s"]  # `on` is not read as the boolean True
    assert config.rules[0].if_ == "not user.email_verified"
    assert config.tenants["acme"].client_secret.get_secret_value() == "s3cret"
    assert config.tenants["acme"].base_url == "https://acme.eu.auth0.com"
    assert config.tenants["acme"].audience == "https://acme.eu.auth0.com/api/v2/"
    assert config.delivery.max_attempts == 8 and config.smtp.pool_size == 4


def test_secrets_do_not_show_in_repr():
    config = parse_config(MINIMAL, env={"SECRET": "hunter2-very-secret"})
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.tenants)


def test_error_names_file_line_and_key_path():
    text = MINIMAL.replace("client_secret", "poll: {interval_s: soon}\n    client_secret")
    [problem] = problems_of(text)
    assert problem.startswith("streamer.yaml:6: tenants.acme.poll.interval_s:")


def test_unknown_keys_are_errors():
    problems = problems_of(MINIMAL.replace("once: per_user", "once: per_user\n    colour: blue"))
    assert problems == ["streamer.yaml:12: rules.0.colour: unknown key"]


def test_missing_env_var_is_reported_with_its_key():
    text = MINIMAL.replace("client_id: cid", "client_id: ${ACME_CLIENT_ID}")
    problems = problems_of(text)
    assert problems == [
        "streamer.yaml:5: tenants.acme.client_id: environment variable ACME_CLIENT_ID is not set "
        "(write ${ACME_CLIENT_ID:-default} for a default)"
    ]
    assert parse_config(text, env={"ACME_CLIENT_ID": "abc"}).tenants["acme"].client_id == "abc"


def test_missing_sections_and_bad_yaml():
    assert any("smtp: required key is missing" in p for p in problems_of("tenants: {}\nrules: []\n"))
    assert problems_of("smtp: [1, 2\n")[0].startswith("streamer.yaml:")
    assert problems_of("- just a list\n") == [
        "streamer.yaml: the config must be a YAML mapping of sections (server, smtp, tenants, rules …)"
    ]


def test_duplicate_rule_names_and_bad_tenant_names():
    doubled = MINIMAL + MINIMAL[MINIMAL.index("  - name") :]
    assert any("two rules are named 'verify-email'" in p for p in problems_of(doubled))
    assert any("tenant name" in p for p in problems_of(MINIMAL.replace("  acme:", "  'a/b':")))


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path):
    (tmp_path / "streamer.yaml").write_text(MINIMAL + "store: sqlite:///data/s.db\ntemplates: {dir: tpl}\n")
    config = load_config(tmp_path / "streamer.yaml", env={})
    assert config.store_url == f"sqlite:///{tmp_path}/data/s.db"
    assert config.templates_dir == tmp_path / "tpl"


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_durations_and_rates():
    assert parse_duration("5m") == 300 and parse_duration("1h") == 3600 and parse_duration(90) == 90
    assert parse_rate("10/hour") == (10, 3600.0)
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_rate("ten per hour")
    cooldown = parse_config(MINIMAL.replace("once: per_user", "once: {cooldown: 5m}"), env={})
    assert cooldown.rules[0].once.cooldown == 300


def test_expand_env_default_and_empty():
    assert expand_env("${A:-x}-${B}", {"B": "b"}) == "x-b"
    assert expand_env("${A:-x}", {"A": ""}) == "x"
    assert expand_env("${A}", {"A": ""}) == ""


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "server",
                "smtp",
                "delivery",
                "tenants",
                "rules",
                "store",
                "bogus",
                "templates",
                "redirects",
                "password_reset",
            ]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=10)
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        max_size=6,
    )
)
def test_any_yaml_mapping_gives_a_config_or_a_config_error(data):
    import yaml

    text = yaml.safe_dump(data)
    try:
        parse_config(text, source="f.yaml", env={})
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("f.yaml") for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_text_gives_a_config_or_a_config_error(text):
    try:
        parse_config(text, source="f.yaml", env={})
    except ConfigError as exc:
        assert all(p.startswith("f.yaml") for p in exc.problems)


def test_reply_to_is_validated_and_a_tenant_one_wins():
    from streamer.config import ConfigError, parse_config

    base = """\
smtp: {{from: "Acme <no-reply@acme.test>", reply_to: "{smtp}"}}
tenants:
  acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y, reply_to: "{tenant}"}}
  beta: {{domain: b.eu.auth0.com, client_id: x, client_secret: y}}
rules: [{{name: r, on: [s], template: welcome}}]
"""
    config = parse_config(base.format(smtp="help@acme.test", tenant="Acme Care <care@acme.test>"), env={})
    assert config.reply_to("acme") == "Acme Care <care@acme.test>"
    assert config.reply_to("beta") == "help@acme.test"
    assert parse_config(base.format(smtp="", tenant=""), env={}).reply_to("beta") is None
    with pytest.raises(ConfigError, match=r"tenants\.acme\.reply_to: .*expected exactly one address"):
        parse_config(base.format(smtp="", tenant="a@x.test, b@x.test"), env={})
    with pytest.raises(ConfigError, match=r"smtp\.reply_to: .*has no domain"):
        parse_config(base.format(smtp="nobody@", tenant=""), env={})
