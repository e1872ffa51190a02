"""config/prometheus-alerts.yml: every expression is valid PromQL and names only metrics and
labels streamer exposes, so a renamed metric cannot silently turn an alert into one that never fires."""

import re

import prometheus_client
import promql_parser
import pytest
import yaml

from streamer import metrics

from conftest import REPO

ALERTS = REPO / "config" / "prometheus-alerts.yml"
SOURCES = "\n".join(p.read_text() for p in (REPO / "streamer").rglob("*.py"))
PROMETHEUS_LABELS = {"job", "instance"}     # added by the scrape


def exposed() -> dict[str, set[str]]:
    """Sample name → label names, for every streamer metric (as /metrics would show them)."""
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, prometheus_client.Counter):
            suffixes = ("_total",)
        elif isinstance(metric, prometheus_client.Histogram):
            suffixes = ("_bucket", "_sum", "_count")
        elif isinstance(metric, prometheus_client.Gauge):
            suffixes = ("",)
        else:
            continue
        labels = set(metric._labelnames) | PROMETHEUS_LABELS  # noqa: SLF001 - no public accessor
        for suffix in suffixes:
            names[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())  # noqa: SLF001
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def walk(node, selectors: list, groupings: list) -> None:
    """Collect the vector selectors and the `by (…)` label lists of a parsed expression."""
    if isinstance(node, promql_parser.VectorSelector):
        selectors.append(node)
        return
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        groupings.append((node, list(node.modifier.labels)))
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            walk(child, selectors, groupings)
    for child in getattr(node, "args", None) or []:
        walk(child, selectors, groupings)


def metric_names(node) -> set[str]:
    selectors: list = []
    walk(node, selectors, [])
    return {s.name for s in selectors}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_is_valid_and_names_what_streamer_exposes(rule):
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tree = promql_parser.parse(rule["expr"])            # raises on invalid PromQL
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
                for value in re.split(r"[|]", matcher.value):   # a value streamer really writes
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
    assert "streamer_emails_dead" not in exposed()                  # counters are exposed with _total
    selectors: list = []
    walk(promql_parser.parse('sum by (tenant) (increase(streamer_emails_dead{reasn="x"}[5m]))'), selectors, [])
    (selector,) = selectors
    assert selector.name not in exposed()
    assert [m.name for m in selector.matchers.matchers] == ["reasn"]
