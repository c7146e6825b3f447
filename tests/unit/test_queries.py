"""The PromQL of the builtin metrics (golden text on Istio's names) and of users' metrics."""

from __future__ import annotations

import datetime
import re

import pytest

from modelrollout.providers import queries
from modelrollout.providers.queries import RatioQueries, VariantScope, render_metric_queries
from modelrollout.spec import Builtin, MetricSpec, RatioQuery, Variant
from modelrollout.templates import TemplateError

WINDOW = datetime.timedelta(seconds=90)
SELECTOR = 'reporter="destination", destination_workload="churn-v1", destination_workload_namespace="ml"'

ERROR_RATE = (
    '(sum(rate(istio_requests_total{reporter="destination", destination_workload="churn-v1", '
    'destination_workload_namespace="ml", response_code=~"5.."}[1m30s])) or vector(0)) / '
    'sum(rate(istio_requests_total{reporter="destination", destination_workload="churn-v1", '
    'destination_workload_namespace="ml"}[1m30s]))'
)
LATENCY_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{"
    'reporter="destination", destination_workload="churn-v1", destination_workload_namespace="ml"}[1m30s])))'
)
LATENCY_P99 = LATENCY_P95.replace("0.95", "0.99")
_REQUESTS = f"istio_requests_total{{{SELECTOR}}}"
# The exact gain of each series over the window (no increase() extrapolation): docs/statistics.md.
REQUEST_COUNT = (
    f"sum(((({_REQUESTS} - ({_REQUESTS} offset 1m30s or min_over_time({_REQUESTS}[1m30s]))) >= 0) "
    f"or {_REQUESTS}))"
)


def test_golden_builtin_queries() -> None:
    assert queries.error_rate("churn-v1", "ml", WINDOW) == ERROR_RATE
    assert queries.latency_quantile(0.95, "churn-v1", "ml", WINDOW) == LATENCY_P95
    assert queries.latency_quantile(0.99, "churn-v1", "ml", WINDOW) == LATENCY_P99
    assert queries.request_count("churn-v1", "ml", WINDOW) == REQUEST_COUNT


@pytest.mark.parametrize(
    ("builtin", "expected"),
    [
        (Builtin.ERROR_RATE, ERROR_RATE),
        (Builtin.LATENCY_P95, LATENCY_P95),
        (Builtin.LATENCY_P99, LATENCY_P99),
    ],
)
def test_every_builtin_has_its_query(builtin: Builtin, expected: str) -> None:
    assert queries.builtin_query(builtin, "churn-v1", "ml", WINDOW) == expected


@pytest.mark.parametrize("query", [ERROR_RATE, LATENCY_P95, REQUEST_COUNT])
def test_builtins_use_istio_names_only(query: str) -> None:
    metrics = set(re.findall(r"([a-z_]+)\{", query))
    labels = set(re.findall(r"([a-z_]+)=~?\"", query))
    assert metrics <= {"istio_requests_total", "istio_request_duration_milliseconds_bucket"}
    assert labels <= {"reporter", "destination_workload", "destination_workload_namespace", "response_code"}
    assert query.count(SELECTOR) == query.count("{")  # every selector picks the variant, server side


@pytest.mark.parametrize(
    ("window", "rendered"),
    [
        (datetime.timedelta(seconds=30), "[30s]"),
        (datetime.timedelta(minutes=5), "[5m]"),
        (datetime.timedelta(hours=1, seconds=1), "[1h1s]"),
        (datetime.timedelta(milliseconds=1500), "[1s500ms]"),
    ],
)
def test_window_is_a_promql_duration(window: datetime.timedelta, rendered: str) -> None:
    query = queries.request_count("w", "ns", window)
    assert f"offset {rendered[1:-1]} or min_over_time(" in query and f"}}{rendered}))" in query


def test_builtin_values_are_escaped() -> None:
    query = queries.error_rate('we"ird\\', "n\ns", WINDOW)
    assert 'destination_workload="we\\"ird\\\\"' in query
    assert 'destination_workload_namespace="n\\ns"' in query


def test_quantile_must_be_a_fraction() -> None:
    for quantile in (0.0, 1.0, 95.0, -0.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            queries.latency_quantile(quantile, "w", "ns", WINDOW)


# --------------------------------------------------------------------------- metrics of a spec

SCOPE = VariantScope.for_variant(
    Variant(subset="v2", workload="churn-v2"), experiment="churn-v2", namespace="ml", window=WINDOW
)


def test_scope_values_leave_out_what_is_unknown() -> None:
    assert SCOPE.values() == {
        "experiment": "churn-v2",
        "namespace": "ml",
        "workload": "churn-v2",
        "interval": "1m30s",
        "subset": "v2",
    }


def test_builtin_metric() -> None:
    metric = MetricSpec(name="latency", builtin=Builtin.LATENCY_P95, max=250)
    expected = queries.latency_quantile(0.95, "churn-v2", "ml", WINDOW)
    assert render_metric_queries(metric, SCOPE) == expected


def test_query_metric() -> None:
    metric = MetricSpec(
        name="fraud-caught",
        query=(
            'sum(rate(model_fraud_caught_total{workload="{{ workload }}", subset="{{ subset }}"}'
            "[{{ interval }}]))"
        ),
    )
    assert render_metric_queries(metric, SCOPE) == (
        'sum(rate(model_fraud_caught_total{workload="churn-v2", subset="v2"}[1m30s]))'
    )


def test_ratio_metric() -> None:
    metric = MetricSpec(
        name="conversion",
        ratio=RatioQuery(
            success='sum(increase(model_conversions_total{workload="{{ workload }}"}[{{ interval }}]))',
            total='sum(increase(model_requests_total{workload=~"{{ workload }}", e="{{ experiment }}"}[5m]))',
        ),
    )
    assert render_metric_queries(metric, SCOPE) == RatioQueries(
        success='sum(increase(model_conversions_total{workload="churn-v2"}[1m30s]))',
        total='sum(increase(model_requests_total{workload=~"churn-v2", e="churn-v2"}[5m]))',
    )


def test_unset_variable_is_refused() -> None:
    metric = MetricSpec(name="by-host", query='sum(x{host="{{ host }}"})')
    with pytest.raises(TemplateError, match=r"\{\{ host \}\} has no value"):
        render_metric_queries(metric, SCOPE)


def test_misplaced_placeholder_in_a_ratio_is_refused() -> None:
    metric = MetricSpec(
        name="conversion",
        ratio=RatioQuery(success='sum(x{w="{{ workload }}"})', total="sum(x{w={{ workload }}})"),
    )
    with pytest.raises(TemplateError, match="must be inside a quoted string"):
        render_metric_queries(metric, SCOPE)
