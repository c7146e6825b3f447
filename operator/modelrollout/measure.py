"""Turn a spec's metrics into query results per variant: the observing half of a tick.

This is the only place that knows how a metric becomes PromQL: builtins use
Istio's standard telemetry, ``query:`` and ``ratio:`` are filled from
templates (refused, never sent, when a value cannot be placed safely).
Failures stay typed results -- the core decides what missing data means.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Collection

from modelrollout import ports, spec, templates
from modelrollout.core import model
from modelrollout.providers import queries, telemetry


def variants(experiment: spec.ExperimentSpec, skip: Collection[str] = ()) -> tuple[spec.Variant, ...]:
    """The baseline, then every candidate (but those in ``skip``)."""
    return (experiment.baseline, *(v for v in experiment.arms if v.workload not in skip))


def measure(
    experiment: spec.ExperimentSpec,
    name: str,
    namespace: str,
    provider: ports.MetricProvider,
    window: datetime.timedelta,
    at: datetime.datetime | None = None,
    istio: telemetry.Telemetry | None = None,
    skip: Collection[str] = (),
) -> tuple[tuple[model.MetricSample, ...], dict[str, ports.QueryResult]]:
    """Every metric for every variant over the ``window`` ending ``at``, plus requests per variant.

    Besides each metric's value, the window's raw material for the sequential
    tests: error and request counts, latency histograms, a ratio's two counts.
    The builtins come from Istio's telemetry, asked once for all workloads
    (``istio``, shared between experiments); ``query:`` and ``ratio:`` metrics
    are asked per variant.  Candidates in ``skip`` (dropped from an A/B test) are not measured: with
    no traffic, their series would hold nothing, and the sums are only complete with every variant's.
    """
    istio = istio or telemetry.Telemetry(provider)
    scopes = {
        v.workload: queries.VariantScope.for_variant(v, experiment=name, namespace=namespace, window=window)
        for v in variants(experiment, skip)
    }
    builtins = {metric.builtin for metric in experiment.metrics}
    needed = [telemetry.REQUESTS]
    if spec.Builtin.ERROR_RATE in builtins:
        needed.append(telemetry.ERRORS)
    if builtins & set(queries.QUANTILES):
        needed.append(telemetry.BUCKETS)
    istio.prefetch(needed, window, at)  # the three batched answers at once, not one after another
    requests = {workload: istio.requests(workload, namespace, window, at) for workload in scopes}
    samples = []
    for metric in experiment.metrics:
        results: dict[str, ports.QueryResult] = {}
        counts: dict[str, model.Counts] = {}
        histograms: dict[str, model.Histogram] = {}
        sums: dict[str, model.Sums] = {}
        segments: dict[str, dict[str, model.Sums]] = {}
        for workload, scope in scopes.items():
            if metric.builtin is spec.Builtin.ERROR_RATE:
                errors = istio.errors(workload, namespace, window, at)
                results[workload] = telemetry.ratio(errors, requests[workload])
                served = requests[workload].value
                if results[workload].ok and errors.value is not None and served is not None:
                    counts[workload] = model.Counts(min(errors.value, served), served)
            elif metric.builtin is not None:
                buckets = istio.buckets(workload, namespace, window, at)
                histogram = _histogram(buckets)
                results[workload] = _quantile(metric.builtin, buckets, histogram, workload)
                if histogram is not None:
                    histograms[workload] = histogram
            elif metric.ratio is not None or metric.mean is not None:
                results[workload], by_segment = _query_sums(provider, metric, scope, at, experiment.segments)
                if by_segment is not None:
                    sums[workload] = _overall(by_segment)
                    if metric.ratio is not None:
                        counts[workload] = model.Counts(sums[workload].total, sums[workload].count)
                    for segment, part in by_segment.items():
                        if segment:
                            segments.setdefault(segment, {})[workload] = part
            else:
                results[workload], count = _query_metric(provider, metric, scope, at)
                if count is not None:
                    counts[workload] = count
        complete = len(sums) == len(scopes)
        samples.append(
            model.MetricSample(
                metric.name,
                results,
                # What was measured: each comparison (baseline vs one candidate) looks for its own two.
                counts=counts or None,
                histograms=histograms or None,
                sums=sums if complete else None,
                segments={k: v for k, v in segments.items() if len(v) == len(scopes)} if complete else None,
            )
        )
    return tuple(samples), requests


def assignments(
    experiment: spec.ExperimentSpec,
    name: str,
    namespace: str,
    provider: ports.MetricProvider,
    window: datetime.timedelta,
    at: datetime.datetime | None = None,
    skip: Collection[str] = (),
) -> dict[str, ports.QueryResult] | None:
    """Users newly assigned to each variant (but those in ``skip``) over the window
    (``abTest.assignmentQuery``), if set."""
    template = experiment.ab.assignment_query if experiment.is_ab_test else None
    if template is None:
        return None
    found: dict[str, ports.QueryResult] = {}
    for variant in variants(experiment, skip):
        scope = queries.VariantScope.for_variant(variant, experiment=name, namespace=namespace, window=window)
        try:
            found[variant.workload] = provider.query(templates.render(template, scope.values()), at)
        except templates.TemplateError as e:
            found[variant.workload] = ports.QueryResult(
                ports.QueryOutcome.INVALID_QUERY, detail=f"refused to send: {e}"
            )
    return found


def _quantile(
    builtin: spec.Builtin, buckets: ports.SeriesResult, histogram: model.Histogram | None, workload: str
) -> ports.QueryResult:
    if not buckets.ok:  # why there is no histogram: unreachable, timed out, no series...
        return ports.QueryResult(buckets.outcome, detail=buckets.detail)
    if histogram is None:
        return ports.QueryResult(ports.QueryOutcome.EMPTY, detail=f"no latency histogram for {workload}")
    return telemetry.number(telemetry.bucket_quantile(queries.QUANTILES[builtin], histogram))


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


def _query_sums(
    provider: ports.MetricProvider,
    metric: spec.MetricSpec,
    scope: queries.VariantScope,
    at: datetime.datetime | None,
    segments: list[str] | None,
) -> tuple[ports.QueryResult, dict[str, model.Sums] | None]:
    """A ratio or mean metric's value for one variant, and its sums ("" -> overall, or per segment).

    With segments, each query is asked for its series (``sum by (region) (...)``)
    and the series are keyed by their segment labels; the overall sums are the
    sums over all series.
    """
    if metric.ratio is not None:
        templates_ = {"total": metric.ratio.success, "count": metric.ratio.total}
    else:
        assert metric.mean is not None  # the caller asks only for ratio and mean metrics
        templates_ = {"total": metric.mean.sum, "count": metric.mean.count}
        if metric.mean.squares is not None:
            templates_["squares"] = metric.mean.squares
    parts: dict[str, dict[str, float]] = {}
    for field, template in templates_.items():
        try:
            promql = templates.render(template, scope.values())
        except templates.TemplateError as e:
            return ports.QueryResult(ports.QueryOutcome.INVALID_QUERY, detail=f"refused to send: {e}"), None
        if segments:
            answer = provider.query_series(promql, at)
            if not answer.ok:
                return ports.QueryResult(answer.outcome, detail=answer.detail), None
            for labels, value in answer.series:
                key = ",".join(f"{label}={labels.get(label, '')}" for label in segments)
                parts.setdefault(key, {})[field] = parts.get(key, {}).get(field, 0.0) + value
        else:
            result = provider.query(promql, at)
            if not result.ok:
                return result, None
            assert result.value is not None  # ok results carry values
            parts.setdefault("", {})[field] = result.value
    sums = {
        key: model.Sums(fields.get("count", 0.0), fields.get("total", 0.0), fields.get("squares"))
        for key, fields in parts.items()
    }
    overall = _overall(sums)
    if not all(map(math.isfinite, (overall.count, overall.total))):
        return ports.QueryResult(ports.QueryOutcome.INF, detail="a count is not finite"), None
    if overall.count <= 0:
        return ports.QueryResult(ports.QueryOutcome.NAN, detail="the count is 0: nothing to divide by"), None
    return ports.QueryResult(ports.QueryOutcome.OK, overall.total / overall.count), sums


def _overall(sums: dict[str, model.Sums]) -> model.Sums:
    if "" in sums and len(sums) == 1:
        return sums[""]
    squares = [s.squares for s in sums.values()]
    return model.Sums(
        sum(s.count for s in sums.values()),
        sum(s.total for s in sums.values()),
        None if any(q is None for q in squares) else sum(q for q in squares if q is not None),
    )


def _query_metric(
    provider: ports.MetricProvider,
    metric: spec.MetricSpec,
    scope: queries.VariantScope,
    at: datetime.datetime | None,
) -> tuple[ports.QueryResult, model.Counts | None]:
    """The metric's value for one variant, and its counts when it is a ``ratio:``."""
    try:
        rendered = queries.render_metric_queries(metric, scope)
    except templates.TemplateError as e:
        return ports.QueryResult(ports.QueryOutcome.INVALID_QUERY, detail=f"refused to send: {e}"), None
    if isinstance(rendered, str):
        return provider.query(rendered, at), None
    success = provider.query(rendered.success, at)
    if not success.ok:
        return success, None
    total = provider.query(rendered.total, at)
    if not total.ok:
        return total, None
    assert success.value is not None and total.value is not None  # ok results carry values
    if total.value == 0:
        return ports.QueryResult(ports.QueryOutcome.NAN, detail="the total is 0: nothing to divide by"), None
    counts = model.Counts(min(success.value, total.value), total.value)
    return ports.QueryResult(ports.QueryOutcome.OK, success.value / total.value), counts
