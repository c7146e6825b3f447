"""The shadow phase (core/shadow.py): mirrored traffic judged, nothing user-facing moved."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from modelrollout import status
from modelrollout.core import canary, model, shadow
from modelrollout.core.model import Phase

from core_helpers import BASE, CAND, T0, healthy, make_spec, ok, step

AGREE = 'sum(increase(model_shadow_agreed_total{destination_workload="{{ workload }}"}[{{ interval }}]))'
COMPARED = 'sum(increase(model_shadow_compared_total{destination_workload="{{ workload }}"}[{{ interval }}]))'
# Mirrored: the candidate answers as many requests as the baseline serves (100 % mirror).
MIRRORED = {"requests": (1000, 1000)}


def shadow_spec(strategy: str = "Shadow", **shadow_fields: Any) -> Any:
    metrics = [
        {"name": "error-rate", "builtin": "error-rate", "max": 0.05, "maxRelativeIncrease": 1.0},
        {"name": "latency-p95", "builtin": "latency-p95", "max": 500},
    ]
    if "agreement" in shadow_fields:
        metrics.append({"name": "agreement", "ratio": {"success": AGREE, "total": COMPARED}})
    return make_spec(
        strategy=strategy,
        shadow={"mirrorPercent": 50, "duration": "60s", **shadow_fields},
        metrics=metrics,
        canary={"interval": "10s", "minSamples": 100, "steps": [50, 100], "minStepDuration": "10s"},
    )


def drive(
    experiment: Any,
    evaluation: dict[str, Any],
    ticks: int = 40,
    agreement: tuple[float, float] | None = None,
) -> list[model.Decision]:
    state, decisions, stored = model.State(), [], {}
    for i in range(ticks):
        now = T0 + datetime.timedelta(seconds=10 * i)
        due = canary.evaluation_due(experiment, state, now)
        decision = step(experiment, state, now, **(evaluation if due else {}))
        if (
            due
            and agreement is not None
            and decision.state.phase is Phase.PROGRESSING
            and shadow.active(state)
        ):
            decision = _with_agreement(experiment, state, now, agreement, evaluation)
        decisions.append(decision)
        stored = status.render(decision, stored, now, CAND)
        state = status.parse_state(stored)  # through status, as the operator does
        if state.phase.is_final:
            break
    return decisions


def _with_agreement(
    experiment: Any, state: model.State, now: datetime.datetime, rate: tuple[float, float], evaluation: Any
) -> model.Decision:
    """The same tick, with the agreement counters of the mirrored requests (candidate only)."""
    from core_helpers import observe

    obs = observe(dict(state.weights) or None, **evaluation)
    agreed, compared = rate
    sample = model.MetricSample(
        "agreement",
        {CAND: ok(agreed / compared)},
        sums={CAND: model.Sums(compared, agreed)},
    )
    obs = dataclasses.replace(obs, metrics=(*(obs.metrics or ()), sample))
    return canary.decide(experiment, state, obs, now)


def test_shadow_starts_with_the_mirror_and_all_traffic_on_the_baseline() -> None:
    experiment = shadow_spec()
    decision = canary.decide(experiment, model.State(), model.Observation(None), T0)
    assert decision.state.phase is Phase.PROGRESSING and decision.state.step == 0
    assert decision.weights == {BASE: 100, CAND: 0}
    assert shadow.active(decision.state) and shadow.mirror_percent(experiment, decision.state) == 50.0
    assert [e.reason for e in decision.events] == ["ShadowStarted"]


def test_a_passing_shadow_succeeds_with_nothing_user_facing_changed() -> None:
    experiment = shadow_spec()
    decisions = drive(experiment, evaluation=healthy(**MIRRORED))
    final = decisions[-1].state
    assert final.phase is Phase.SUCCEEDED and final.reason == shadow.PASSED
    assert dict(final.weights) == {BASE: 100, CAND: 0}
    assert decisions[-1].weights == {BASE: 100, CAND: 0}
    assert shadow.mirror_percent(experiment, final) is None  # the mirror comes off
    # It ran its full duration: passed no earlier than 60 s after it started.
    passed_at = next(i for i, d in enumerate(decisions) if d.state.phase is Phase.SUCCEEDED)
    assert passed_at * 10 >= 60
    # A final Shadow stays at the baseline (never "promoted" to the candidate).
    again = canary.decide(
        experiment, final, model.Observation({BASE: 100, CAND: 0}), T0 + datetime.timedelta(hours=1)
    )
    assert again.weights == {BASE: 100, CAND: 0}


def test_a_failing_candidate_is_caught_in_the_shadow_and_the_mirror_removed() -> None:
    experiment = shadow_spec()
    decisions = drive(experiment, evaluation=healthy(error=(0.01, 0.3), **MIRRORED))
    final = decisions[-1].state
    assert final.phase is Phase.ROLLED_BACK and final.reason == "GuardrailFailed"
    assert dict(final.weights) == {BASE: 100, CAND: 0}
    assert all(d.weights in (None, {BASE: 100, CAND: 0}) for d in decisions)  # users never moved
    assert shadow.mirror_percent(experiment, final) is None
    assert final.results["shadow"]["passed"] is False


def test_shadow_then_canary_with_mirrored_traffic_in_the_shadow_phase() -> None:
    experiment = shadow_spec(strategy="Canary")
    state, now = model.State(), T0
    for i in range(40):
        now = T0 + datetime.timedelta(seconds=10 * i)
        mirrored = shadow.active(state) or state.phase is Phase.PENDING
        evaluation = healthy(**MIRRORED) if mirrored else healthy()
        state = step(experiment, state, now, **evaluation).state
        if state.step >= 1:
            break
    assert (
        state.phase is Phase.PROGRESSING and state.step == 1 and dict(state.weights) == {BASE: 50, CAND: 50}
    )
    assert not shadow.active(state) and shadow.mirror_percent(experiment, state) is None


def test_low_agreement_rolls_back_and_good_agreement_passes() -> None:
    experiment = shadow_spec(agreement={"metric": "agreement", "min": 0.95})
    low = drive(experiment, agreement=(880.0, 1000.0), evaluation=healthy(**MIRRORED))[-1].state
    assert low.phase is Phase.ROLLED_BACK, low.message
    assert "agreement" in low.message and "surely below the minimum" in low.message
    assert low.results["shadow"]["agreement"]["value"] < 0.95
    good = drive(experiment, agreement=(990.0, 1000.0), evaluation=healthy(**MIRRORED))[-1].state
    assert good.phase is Phase.SUCCEEDED, good.message
    assert good.results["shadow"]["agreement"]["interval"][0] > 0.95
