"""Several candidates in one experiment: which are still in the race, their weights, the winner.

An experiment lists one candidate or several (``spec.candidates``).  With several,
each candidate is compared with the baseline on its own (``ExperimentSpec.pair``: the
same analyses, alpha shared among the candidates), and one whose guardrails fail is
*dropped*: its weight goes back to the baseline at once and it takes no further part,
while the others carry on.  A canary step's percentage is the share of traffic on
the candidates still in the race, split equally among them (largest remainder, the
earlier candidate first); at promotion the *winner* gets 100 %.

(An A/B test of several candidates picks its winner itself, core/abtest.py: the candidate judged Ship
with the largest lift; the ranking below picks the leader it reports and a manual promotion takes.)

Which candidate wins a canary: the one ranked best on the ranking metric (the
objective when the spec names one, else the first metric) by its request-weighted
average over every evaluation of the rollout.  Each of them passed its guardrails
against the baseline (that is the statistical claim, at alpha / candidates); the pick
among them is a ranking by point estimate, not a claim that the winner beats the
runner-up.

The per-candidate records live in ``status.candidates`` (so a restarted operator
knows who was dropped and why) and the winner in ``status.winner``; an experiment
with one candidate writes neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import spec
from modelrollout.core.model import State
from modelrollout.routers.istio_routes import apportion

ACTIVE = "Active"
DROPPED = "Dropped"


def several(experiment: spec.ExperimentSpec) -> bool:
    return len(experiment.arms) > 1


def records(experiment: spec.ExperimentSpec, state: State) -> list[dict[str, Any]]:
    """One record per candidate, in spec order: what status holds, fresh ones for the rest."""
    stored = state.results.get("candidates")
    by_workload = {
        r["workload"]: r
        for r in (stored if isinstance(stored, list) else [])
        if isinstance(r, Mapping) and isinstance(r.get("workload"), str)
    }
    result = []
    for workload in experiment.workloads:
        old = by_workload.get(workload, {})
        result.append(
            {
                "workload": workload,
                "state": DROPPED if old.get("state") == DROPPED else ACTIVE,
                "reason": str(old.get("reason", "")),
                "message": str(old.get("message", "")),
                "failedChecks": _count(old.get("failedChecks")),
                "noDataChecks": _count(old.get("noDataChecks")),
                **({"score": dict(old["score"])} if isinstance(old.get("score"), Mapping) else {}),
                # An A/B test's: the candidate's objective entry (the shape of status.objective).
                **(
                    {"objective": dict(old["objective"])} if isinstance(old.get("objective"), Mapping) else {}
                ),
            }
        )
    return result


def active(experiment: spec.ExperimentSpec, state: State) -> tuple[str, ...]:
    """The candidates still in the race (every one of them before any was dropped)."""
    if not several(experiment):
        return experiment.workloads
    return tuple(r["workload"] for r in records(experiment, state) if r["state"] == ACTIVE)


def dropped(experiment: spec.ExperimentSpec, state: State) -> tuple[str, ...]:
    """The candidates dropped from the race (none with a single candidate)."""
    if not several(experiment):
        return ()
    return tuple(r["workload"] for r in records(experiment, state) if r["state"] == DROPPED)


def split(
    experiment: spec.ExperimentSpec, percent: int, in_race: Sequence[str] | None = None
) -> dict[str, int]:
    """``percent`` of the traffic shared equally among the candidates ``in_race`` (default: all),
    the rest on the baseline; dropped candidates get 0."""
    racing = list(experiment.workloads if in_race is None else in_race)
    shares = apportion(percent, [1] * len(racing)) if racing else []
    weights = {experiment.baseline.workload: 100 - (percent if racing else 0)}
    given = dict(zip(racing, shares, strict=True))
    weights.update({workload: given.get(workload, 0) for workload in experiment.workloads})
    return weights


def to_one(experiment: spec.ExperimentSpec, workload: str) -> dict[str, int]:
    """All the traffic on ``workload`` (the baseline or a candidate)."""
    weights = {experiment.baseline.workload: 0, **{w: 0 for w in experiment.workloads}}
    weights[workload] = 100
    return weights


def candidate_share(experiment: spec.ExperimentSpec, weights: Mapping[str, int]) -> int:
    """The traffic on all candidates together, percent."""
    return sum(weights.get(workload, 0) for workload in experiment.workloads)


def rank_metric(experiment: spec.ExperimentSpec) -> tuple[str, bool] | None:
    """The metric that ranks candidates and whether higher is better: the objective, else the first
    metric (a builtin, or one with a ``max``, is better lower; one with only a ``min`` is better higher)."""
    if experiment.objective is not None:
        return experiment.objective.metric, experiment.objective.direction.value == "Increase"
    if not experiment.metrics:
        return None
    first = experiment.metrics[0]
    higher = first.builtin is None and first.min is not None and first.max is None
    return first.name, higher


def add_score(record: dict[str, Any], metric: str, value: float | None, requests: float | None) -> None:
    """Weigh one evaluation's value of the ranking metric by the candidate's requests in it."""
    if value is None or not math.isfinite(value) or requests is None or not 0 < requests < math.inf:
        return
    score = record.get("score") if isinstance(record.get("score"), dict) else None
    if score is None or score.get("metric") != metric:
        score = {"metric": metric, "sum": 0.0, "requests": 0.0}
    total = float(score.get("sum", 0.0)) + value * requests
    weight = float(score.get("requests", 0.0)) + requests
    record["score"] = {"metric": metric, "sum": total, "requests": weight, "value": total / weight}


def leader(experiment: spec.ExperimentSpec, state: State) -> str:
    """The candidate still in the race ranked best so far (spec order breaks ties and stands in for
    a score not measured yet); the first candidate when none is in the race."""
    racing = [r for r in records(experiment, state) if r["state"] == ACTIVE]
    if not racing:
        return experiment.the_candidate.workload
    ranking = rank_metric(experiment)
    if ranking is None:
        return str(racing[0]["workload"])
    metric, higher = ranking

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        index, record = item
        score = record.get("score") or {}
        value = score.get("value") if score.get("metric") == metric else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return (1, 0.0, index)
        return (0, -value if higher else value, index)

    return str(min(enumerate(racing), key=key)[1]["workload"])


def winner(experiment: spec.ExperimentSpec, state: State) -> str:
    """The candidate a promotion sends all traffic to: the one chosen, else the leader."""
    chosen = state.results.get("winner")
    if isinstance(chosen, str) and chosen in experiment.workloads:
        return chosen
    return leader(experiment, state)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
