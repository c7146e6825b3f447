"""A canary with several candidates: each against the baseline, a failing one dropped, the best promoted."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from modelrollout import status as status_mod
from modelrollout.core import arms, canary, model
from modelrollout.core.model import Phase
from modelrollout.plugin import render

from core_helpers import BASE, T0, histogram, make_spec, ok

V2, V3, V4 = "churn-v2", "churn-v3", "churn-v4"
THREE = [{"subset": "v2", "workload": V2}, {"subset": "v3", "workload": V3}, {"subset": "v4", "workload": V4}]


def three(**overrides: Any) -> Any:
    return make_spec(candidate=None, candidates=THREE, **overrides)


def measured(
    weights: Mapping[str, int],
    errors: Mapping[str, float],
    latency: float = 100.0,
    total: float = 20000,
    missing: frozenset[str] = frozenset(),
) -> model.Observation:
    """One evaluation: each variant serves its share of ``total`` at its error rate."""
    served = {w: total * weights.get(w, 0) / 100 for w in weights}
    seen = [w for w in served if w not in missing]
    return model.Observation(
        weights=dict(weights),
        metrics=(
            model.MetricSample(
                "error-rate",
                {w: ok(errors.get(w, 0.01)) for w in seen},
                counts={w: model.Counts(served[w] * errors.get(w, 0.01), served[w]) for w in seen},
            ),
            model.MetricSample(
                "latency-p95",
                {w: ok(latency) for w in seen},
                histograms={w: histogram(served[w], 0.03) for w in seen},
            ),
        ),
        requests={w: ok(served[w]) for w in served},
    )


def drive(
    experiment: Any,
    errors: Mapping[str, float],
    ticks: int = 60,
    state: model.State | None = None,
    **kwargs: Any,
) -> tuple[model.State, list[model.Decision]]:
    """Tick every 10 s (the interval) until the experiment ends; the routes hold what the core asked."""
    state = state or model.State()
    decisions: list[model.Decision] = []
    for i in range(ticks):
        now = T0 + datetime.timedelta(seconds=10 * i)
        if canary.evaluation_due(experiment, state, now):
            obs = measured(state.weights, errors, **kwargs)
        else:
            obs = model.Observation(weights=dict(state.weights) or None)
        decision = canary.decide(experiment, state, obs, now)
        decisions.append(decision)
        state = decision.state
        if state.phase.is_final:
            break
    return state, decisions


def events(decisions: list[model.Decision]) -> list[model.Event]:
    return [event for decision in decisions for event in decision.events]


def test_a_step_shares_its_percent_among_the_candidates() -> None:
    experiment = three()
    assert canary.split(experiment, 5) == {BASE: 95, V2: 2, V3: 2, V4: 1}
    assert canary.split(experiment, 50) == {BASE: 50, V2: 17, V3: 17, V4: 16}
    assert canary.split(experiment, 50, [V2, V4]) == {BASE: 50, V2: 25, V3: 0, V4: 25}
    assert canary.split(experiment, 0) == {BASE: 100, V2: 0, V3: 0, V4: 0}
    first = canary.decide(experiment, model.State(), model.Observation(weights=None), T0)
    assert first.weights == {BASE: 95, V2: 2, V3: 2, V4: 1}
    assert "5% of traffic to churn-v2, churn-v3, churn-v4" in first.state.message


def test_each_candidate_is_compared_at_alpha_over_the_number_of_candidates() -> None:
    experiment = three(analysis={"alpha": 0.06})
    for variant in experiment.arms:
        pair = experiment.pair(variant)
        assert pair.analysis.alpha == pytest.approx(0.02)
        assert pair.the_candidate == variant and pair.arms == (variant,)
    single = make_spec(analysis={"alpha": 0.06})
    assert single.pair(single.the_candidate) is single
    # The sequential tests' bound is (sequential guardrails / alpha): 2 / 0.02 with three candidates.
    _state, decisions = drive(experiment, {}, ticks=3)
    bounds = {(e.extra["variant"], e.name): e.extra.get("bound") for d in decisions for e in d.assessments}
    assert bounds[(V3, "error-rate")] == pytest.approx(2 / 0.02)
    assert {v for v, _ in bounds} == {V2, V3, V4}


def test_a_failing_candidate_is_dropped_and_the_others_carry_on_to_promote_the_best() -> None:
    experiment = three()
    # v3 fails its error-rate guardrail; v4 is the best of the other two.
    state, decisions = drive(experiment, {BASE: 0.010, V2: 0.010, V3: 0.20, V4: 0.005}, ticks=120)
    dropped = [e for e in events(decisions) if e.reason == "CandidateDropped"]
    assert len(dropped) == 1 and V3 in dropped[0].message and "error-rate" in dropped[0].message
    at_drop = next(d for d in decisions if any(e.reason == "CandidateDropped" for e in d.events))
    assert at_drop.state.phase is Phase.PROGRESSING
    assert at_drop.weights == {BASE: 97, V2: 2, V3: 0, V4: 1}  # v3's 2 points went to the baseline
    assert state.phase is Phase.SUCCEEDED, state.message
    assert state.results["winner"] == V4
    assert state.weights == {BASE: 0, V2: 0, V3: 0, V4: 100}
    records = {r["workload"]: r for r in state.results["candidates"]}
    assert records[V3]["state"] == arms.DROPPED and records[V3]["reason"] == "GuardrailFailed"
    assert records[V2]["state"] == records[V4]["state"] == arms.ACTIVE
    assert records[V4]["score"]["value"] < records[V2]["score"]["value"]
    # No step after the drop gave v3 traffic again.
    after = decisions[decisions.index(at_drop) :]
    assert all((d.weights or {}).get(V3, 0) == 0 for d in after)
    # Every later step split its percent between the two left.
    steps = [d.weights for d in after if any(e.reason == "StepAdvanced" for e in d.events)]
    assert steps and all(w is not None and w[V2] + w[V4] == 100 - w[BASE] for w in steps)
    assert {w[V2] for w in steps if w} == {13, 25}  # 25 and 50 shared by two (the earlier gets the odd point)


def test_when_every_candidate_fails_the_experiment_rolls_back() -> None:
    experiment = three()
    state, decisions = drive(experiment, {BASE: 0.01, V2: 0.3, V3: 0.3, V4: 0.3})
    assert state.phase is Phase.ROLLED_BACK
    assert "every candidate failed" in state.message
    assert state.weights == {BASE: 100, V2: 0, V3: 0, V4: 0}
    assert not any(e.reason == "CandidateDropped" for e in events(decisions))


def test_the_last_candidate_standing_fails_later_and_rolls_back() -> None:
    experiment = three()
    errors = {BASE: 0.01, V2: 0.3, V3: 0.3, V4: 0.01}
    state, _ = drive(experiment, errors, ticks=2)
    assert arms.active(experiment, state) == (V4,)
    state, _decisions = drive(experiment, {**errors, V4: 0.3}, state=state, ticks=200)
    assert state.phase is Phase.ROLLED_BACK
    assert state.weights[BASE] == 100


def test_a_failed_check_below_the_limit_holds_everyone_and_recovery_resets_it() -> None:
    experiment = three(analysis={"failureLimit": 2})
    first = canary.decide(experiment, model.State(), model.Observation(weights=None), T0)
    now = T0 + datetime.timedelta(seconds=10)
    bad = canary.decide(experiment, first.state, measured(first.state.weights, {V3: 0.3}), now)
    assert bad.state.reason == "GuardrailFailed" and bad.state.phase is Phase.PROGRESSING
    assert "churn-v3: failed check 1/2" in bad.state.message
    assert bad.weights == first.weights  # held, nobody dropped
    assert [e.reason for e in bad.events] == ["GuardrailFailed"]


def test_missing_data_for_one_candidate_holds_then_drops_only_it() -> None:
    experiment = three(analysis={"noDataLimit": 2})
    state = canary.decide(experiment, model.State(), model.Observation(weights=None), T0).state
    decisions = []
    for i in range(1, 3):
        now = T0 + datetime.timedelta(seconds=10 * i)
        obs = measured(state.weights, {}, missing=frozenset({V2}))
        decision = canary.decide(experiment, state, obs, now)
        decisions.append(decision)
        state = decision.state
    assert decisions[0].state.reason == "NoData" and "churn-v2: no data (1/2)" in decisions[0].state.message
    assert [e.reason for e in decisions[1].events] == ["CandidateDropped"]
    assert arms.active(experiment, state) == (V3, V4)
    assert state.phase is Phase.PROGRESSING and state.weights[V2] == 0


def test_missing_baseline_data_is_every_candidates_and_rolls_back_at_the_limit() -> None:
    experiment = three(analysis={"noDataLimit": 2})
    state, _decisions = drive(experiment, {}, missing=frozenset({BASE}))
    assert state.phase is Phase.ROLLED_BACK and state.reason == "NoData"
    assert "every candidate failed" in state.message


def test_status_keeps_who_was_dropped_across_a_restarted_operator() -> None:
    experiment = three()
    errors = {BASE: 0.01, V2: 0.01, V3: 0.3, V4: 0.01}
    state, decisions = drive(experiment, errors, ticks=3)
    assert arms.active(experiment, state) == (V2, V4)
    stored: dict[str, Any] = {}
    for decision in decisions:
        stored = status_mod.render(decision, stored, T0, experiment.workloads)
    assert stored["candidateWeight"] == state.weights[V2] + state.weights[V4]
    assert [c["state"] for c in stored["candidates"]] == ["Active", "Dropped", "Active"]
    assert {m["variant"] for m in stored["metrics"]} <= {V2, V3, V4}
    again = status_mod.parse_state(stored)
    assert arms.active(experiment, again) == (V2, V4)
    final, _ = drive(experiment, errors, state=again, ticks=200)
    assert final.phase is Phase.SUCCEEDED and final.results["winner"] in (V2, V4)


def test_promoting_by_hand_promotes_the_leader() -> None:
    experiment = three()
    state, _ = drive(experiment, {BASE: 0.01, V2: 0.02, V3: 0.004, V4: 0.01}, ticks=3)
    assert state.phase is Phase.PROGRESSING
    obs = model.Observation(weights=dict(state.weights), annotations={model.Gate.PROMOTE.value: "now"})
    decision = canary.decide(experiment, state, obs, T0 + datetime.timedelta(minutes=5))
    assert decision.state.phase is Phase.SUCCEEDED
    assert decision.state.results["winner"] == V3
    assert decision.weights == {BASE: 0, V2: 0, V3: 100, V4: 0}


def test_the_ranking_metric_is_the_objective_else_the_first_metric() -> None:
    assert arms.rank_metric(three()) == ("error-rate", False)
    by_min = three(metrics=[{"name": "fraud-caught", "query": "sum(x)", "min": 0.1}])
    assert arms.rank_metric(by_min) == ("fraud-caught", True)
    objective = three(
        metrics=[{"name": "conversion", "ratio": {"success": "a", "total": "b"}}],
        objective={"metric": "conversion", "minimumEffect": 0.02, "direction": "Decrease"},
    )
    assert arms.rank_metric(objective) == ("conversion", False)


def test_a_move_that_did_not_land_is_finished_not_taken_for_an_edit() -> None:
    experiment = three()
    state, _ = drive(experiment, {}, ticks=4)
    assert state.step >= 2 and state.phase is Phase.PROGRESSING, state.message
    before = canary.split(experiment, experiment.canary.steps[state.step - 2])
    obs = model.Observation(weights=before)
    decision = canary.decide(experiment, state, obs, T0 + datetime.timedelta(minutes=10))
    assert decision.state.reason == "WeightsApplied"
    assert decision.weights == state.weights


def test_one_candidate_writes_no_candidate_records() -> None:
    experiment = make_spec()
    state, _ = drive(experiment, {}, ticks=3)
    assert "candidates" not in state.results and "winner" not in state.results
    assert dataclasses.replace(state).results == state.results


def test_windows_straddling_a_drop_are_no_sample_ratio_mismatch() -> None:
    """Right after a drop the mesh may still serve the old weights for a while: not a mismatch."""
    experiment = three(canary={"interval": "10s", "minStepDuration": "60s", "steps": [30, 60, 100]})
    errors = {BASE: 0.01, V2: 0.01, V3: 0.3, V4: 0.01}
    state, decisions = drive(experiment, errors, ticks=2)
    assert decisions[-1].state.reason == "CandidateDropped"
    old = decisions[0].state.weights  # what the mesh still serves
    assert old == {BASE: 70, V2: 10, V3: 10, V4: 10} and state.weights[BASE] == 80
    for i in (2,):  # the window starting at the drop (one interval of 10 s: WEIGHT_CHANGE_SETTLE)
        now = T0 + datetime.timedelta(seconds=10 * i)
        obs = measured(old, {**errors, V3: 0.01}, total=200000)
        obs = dataclasses.replace(obs, weights=dict(state.weights))
        state = canary.decide(experiment, state, obs, now).state
        assert state.reason != "SampleRatioMismatch", state.message
    # ... but once the change has settled, the old shares are one.
    for i in range(3, 7):
        now = T0 + datetime.timedelta(seconds=10 * i)
        obs = dataclasses.replace(
            measured(old, {**errors, V3: 0.01}, total=200000), weights=dict(state.weights)
        )
        state = canary.decide(experiment, state, obs, now).state
    assert state.reason == "SampleRatioMismatch", state.message


def test_kubectl_mexp_status_shows_each_candidate_and_its_comparisons() -> None:
    experiment = three()
    final, decisions = drive(experiment, {BASE: 0.01, V2: 0.01, V3: 0.3, V4: 0.002}, ticks=200)
    stored: dict[str, Any] = {}
    for decision in decisions:
        stored = status_mod.render(decision, stored, T0, experiment.workloads)
    body = {
        "metadata": {"name": "churn-v2", "namespace": "ml"},
        "spec": {"baseline": {"workload": BASE, "subset": "v1"}, "candidates": THREE},
        "status": stored,
    }
    text = render.status_report(body, T0)
    lines = text.splitlines()
    table = lines[lines.index("Candidates:") + 1 : lines.index("Candidates:") + 5]
    assert table[0].split() == ["CANDIDATE", "STATE", "SCORE", "WHY"]
    assert table[1].split()[:3] == [V2, "Active", "error-rate"]
    assert table[2].split()[:3] == [V3, "Dropped", "error-rate"] and "GuardrailFailed" in table[2]
    assert table[3].split()[:3] == [V4, "(winner)", "Active"]
    assert f"error-rate ({V4})" in text and f"error-rate ({V2})" in text
    assert final.phase is Phase.SUCCEEDED
    assert "Weights:      baseline churn-v1 0%" in text and "candidate churn-v4 100%" in text
