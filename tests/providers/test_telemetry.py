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
import threading
import time
from typing import Any

import pytest

from modelrollout.localstack.prometheus import PrometheusServer
from modelrollout.ports import QueryOutcome, SeriesResult
from modelrollout.providers import queries, telemetry
from modelrollout.providers.prometheus import PrometheusProvider

WINDOW = datetime.timedelta(seconds=10)


def _settled_instant(prometheus: PrometheusServer, span: datetime.timedelta = WINDOW) -> datetime.datetime:
    """A whole second in the past before which ``span`` of the session's traffic is stored."""
    provider = prometheus.provider()
    deadline = time.monotonic() + 40
    while True:
        at = datetime.datetime.fromtimestamp(math.floor(time.time()) - 2, datetime.UTC)
        promql = queries.request_count("reviews-v1", "shop", span)
        result = provider.query(promql, at)
        if result.ok and result.value is not None and result.value > 9 * span.total_seconds():
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


def _counter(provider: PrometheusProvider, workload: str, at: datetime.datetime) -> float:
    """The workload's request counter as stored at ``at`` (the last scrape at or before it)."""
    result = provider.query(
        f'sum(istio_requests_total{{reporter="destination", destination_workload="{workload}"}})', at
    )
    assert result.ok and result.value is not None, result
    return result.value


def _tile(end: datetime.datetime, window: datetime.timedelta, count: int) -> list[datetime.datetime]:
    return [end - window * (count - 1 - i) for i in range(count)]


def test_tiled_windows_add_up_to_exactly_what_the_counter_gained(prometheus: PrometheusServer) -> None:
    """Bursts of 300 every 3 s, 2 s windows: increase() would extrapolate a burst into 300-600."""
    window = datetime.timedelta(seconds=2)
    at = _settled_instant(prometheus, window * 8)
    provider = prometheus.provider()
    istio = telemetry.Telemetry(provider)
    ends = _tile(at, window, 6)
    gained = [istio.requests("bursty-v1", "shop", window, end) for end in ends]
    assert all(g.ok for g in gained), gained
    values = [g.value or 0.0 for g in gained]
    # Each window holds whole bursts -- never a burst stretched to the window's edges...
    assert all(v in (0.0, 300.0, 600.0) for v in values), values
    # ...and together they hold exactly what the counter gained: no request counted twice or lost.
    assert sum(values) == _counter(provider, "bursty-v1", ends[-1]) - _counter(
        provider, "bursty-v1", ends[0] - window
    )
    assert sum(values) >= 300  # 12 s hold at least three bursts' ends


def test_a_restarted_proxy_counts_what_it_served_since_the_restart(prometheus: PrometheusServer) -> None:
    window = datetime.timedelta(seconds=2)
    at = _settled_instant(prometheus, window * 9)
    istio = telemetry.Telemetry(prometheus.provider())
    values = []
    for end in _tile(at, window, 8):  # 16 s: three restarts of a 10 requests/s proxy
        result = istio.requests("restarting-v1", "shop", window, end)
        assert result.ok and result.value is not None, result
        values.append(result.value)
    # Never negative, never more than the window (plus a scrape's jitter) could hold.
    assert all(0 <= v <= 10 * (2 + 1.5) for v in values), values
    assert sum(values) > 0


def test_a_new_scrape_target_does_not_bring_its_past_into_the_window(
    prometheus: PrometheusServer, exporter: Any
) -> None:
    """late-v1 is first scraped 8 s in, 1000 requests on its counter: not this window's traffic."""
    birth = exporter.wall_time(8.0)
    while time.time() < birth + 4:
        time.sleep(0.5)
    istio = telemetry.Telemetry(prometheus.provider())
    window = datetime.timedelta(seconds=2)
    start = datetime.datetime.fromtimestamp(math.floor(birth) - 1, datetime.UTC)
    for end in _tile(start + window * 2, window, 2):  # the window around its first scrape, and the next
        result = istio.requests("late-v1", "shop", window, end)
        assert result.outcome is QueryOutcome.EMPTY or (
            result.ok and result.value is not None and 0 <= result.value <= 10 * (2 + 1.5)
        ), (end, result)


class _SlowProvider:
    """Answers every batched query after ``delay`` seconds, with one series per workload."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.asked: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def query_series(self, promql: str, at: datetime.datetime | None = None) -> SeriesResult:
        with self._lock:
            self.asked.append(promql)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
        labels = {"destination_workload": "a", "destination_workload_namespace": "ns"}
        if "le)" in promql:  # the buckets
            return SeriesResult(QueryOutcome.OK, tuple(({**labels, "le": le}, 5.0) for le in ("100", "+Inf")))
        return SeriesResult(QueryOutcome.OK, ((labels, 5.0),))


def test_prefetch_asks_the_batched_queries_at_once_and_each_only_once() -> None:
    provider = _SlowProvider(delay=0.5)
    istio = telemetry.Telemetry(provider)  # type: ignore[arg-type]  # the cache needs query_series only
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    started = time.monotonic()
    istio.prefetch([telemetry.REQUESTS, telemetry.ERRORS, telemetry.BUCKETS], WINDOW, at)
    assert istio.requests("a", "ns", WINDOW, at).value == 5.0
    assert istio.errors("a", "ns", WINDOW, at).value == 5.0
    assert [value for _, value in istio.buckets("a", "ns", WINDOW, at).series] == [5.0, 5.0]
    assert time.monotonic() - started < 1.2  # the slowest of the three, not their sum (1.5 s)
    assert provider.most_at_once == 3 and len(provider.asked) == istio.queries == 3
    istio.prefetch([telemetry.REQUESTS, telemetry.ERRORS], WINDOW, at)  # answered already: not asked again
    assert istio.requests("b", "ns", WINDOW, at).outcome is QueryOutcome.EMPTY
    assert len(provider.asked) == 3


def test_a_failed_prefetch_fails_every_asker_with_its_cause() -> None:
    class Broken(_SlowProvider):
        def query_series(self, promql: str, at: datetime.datetime | None = None) -> SeriesResult:
            raise ConnectionResetError("the connection broke")

    provider = Broken(delay=0)
    istio = telemetry.Telemetry(provider)  # type: ignore[arg-type]
    istio.prefetch([telemetry.REQUESTS], WINDOW, None)
    for workload in ("a", "b"):
        with pytest.raises(ConnectionResetError, match="the connection broke"):
            istio.requests(workload, "ns", WINDOW, None)
