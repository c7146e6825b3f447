"""The peers' decision rules, behind the core's analysis seam, so one state machine runs them all.

A :class:`Policy` is a set of analyses (``guardrails.Analysis``) plus the
failure limit the state machine should use with them.  Steps, step
durations, holds and rollback mechanics stay the operator's own; only the
*judging* of each evaluation differs, which is what the benchmark compares.
Each peer's rule keeps its own memory (failed-check counters, the growing
sample window) in the analysis memory the core persists between
evaluations, and the state machine's ``failureLimit`` is 1 for them: a peer
analysis answers Fail exactly when that product would roll back.

Thresholds are the ones the issue names for the reference plan (error rate
1.5 %); the latency threshold is 1000 ms on p99 because the reference
baseline's own p99 (as ``histogram_quantile`` sees it in Istio's buckets) is
~860 ms: the 500 ms of Flagger's examples would fail every candidate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from modelrollout import spec
from modelrollout.core import canary, guardrails, model
from modelrollout.core.model import Verdict
from modelrollout.sim import kayenta, observe

DEFAULT = "modelrollout"
NAMES = ("modelrollout", "flagger", "argo", "kayenta")

MAX_ERROR_RATE = 0.015
MAX_P99_MS = 1000.0


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    analyses: tuple[guardrails.Analysis, ...]
    failure_limit: int | None  # the state machine's failureLimit for these analyses; None: the scenario's
    description: str


def get(name: str) -> Policy:
    """The policy called ``name`` (one of :data:`NAMES`)."""
    if name == "modelrollout":
        return Policy(name, tuple(canary.DEFAULT_ANALYSES), None, "the operator's default analyses")
    if name == "flagger":
        return Policy(name, (FlaggerChecks(),), 1, FlaggerChecks.summary())
    if name == "argo":
        return Policy(name, (ArgoAnalysis(),), 1, ArgoAnalysis.summary())
    if name == "kayenta":
        return Policy(name, (KayentaJudge(),), 1, KayentaJudge.summary())
    raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(NAMES)}")


@dataclasses.dataclass(frozen=True)
class FlaggerChecks:
    """Flagger's builtin checks: a threshold per interval, rollback after ``threshold`` failed checks.

    Checked against fluxcd/flagger ``pkg/controller/scheduler.go``
    (``advanceCanary``): a failed check increments ``status.failedChecks``
    and halts advancement for that interval; the counter is never reset
    during an analysis; at the *next* tick, ``failedChecks >= threshold``
    rolls back.  ``scheduler_metrics.go``: ``request-success-rate`` fails
    below ``thresholdRange.min`` (98.5 % here: error rate > 1.5 %),
    ``request-duration`` fails above ``thresholdRange.max``; a query without
    values fails the check.  ``pkg/metrics/observers/istio.go``: the duration
    is ``histogram_quantile(0.99, ...)`` over Istio's buckets (Flagger then
    truncates it to whole ms, not reproduced: it matters only within 1 ms of
    the threshold).
    ``threshold: 2`` is the issue's "1.5 % on 2 checks".
    Simplification: failed checks are counted per metric (Flagger counts per
    canary); on the reference plan the latency check almost never fails, so
    the counts agree.  Other metrics use their ``max``/``min`` as the range.
    """

    threshold: int = 2
    max_error_rate: float = MAX_ERROR_RATE
    max_latency_ms: float = MAX_P99_MS

    @staticmethod
    def summary() -> str:
        return f"Flagger: error rate > {MAX_ERROR_RATE:.1%} or p99 > {MAX_P99_MS:.0f}ms fails a check; 2 fail"

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        failed = int((memory or {}).get("failedChecks", 0))
        if failed >= self.threshold:
            why = f"{metric.name}: failed checks {failed} >= threshold {self.threshold}"
            return model.MetricAssessment(metric.name, Verdict.FAIL, why), {"failedChecks": failed}
        value, passed, rule = _threshold_check(
            experiment, metric, sample, self.max_error_rate, self.max_latency_ms
        )
        if passed:
            return _assessment(metric, Verdict.PASS, f"{rule} (ok)", value), {"failedChecks": failed}
        failed += 1
        why = f"{rule}: halt advancement, failed check {failed}/{self.threshold}"
        return _assessment(metric, Verdict.INCONCLUSIVE, why, value), {"failedChecks": failed}


@dataclasses.dataclass(frozen=True)
class ArgoAnalysis:
    """An Argo Rollouts background AnalysisTemplate: ``successCondition`` per measurement, ``failureLimit``.

    Checked against argoproj/argo-rollouts ``analysis/analysis.go``
    (``assessMetricStatus``/``assessMetricFailureInconclusiveOrError``): the
    metric fails when the *cumulative* count of failed measurements exceeds
    ``failureLimit``, and errors when consecutive errors exceed
    ``consecutiveErrorLimit`` (default 4); a failed measurement below the
    limit does not stop the rollout's steps.  With only a
    ``successCondition`` a measurement is never Inconclusive.  The template:
    ``result[0] < 0.015`` on the error rate and ``result[0] < 1000`` on the
    p99 latency, ``failureLimit: 3`` as in Argo's analysis documentation
    (its default, 0, would fail on the first noisy interval).  A query
    without a value is an Error measurement.
    """

    failure_limit: int = 3
    consecutive_error_limit: int = 4
    max_error_rate: float = MAX_ERROR_RATE
    max_latency_ms: float = MAX_P99_MS

    @staticmethod
    def summary() -> str:
        return f"Argo Rollouts: result[0] < {MAX_ERROR_RATE} (and p99 < {MAX_P99_MS:.0f}ms), failureLimit 3"

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        failed = int((memory or {}).get("failed", 0))
        errors = int((memory or {}).get("consecutiveErrors", 0))
        value, passed, rule = _threshold_check(
            experiment, metric, sample, self.max_error_rate, self.max_latency_ms
        )
        if value is None:
            errors += 1
            verdict = Verdict.FAIL if errors > self.consecutive_error_limit else Verdict.PASS
            why = f"{rule}: measurement error {errors} (consecutiveErrorLimit {self.consecutive_error_limit})"
        else:
            errors = 0
            failed += 0 if passed else 1
            verdict = Verdict.FAIL if failed > self.failure_limit else Verdict.PASS
            why = f"{rule}: failed ({failed}) vs failureLimit ({self.failure_limit})"
        return _assessment(metric, verdict, why, value), {"failed": failed, "consecutiveErrors": errors}


@dataclasses.dataclass(frozen=True)
class KayentaJudge:
    """Kayenta's NetflixACAJudge on each metric, re-run every interval over a growing window.

    The classifier is :mod:`modelrollout.sim.kayenta` (confidence 0.98,
    tolerance 0.25, allowedIncrease 1.0, outlier removal; sources there).
    Metric direction ``increase`` (errors and latency only hurt when they
    rise).  Scoring, checked in ``WeightedSumScorer.scala`` and
    ``ThresholdScoreClassifier.scala``: the score is the share of passing
    metrics; with the two metrics of a scenario one ``High`` scores 50, below
    any usual marginal threshold (75), so a ``High`` metric fails the
    interval and the canary; ``Nodata`` in half the metrics scores 0 (fail);
    an ``Error`` metric is left out of the score.
    Simplification: each interval contributes one point per variant (the
    interval's value, i.e. a Prometheus step equal to the interval) to a
    window growing from the start of the experiment (Kayenta's default
    "growing" lookback).
    """

    classifier: kayenta.MannWhitneyClassifier = dataclasses.field(
        default_factory=kayenta.MannWhitneyClassifier
    )
    direction: kayenta.Direction = kayenta.Direction.INCREASE

    @staticmethod
    def summary() -> str:
        return "Kayenta: Mann-Whitney shift CI at 98% beyond 25% tolerance, growing window"

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        control = [*(memory or {}).get("control", ()), _value(sample, experiment.baseline.workload)]
        treatment = [*(memory or {}).get("experiment", ()), _value(sample, experiment.the_candidate.workload)]
        result = self.classifier.classify(control, treatment, self.direction)
        kept = {"control": control, "experiment": treatment}
        points = f"{sum(not math.isnan(v) for v in treatment)} points"
        if result.label is kayenta.Label.HIGH:
            why = f"{metric.name} classified High: shift CI [{result.lower:.4g}, {result.upper:.4g}]"
            verdict = Verdict.FAIL
        elif result.label is kayenta.Label.NODATA:
            why, verdict = f"{metric.name}: Nodata (scores 0)", Verdict.FAIL
        else:
            why, verdict = f"{metric.name} classified {result.label.value} ({points})", Verdict.PASS
        return model.MetricAssessment(metric.name, verdict, why, extra={"ratio": result.deviation}), kept


def _threshold_check(
    experiment: spec.ExperimentSpec,
    metric: spec.MetricSpec,
    sample: model.MetricSample,
    max_error_rate: float,
    max_latency_ms: float,
) -> tuple[float | None, bool, str]:
    """The candidate's value, whether it is inside the range, and the rule in words."""
    candidate = experiment.the_candidate.workload
    if metric.builtin is spec.Builtin.ERROR_RATE:
        value = _ok(sample.results.get(candidate))
        return value, value is not None and value <= max_error_rate, f"error rate {_show(value, '%')}"
    if metric.builtin in observe.QUANTILES:
        histogram = (sample.histograms or {}).get(candidate)
        p99 = observe.histogram_quantile(0.99, histogram) if histogram else math.nan
        value = None if math.isnan(p99) else p99
        return value, value is not None and value <= max_latency_ms, f"p99 {_show(value, 'ms')}"
    value = _ok(sample.results.get(candidate))
    inside = value is not None and (metric.max is None or value <= metric.max)
    inside = inside and (metric.min is None or value is None or value >= metric.min)
    return value, inside, f"{metric.name} {_show(value, '')}"


def _assessment(
    metric: spec.MetricSpec, verdict: Verdict, why: str, value: float | None
) -> model.MetricAssessment:
    return model.MetricAssessment(metric.name, verdict, why, candidate=value)


def _ok(result: Any) -> float | None:
    return result.value if result is not None and result.ok else None


def _value(sample: model.MetricSample, workload: str) -> float:
    value = _ok(sample.results.get(workload))
    return math.nan if value is None else float(value)


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "no value"
    return f"{value * 100:.2f}%" if unit == "%" else f"{value:.4g}{unit}"
