"""Batched Istio telemetry against a real Prometheus: the same numbers as the per-workload queries.

The operator asks three queries per window for every workload at once and
computes error rates and latency quantiles itself; these tests hold that to
what Prometheus computes -- ``histogram_quantile`` on random histograms, and
the per-workload builtin queries on the session's Istio traffic.
"""

from __future__ import annotations

import datetime
import math
import random
import socket
import time

import pytest

from modelrollout.localstack.prometheus import PrometheusServer
from modelrollout.ports import QueryOutcome
from modelrollout.providers import queries, telemetry
from modelrollout.providers.prometheus import PrometheusProvider

WINDOW = datetime.timedelta(seconds=10)


def _settled_instant(prometheus: PrometheusServer) -> datetime.datetime:
    """A whole second in the past at which a full window of the session's traffic is stored."""
    provider = prometheus.provider()
    deadline = time.monotonic() + 40
    while True:
        at = datetime.datetime.fromtimestamp(math.floor(time.time()) - 2, datetime.UTC)
        promql = queries.request_count("reviews-v1", "shop", WINDOW)
        result = provider.query(promql, at)
        if result.ok and result.value is not None and result.value > 90:
            return at
        assert time.monotonic() < deadline, result
        time.sleep(0.5)


def _literal_histogram(buckets: list[tuple[float, float]]) -> str:
    """A histogram as a PromQL expression: one ``le`` series per bucket."""
    parts = [
        f'label_replace(vector({count!r}), "le", "{"+Inf" if math.isinf(edge) else repr(edge)}", "", "")'
        for edge, count in buckets
    ]
    return "(" + " or ".join(parts) + ")"


def test_bucket_quantile_is_prometheus_histogram_quantile(prometheus: PrometheusServer) -> None:
    rng = random.Random(7)
    provider = prometheus.provider()
    cases = [[(10.0, 0.0), (math.inf, 0.0)], [(0.0, 3.0), (5.0, 3.0), (math.inf, 4.0)]]
    for _ in range(40):
        edges = sorted(rng.sample([0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000], rng.randint(1, 6)))
        total, buckets = 0.0, []
        for edge in edges:
            total += rng.choice([0.0, rng.uniform(0, 50)])
            buckets.append((float(edge), round(total, 3)))
        buckets.append((math.inf, round(total + rng.choice([0.0, rng.uniform(0, 20)]), 3)))
        cases.append(buckets)
    for buckets in cases:
        for q in (0.5, 0.95, 0.99):
            expected = provider.query(f"histogram_quantile({q}, {_literal_histogram(buckets)})")
            ours = telemetry.bucket_quantile(q, buckets)
            if expected.outcome is QueryOutcome.NAN:
                assert math.isnan(ours), (q, buckets)
            else:
                assert expected.ok, expected
                assert ours == pytest.approx(expected.value, rel=1e-9, abs=1e-9), (q, buckets)


def test_batched_answers_equal_the_per_workload_queries(prometheus: PrometheusServer) -> None:
    at = _settled_instant(prometheus)
    provider = prometheus.provider()
    istio = telemetry.Telemetry(provider)
    for workload in ("reviews-v1", "reviews-v2"):
        requests = istio.requests(workload, "shop", WINDOW, at)
        errors = istio.errors(workload, "shop", WINDOW, at)
        rate = telemetry.ratio(errors, requests)
        assert rate.value == pytest.approx(
            provider.query(queries.error_rate(workload, "shop", WINDOW), at).value
        )
        assert requests.value == pytest.approx(
            provider.query(queries.request_count(workload, "shop", WINDOW), at).value
        )
        histogram = tuple(
            sorted(
                (float(labels["le"]), value)
                for labels, value in istio.buckets(workload, "shop", WINDOW, at).series
            )
        )
        for q in (0.95, 0.99):
            expected = provider.query(queries.latency_quantile(q, workload, "shop", WINDOW), at)
            assert telemetry.bucket_quantile(q, histogram) == pytest.approx(expected.value, rel=1e-9)
    # Everything above -- two workloads, three kinds -- took three queries in all.
    assert istio.queries == 3


def test_known_values_and_what_no_traffic_means(prometheus: PrometheusServer) -> None:
    at = _settled_instant(prometheus)
    istio = telemetry.Telemetry(prometheus.provider())

    def error_rate(workload: str) -> telemetry.QueryResult:
        return telemetry.ratio(
            istio.errors(workload, "shop", WINDOW, at), istio.requests(workload, "shop", WINDOW, at)
        )

    assert error_rate("reviews-v1").value == pytest.approx(
        0.1, abs=1e-6
    )  # other reporters/namespaces excluded
    assert error_rate("reviews-v2") == telemetry.QueryResult(QueryOutcome.OK, 0.0)  # no 5xx series at all
    assert error_rate("idle-v1").outcome is QueryOutcome.NAN  # served once, not in the window
    assert error_rate("absent-v1").outcome is QueryOutcome.EMPTY  # never served: no data, never 0
    assert istio.buckets("absent-v1", "shop", WINDOW, at).outcome is QueryOutcome.EMPTY
    histogram = tuple(
        sorted(
            (float(labels["le"]), value)
            for labels, value in istio.buckets("reviews-v1", "shop", WINDOW, at).series
        )
    )
    assert telemetry.bucket_quantile(0.95, histogram) == pytest.approx(175.0, rel=1e-6)


def test_a_failed_batch_fails_every_workload_with_its_cause() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    provider = PrometheusProvider(f"http://127.0.0.1:{closed_port}", timeout=1)  # the cache holds it weakly
    istio = telemetry.Telemetry(provider)
    for workload in ("a", "b"):
        assert istio.requests(workload, "ns", WINDOW, None).outcome is QueryOutcome.UNREACHABLE
        assert istio.buckets(workload, "ns", WINDOW, None).outcome is QueryOutcome.UNREACHABLE
        assert istio.errors(workload, "ns", WINDOW, None).outcome is QueryOutcome.UNREACHABLE
