"""Candidate-vs-baseline sequential tests for count metrics and latency (docs/statistics.md).

Plugs into the core beside the threshold rules (``guardrails.Analysis``).  It
judges every metric that yields per-interval counts: ``error-rate`` (5xx of
requests), ``latency-*`` (requests slower than a bucket edge fixed from the
baseline), and ``ratio:`` metrics.  Its memory -- the log-likelihood on the
grid, the latency edge, running totals -- lives in ``status.analysisState``.

Verdicts: Fail when the evidence of harm crosses ``M/alpha`` (M sequential
guardrails share alpha); Inconclusive while it is above ``sqrt(M/alpha)``;
Pass otherwise.  No counts for a variant is NoData, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelrollout import spec
from modelrollout.core import evidence, model

MIN_EDGE_REQUESTS = 50  # baseline requests needed to place the latency edge


def is_sequential(metric: spec.MetricSpec) -> bool:
    """Metrics whose intervals yield counts, so the sequential test (not a ratio rule) judges them."""
    return metric.builtin is not None or metric.ratio is not None


def harm_is_decrease(metric: spec.MetricSpec) -> bool:
    """A ratio metric guarded by ``min`` (e.g. conversion) is harmed by going down."""
    return metric.ratio is not None and metric.min is not None and metric.max is None


class SequentialTests:
    """The operator's default statistical analysis."""

    def assess(
        self,
        experiment: spec.ExperimentSpec,
        metric: spec.MetricSpec,
        sample: model.MetricSample,
        memory: Mapping[str, Any] | None,
    ) -> tuple[model.MetricAssessment, Mapping[str, Any] | None]:
        if not is_sequential(metric):
            return model.MetricAssessment(metric.name, model.Verdict.PASS, "not a count metric"), memory
        base, cand = experiment.baseline.workload, experiment.the_candidate.workload
        memory = dict(memory or {})
        counts = _bad_events(metric, sample, base, memory)
        if counts is None:
            return _no_data(metric, sample, base, cand), memory
        if not counts:  # the latency edge was placed this interval: nothing to test yet
            return model.MetricAssessment(
                metric.name, model.Verdict.INCONCLUSIVE, f"{metric.name}: calibrating on the baseline"
            ), memory
        b, c = _plausible(counts.get(base)), _plausible(counts.get(cand))
        if b is None or c is None or b.total <= 0 or c.total <= 0:
            return _no_data(metric, sample, base, cand), memory

        loglik = evidence.from_list(memory.get("loglik"))
        loglik = loglik + evidence.interval_loglik(c.events, b.events, c.total / (c.total + b.total))
        totals = [float(v) for v in memory.get("totals", [0.0, 0.0, 0.0, 0.0])]
        totals = [totals[0] + b.events, totals[1] + b.total, totals[2] + c.events, totals[3] + c.total]

        guardrails_count = sum(1 for m in experiment.metrics if is_sequential(m))
        alpha = experiment.analysis.alpha / max(guardrails_count, 1)
        decrease = harm_is_decrease(metric)
        tolerance = 1 + (metric.max_relative_increase or 0.0)
        e_value = evidence.harm_evidence(
            loglik, 1 / tolerance if decrease else tolerance, increase=not decrease
        )
        max_e = max(e_value, float(memory.get("maxEvidence", 1.0)))
        effect = evidence.estimate(loglik)
        bound = 1 / alpha
        low, high = evidence.confidence_interval(loglik, bound)
        memory.update(loglik=evidence.to_list(loglik), totals=totals, maxEvidence=max_e)

        base_rate = totals[0] / totals[1] if totals[1] else 0.0
        cand_rate = totals[2] / totals[3] if totals[3] else 0.0
        words = (
            f"{_what(metric, memory)} {_pct(cand_rate)} vs {_pct(base_rate)}, "
            f"ratio {effect:.2g} [{low:.2g}, {high:.2g}], evidence {_num(e_value)}"
        )
        if e_value >= bound:
            verdict, reason = model.Verdict.FAIL, f"{words} > {_num(bound)}"
        elif e_value >= math.sqrt(bound):
            verdict, reason = model.Verdict.INCONCLUSIVE, f"{words}: suspicious (bound {_num(bound)})"
        else:
            verdict, reason = model.Verdict.PASS, f"{words} < {_num(bound)} (ok)"
        extra: dict[str, Any] = {
            "effect": round(effect, 4),
            "interval": [round(low, 4), round(high, 4)],
            "evidence": round(e_value, 4),
            "bound": round(bound, 4),
            "pValue": round(min(1.0, 1 / max_e), 6),
        }
        if "edge" in memory:
            extra["edge"] = memory["edge"]
        assessment = model.MetricAssessment(
            metric.name, verdict, reason, baseline=base_rate, candidate=cand_rate, extra=extra
        )
        return assessment, memory


def _bad_events(
    metric: spec.MetricSpec, sample: model.MetricSample, base: str, memory: dict[str, Any]
) -> dict[str, model.Counts] | None:
    """Per variant, this interval's harmful events out of its total; None when not measured."""
    if metric.builtin in (spec.Builtin.LATENCY_P95, spec.Builtin.LATENCY_P99):
        if sample.histograms is None:
            return None
        if "edge" not in memory:
            edge = _choose_edge(
                sample.histograms.get(base), 0.95 if metric.builtin is spec.Builtin.LATENCY_P95 else 0.99
            )
            if edge is None:
                return None
            memory["edge"] = edge
            return {}
        return {w: _slower_than(h, float(memory["edge"])) for w, h in sample.histograms.items()}
    if sample.counts is None:
        return None
    return dict(sample.counts)


def _plausible(counts: model.Counts | None) -> model.Counts | None:
    """Counts a window can hold, events capped at the total (a user's ``increase()`` extrapolates)."""
    if counts is None or not (model.plausible_count(counts.events) and model.plausible_count(counts.total)):
        return None
    return model.Counts(min(counts.events, counts.total), counts.total)


def _choose_edge(histogram: model.Histogram | None, quantile: float) -> float | None:
    """The finite bucket edge whose share of slower baseline requests is nearest ``1 - quantile``.

    Nearest in ratio: Istio's buckets are coarse (100, 250, 500 ms...), and the edge at
    or above the p95 may leave almost no slow requests to count -- a test without events.
    """
    if not histogram or histogram[-1][1] < MIN_EDGE_REQUESTS:
        return None
    total = histogram[-1][1]
    target = 1 - quantile
    best: tuple[float, float] | None = None
    for le, count in histogram:
        slower = (total - count) / total
        if not math.isfinite(le) or slower <= 0:
            continue
        distance = abs(math.log(slower / target))
        if best is None or distance < best[0]:
            best = (distance, le)
    return best[1] if best is not None else None


def _slower_than(histogram: model.Histogram, edge: float) -> model.Counts:
    total = histogram[-1][1] if histogram else 0.0
    within = next((count for le, count in histogram if le == edge), total)
    return model.Counts(max(total - within, 0.0), total)


def _no_data(
    metric: spec.MetricSpec, sample: model.MetricSample, base: str, cand: str
) -> model.MetricAssessment:
    missing = [w for w in (base, cand) if sample.results.get(w) is None or not sample.results[w].ok]
    who = " and ".join(missing) if missing else "a variant"
    # Why, as the query said it (Empty, NaN, Unreachable...): the reason a user reads for this metric.
    causes = dict.fromkeys(
        f"{result.outcome.value}: {result.detail}" if result.detail else result.outcome.value
        for result in (sample.results.get(w) for w in missing)
        if result is not None
    )
    why = f" ({'; '.join(causes)})" if causes else ""
    return model.MetricAssessment(
        metric.name, model.Verdict.NO_DATA, f"{metric.name}: no counts for {who} in this interval{why}"
    )


def _what(metric: spec.MetricSpec, memory: Mapping[str, Any]) -> str:
    if "edge" in memory:
        return f"{metric.name}: requests over {float(memory['edge']):g}ms"
    return metric.name.replace("-", " ")


def _pct(rate: float) -> str:
    return f"{rate * 100:.2g}%" if rate < 0.1 else f"{rate * 100:.0f}%"


def _num(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else f"{value:.1e}"
