"""One real Prometheus per test session, scraping one in-process exporter.

Prometheus needs ~5-15 s before its first useful answer, so it is started
once and shared; each test registers metrics under names of its own.  The
exporter also serves Istio's standard metrics for a few workloads from the
start (see :class:`IstioTraffic`), so they have rates by the time the
builtin-query tests run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from modelrollout.localstack.prometheus import PrometheusNotFound, PrometheusServer, find_binary

# The buckets Istio's proxies use for istio_request_duration_milliseconds.
ISTIO_BUCKETS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
# Istio labels both metrics with these (and more that the queries must not depend on).
_LABELS = (
    "reporter",
    "source_workload",
    "destination_workload",
    "destination_workload_namespace",
    "response_code",
)


@dataclasses.dataclass(frozen=True)
class Flow:
    """Requests of one Istio label set, arriving at a constant rate."""

    reporter: str
    workload: str
    namespace: str
    code: str
    per_second: float
    # (Istio bucket bound in ms, share of requests at or below it), cumulative, ending at 1.
    latency: tuple[tuple[float, float], ...] = ((25, 1),)
    already: float = 0.0  # requests counted before the exporter started
    burst_every: float = 0.0  # > 0: requests arrive in bursts, all of a period's at its end
    restart_every: float = 0.0  # > 0: the proxy restarts, its counter back at 0, this often
    appears_after: float = 0.0  # > 0: first exported this long after the start (a new scrape target)

    def count(self, elapsed: float) -> float | None:
        """The counter at ``elapsed`` seconds, None while the series is not exported yet."""
        if elapsed < self.appears_after:
            return None
        if self.restart_every:
            elapsed %= self.restart_every
        if self.burst_every:
            elapsed = self.burst_every * (elapsed // self.burst_every)
        return self.already + self.per_second * elapsed


# Ground truth for the builtin-query tests; each comment is what the query must see.
ISTIO_FLOWS = (
    # shop/reviews-v1: 10 % errors, p95 175 ms, p99 235 ms.
    Flow("destination", "reviews-v1", "shop", "200", 9, ((25, 0.5), (50, 0.8), (100, 0.9), (250, 1))),
    Flow("destination", "reviews-v1", "shop", "500", 1, ((25, 0.5), (50, 0.8), (100, 0.9), (250, 1))),
    # ...which the source side reports differently: must not be counted.
    Flow("source", "reviews-v1", "shop", "503", 5, ((500, 1),)),
    # ...nor may the same workload name in another namespace be.
    Flow("destination", "reviews-v1", "other", "500", 10, ((500, 1),)),
    # shop/reviews-v2: no 5xx series at all (4xx are not errors), p95 24.25 ms.
    Flow("destination", "reviews-v2", "shop", "200", 8, ((25, 1),)),
    Flow("destination", "reviews-v2", "shop", "404", 2, ((25, 1),)),
    # shop/idle-v1: served requests once, none any more.
    Flow("destination", "idle-v1", "shop", "200", 0, ((25, 1),), already=42),
    # Counters that do not grow smoothly: 300 requests every 3 s; a proxy restarting every 5 s;
    # a target first scraped 8 s in with 1000 requests behind it.
    Flow("destination", "bursty-v1", "shop", "200", 100, burst_every=3),
    Flow("destination", "restarting-v1", "shop", "200", 10, restart_every=5),
    Flow("destination", "late-v1", "shop", "200", 10, already=1000, appears_after=8),
)


class IstioTraffic(Collector):
    """``istio_requests_total`` and ``istio_request_duration_milliseconds`` for ``flows``.

    Every value is computed from the elapsed time at collection, so each
    scrape is self-consistent and ratios and quantiles are exact.
    """

    def __init__(self, flows: Iterable[Flow]) -> None:
        self.flows = tuple(flows)
        self.started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        elapsed = time.monotonic() - self.started
        requests = CounterMetricFamily("istio_requests_total", "Requests.", labels=_LABELS)
        durations = HistogramMetricFamily("istio_request_duration_milliseconds", "Duration.", labels=_LABELS)
        for flow in self.flows:
            labels = [flow.reporter, "productpage-v1", flow.workload, flow.namespace, flow.code]
            count = flow.count(elapsed)
            if count is None:
                continue
            requests.add_metric(labels, count)
            buckets = [(str(le), count * _share_at_or_below(flow.latency, le)) for le in ISTIO_BUCKETS]
            # The sum is required by the format but read by no query here.
            durations.add_metric(labels, buckets=[*buckets, ("+Inf", count)], sum_value=0.0)
        return [requests, durations]


def _share_at_or_below(latency: tuple[tuple[float, float], ...], bound: float) -> float:
    return max((share for upper, share in latency if upper <= bound), default=0.0)


@dataclasses.dataclass(frozen=True)
class Exporter:
    registry: CollectorRegistry
    target: str  # host:port, as Prometheus scrapes it
    traffic: IstioTraffic

    def wall_time(self, elapsed: float) -> float:
        """The Unix time at which the traffic had run ``elapsed`` seconds."""
        return time.time() - (time.monotonic() - self.traffic.started) + elapsed

    @property
    def url(self) -> str:
        return f"http://{self.target}"


@pytest.fixture(scope="session")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    traffic = IstioTraffic(ISTIO_FLOWS)
    registry.register(traffic)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(registry, f"127.0.0.1:{server.server_port}", traffic)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    try:
        find_binary()
    except PrometheusNotFound as e:
        pytest.skip(str(e))
    with PrometheusServer([exporter.target]) as server:
        yield server
