"""What /metrics exposes and what a PromQL expression names: shared by the alert rules' test and
the Grafana dashboard's test."""

import prometheus_client
import promql_parser

from streamer import metrics

PROMETHEUS_LABELS = {"job", "instance"}  # added by the scrape


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
