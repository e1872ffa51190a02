"""config/prometheus-alerts.yml: every expression is valid PromQL and names only metrics and
labels streamer exposes, so a renamed metric cannot silently turn an alert into one that never fires."""

import re

import promql_parser
import pytest
import yaml

from conftest import REPO
from support.promql import PROMETHEUS_LABELS, exposed, metric_names, walk

ALERTS = REPO / "config" / "prometheus-alerts.yml"
SOURCES = "\n".join(p.read_text() for p in (REPO / "streamer").rglob("*.py"))


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_is_valid_and_names_what_streamer_exposes(rule):
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tree = promql_parser.parse(rule["expr"])  # raises on invalid PromQL
    selectors, groupings = [], []
    walk(tree, selectors, groupings)
    known = exposed()
    assert selectors
    for selector in selectors:
        if selector.name == "up":
            continue
        assert selector.name in known, f"{rule['alert']}: no metric named {selector.name}"
        for matcher in selector.matchers.matchers:
            if matcher.name == "__name__":
                continue
            assert matcher.name in known[selector.name], f"{rule['alert']}: {selector.name} has no label {matcher.name}"
            if matcher.name in ("reason", "status", "state"):
                for value in re.split(r"[|]", matcher.value):  # a value streamer really writes
                    assert f'"{value}"' in SOURCES or value.isdigit(), f"{rule['alert']}: {matcher.name}={value}"
    for node, labels in groupings:
        inside = metric_names(node.expr)
        for label in labels:
            assert all(label in known[name] for name in inside), f"{rule['alert']}: by ({label}) over {inside}"
    used = set(re.findall(r"\$labels\.(\w+)", str(rule["annotations"])))
    grouped = {label for _, labels in groupings for label in labels}
    available = grouped if groupings else set.intersection(*(known.get(s.name, PROMETHEUS_LABELS) for s in selectors))
    assert used <= available, f"{rule['alert']}: annotations use {used - available}, not in the result"


def test_the_checks_catch_a_renamed_metric_and_a_wrong_label():
    assert "streamer_emails_dead_total" in exposed()
    assert "streamer_emails_dead" not in exposed()  # counters are exposed with _total
    selectors: list = []
    walk(promql_parser.parse('sum by (tenant) (increase(streamer_emails_dead{reasn="x"}[5m]))'), selectors, [])
    (selector,) = selectors
    assert selector.name not in exposed()
    assert [m.name for m in selector.matchers.matchers] == ["reasn"]
