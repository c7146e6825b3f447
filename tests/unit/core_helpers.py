"""Builders shared by the core's tests: specs, observations and a tiny driver."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

from modelrollout import ports, spec
from modelrollout.core import canary, model

T0 = datetime.datetime(2026, 11, 23, 10, 0, 0, tzinfo=datetime.UTC)
BASE, CAND = "churn-v1", "churn-v2"


def make_spec(**overrides: Any) -> spec.ExperimentSpec:
    raw: dict[str, Any] = {
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": BASE},
        "candidate": {"subset": "v2", "workload": CAND},
        "canary": {"interval": "10s", "minSamples": 100},
        "metrics": [
            {"name": "error-rate", "builtin": "error-rate", "max": 0.05, "maxRelativeIncrease": 1.0},
            {"name": "latency-p95", "builtin": "latency-p95", "max": 500},
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return spec.parse_spec(raw)


def ok(value: float) -> ports.QueryResult:
    return ports.QueryResult(ports.QueryOutcome.OK, value)


def no_data() -> ports.QueryResult:
    return ports.QueryResult(ports.QueryOutcome.EMPTY, detail="no series")


def unreachable() -> ports.QueryResult:
    return ports.QueryResult(ports.QueryOutcome.UNREACHABLE, detail="connection refused")


def histogram(total: float, slow_share: float) -> model.Histogram:
    """A latency histogram of ``total`` requests of which ``slow_share`` are over 250 ms."""
    within = total * (1 - slow_share)
    return (
        (100.0, within * 0.8),
        (250.0, within),
        (500.0, within + (total - within) * 0.9),
        (math.inf, total),
    )


def healthy(
    error: tuple[float, float] = (0.01, 0.01),
    latency: tuple[float, float] = (100.0, 110.0),
    requests: tuple[float, float] | None = None,
    slow: tuple[float, float] = (0.03, 0.03),
    total: float = 2000,
) -> dict[str, Any]:
    """Keyword arguments for :func:`observe` describing one evaluation.

    Without ``requests``, each variant serves its share of ``total`` by the
    weights the routes hold, with counts and latency histograms to match.
    """
    return {"evaluation": (error, latency, requests, slow, total)}


def _measure(weights: Mapping[str, int], evaluation: tuple[Any, ...]) -> dict[str, Any]:
    error, latency, requests, slow, total = evaluation
    if requests is None:
        requests = (total * weights.get(BASE, 0) / 100, total * weights.get(CAND, 0) / 100)
    n = {BASE: float(requests[0]), CAND: float(requests[1])}
    rate = {BASE: error[0], CAND: error[1]}
    slow_share = {BASE: slow[0], CAND: slow[1]}
    return {
        "metrics": (
            model.MetricSample(
                "error-rate",
                {BASE: ok(error[0]), CAND: ok(error[1])},
                counts={w: model.Counts(n[w] * rate[w], n[w]) for w in n},
            ),
            model.MetricSample(
                "latency-p95",
                {BASE: ok(latency[0]), CAND: ok(latency[1])},
                histograms={w: histogram(n[w], slow_share[w]) for w in n},
            ),
        ),
        "requests": {w: ok(n[w]) for w in n},
    }


def observe(
    weights: Mapping[str, int] | None = None,
    annotations: Mapping[str, str] | None = None,
    generation: int = 1,
    **evaluation: Any,
) -> model.Observation:
    if "evaluation" in evaluation:
        evaluation = _measure(weights or {}, evaluation["evaluation"])
    return model.Observation(
        weights=weights,
        annotations=annotations or {},
        generation=generation,
        metrics=evaluation.get("metrics"),
        requests=evaluation.get("requests"),
    )


def step(
    experiment: spec.ExperimentSpec,
    state: model.State,
    now: datetime.datetime,
    annotations: Mapping[str, str] | None = None,
    **evaluation: Any,
) -> model.Decision:
    """One tick as the reconciler runs it: routes hold the state's weights; metrics only when due."""
    due = canary.evaluation_due(experiment, state, now)
    obs = observe(dict(state.weights) or None, annotations, **(evaluation if due else {}))
    return canary.decide(experiment, state, obs, now)


def run_to_end(
    experiment: spec.ExperimentSpec, ticks: int = 50, tick: float = 10.0, **evaluation: Any
) -> list[model.Decision]:
    state, decisions = model.State(), []
    for i in range(ticks):
        decision = step(experiment, state, T0 + datetime.timedelta(seconds=tick * i), **evaluation)
        decisions.append(decision)
        state = decision.state
        if state.phase.is_final:
            break
    return decisions
