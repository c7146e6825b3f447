"""The Grafana dashboard: valid JSON that Grafana's sidecar can load, panels for what an operator
of rollouts looks at, and PromQL that real Prometheus parses and that reads only the operator's
own metrics (operator/modelrollout/metrics.py). Whether the queries find the operator's series
is tried on a live operator in test_rbac_matches_usage.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from modelrollout.localstack.prometheus import PrometheusNotFound, PrometheusServer, find_binary

from conftest import DASHBOARD, dashboard, dashboard_queries, fill_variables, panels, query_prometheus

# The operator's metrics, as exposed (counters with _total); label sets in the comments.
OPERATOR_METRICS = {
    "modelrollout_experiment_phase",  # namespace, name, phase: 1 for the current phase
    "modelrollout_experiment_step",  # namespace, name
    "modelrollout_experiment_candidate_weight",  # namespace, name (percent)
    "modelrollout_metric_value",  # namespace, name, metric, variant
    "modelrollout_metric_evidence",  # namespace, name, metric
    "modelrollout_metric_evidence_bound",  # namespace, name, metric
    "modelrollout_decisions_total",  # namespace, name, decision
    "modelrollout_reconcile_duration_seconds",  # histogram, no labels
    "modelrollout_reconcile_errors_total",  # namespace, name
    "modelrollout_webhook_calls_total",  # type, result
    "modelrollout_notifications_total",  # kind, result
}
PER_EXPERIMENT = OPERATOR_METRICS - {
    "modelrollout_reconcile_duration_seconds",
    "modelrollout_webhook_calls_total",
    "modelrollout_notifications_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# What the test fills Grafana's variables with to send a query to Prometheus.
VARIABLES = {"namespace": ".*", "experiment": ".*", "__rate_interval": "1m", "datasource": "prometheus"}

# PromQL words that are not metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are not functions,
    keywords, label names in matchers or groupings, or numbers)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGE.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.groups()
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def base_name(series: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in OPERATOR_METRICS:
            return series[: -len(suffix)]
    return series


def test_metric_name_extraction_is_not_fooled() -> None:
    """A control for the checker below."""
    expr = (
        'sum by (namespace, name) (rate(foo_total{name=~"a|b", le="0.5"}[5m])) '
        "/ on (namespace) group_left bar + histogram_quantile(0.9, baz_bucket) > bool 2"
    )
    assert metric_names(expr) == {"foo_total", "bar", "baz_bucket"}


def test_dashboard_is_valid_json_with_a_stable_uid() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "modelrollout"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # A provisioned dashboard must not pin a datasource uid of the author's Grafana.
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_templating_has_datasource_namespace_and_experiment() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name, label in (("namespace", "namespace"), ("experiment", "name")):
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert re.fullmatch(
            rf"label_values\(modelrollout_experiment_phase(\{{.*\}})?, {label}\)", variable["definition"]
        )
    assert 'namespace=~"$namespace"' in variables["experiment"]["definition"]


def test_the_panels_an_operator_of_rollouts_needs() -> None:
    board = dashboard()
    by_metric: dict[str, list[dict]] = {}
    for panel in panels(board):
        for target in panel.get("targets") or []:
            for name in metric_names(target["expr"]):
                by_metric.setdefault(base_name(name), []).append(panel)
    weights = by_metric["modelrollout_experiment_candidate_weight"]
    assert any(p["type"] == "timeseries" for p in weights), "weights over time"
    assert by_metric["modelrollout_metric_value"][0]["type"] == "timeseries", "guardrails per variant"
    assert any("variant" in t["legendFormat"] for t in by_metric["modelrollout_metric_value"][0]["targets"])
    evidence = by_metric["modelrollout_metric_evidence"][0]
    assert evidence is by_metric["modelrollout_metric_evidence_bound"][0], "evidence and its bound together"
    assert evidence["fieldConfig"]["defaults"]["custom"]["scaleDistribution"] == {"type": "log", "log": 10}
    decisions = by_metric["modelrollout_decisions_total"][0]
    assert all("rate(" in t["expr"] for t in decisions["targets"]), "decisions as a rate"
    assert "decision" in decisions["targets"][0]["expr"]
    assert any(p["type"] == "table" for p in by_metric["modelrollout_experiment_phase"]), "phase table"
    assert "modelrollout_reconcile_duration_seconds" in by_metric, "reconcile latency"
    assert "modelrollout_reconcile_errors_total" in by_metric, "reconcile errors"


def test_queries_read_only_the_operators_metrics() -> None:
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 10
    used = set()
    for title, expr in queries:
        names = {base_name(n) for n in metric_names(expr)}
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= OPERATOR_METRICS, f"{title}: unknown metric(s) {names - OPERATOR_METRICS} in {expr!r}"
        used |= names
        for name in names & PER_EXPERIMENT:  # every per-experiment series follows the two variables
            assert re.search(rf'{name}\{{[^}}]*namespace=~"\$namespace"[^}}]*name=~"\$experiment"', expr), (
                expr
            )
    assert used == OPERATOR_METRICS, f"metrics without a panel: {OPERATOR_METRICS - used}"


def test_counters_are_read_through_rate_and_histograms_through_quantiles() -> None:
    for title, expr in dashboard_queries(dashboard()):
        for name in metric_names(expr):
            if name.endswith("_total"):
                assert re.search(rf"\b(rate|increase)\({name}\b", expr), (title, expr)
            if name.endswith("_bucket"):
                assert "histogram_quantile(" in expr and "by (le)" in expr, (title, expr)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus with nothing to scrape: it parses and evaluates, in well under a second."""
    try:
        find_binary()
    except PrometheusNotFound as e:
        pytest.skip(str(e))
    with PrometheusServer([]) as server:
        yield server


def test_real_prometheus_parses_every_query(prometheus: PrometheusServer) -> None:
    # A control first: a broken expression is refused, so "success" below means parsed.
    broken = query_prometheus(prometheus.url, "sum by (le (rate(x[1m]))")
    assert broken["status"] == "error" and broken["errorType"] == "bad_data"
    queries = [(t, fill_variables(e, VARIABLES)) for t, e in dashboard_queries(dashboard())]
    variables = dashboard()["templating"]["list"]
    queries += [
        (v["name"], f"count({m.group(1)})")
        for v in variables
        if (m := re.fullmatch(r"label_values\((.*), \w+\)", v.get("definition", "")))
    ]
    queries = [(t, fill_variables(e, VARIABLES)) for t, e in queries]
    for title, expr in queries:
        answer = query_prometheus(prometheus.url, expr)
        assert answer["status"] == "success", f"{title}: {expr!r}: {answer.get('error')}"
