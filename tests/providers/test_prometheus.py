"""PrometheusProvider against a real Prometheus: every outcome, and the builtin queries.

Each test registers metrics under names of its own in the shared exporter,
fully set before they are registered, so the first scrape that has them has
their final values; ``wait_for`` then only waits for that scrape.
"""

from __future__ import annotations

import datetime
import math
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import Gauge

from modelrollout import templates
from modelrollout.localstack.prometheus import PrometheusServer
from modelrollout.ports import QueryOutcome, QueryResult
from modelrollout.providers import queries
from modelrollout.providers.prometheus import PrometheusProvider

if TYPE_CHECKING:  # the fixture's type; conftest is not importable as a module
    from conftest import Exporter

WINDOW = datetime.timedelta(seconds=10)
SECRET = "Bearer s3cret-token"


def _measured(result: QueryResult) -> bool:
    return result.outcome is not QueryOutcome.EMPTY


def _export(exporter: Exporter, name: str, values: dict[str, float]) -> None:
    """Export gauge ``name`` with one series per ``variant`` label value in ``values``."""
    gauge = Gauge(name, "test gauge", ["variant"], registry=None)
    for variant, value in values.items():
        gauge.labels(variant).set(value)
    exporter.registry.register(gauge)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --------------------------------------------------------------------------- outcomes


def test_ok_with_the_value(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_ok", {"a": 3.25})
    result = prometheus.wait_for("t_ok", _measured)
    assert result == QueryResult(QueryOutcome.OK, 3.25)


def test_scalar_results(prometheus: PrometheusServer) -> None:
    provider = prometheus.provider()
    assert provider.query("2 * 3") == QueryResult(QueryOutcome.OK, 6.0)
    assert provider.query("0 / 0").outcome is QueryOutcome.NAN
    assert provider.query("1 / 0").outcome is QueryOutcome.INF
    assert provider.query("-1 / 0").detail == "the value is -Inf"


def test_empty_when_no_series(prometheus: PrometheusServer) -> None:
    result = prometheus.provider().query('t_never_exported{variant="a"}')
    assert result.outcome is QueryOutcome.EMPTY
    assert result.value is None


def test_nan_gauge(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_nan", {"a": math.nan})
    result = prometheus.wait_for("t_nan", _measured)
    assert result.outcome is QueryOutcome.NAN
    assert result.value is None
    assert result.outcome.is_no_data


def test_nan_from_zero_over_zero(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_zero", {"a": 0.0})
    prometheus.wait_for("t_zero", _measured)
    assert prometheus.provider().query("sum(t_zero) / sum(t_zero)").outcome is QueryOutcome.NAN


def test_inf_gauges(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_inf", {"up": math.inf, "down": -math.inf})
    prometheus.wait_for("t_inf", _measured)
    provider = prometheus.provider()
    up, down = provider.query('t_inf{variant="up"}'), provider.query('t_inf{variant="down"}')
    assert up == QueryResult(QueryOutcome.INF, detail="the value is +Inf")
    assert down == QueryResult(QueryOutcome.INF, detail="the value is -Inf")


def test_multiple_series_named_in_detail(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_multi", {"v1": 1.0, "v2": 2.0})
    result = prometheus.wait_for("t_multi", _measured)
    assert result.outcome is QueryOutcome.MULTIPLE_SERIES
    assert result.value is None
    assert result.detail.startswith("the query returned 2 series, expected 1")
    assert 'variant="v1"' in result.detail
    assert 'variant="v2"' in result.detail
    # Aggregating it is the fix the detail suggests.
    assert prometheus.provider().query("sum(t_multi)") == QueryResult(QueryOutcome.OK, 3.0)


def test_many_series_detail_is_truncated(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_many", {f"variant-with-a-long-name-{n:02}": n for n in range(40)})
    result = prometheus.wait_for("t_many", _measured)
    assert result.outcome is QueryOutcome.MULTIPLE_SERIES
    assert result.detail.startswith("the query returned 40 series")
    assert len(result.detail) <= 300
    assert "\n" not in result.detail


def test_invalid_query_carries_prometheus_message(prometheus: PrometheusServer) -> None:
    result = prometheus.provider().query("sum(rate(x[1m])")
    assert result.outcome is QueryOutcome.INVALID_QUERY
    assert "parse error" in result.detail
    assert "unclosed left parenthesis" in result.detail


@pytest.mark.parametrize(
    ("promql", "detail"),
    [
        ("vector(1)[5s:1s]", "range vector"),
        ('"a string"', "returns a string"),
    ],
)
def test_results_that_are_not_one_number(prometheus: PrometheusServer, promql: str, detail: str) -> None:
    result = prometheus.provider().query(promql)
    assert result.outcome is QueryOutcome.INVALID_QUERY
    assert detail in result.detail


def test_timeout(silent_port: int) -> None:
    provider = PrometheusProvider(
        f"http://127.0.0.1:{silent_port}", timeout=0.5, headers={"Authorization": SECRET}
    )
    started = time.monotonic()
    result = provider.query("1")
    elapsed = time.monotonic() - started
    provider.close()
    assert result.outcome is QueryOutcome.TIMEOUT
    assert 0.4 < elapsed < 2.0  # one attempt, no retries
    assert "0.5 s" in result.detail
    assert "s3cret" not in result.detail


def test_unreachable_closed_port(closed_port: int) -> None:
    provider = PrometheusProvider(
        f"http://user:pa55word@127.0.0.1:{closed_port}/", headers={"Authorization": SECRET}
    )
    result = provider.query("1")
    online = provider.is_online()
    provider.close()
    assert result.outcome is QueryOutcome.UNREACHABLE
    assert "Connection refused" in result.detail
    assert f"http://127.0.0.1:{closed_port}" in result.detail
    assert "pa55word" not in result.detail
    assert "s3cret" not in result.detail
    assert online is False


def test_unreachable_tls_failure(prometheus: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus.url.replace("http://", "https://"))
    result = provider.query("1")
    provider.close()
    assert result.outcome is QueryOutcome.UNREACHABLE
    assert "SSL" in result.detail


def test_error_on_http_error_status(prometheus: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus.url + "/no/such/prefix")
    result = provider.query("1")
    provider.close()
    assert result == QueryResult(QueryOutcome.ERROR, detail="Prometheus answered HTTP 404")


def test_error_on_an_answer_that_is_not_prometheus(exporter: Exporter) -> None:
    provider = PrometheusProvider(exporter.url)  # answers 200 with the text exposition format
    result = provider.query("1")
    provider.close()
    assert result.outcome is QueryOutcome.ERROR
    assert result.detail.startswith("unusable answer from Prometheus")


def test_is_online_and_trailing_slash(prometheus: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus.url + "/", headers={"Authorization": SECRET})
    assert provider.url == prometheus.url
    assert provider.is_online() is True
    assert provider.query("1") == QueryResult(QueryOutcome.OK, 1.0)
    provider.close()


# --------------------------------------------------------------------------- escaping, decoded by Prometheus


@pytest.mark.parametrize(
    "value",
    [
        'quote " and backslash \\',
        "new\nline\ttab",
        "{{ braces }}",
        "$1 ${x}",
        "ünïcödé ✓ \u2028 \ufffd \x00",
        "`'",
    ],
)
def test_prometheus_decodes_rendered_strings_to_the_value(prometheus: PrometheusServer, value: str) -> None:
    client = PrometheusConnect(prometheus.url)
    for quote in "\"'":
        literal = quote + "{{ workload }}" + quote
        template = f"label_replace(vector(1), {quote}decoded{quote}, {literal}, '', '')"
        series = client.custom_query(templates.render(template, {"workload": value}))
        assert series[0]["metric"]["decoded"] == value
    client.close()


def test_regex_matcher_matches_the_value_only(prometheus: PrometheusServer, exporter: Exporter) -> None:
    _export(exporter, "t_regex", {"a.b": 1.0, "axb": 10.0, "a.b|axb": 100.0})
    prometheus.wait_for("sum(t_regex)", lambda result: result.value == 111.0)
    provider = prometheus.provider()
    for value, expected in [("a.b", 1.0), ("axb", 10.0), ("a.b|axb", 100.0)]:
        promql = templates.render('sum(t_regex{variant=~"{{ workload }}"})', {"workload": value})
        assert provider.query(promql) == QueryResult(QueryOutcome.OK, expected)
    promql = templates.render('sum(t_regex{variant!~"{{ workload }}"})', {"workload": "a.b"})
    assert provider.query(promql) == QueryResult(QueryOutcome.OK, 110.0)


# --------------------------------------------------------------------------- builtins on Istio's metrics


def _wait_until_measured(prometheus: PrometheusServer, promql: str) -> QueryResult:
    return prometheus.wait_for(promql, lambda result: result.outcome is not QueryOutcome.EMPTY, timeout=30)


def test_error_rate_counts_only_destination_5xx_of_the_workload(prometheus: PrometheusServer) -> None:
    result = _wait_until_measured(prometheus, queries.error_rate("reviews-v1", "shop", WINDOW))
    assert result.outcome is QueryOutcome.OK
    assert result.value == pytest.approx(0.1, abs=1e-6)


def test_error_rate_without_errors_is_zero(prometheus: PrometheusServer) -> None:
    result = _wait_until_measured(prometheus, queries.error_rate("reviews-v2", "shop", WINDOW))
    assert result == QueryResult(QueryOutcome.OK, 0.0)


def test_error_rate_without_traffic_is_no_data(prometheus: PrometheusServer) -> None:
    # Once the busy workload has a rate, the idle one (scraped alongside) has one too: 0/0.
    _wait_until_measured(prometheus, queries.error_rate("reviews-v1", "shop", WINDOW))
    provider = prometheus.provider()
    assert provider.query(queries.error_rate("idle-v1", "shop", WINDOW)).outcome is QueryOutcome.NAN
    assert provider.query(queries.error_rate("absent-v1", "shop", WINDOW)).outcome is QueryOutcome.EMPTY


@pytest.mark.parametrize(
    ("quantile", "workload", "expected"),
    [(0.95, "reviews-v1", 175.0), (0.99, "reviews-v1", 235.0), (0.95, "reviews-v2", 24.25)],
)
def test_latency_quantiles(
    prometheus: PrometheusServer, quantile: float, workload: str, expected: float
) -> None:
    result = _wait_until_measured(prometheus, queries.latency_quantile(quantile, workload, "shop", WINDOW))
    assert result.outcome is QueryOutcome.OK
    assert result.value == pytest.approx(expected, rel=1e-6)


def test_latency_without_traffic_is_no_data(prometheus: PrometheusServer) -> None:
    _wait_until_measured(prometheus, queries.latency_quantile(0.95, "reviews-v1", "shop", WINDOW))
    idle = prometheus.provider().query(queries.latency_quantile(0.95, "idle-v1", "shop", WINDOW))
    absent = prometheus.provider().query(queries.latency_quantile(0.95, "absent-v1", "shop", WINDOW))
    assert idle.outcome is QueryOutcome.NAN
    assert absent.outcome is QueryOutcome.EMPTY


def test_request_count_over_the_window(prometheus: PrometheusServer) -> None:
    # reviews-v1 serves 10 requests/s: 100 over 10 s, give or take a scrape's jitter.
    promql = queries.request_count("reviews-v1", "shop", WINDOW)
    result = prometheus.wait_for(promql, lambda r: r.ok and r.value is not None and r.value > 90, timeout=30)
    assert result.value == pytest.approx(100.0, rel=0.1)
