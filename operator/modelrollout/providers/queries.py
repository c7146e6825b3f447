"""The PromQL the operator runs: builtin guardrails on Istio telemetry, and users' templates.

The builtins read Istio's standard metrics exactly as its proxies emit them
(``istio_requests_total``, ``istio_request_duration_milliseconds``), from
the server side (``reporter="destination"``) so each request is counted
once, by the workload that served it.  They are written as templates and
filled by :func:`modelrollout.templates.render`, so a builtin gets exactly
the escaping and checks a user's ``query:`` gets.

The queries are shaped so the metric provider's outcomes mean something:
traffic without errors yields an error rate of 0 (not "no data"), while no
traffic at all yields no series or NaN, never a reassuring 0.
"""

from __future__ import annotations

import dataclasses
import datetime

from modelrollout import durations, templates
from modelrollout.spec import Builtin, MetricSpec, Variant

# One variant's requests as the serving proxy reports them (a selector left open for one
# more matcher), and the window they are counted over.
_MATCHERS = (
    '{reporter="destination", destination_workload="{{ workload }}", '
    'destination_workload_namespace="{{ namespace }}"'
)
_WINDOW = "[{{ interval }}]"


def gained(series: str, window: str) -> str:
    """PromQL for what each counter in ``series`` gained over ``window``, exactly, per series.

    ``increase()`` extrapolates each series to the window's edges: with a few
    scrapes per window it overstates counts by up to a scrape interval's worth
    -- evidence a sequential test would take at face value.  The difference of
    the stored samples at the window's two ends does not: consecutive windows
    (the operator's tile) add up to exactly what the counter gained.  A series
    first seen inside the window counts from its first sample there -- a new
    scrape target may bring a counter with a long past, which is not this
    window's; a series that went down (its proxy restarted) counts what it
    gained since the restart, as ``increase()`` does.  Both err towards fewer
    events, never more.
    """
    start = f"({series} offset {window} or min_over_time({series}[{window}]))"
    return f"((({series} - {start}) >= 0) or {series})"


ERROR_RATE_TEMPLATE = (
    "(sum(rate(istio_requests_total" + _MATCHERS + ', response_code=~"5.."}' + _WINDOW + ")) or vector(0))"
    " / sum(rate(istio_requests_total" + _MATCHERS + "}" + _WINDOW + "))"
)
_INTERVAL = "{{ interval }}"
REQUEST_COUNT_TEMPLATE = "sum(" + gained("istio_requests_total" + _MATCHERS + "}", _INTERVAL) + ")"
# Zero 5xx in the window is a count of 0, not an absent series.
ERROR_COUNT_TEMPLATE = (
    "sum(" + gained("istio_requests_total" + _MATCHERS + ', response_code=~"5.."}', _INTERVAL) + ")"
    " or vector(0)"
)
_BUCKET_SERIES = "istio_request_duration_milliseconds_bucket" + _MATCHERS + "}"
_DURATION_BUCKETS = _BUCKET_SERIES + _WINDOW

QUANTILES: dict[Builtin, float] = {Builtin.LATENCY_P95: 0.95, Builtin.LATENCY_P99: 0.99}


def _builtin_values(workload: str, namespace: str, window: datetime.timedelta) -> dict[str, str]:
    return {"workload": workload, "namespace": namespace, "interval": durations.format_duration(window)}


def error_rate(workload: str, namespace: str, window: datetime.timedelta) -> str:
    """Share of the workload's requests answered with a 5xx over ``window`` (0..1)."""
    return templates.render(ERROR_RATE_TEMPLATE, _builtin_values(workload, namespace, window))


def latency_quantile(quantile: float, workload: str, namespace: str, window: datetime.timedelta) -> str:
    """The ``quantile`` of the workload's request duration over ``window``, in milliseconds."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    template = f"histogram_quantile({quantile!r}, sum by (le) (rate({_DURATION_BUCKETS})))"
    return templates.render(template, _builtin_values(workload, namespace, window))


def request_count(workload: str, namespace: str, window: datetime.timedelta) -> str:
    """How many requests the workload served over ``window``: the samples behind its metrics."""
    return templates.render(REQUEST_COUNT_TEMPLATE, _builtin_values(workload, namespace, window))


def error_count(workload: str, namespace: str, window: datetime.timedelta) -> str:
    """How many of them were answered with a 5xx: the events of the error-rate test."""
    return templates.render(ERROR_COUNT_TEMPLATE, _builtin_values(workload, namespace, window))


def duration_buckets(workload: str, namespace: str, window: datetime.timedelta) -> str:
    """The window's latency histogram, one series per ``le`` (cumulative request counts)."""
    return templates.render(
        f"sum by (le) ({gained(_BUCKET_SERIES, _INTERVAL)})", _builtin_values(workload, namespace, window)
    )


def builtin_query(builtin: Builtin, workload: str, namespace: str, window: datetime.timedelta) -> str:
    """The PromQL of one builtin metric for one workload."""
    if builtin is Builtin.ERROR_RATE:
        return error_rate(workload, namespace, window)
    return latency_quantile(QUANTILES[builtin], workload, namespace, window)


@dataclasses.dataclass(frozen=True)
class VariantScope:
    """What the template variables stand for when one variant's metrics are queried."""

    experiment: str
    namespace: str  # the workload's namespace (Istio's destination_workload_namespace)
    workload: str
    window: datetime.timedelta  # fills {{ interval }}
    host: str | None = None
    subset: str | None = None

    @classmethod
    def for_variant(
        cls, variant: Variant, *, experiment: str, namespace: str, window: datetime.timedelta
    ) -> VariantScope:
        return cls(experiment, namespace, variant.workload, window, variant.host, variant.subset)

    def values(self) -> dict[str, str]:
        """Template values; a variable without a value is left out, so using it is refused."""
        values = {
            "experiment": self.experiment,
            "namespace": self.namespace,
            "workload": self.workload,
            "interval": durations.format_duration(self.window),
            "host": self.host,
            "subset": self.subset,
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class RatioQueries:
    """The two counts of a ``ratio:`` metric for one variant: successes out of a total."""

    success: str
    total: str


def render_metric_queries(metric: MetricSpec, scope: VariantScope) -> str | RatioQueries:
    """The PromQL to run for ``metric`` and one variant.

    A ``builtin:`` or ``query:`` metric is one query yielding the value; a
    ``ratio:`` metric is two queries.  Raises
    :class:`modelrollout.templates.TemplateError` when a template cannot be
    filled safely: the metric is then not queried at all.
    """
    if metric.builtin is not None:
        return builtin_query(metric.builtin, scope.workload, scope.namespace, scope.window)
    values = scope.values()
    if metric.ratio is not None:
        return RatioQueries(
            success=templates.render(metric.ratio.success, values),
            total=templates.render(metric.ratio.total, values),
        )
    assert metric.query is not None  # MetricSpec guarantees exactly one source
    return templates.render(metric.query, values)
