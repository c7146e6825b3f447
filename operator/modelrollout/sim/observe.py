"""What Prometheus would answer about one simulated interval, built straight from the counts.

The reconciler observes through PromQL (``providers/queries.py``); the
simulator has the raw counts of each interval in hand, so it builds the same
answers directly: the error rate is errors / requests (NaN without traffic,
as ``0/0`` is in PromQL), a latency quantile is what ``histogram_quantile``
computes from that interval's buckets, and ``requests`` is the interval's
request count.  Counts and histograms ride along for the sequential tests,
exactly as :class:`modelrollout.core.model.MetricSample` carries them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from modelrollout import ports, spec
from modelrollout.core import model
from modelrollout.localstack import traffic

# Istio's bucket edges in ms, ending with Prometheus' +Inf bucket.
EDGES: tuple[float, ...] = (*traffic.ISTIO_DURATION_BUCKETS_MS, math.inf)
QUANTILES: Mapping[spec.Builtin, float] = {spec.Builtin.LATENCY_P95: 0.95, spec.Builtin.LATENCY_P99: 0.99}

_NAN = ports.QueryResult(ports.QueryOutcome.NAN, detail="no requests in the window")


def histogram_quantile(q: float, histogram: Sequence[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` buckets.

    As promql/quantile.go ``bucketQuantile`` does it: buckets sorted by upper
    bound, equal bounds merged, counts forced monotonic; NaN without a +Inf
    bucket, with fewer than two buckets or with no observations; linear
    interpolation inside the bucket holding rank ``q * observations`` (from 0
    for the lowest bucket); the highest finite bound when the rank falls in
    the +Inf bucket.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets: list[list[float]] = []
    for le, count in sorted(histogram, key=lambda bucket: bucket[0]):
        if buckets and buckets[-1][0] == le:
            buckets[-1][1] += count
        else:
            buckets.append([le, count])
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    for i in range(1, len(buckets)):
        buckets[i][1] = max(buckets[i][1], buckets[i - 1][1])
    if len(buckets) < 2:
        return math.nan
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(buckets) - 1) if buckets[i][1] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def histogram(batch: traffic.Batch) -> model.Histogram:
    return tuple(zip(EDGES, batch.bucket_counts.tolist(), strict=True))


def observe(
    experiment: spec.ExperimentSpec, batches: Mapping[str, traffic.Batch]
) -> tuple[tuple[model.MetricSample, ...], dict[str, ports.QueryResult]]:
    """Every builtin metric for every variant of one interval, and requests per variant."""
    histograms = {workload: histogram(batch) for workload, batch in batches.items()}
    samples: list[model.MetricSample] = []
    for metric in experiment.metrics:
        if metric.builtin is spec.Builtin.ERROR_RATE:
            samples.append(
                model.MetricSample(
                    metric.name,
                    {w: _ratio(b.errors, b.requests) for w, b in batches.items()},
                    counts={w: model.Counts(b.errors, b.requests) for w, b in batches.items()},
                )
            )
        elif metric.builtin is not None and metric.builtin in QUANTILES:
            q = QUANTILES[metric.builtin]
            samples.append(
                model.MetricSample(
                    metric.name,
                    {w: _value(histogram_quantile(q, h)) for w, h in histograms.items()},
                    histograms=histograms,
                )
            )
        else:
            raise ValueError(f"metric {metric.name!r}: the simulator measures builtin metrics only")
    requests = {w: ports.QueryResult(ports.QueryOutcome.OK, float(b.requests)) for w, b in batches.items()}
    return tuple(samples), requests


def _ratio(events: int, total: int) -> ports.QueryResult:
    return ports.QueryResult(ports.QueryOutcome.OK, events / total) if total else _NAN


def _value(value: float) -> ports.QueryResult:
    return _NAN if math.isnan(value) else ports.QueryResult(ports.QueryOutcome.OK, value)
