"""Turn a spec's metrics into query results per variant: the observing half of a tick.

This is the only place that knows how a metric becomes PromQL: builtins use
Istio's standard telemetry, ``query:`` and ``ratio:`` are filled from
templates (refused, never sent, when a value cannot be placed safely).
Failures stay typed results -- the core decides what missing data means.
"""

from __future__ import annotations

import datetime
import math

from modelrollout import ports, spec, templates
from modelrollout.core import model
from modelrollout.providers import queries


def variants(experiment: spec.ExperimentSpec) -> tuple[spec.Variant, ...]:
    return (experiment.baseline, experiment.the_candidate)


def measure(
    experiment: spec.ExperimentSpec,
    name: str,
    namespace: str,
    provider: ports.MetricProvider,
    window: datetime.timedelta,
) -> tuple[tuple[model.MetricSample, ...], dict[str, ports.QueryResult]]:
    """Every metric for every variant over ``window``, plus requests per variant.

    Besides each metric's value, the window's raw material for the sequential
    tests: error and request counts, latency histograms, a ratio's two counts.
    """
    scopes = {
        v.workload: queries.VariantScope.for_variant(v, experiment=name, namespace=namespace, window=window)
        for v in variants(experiment)
    }
    requests = {
        workload: provider.query(queries.request_count(workload, namespace, window)) for workload in scopes
    }
    samples = []
    for metric in experiment.metrics:
        results: dict[str, ports.QueryResult] = {}
        counts: dict[str, model.Counts] = {}
        histograms: dict[str, model.Histogram] = {}
        for workload, scope in scopes.items():
            results[workload], count = _query_metric(provider, metric, scope)
            if metric.builtin is spec.Builtin.ERROR_RATE:
                count = _error_counts(provider, workload, namespace, window, requests[workload])
            elif metric.builtin is not None:
                histogram = _histogram(
                    provider.query_series(queries.duration_buckets(workload, namespace, window))
                )
                if histogram is not None:
                    histograms[workload] = histogram
            if count is not None:
                counts[workload] = count
        samples.append(
            model.MetricSample(
                metric.name,
                results,
                counts=counts if len(counts) == len(scopes) else None,
                histograms=histograms if len(histograms) == len(scopes) else None,
            )
        )
    return tuple(samples), requests


def _error_counts(
    provider: ports.MetricProvider,
    workload: str,
    namespace: str,
    window: datetime.timedelta,
    requests: ports.QueryResult,
) -> model.Counts | None:
    if not requests.ok or requests.value is None:
        return None
    errors = provider.query(queries.error_count(workload, namespace, window))
    if not errors.ok or errors.value is None:
        return None
    return model.Counts(min(errors.value, requests.value), requests.value)


def _histogram(result: ports.SeriesResult) -> model.Histogram | None:
    """Buckets sorted by ``le`` (``+Inf`` last), or None without a usable answer."""
    if not result.ok:
        return None
    buckets = []
    for labels, value in result.series:
        try:
            edge = float(labels["le"])  # "+Inf" parses as inf
        except (KeyError, ValueError):
            return None
        if math.isfinite(value):
            buckets.append((edge, value))
    buckets.sort()
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    return tuple(buckets)


def _query_metric(
    provider: ports.MetricProvider, metric: spec.MetricSpec, scope: queries.VariantScope
) -> tuple[ports.QueryResult, model.Counts | None]:
    """The metric's value for one variant, and its counts when it is a ``ratio:``."""
    try:
        rendered = queries.render_metric_queries(metric, scope)
    except templates.TemplateError as e:
        return ports.QueryResult(ports.QueryOutcome.INVALID_QUERY, detail=f"refused to send: {e}"), None
    if isinstance(rendered, str):
        return provider.query(rendered), None
    success = provider.query(rendered.success)
    if not success.ok:
        return success, None
    total = provider.query(rendered.total)
    if not total.ok:
        return total, None
    assert success.value is not None and total.value is not None  # ok results carry values
    if total.value == 0:
        return ports.QueryResult(ports.QueryOutcome.NAN, detail="the total is 0: nothing to divide by"), None
    counts = model.Counts(min(success.value, total.value), total.value)
    return ports.QueryResult(ports.QueryOutcome.OK, success.value / total.value), counts
