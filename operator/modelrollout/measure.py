"""Turn a spec's metrics into query results per variant: the observing half of a tick.

This is the only place that knows how a metric becomes PromQL: builtins use
Istio's standard telemetry, ``query:`` and ``ratio:`` are filled from
templates (refused, never sent, when a value cannot be placed safely).
Failures stay typed results -- the core decides what missing data means.
"""

from __future__ import annotations

import datetime

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
    """Every metric for every variant over ``window``, plus requests per variant."""
    scopes = {
        v.workload: queries.VariantScope.for_variant(v, experiment=name, namespace=namespace, window=window)
        for v in variants(experiment)
    }
    samples = tuple(
        model.MetricSample(metric.name, {w: _query_metric(provider, metric, s) for w, s in scopes.items()})
        for metric in experiment.metrics
    )
    requests = {
        workload: provider.query(queries.request_count(workload, namespace, window)) for workload in scopes
    }
    return samples, requests


def _query_metric(
    provider: ports.MetricProvider, metric: spec.MetricSpec, scope: queries.VariantScope
) -> ports.QueryResult:
    try:
        rendered = queries.render_metric_queries(metric, scope)
    except templates.TemplateError as e:
        return ports.QueryResult(ports.QueryOutcome.INVALID_QUERY, detail=f"refused to send: {e}")
    if isinstance(rendered, str):
        return provider.query(rendered)
    success = provider.query(rendered.success)
    if not success.ok:
        return success
    total = provider.query(rendered.total)
    if not total.ok:
        return total
    assert success.value is not None and total.value is not None  # ok results carry values
    if total.value == 0:
        return ports.QueryResult(ports.QueryOutcome.NAN, detail="the total is 0: nothing to divide by")
    return ports.QueryResult(ports.QueryOutcome.OK, success.value / total.value)
