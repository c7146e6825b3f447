"""The Canary state machine, rule by rule, with no I/O and a fixed clock."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from modelrollout.core import canary, model
from modelrollout.core.model import Action, Phase, State, Verdict

from core_helpers import (
    BASE,
    CAND,
    T0,
    healthy,
    make_spec,
    no_data,
    observe,
    ok,
    run_to_end,
    step,
    unreachable,
)

S = datetime.timedelta(seconds=1)
CALIBRATED = {"latency-p95/1": {"edge": 250.0}}


def progressing(experiment, step_no=1, **changes) -> State:
    weight = experiment.canary.steps[step_no - 1]
    base = State(
        phase=Phase.PROGRESSING,
        step=step_no,
        weights=canary.split(experiment, weight),
        step_started_at=T0,
        last_evaluated_at=T0,
        observed_generation=1,
        analysis=CALIBRATED,  # as if the latency edge had been placed on the baseline already
    )
    return dataclasses.replace(base, **changes)


def test_pending_starts_at_the_first_step():
    experiment = make_spec()
    decision = canary.decide(experiment, State(), observe(), T0)
    assert decision.state.phase is Phase.PROGRESSING
    assert decision.state.step == 1
    assert decision.weights == {BASE: 95, CAND: 5}
    assert decision.state.step_started_at == T0
    assert [e.reason for e in decision.events] == ["Started"]
    assert decision.requeue_after == 10 * S


def test_good_candidate_walks_every_step_in_order_then_promotes():
    decisions = run_to_end(make_spec(), **healthy())
    transitions = [(d.state.step, d.state.weights[CAND]) for d in decisions if d.events]
    assert transitions == [(1, 5), (2, 25), (3, 50), (4, 100)]
    final = decisions[-1].state
    assert final.phase is Phase.SUCCEEDED
    assert final.action is Action.PROMOTE
    assert decisions[-1].weights == {BASE: 0, CAND: 100}
    assert decisions[-1].events[-1].reason == "Promoted"


def test_no_evaluation_before_the_interval_is_up():
    experiment = make_spec()
    state = progressing(experiment)
    assert not canary.evaluation_due(experiment, state, T0 + 5 * S)
    assert canary.evaluation_due(experiment, state, T0 + 10 * S)
    decision = canary.decide(experiment, state, observe(state.weights), T0 + 5 * S)
    assert decision.state == state
    assert decision.weights == state.weights
    assert decision.events == ()
    assert decision.requeue_after == 5 * S


def test_step_waits_for_min_step_duration():
    experiment = make_spec(canary={"minStepDuration": "30s"})
    state = progressing(experiment)
    decision = step(experiment, state, T0 + 10 * S, **healthy())
    assert decision.state.step == 1
    assert decision.state.step_checks == 1
    assert "waiting for 10s of 30s" in decision.message
    later = step(experiment, decision.state, T0 + 30 * S, **healthy())
    assert later.state.step == 2


def test_step_waits_for_min_samples_of_each_variant():
    experiment = make_spec()
    state = progressing(experiment)
    decision = step(experiment, state, T0 + 10 * S, **healthy(requests=(1000, 40)))
    assert decision.state.step == 1
    assert decision.state.samples == {BASE: 1000, CAND: 40}
    assert f"40/100 {CAND} requests" in decision.message
    # Samples accumulate across evaluations of the same step.
    later = step(experiment, decision.state, T0 + 20 * S, **healthy(requests=(1000, 70)))
    assert later.state.step == 2
    assert later.state.samples == {}


def test_last_step_below_100_promotes_after_passing():
    experiment = make_spec(canary={"steps": [10, 40]})
    state = progressing(experiment, step_no=2)
    decision = step(experiment, state, T0 + 10 * S, **healthy())
    assert decision.state.phase is Phase.SUCCEEDED
    assert decision.weights == {BASE: 0, CAND: 100}
    assert decision.state.step == 2


@pytest.mark.parametrize(
    ("metric", "baseline", "candidate", "verdict", "words"),
    [
        ({"builtin": "error-rate", "max": 0.05}, 0.01, 0.06, Verdict.FAIL, "6.0% > max 5.0%"),
        ({"builtin": "error-rate", "max": 0.05}, 0.01, 0.05, Verdict.PASS, "(ok)"),
        ({"builtin": "latency-p95", "max": 250}, 100, 312, Verdict.FAIL, "312ms > max 250ms"),
        ({"query": "x", "min": 0.1}, 0.3, 0.05, Verdict.FAIL, "0.05 < min 0.1"),
        ({"builtin": "error-rate", "maxRelativeIncrease": 0.5}, 0.010, 0.016, Verdict.FAIL, "+60%"),
        ({"builtin": "error-rate", "maxRelativeIncrease": 0.5}, 0.010, 0.015, Verdict.PASS, "vs"),
        ({"builtin": "error-rate", "maxRelativeIncrease": 0.5}, 0.0, 0.001, Verdict.FAIL, "baseline of zero"),
        ({"builtin": "error-rate", "maxRelativeIncrease": 0.5}, 0.0, 0.0, Verdict.PASS, "(ok)"),
        # A builtin without thresholds still guards against a 2x error rate (its default).
        ({"builtin": "error-rate"}, 0.01, 0.021, Verdict.FAIL, "+110%"),
        ({"builtin": "latency-p99"}, 100, 140, Verdict.PASS, "(ok)"),
    ],
)
def test_threshold_rules(metric, baseline, candidate, verdict, words):
    from modelrollout.core import guardrails

    experiment = make_spec(metrics=[{"name": "m", **metric}])
    sample = model.MetricSample("m", {BASE: ok(baseline), CAND: ok(candidate)})
    assessment, _ = guardrails.ThresholdRules().assess(experiment, experiment.metrics[0], sample, None)
    assert assessment.verdict is verdict
    assert words in assessment.reason
    assert (assessment.baseline, assessment.candidate) == (baseline, candidate)


def test_relative_rule_needs_the_baseline():
    # A query: metric has no counts, so the relative rule is the threshold rule's.
    experiment = make_spec(metrics=[{"name": "m", "query": "x", "maxRelativeIncrease": 0.5}])
    sample = model.MetricSample("m", {BASE: no_data(), CAND: ok(0.01)})
    decision = step(experiment, progressing(experiment), T0 + 10 * S, metrics=(sample,), requests={})
    assert decision.state.action is Action.HOLD
    assert decision.assessments[0].verdict is Verdict.NO_DATA
    assert "no usable baseline value: Empty" in decision.message


def test_absolute_rule_does_not_need_the_baseline():
    experiment = make_spec(metrics=[{"name": "m", "query": "x", "max": 0.05}])
    sample = model.MetricSample("m", {BASE: no_data(), CAND: ok(0.01)})
    decision = step(experiment, progressing(experiment), T0 + 10 * S, metrics=(sample,), requests={})
    assert decision.assessments[0].verdict is Verdict.PASS


def test_failure_rolls_back_at_once_with_failure_limit_one():
    experiment = make_spec()
    decision = step(experiment, progressing(experiment, 2), T0 + 10 * S, **healthy(error=(0.01, 0.2)))
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.state.action is Action.ROLLBACK
    assert decision.state.reason == "GuardrailFailed"
    assert decision.weights == {BASE: 100, CAND: 0}
    assert decision.state.step == 2
    assert "rolled back at step 2/4 (25%): error-rate 20.0% > max 5.0%" in decision.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "RolledBack")]


def test_failure_limit_counts_failures_in_a_row():
    # Threshold failures can recover; accumulated sequential evidence does not vanish.
    experiment = make_spec(analysis={"failureLimit": 2}, metrics=[{"name": "m", "query": "x", "max": 0.05}])

    def evaluation(value):
        return {
            "metrics": (model.MetricSample("m", {BASE: ok(0.01), CAND: ok(value)}),),
            "requests": {BASE: ok(950), CAND: ok(50)},
        }

    first = step(experiment, progressing(experiment), T0 + 10 * S, **evaluation(0.2))
    assert first.state.phase is Phase.PROGRESSING
    assert first.state.action is Action.HOLD
    assert first.state.failed_checks == 1
    assert first.weights == {BASE: 95, CAND: 5}
    assert "failed check 1/2" in first.message
    recovered = step(experiment, first.state, T0 + 20 * S, **evaluation(0.01))
    assert recovered.state.failed_checks == 0
    again = step(experiment, recovered.state, T0 + 30 * S, **evaluation(0.2))
    assert again.state.phase is Phase.PROGRESSING
    final = step(experiment, again.state, T0 + 40 * S, **evaluation(0.2))
    assert final.state.phase is Phase.ROLLED_BACK


def test_no_data_holds_then_rolls_back_after_the_limit():
    experiment = make_spec(analysis={"noDataLimit": 3})
    sample = (
        model.MetricSample("error-rate", {BASE: ok(0.01), CAND: no_data()}),
        model.MetricSample("latency-p95", {BASE: ok(100), CAND: ok(100)}),
    )
    state = progressing(experiment)
    reasons = []
    for i in range(1, 4):
        decision = step(experiment, state, T0 + 10 * i * S, metrics=sample, requests={})
        reasons.append([e.reason for e in decision.events])
        state = decision.state
    assert reasons == [["NoData"], [], ["RolledBack"]]  # warned once, then rolled back
    assert state.phase is Phase.ROLLED_BACK
    assert state.reason == "NoData"
    assert "no data in 3 evaluations in a row" in state.message


def test_no_data_is_never_a_pass_even_when_other_metrics_pass():
    experiment = make_spec(analysis={"noDataLimit": 100}, canary={"minSamples": 0})
    sample = (
        model.MetricSample("error-rate", {BASE: ok(0.01), CAND: ok(0.01)}),
        model.MetricSample("latency-p95", {BASE: ok(100), CAND: unreachable()}),
    )
    state = progressing(experiment)
    for i in range(1, 20):
        state = step(experiment, state, T0 + 10 * i * S, metrics=sample, requests={}).state
    assert state.phase is Phase.PROGRESSING
    assert state.step == 1
    assert state.step_checks == 0
    assert "Unreachable (connection refused)" in state.message


def test_no_data_fail_policy_counts_as_a_failed_check():
    experiment = make_spec(analysis={"noData": "Fail"})
    sample = (model.MetricSample("error-rate", {BASE: ok(0.01), CAND: no_data()}),)
    decision = step(experiment, progressing(experiment), T0 + 10 * S, metrics=sample, requests={})
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.state.reason == "NoData"


def test_promote_gate_promotes_from_any_running_phase():
    experiment = make_spec()
    annotations = {"modelrollout.io/promote": "true"}
    decision = step(experiment, progressing(experiment, 2), T0 + 1 * S, annotations)
    assert decision.state.phase is Phase.SUCCEEDED
    assert decision.weights == {BASE: 0, CAND: 100}
    assert decision.state.reason == "PromotedManually"
    assert decision.state.gates == {"modelrollout.io/promote": "true"}


def test_gates_an_experiment_is_created_with_are_history_not_requests():
    """A promote value left in Git from an earlier run must not promote a new candidate unseen."""
    experiment = make_spec()
    created_with = {"modelrollout.io/promote": "2026-11-01", "modelrollout.io/abort": "x"}
    first = step(experiment, model.State(), T0, created_with)
    assert first.state.phase is Phase.PROGRESSING and first.weights == {BASE: 95, CAND: 5}
    assert first.state.gates == created_with
    # Changing a value afterwards is a request, as always.
    later = step(experiment, first.state, T0 + 1 * S, {**created_with, "modelrollout.io/promote": "now"})
    assert later.state.phase is Phase.SUCCEEDED


def test_abort_gate_rolls_back():
    experiment = make_spec()
    decision = step(experiment, progressing(experiment, 3), T0 + 1 * S, {"modelrollout.io/abort": "yes"})
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.state.reason == "Aborted"
    assert decision.weights == {BASE: 100, CAND: 0}


def test_restart_starts_over_and_old_gates_do_not_fire_again():
    experiment = make_spec()
    aborted = step(experiment, progressing(experiment, 3), T0, {"modelrollout.io/abort": "1"}).state
    # The abort annotation is still there (e.g. in Git) when the user restarts.
    annotations = {"modelrollout.io/abort": "1", "modelrollout.io/restart": "a"}
    restarted = step(experiment, aborted, T0 + 5 * S, annotations)
    assert restarted.state.phase is Phase.PROGRESSING
    assert restarted.state.step == 1
    assert restarted.weights == {BASE: 95, CAND: 5}
    assert [e.reason for e in restarted.events] == ["Restarted", "Started"]
    later = step(experiment, restarted.state, T0 + 6 * S, annotations)
    assert later.state.phase is Phase.PROGRESSING  # neither abort nor restart fires again
    # A new value of the same gate is a new request.
    again = step(experiment, later.state, T0 + 7 * S, {**annotations, "modelrollout.io/abort": "2"})
    assert again.state.phase is Phase.ROLLED_BACK


def test_final_phases_ignore_spec_changes_and_restore_drifted_weights():
    experiment = make_spec()
    done = dataclasses.replace(progressing(experiment), phase=Phase.SUCCEEDED, weights={BASE: 0, CAND: 100})
    changed = make_spec(canary={"steps": [1, 2]})
    obs = observe({BASE: 30, CAND: 70}, generation=2)
    decision = canary.decide(changed, done, obs, T0 + 100 * S)
    assert decision.state.phase is Phase.SUCCEEDED
    assert decision.state.step == done.step
    assert decision.state.observed_generation == 2
    assert decision.weights == {BASE: 0, CAND: 100}
    assert [e.reason for e in decision.events] == ["WeightsRestored"]
    quiet = canary.decide(changed, decision.state, observe({BASE: 0, CAND: 100}, generation=2), T0 + 110 * S)
    assert quiet.events == ()


def test_weights_edited_mid_step_are_restored_with_an_event():
    experiment = make_spec()
    state = progressing(experiment, 2)
    decision = canary.decide(experiment, state, observe({BASE: 50, CAND: 50}), T0 + 1 * S)
    assert decision.weights == {BASE: 75, CAND: 25}
    assert decision.events[0].reason == "WeightsRestored"
    assert "churn-v1 50%, churn-v2 50%" in decision.events[0].message


def test_weights_edited_with_on_weight_drift_pause_pause_and_leave_the_routes_be():
    experiment = make_spec(onWeightDrift="Pause")
    state = progressing(experiment, 2)
    edited = {BASE: 100, CAND: 0}  # someone moved traffic back by hand
    decision = canary.decide(experiment, state, observe(edited), T0 + 1 * S)
    assert decision.state.phase is Phase.PAUSED and decision.state.reason == "WeightsEdited"
    assert decision.weights is None, "the operator must not fight the person who edited them"
    assert [e.reason for e in decision.events] == ["WeightsEdited"]
    assert "churn-v1 100%, churn-v2 0% instead of churn-v1 75%, churn-v2 25%" in decision.state.message
    # Still edited: stays paused, quietly, touching nothing -- even when an evaluation would be due.
    later = canary.decide(experiment, decision.state, observe(edited, **healthy()), T0 + 30 * S)
    assert later.state.phase is Phase.PAUSED and later.weights is None and later.events == ()
    # The weights are put back: carry on at the same step, its clock restarted.
    resumed = canary.decide(experiment, later.state, observe({BASE: 75, CAND: 25}), T0 + 40 * S)
    assert resumed.state.phase is Phase.PROGRESSING and resumed.state.step == 2
    assert resumed.weights == {BASE: 75, CAND: 25}
    assert resumed.state.step_started_at == T0 + 40 * S
    # Abort still ends it from the pause.
    abort = observe(edited, {"modelrollout.io/abort": "1"})
    aborted = canary.decide(experiment, later.state, abort, T0 + 50 * S)
    assert aborted.state.phase is Phase.ROLLED_BACK and aborted.weights == {BASE: 100, CAND: 0}


@pytest.mark.parametrize("on_drift", ["Restore", "Pause"])
def test_a_move_that_did_not_land_is_finished_not_taken_for_an_edit(on_drift):
    """Status written, routes not (a crash in between, a failed write): finish the move, restart the
    step clock, and never judge the new step on traffic that still had the old weights."""
    experiment = make_spec(onWeightDrift=on_drift)
    state = progressing(experiment, 2)  # the intent: 25 %
    obs = observe({BASE: 95, CAND: 5}, **healthy())  # the routes: still step 1
    decision = canary.decide(experiment, state, obs, T0 + 30 * S)
    assert decision.state.phase is Phase.PROGRESSING and decision.state.step == 2
    assert decision.weights == {BASE: 75, CAND: 25}
    assert [e.reason for e in decision.events] == ["WeightsApplied"]
    assert decision.assessments == ()
    assert decision.state.step_started_at == T0 + 30 * S and decision.state.step_checks == 0


def test_final_phases_restore_drifted_weights_even_with_on_weight_drift_pause():
    experiment = make_spec(onWeightDrift="Pause")
    done = dataclasses.replace(progressing(experiment), phase=Phase.ROLLED_BACK, weights={BASE: 100, CAND: 0})
    decision = canary.decide(experiment, done, observe({BASE: 50, CAND: 50}), T0 + 100 * S)
    assert decision.state.phase is Phase.ROLLED_BACK and decision.weights == {BASE: 100, CAND: 0}
    assert [e.reason for e in decision.events] == ["WeightsRestored"]


def test_pause_holds_weights_and_resume_restarts_the_step_clock():
    experiment = make_spec(paused=True)
    state = progressing(make_spec(), 2, samples={BASE: 500, CAND: 50}, step_checks=1)
    paused = step(experiment, state, T0 + 10 * S, **healthy())
    assert paused.state.phase is Phase.PAUSED
    assert paused.weights == {BASE: 75, CAND: 25}
    assert paused.assessments == ()  # no evaluation while paused
    assert [e.reason for e in paused.events] == ["Paused"]
    still = step(experiment, paused.state, T0 + 100 * S, **healthy())
    assert still.state == paused.state
    assert still.events == ()
    resumed = step(make_spec(), paused.state, T0 + 200 * S, **healthy())
    assert resumed.state.phase is Phase.PROGRESSING
    assert resumed.state.step == 2
    assert resumed.state.step_started_at == T0 + 200 * S
    assert resumed.state.samples == {}
    assert [e.reason for e in resumed.events] == ["Resumed"]


def test_pause_before_start_moves_no_traffic():
    decision = canary.decide(make_spec(paused=True), State(), observe(), T0)
    assert decision.state.phase is Phase.PAUSED
    assert decision.weights is None
    resumed = canary.decide(make_spec(), decision.state, observe(), T0 + 5 * S)
    assert resumed.state.phase is Phase.PROGRESSING
    assert resumed.weights == {BASE: 95, CAND: 5}


def test_invalid_spec_fails_without_moving_traffic_and_retries_when_fixed():
    decision = canary.reject_spec(State(), observe(generation=1), "spec.canary.steps[1]: must be ... (got 3)")
    assert decision.state.phase is Phase.FAILED
    assert decision.state.reason == "InvalidSpec"
    assert decision.weights is None
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]
    assert "spec.canary.steps[1]" in decision.message
    same = canary.reject_spec(
        decision.state, observe(generation=1), "spec.canary.steps[1]: must be ... (got 3)"
    )
    assert same.events == ()  # no repeated Events for the same problem
    fixed = canary.decide(make_spec(), decision.state, observe(generation=2), T0)
    assert fixed.state.phase is Phase.PROGRESSING
    assert fixed.weights == {BASE: 95, CAND: 5}


def test_invalid_spec_mid_rollout_holds_the_current_weights():
    experiment = make_spec()
    decision = canary.reject_spec(progressing(experiment, 2), observe(generation=2), "spec.x: bad")
    assert decision.state.phase is Phase.PROGRESSING
    assert decision.state.action is Action.HOLD
    assert decision.weights is None
    assert "holding at the current weights until the spec is fixed: spec.x: bad" in decision.message
    # Fixing the spec continues at the same step, evaluating at once.
    fixed = step(experiment, decision.state, T0 + 100 * S, **healthy())
    assert fixed.state.step == 3
    assert fixed.state.reason == "StepAdvanced"


def test_missing_virtual_service_waits_before_start_and_fails_mid_rollout():
    experiment = make_spec()
    waiting = canary.blocked(
        experiment, State(), observe(), "VirtualServiceNotFound", "VirtualService ml/churn not found"
    )
    assert waiting.state.phase is Phase.PENDING
    assert waiting.weights is None and not waiting.restore_routes
    assert waiting.events[0].reason == "VirtualServiceNotFound"
    failed = canary.blocked(
        experiment, progressing(experiment, 2), observe(), "RouteNotFound", "route primary gone"
    )
    assert failed.state.phase is Phase.FAILED
    assert failed.restore_routes
    assert failed.weights is None


def test_only_step_100_promotes_at_once():
    decision = canary.decide(make_spec(canary={"steps": [100]}), State(), observe(), T0)
    assert decision.state.phase is Phase.SUCCEEDED
    assert decision.weights == {BASE: 0, CAND: 100}
