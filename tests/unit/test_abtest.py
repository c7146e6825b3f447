"""The A/B test's state machine (core/abtest.py) driven with synthetic intervals.

Each interval hands the core what the measuring half would: per-variant sums of
the objective (conversions of requests, per segment), the guardrails' results
and the users newly assigned.  The data are drawn (seeded) from known truths,
so every outcome below is the one the statistics should reach.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from modelrollout import spec, status
from modelrollout.core import canary, model
from modelrollout.core.model import Phase

from core_helpers import BASE, CAND, T0, ok

INTERVAL = datetime.timedelta(seconds=60)
SUCCESS = 'sum(increase(model_conversions_total{workload="{{ workload }}"}[{{ interval }}]))'
TOTAL = 'sum(increase(model_requests_total{workload="{{ workload }}"}[{{ interval }}]))'


def ab_spec(**ab: Any) -> spec.ExperimentSpec:
    fairness = ab.pop("fairness", None)
    segments = ab.pop("segments", None)
    webhooks = ab.pop("webhooks", None)
    metrics = ab.pop(
        "metrics",
        [
            {"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}},
            {"name": "error-rate", "builtin": "error-rate", "max": 0.05},
        ],
    )
    raw: dict[str, Any] = {
        "virtualService": {"name": "churn", "routes": ["main"]},
        "baseline": {"subset": "v1", "workload": BASE},
        "candidate": {"subset": "v2", "workload": CAND},
        "strategy": "ABTest",
        "abTest": {
            "split": 50,
            "interval": "1m",
            "maxDuration": "2h",
            "assignmentQuery": "sum(increase(model_assignments_total[{{ interval }}]))",
            **ab,
        },
        "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.05},
        "metrics": metrics,
    }
    if fairness is not None:
        raw["abTest"]["fairness"] = fairness
    if segments is not None:
        raw["segments"] = segments
    if webhooks is not None:
        raw["webhooks"] = webhooks
    return spec.parse_spec(raw)


@dataclasses.dataclass
class Truth:
    """Conversion probability per variant (and per segment), requests and new users per interval."""

    conversion: Mapping[str, float]
    requests: float = 4000
    users: float = 400
    segments: Mapping[str, Mapping[str, float]] | None = None  # segment -> variant -> probability
    guardrail_errors: tuple[float, float] = (0.01, 0.01)


def interval(rng: np.random.Generator, experiment: spec.ExperimentSpec, truth: Truth) -> model.Observation:
    split = experiment.ab.split / 100
    shares = {BASE: 1 - split, CAND: split}
    sums: dict[str, model.Sums] = {}
    segments: dict[str, dict[str, model.Sums]] = {}
    for workload, share in shares.items():
        n = int(rng.poisson(truth.requests * share))
        if truth.segments:
            parts = np.array_split(np.arange(n), len(truth.segments))
            total_conversions = 0
            for (segment, probabilities), part in zip(truth.segments.items(), parts, strict=True):
                won = int(rng.binomial(len(part), probabilities[workload]))
                segments.setdefault(segment, {})[workload] = model.Sums(float(len(part)), float(won))
                total_conversions += won
            sums[workload] = model.Sums(float(n), float(total_conversions))
        else:
            sums[workload] = model.Sums(float(n), float(rng.binomial(n, truth.conversion[workload])))
    objective = model.MetricSample(
        "conversion",
        {w: ok(s.total / s.count) for w, s in sums.items()},
        counts={w: model.Counts(s.total, s.count) for w, s in sums.items()},
        sums=sums,
        segments=segments or None,
    )
    base_err, cand_err = truth.guardrail_errors
    errors = model.MetricSample(
        "error-rate",
        {BASE: ok(base_err), CAND: ok(cand_err)},
        counts={
            BASE: model.Counts(base_err * sums[BASE].count, sums[BASE].count),
            CAND: model.Counts(cand_err * sums[CAND].count, sums[CAND].count),
        },
    )
    assigned = {w: ok(float(rng.poisson(truth.users * share))) for w, share in shares.items()}
    requests = {w: ok(s.count) for w, s in sums.items()}
    weights = {BASE: 100 - experiment.ab.split, CAND: experiment.ab.split}
    return model.Observation(weights, metrics=(objective, errors), requests=requests, assignments=assigned)


def run(
    experiment: spec.ExperimentSpec,
    truth: Truth,
    *,
    seed: int = 1,
    limit: int = 200,
    annotations: Mapping[str, str] | None = None,
) -> tuple[model.State, list[model.Decision]]:
    """Start, then one evaluation per interval until a final phase, a wait for promotion, or ``limit``."""
    rng = np.random.default_rng(seed)
    now = T0
    start = canary.decide(experiment, model.State(), model.Observation(None), now)
    decisions = [start]
    stored: dict[str, Any] = status.render(start, {}, now, CAND)
    for _ in range(limit):
        state = status.parse_state(stored)  # round trip through status, as the operator does
        if state.phase.is_final or state.phase is Phase.PAUSED:
            break
        now += INTERVAL
        obs = interval(rng, experiment, truth)
        if annotations:
            obs = dataclasses.replace(obs, annotations=annotations)
        decision = canary.decide(experiment, state, obs, now)
        decisions.append(decision)
        stored = status.render(decision, stored, now, CAND)
    return status.parse_state(stored), decisions


def reasons(decisions: list[model.Decision]) -> list[str]:
    return [event.reason for d in decisions for event in d.events]


def test_starts_at_the_split_with_sticky_users() -> None:
    experiment = ab_spec(split=30)
    decision = canary.decide(experiment, model.State(), model.Observation(None), T0)
    assert decision.state.phase is Phase.PROGRESSING
    assert decision.weights == {BASE: 70, CAND: 30}
    assert decision.state.results["startedAt"] == "2026-11-23T10:00:00Z"
    assert "30% of participating users" in decision.state.message


def test_a_better_candidate_ships_and_promotes_with_auto_promote() -> None:
    experiment = ab_spec(autoPromote=True)
    state, decisions = run(experiment, Truth({BASE: 0.05, CAND: 0.065}))
    assert state.phase is Phase.SUCCEEDED, state.message
    assert state.outcome == "Ship" and state.reason == "Shipped"
    assert dict(state.weights) == {BASE: 0, CAND: 100}
    objective = state.results["objective"]
    low, high = objective["interval"]
    assert low > 0 and objective["lift"] >= 0.05  # significant and at least the minimum effect
    assert low <= 0.3 <= high  # the truth (+30 %) is inside the interval
    assert "Shipped" in reasons(decisions) and "Promoted" in reasons(decisions)


def test_ship_without_auto_promote_waits_for_the_annotation_keeping_the_split() -> None:
    experiment = ab_spec()
    state, decisions = run(experiment, Truth({BASE: 0.05, CAND: 0.065}))
    assert state.phase is Phase.PAUSED and state.reason == canary.AWAITING_PROMOTION
    assert state.outcome == "Ship" and dict(state.weights) == {BASE: 50, CAND: 50}
    assert decisions[-1].weights == {BASE: 50, CAND: 50}
    # Later ticks keep waiting (no resume, no re-evaluation) ...
    later = canary.decide(experiment, state, model.Observation(dict(state.weights)), T0 + INTERVAL * 500)
    assert later.state.phase is Phase.PAUSED and later.weights == {BASE: 50, CAND: 50}
    # ... until a human promotes.
    promote = model.Observation(dict(state.weights), annotations={"modelrollout.io/promote": "yes"})
    promoted = canary.decide(experiment, state, promote, T0 + INTERVAL * 501)
    assert promoted.state.phase is Phase.SUCCEEDED and promoted.weights == {BASE: 0, CAND: 100}
    assert promoted.state.outcome == "Ship"


def test_a_worse_candidate_is_discarded() -> None:
    state, decisions = run(ab_spec(), Truth({BASE: 0.05, CAND: 0.04}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == "Discard" and state.reason == "Discarded"
    assert dict(state.weights) == {BASE: 100, CAND: 0}
    # Discarded as soon as the interval rules out the minimum effect (+5 %): the lift is well below it.
    assert state.results["objective"]["interval"][1] < 0.05 and state.results["objective"]["lift"] < 0
    assert "Discarded" in reasons(decisions) and "RolledBack" in reasons(decisions)


def test_futility_discards_when_the_minimum_effect_is_ruled_out() -> None:
    # A real but tiny improvement (+1 %) against a minimum effect of +5 %, with a lot of traffic.
    state, _ = run(ab_spec(maxDuration="14d"), Truth({BASE: 0.05, CAND: 0.0505}, requests=40000), limit=2000)
    assert state.outcome == "Discard", state.message
    assert state.results["objective"]["interval"][1] < 0.05
    assert "minimum effect" in state.message


def test_inconclusive_at_max_duration_is_iterate() -> None:
    state, _ = run(ab_spec(maxDuration="10m"), Truth({BASE: 0.05, CAND: 0.052}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == "Iterate" and state.reason == "Iterate"
    assert dict(state.weights) == {BASE: 100, CAND: 0}
    low, high = state.results["objective"]["interval"]
    assert low < 0 < high


@pytest.mark.parametrize("seed", range(5))
def test_aa_finds_no_difference_and_passes_srm(seed: int) -> None:
    state, _ = run(ab_spec(aa=True, maxDuration="30m"), Truth({BASE: 0.05, CAND: 0.05}), seed=seed)
    assert state.outcome == "Iterate" and state.reason == "NoDifference", state.message
    assert state.results["srm"] == {
        "checked": True,
        "passed": True,
        "message": "the users' shares match the split",
    }
    assert "A/A test passed" in state.message


def test_aa_with_a_real_difference_fails_the_pipeline() -> None:
    state, _ = run(ab_spec(aa=True, maxDuration="2h"), Truth({BASE: 0.05, CAND: 0.07}))
    assert state.outcome == "Discard" and state.reason == "AAFailed", state.message


def test_aa_with_a_skewed_split_fails_on_the_sample_ratio() -> None:
    experiment = ab_spec(aa=True, maxDuration="2h")
    rng = np.random.default_rng(3)
    now, state = T0, canary.decide(experiment, model.State(), model.Observation(None), T0).state
    for _ in range(60):
        now += INTERVAL
        obs = interval(rng, experiment, Truth({BASE: 0.05, CAND: 0.05}))
        skewed = {BASE: ok(260.0), CAND: ok(140.0)}  # 35 % of new users, 50 % configured
        state = canary.decide(experiment, state, dataclasses.replace(obs, assignments=skewed), now).state
        if state.phase.is_final:
            break
    assert state.outcome == "Discard" and state.reason == "AAFailed"
    assert "traffic split does not match" in state.message


def test_a_broken_guardrail_rolls_back_as_in_a_canary() -> None:
    state, _ = run(ab_spec(), Truth({BASE: 0.05, CAND: 0.065}, guardrail_errors=(0.01, 0.2)))
    assert state.phase is Phase.ROLLED_BACK and state.reason == "GuardrailFailed"
    assert state.outcome == "Discard"
    assert "error-rate" in state.message


def test_missing_objective_data_holds_then_rolls_back() -> None:
    experiment = ab_spec()
    now = T0
    state = canary.decide(experiment, model.State(), model.Observation(None), now).state
    empty = model.MetricSample(
        "conversion", {BASE: ok(0.05), CAND: ports_empty()}
    )  # the candidate's series is missing
    for count in range(1, experiment.analysis.no_data_limit + 1):
        now += INTERVAL
        obs = model.Observation({BASE: 50, CAND: 50}, metrics=(empty,))
        state = canary.decide(experiment, state, obs, now).state
        if count < experiment.analysis.no_data_limit:
            assert state.phase is Phase.PROGRESSING and state.reason == "NoData"
            assert "conversion: no counts for churn-v2" in state.message
    assert state.phase is Phase.ROLLED_BACK and state.reason == "NoData" and state.outcome == "Discard"


def ports_empty() -> Any:
    from modelrollout import ports

    return ports.QueryResult(ports.QueryOutcome.EMPTY, detail="no series")


def test_segments_report_a_reversal() -> None:
    # Better overall and in "us" (most traffic), clearly worse in "eu".
    truth = Truth(
        {BASE: 0.05, CAND: 0.06},
        requests=9000,
        segments={
            "region=eu": {BASE: 0.08, CAND: 0.04},
            "region=us": {BASE: 0.04, CAND: 0.075},
            "region=apac": {BASE: 0.05, CAND: 0.06},
        },
    )
    state, _ = run(ab_spec(segments=["region"], maxDuration="30m"), truth)
    table = {entry["segment"]["region"]: entry for entry in state.results["segments"]}
    assert set(table) == {"eu", "us", "apac"}
    assert table["eu"]["reversed"] is True and table["eu"]["interval"][1] < 0
    assert table["us"]["reversed"] is False and table["apac"]["reversed"] is False


def test_fairness_discards_a_candidate_that_harms_a_segment() -> None:
    truth = Truth(
        {BASE: 0.05, CAND: 0.06},
        requests=9000,
        segments={"region=eu": {BASE: 0.08, CAND: 0.04}, "region=us": {BASE: 0.04, CAND: 0.075}},
    )
    experiment = ab_spec(segments=["region"], fairness={"margin": 0.1}, maxDuration="2h")
    state, decisions = run(experiment, truth)
    assert state.outcome == "Discard" and state.reason == "UnfairToSegment", state.message
    assert "region=eu" in state.message
    assert "UnfairToSegment" in reasons(decisions)


def test_secondary_metrics_get_corrected_intervals_and_plan_states_duration() -> None:
    metrics = [
        {"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}},
        {"name": "clicks", "ratio": {"success": SUCCESS, "total": TOTAL}},
        {"name": "signups", "ratio": {"success": SUCCESS, "total": TOTAL}, "role": "Secondary"},
    ]
    experiment = ab_spec(metrics=metrics, maxDuration="10m")
    assert [m.name for m in experiment.secondary_metrics] == ["clicks", "signups"]
    assert experiment.guardrails == []

    rng = np.random.default_rng(5)
    state = canary.decide(experiment, model.State(), model.Observation(None), T0).state
    obs = interval(rng, experiment, Truth({BASE: 0.05, CAND: 0.05}))
    objective = obs.metrics[0]  # type: ignore[index]
    obs = dataclasses.replace(
        obs,
        metrics=(
            objective,
            dataclasses.replace(objective, name="clicks"),
            dataclasses.replace(objective, name="signups"),
        ),
    )
    state = canary.decide(experiment, state, obs, T0 + INTERVAL).state
    secondary = state.results["secondary"]
    assert [s["metric"] for s in secondary] == ["clicks", "signups"]
    assert all(s["alpha"] == pytest.approx(0.025) for s in secondary)  # Bonferroni over two
    plan = state.results["abPlan"]
    assert plan["samplesPerArm"] > 0 and plan["requestsPerSecond"] == pytest.approx(4000 / 60, rel=0.1)
    assert "needs" in plan["message"] and plan["expectedDuration"]


def test_status_round_trip_keeps_results_and_outcome() -> None:
    state, decisions = run(ab_spec(), Truth({BASE: 0.05, CAND: 0.04}))
    rendered = status.render(decisions[-1], {}, T0, CAND)
    assert rendered["outcome"] == "Discard"
    for key in ("startedAt", "objective", "secondary", "abPlan", "srm", "timeline"):
        assert key in rendered, key
    again = status.parse_state(rendered)
    assert again.outcome == "Discard" and again.results == state.results
    assert len(rendered["timeline"]) <= 101


def test_fairness_on_a_metric_other_than_the_objective() -> None:
    """Conversion is fine everywhere; loan approvals drop in eu: fairness judges approvals per segment."""
    metrics = [
        {"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}},
        {"name": "approval", "ratio": {"success": SUCCESS, "total": TOTAL}},
    ]
    experiment = ab_spec(
        metrics=metrics, segments=["region"], fairness={"margin": 0.1, "metric": "approval"}, maxDuration="2h"
    )
    fine = Truth({BASE: 0.05, CAND: 0.05}, requests=9000, segments={
        "region=eu": {BASE: 0.05, CAND: 0.05}, "region=us": {BASE: 0.05, CAND: 0.05}})  # fmt: skip
    unfair = Truth({BASE: 0.3, CAND: 0.25}, requests=9000, segments={
        "region=eu": {BASE: 0.3, CAND: 0.15}, "region=us": {BASE: 0.3, CAND: 0.35}})  # fmt: skip
    rng = np.random.default_rng(9)
    now = T0
    state = canary.decide(experiment, model.State(), model.Observation(None), now).state
    for _ in range(120):
        now += INTERVAL
        conversion = interval(rng, experiment, fine)
        approval = interval(rng, experiment, unfair).metrics[0]  # type: ignore[index]
        metrics_now = (conversion.metrics[0], dataclasses.replace(approval, name="approval"))  # type: ignore[index]
        state = canary.decide(
            experiment, state, dataclasses.replace(conversion, metrics=metrics_now), now
        ).state
        if state.phase.is_final:
            break
    assert state.outcome == "Discard" and state.reason == "UnfairToSegment", state.message
    assert "region=eu (approval" in state.message
    rows = {(row["metric"], row["segment"]["region"]): row for row in state.results["segments"]}
    assert rows["approval", "eu"]["unfair"] is True and rows["approval", "us"]["unfair"] is False
    assert rows["conversion", "eu"]["unfair"] is False  # the objective's rows are not judged here
