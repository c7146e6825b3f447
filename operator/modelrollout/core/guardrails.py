"""Threshold guardrails: ``max``, ``min`` and ``maxRelativeIncrease`` per metric.

Each rule is a pure function of one metric's results, in the manner of Argo
Rollouts' ``assessMetricStatus``: missing data is its own verdict (never a
pass, never silently a failure), and every verdict carries the sentence a
user reads in ``status.message``.

The :class:`Analysis` protocol is the seam where statistical analyses plug in
beside these rules: the core asks every analysis for an assessment of every
metric and combines them (any Fail fails, any missing data is missing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from modelrollout import ports, spec
from modelrollout.core import model


class Analysis(Protocol):
    """Judges one metric for one evaluation; may keep memory across evaluations."""

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        """Return the assessment and the memory to keep for the next evaluation."""


class ThresholdRules:
    """The rules every Flagger/Argo user knows, applied candidate-vs-baseline.

    ``relative`` says for which metrics the ``maxRelativeIncrease`` rule runs
    here; the operator's default leaves it to the sequential test wherever a
    metric yields counts (a ratio of two noisy numbers is no evidence).
    """

    def __init__(self, relative: Callable[[spec.MetricSpec], bool] = lambda metric: True) -> None:
        self._relative = relative

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        baseline = sample.results.get(experiment.baseline.workload)
        candidate = sample.results.get(experiment.the_candidate.workload)
        return assess_thresholds(metric, baseline, candidate, relative=self._relative(metric)), None


def assess_thresholds(
    metric: spec.MetricSpec,
    baseline: ports.QueryResult | None,
    candidate: ports.QueryResult | None,
    relative: bool = True,
) -> model.MetricAssessment:
    base = baseline.value if baseline is not None and baseline.ok else None
    cand = candidate.value if candidate is not None and candidate.ok else None

    def result(verdict: model.Verdict, reason: str) -> model.MetricAssessment:
        return model.MetricAssessment(metric.name, verdict, reason, baseline=base, candidate=cand)

    if cand is None:
        return result(*_missing("candidate", candidate, metric))
    if metric.max is not None and cand > metric.max:
        return result(
            model.Verdict.FAIL, f"{metric.name} {show(metric, cand)} > max {show(metric, metric.max)}"
        )
    if metric.min is not None and cand < metric.min:
        return result(
            model.Verdict.FAIL, f"{metric.name} {show(metric, cand)} < min {show(metric, metric.min)}"
        )

    limit = metric.relative_increase_limit if relative else None
    if limit is None:
        return result(model.Verdict.PASS, f"{metric.name} {show(metric, cand)} (ok)")
    if base is None:
        return result(*_missing("baseline", baseline, metric))
    comparison = f"{metric.name} {show(metric, cand)} vs {show(metric, base)}"
    if cand > base * (1 + limit) and not math.isclose(cand, base * (1 + limit)):
        increase = f"+{(cand / base - 1) * 100:.0f}%" if base > 0 else "above a baseline of zero"
        return result(
            model.Verdict.FAIL,
            f"{comparison}: {increase}, more than the +{limit * 100:.0f}% allowed",
        )
    return result(model.Verdict.PASS, f"{comparison} (ok)")


def _missing(
    role: str, outcome: ports.QueryResult | None, metric: spec.MetricSpec
) -> tuple[model.Verdict, str]:
    if outcome is None:
        return model.Verdict.ERROR, f"{metric.name}: {role} was not queried"
    detail = f" ({outcome.detail})" if outcome.detail else ""
    verdict = model.Verdict.NO_DATA if outcome.outcome.is_no_data else model.Verdict.ERROR
    return verdict, f"{metric.name}: no usable {role} value: {outcome.outcome.value}{detail}"


def show(metric: spec.MetricSpec, value: float) -> str:
    """A value the way a user thinks of the metric (1.2%, 180ms, 0.1234)."""
    if metric.builtin is spec.Builtin.ERROR_RATE:
        return f"{value * 100:.2g}%" if value < 0.01 else f"{value * 100:.1f}%"
    if metric.builtin in (spec.Builtin.LATENCY_P95, spec.Builtin.LATENCY_P99):
        return f"{value:.0f}ms"
    return f"{value:.4g}"


def combine(assessments: list[model.MetricAssessment]) -> model.Verdict:
    """The verdict of one evaluation: a failure beats missing data beats doubt beats a pass."""
    verdicts = {a.verdict for a in assessments}
    for verdict in (
        model.Verdict.FAIL,
        model.Verdict.ERROR,
        model.Verdict.NO_DATA,
        model.Verdict.INCONCLUSIVE,
    ):
        if verdict in verdicts:
            return verdict
    return model.Verdict.PASS


def merge(name: str, parts: list[model.MetricAssessment]) -> model.MetricAssessment:
    """One metric judged by several analyses: the worst verdict speaks for it."""
    worst = combine(parts)
    # Among equals the later analysis speaks: it is the more specific (the evidence, not a value);
    # a rollback names every rule that failed.
    equals = [a for a in parts if a.verdict is worst]
    chosen = equals[-1]
    reason = "; ".join(a.reason for a in equals) if worst is model.Verdict.FAIL else chosen.reason
    extra: dict[str, Any] = {}
    for part in parts:
        extra.update(part.extra)
    # The metric's own values (a p95 in ms, an error rate) as the first analysis measured them.
    valued = next((a for a in parts if a.baseline is not None or a.candidate is not None), chosen)
    return model.MetricAssessment(
        name, worst, reason, baseline=valued.baseline, candidate=valued.candidate, extra=extra
    )
