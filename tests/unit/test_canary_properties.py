"""Properties of the Canary state machine under arbitrary sequences of ticks.

Each run throws random evaluations (passing, failing, missing, unreachable),
manual gates, pauses, spec problems, drifted weights and timer jitter at the
core, persisting the state through ``status`` between ticks exactly as the
reconciler does, and checks what must hold whatever happens.
"""

from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import status as status_mod
from modelrollout.core import canary, model
from modelrollout.core.model import Phase

from core_helpers import BASE, CAND, T0, _measure, healthy, make_spec, no_data, observe, ok, unreachable

RESULT = st.sampled_from(["good", "bad", "empty", "down"])


def _evaluation(kind: str, weights, total: float) -> dict:
    """One interval as the reconciler would measure it: good, bad, or with data missing."""
    error = 0.5 if kind == "bad" else 0.01
    measured = _measure(dict(weights), healthy(error=(0.01, error), total=total)["evaluation"])
    if kind in ("empty", "down"):
        missing = no_data() if kind == "empty" else unreachable()
        metrics = measured["metrics"]
        measured["metrics"] = (
            model.MetricSample("error-rate", {BASE: ok(0.01), CAND: missing}, counts=None),
            metrics[1],
        )
    return measured


TICK = st.fixed_dictionaries(
    {
        "result": RESULT,
        "gate": st.sampled_from([None, None, None, None, "promote", "abort", "restart"]),
        "paused": st.sampled_from([False] * 5 + [True]),
        "invalid": st.sampled_from([False] * 9 + [True]),
        "drift": st.sampled_from([None] * 6 + [{BASE: 50, CAND: 50}]),
        "seconds": st.floats(min_value=0.5, max_value=30),
        "requests": st.integers(min_value=0, max_value=400),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    ticks=st.lists(TICK, min_size=1, max_size=40),
    failure_limit=st.integers(1, 3),
    no_data_policy=st.sampled_from(["Hold", "Fail"]),
)
def test_invariants_hold_for_any_sequence(ticks, failure_limit, no_data_policy):
    experiment = make_spec(
        analysis={"failureLimit": failure_limit, "noData": no_data_policy, "noDataLimit": 3}
    )
    now, stored, gate_values = T0, {}, {}
    for n, tick in enumerate(ticks):
        state = status_mod.parse_state(stored)
        now += datetime.timedelta(seconds=tick["seconds"])
        annotations = dict(gate_values)
        if tick["gate"]:
            gate_values[f"modelrollout.io/{tick['gate']}"] = str(n)
            annotations = dict(gate_values)
        routes = tick["drift"] or (dict(state.weights) or None)
        if tick["invalid"]:
            decision = canary.reject_spec(state, observe(routes, annotations), "spec.canary.steps[1]: bad")
        else:
            spec_now = make_spec(
                analysis={"failureLimit": failure_limit, "noData": no_data_policy, "noDataLimit": 3},
                paused=tick["paused"],
            )
            due = canary.evaluation_due(spec_now, state, now)
            evaluation = {}
            if due:
                evaluation = {
                    **_evaluation(tick["result"], state.weights, tick["requests"] * 10),
                }
            decision = canary.decide(spec_now, state, observe(routes, annotations, **evaluation), now)
        new = decision.state
        _check(experiment, state, new, decision, annotations)
        stored = status_mod.render(decision, stored, now, CAND)


def _check(experiment, old, new, decision, annotations):
    # Weights, whenever the core wants them written, are a full split summing to 100.
    if decision.weights is not None:
        assert set(decision.weights) == {BASE, CAND}
        assert sum(decision.weights.values()) == 100
        assert all(0 <= w <= 100 for w in decision.weights.values())
        assert dict(decision.weights) == dict(new.weights)
    # Final phases pin the traffic.
    if new.phase is Phase.ROLLED_BACK:
        assert new.weights == {BASE: 100, CAND: 0}
    if new.phase is Phase.SUCCEEDED:
        assert new.weights == {BASE: 0, CAND: 100}
    # Final phases stay final unless a new restart value arrives.
    restart = annotations.get("modelrollout.io/restart")
    restarted = restart is not None and old.gates.get("modelrollout.io/restart") != restart
    if (
        old.phase.is_final
        and not restarted
        and not (old.phase is Phase.FAILED and old.reason == "InvalidSpec")
    ):
        assert new.phase is old.phase
        assert new.weights == old.weights
    # Steps only move forward within a run, one at a time, and stay within the plan.
    if not restarted and new.phase is not Phase.FAILED and old.phase is not Phase.FAILED:
        assert new.step in (old.step, old.step + 1) or new.phase is Phase.SUCCEEDED
    assert 0 <= new.step <= len(experiment.canary.steps)
    # A running experiment holds exactly one of its steps' weights.
    if new.phase is Phase.PROGRESSING and new.weights:
        assert new.weights[CAND] == experiment.canary.steps[new.step - 1]
    # Every phase change is announced.
    if new.phase is not old.phase and not restarted:
        assert decision.events, (old.phase, new.phase)
    # The reason is always one line a human can read.
    assert "\n" not in new.message


@given(ticks=st.lists(st.sampled_from(["good", "empty"]), min_size=1, max_size=30))
def test_missing_data_never_advances_a_step(ticks):
    experiment = make_spec(analysis={"noDataLimit": 1000}, canary={"minSamples": 0})
    state = canary.decide(experiment, model.State(), observe(), T0).state
    now = T0
    for kind in ticks:
        now += datetime.timedelta(seconds=10)
        before = state
        if before.phase.is_final:
            break
        obs = observe(dict(state.weights), **_evaluation(kind, state.weights, 2000))
        state = canary.decide(experiment, state, obs, now).state
        if kind == "empty":
            assert state.step == before.step
            assert state.phase is Phase.PROGRESSING


@given(ticks=st.lists(TICK, min_size=1, max_size=25))
@settings(max_examples=100, deadline=None)
def test_status_round_trip_preserves_the_state(ticks):
    """What the core decides, written to status and read back, is the same State: restart-safe."""
    experiment = make_spec()
    state, stored, now = model.State(), {}, T0
    for n, tick in enumerate(ticks):
        now += datetime.timedelta(seconds=tick["seconds"])
        annotations = {f"modelrollout.io/{tick['gate']}": str(n)} if tick["gate"] else {}
        evaluation = {}
        if canary.evaluation_due(experiment, state, now):
            evaluation = _evaluation(tick["result"], state.weights, 2000)
        decision = canary.decide(
            experiment, state, observe(dict(state.weights) or None, annotations, **evaluation), now
        )
        stored = status_mod.render(decision, stored, now, CAND)
        state = status_mod.parse_state(stored)
        expected = decision.state
        # Times are stored to the second, as Kubernetes does.
        assert state.phase is expected.phase
        assert state.step == expected.step
        assert dict(state.weights) == dict(expected.weights)
        assert dict(state.samples) == dict(expected.samples)
        assert dict(state.gates) == dict(expected.gates)
        assert (state.failed_checks, state.no_data_checks, state.step_checks) == (
            expected.failed_checks,
            expected.no_data_checks,
            expected.step_checks,
        )
        assert state.reason == expected.reason and state.message == expected.message
        if expected.step_started_at is not None:
            assert abs((state.step_started_at - expected.step_started_at).total_seconds()) < 1
        state = expected
