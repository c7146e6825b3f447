"""Webhook gates in the core: waiting, approval, refusal, deadlines -- and Events for every change.

The driver below does what the reconciler does each tick: it persists the
state through ``status`` (render, then parse), asks ``approvals.due`` which
webhooks to call and hands their answers to ``decide`` -- so the I/O
contract between core and reconciler is what is tested, not a shortcut.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import test_abtest
import test_banditrun as tb

from modelrollout import spec, status
from modelrollout.core import approvals, canary, model
from modelrollout.core.model import Phase

from core_helpers import BASE, CAND, T0, healthy, observe

Answer = Callable[[str, datetime.datetime], tuple[bool, str]]
URL = "http://gate.test/approve"


def gated(*hooks: dict[str, Any], **overrides: Any) -> spec.ExperimentSpec:
    raw: dict[str, Any] = {
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": BASE},
        "candidate": {"subset": "v2", "workload": CAND},
        "canary": {"interval": "10s", "minSamples": 100, "steps": [10, 50, 100]},
        "metrics": [{"name": "error-rate", "builtin": "error-rate", "max": 0.05}],
        "webhooks": [{"url": URL, **hook} for hook in hooks],
    }
    raw.update(overrides)
    return spec.parse_spec(raw)


@dataclasses.dataclass
class Driver:
    experiment: spec.ExperimentSpec
    answer: Answer
    state: model.State = dataclasses.field(default_factory=model.State)
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    calls: list[tuple[datetime.datetime, str]] = dataclasses.field(default_factory=list)
    decisions: list[model.Decision] = dataclasses.field(default_factory=list)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    generation: int = 1
    error_rates: tuple[float, float] = (0.01, 0.01)

    def tick(self, now: datetime.datetime) -> model.Decision:
        state = status.parse_state(self.status)  # what a restarted operator would read
        answers = None
        hooks = approvals.due(self.experiment, state)
        if hooks:
            answers = []
            for hook in hooks:
                self.calls.append((now, hook.name))
                approved, detail = self.answer(hook.name, now)
                answers.append(model.WebhookOutcome(hook.name, approved, detail))
        weights = dict(state.weights) or None
        if canary.evaluation_due(self.experiment, state, now):
            obs = observe(weights, self.annotations, self.generation, **healthy(error=self.error_rates))
        else:
            obs = observe(weights, self.annotations, self.generation)
        obs = dataclasses.replace(obs, webhooks=tuple(answers) if answers is not None else None)
        decision = canary.decide(self.experiment, state, obs, now)
        self.status = status.render(decision, self.status, now, CAND)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def run(self, seconds: float, every: float = 10.0, start: float = 0.0) -> None:
        t = start
        while t <= start + seconds and not self.state.phase.is_final:
            self.tick(T0 + datetime.timedelta(seconds=t))
            t += every

    def reasons(self) -> list[str]:
        return [event.reason for d in self.decisions for event in d.events]


def refuse(name: str, now: datetime.datetime) -> tuple[bool, str]:
    return False, "HTTP 403: not yet"


def approve(name: str, now: datetime.datetime) -> tuple[bool, str]:
    return True, "HTTP 200"


def approve_after(seconds: float) -> Answer:
    def answer(name: str, now: datetime.datetime) -> tuple[bool, str]:
        if now >= T0 + datetime.timedelta(seconds=seconds):
            return True, "HTTP 200"
        return False, "HTTP 403: not yet"

    return answer


def test_pre_rollout_holds_every_weight_until_approved() -> None:
    driver = Driver(gated({"name": "load-test", "type": "pre-rollout"}), approve_after(40))
    driver.run(30)
    assert driver.state.phase is Phase.PENDING
    assert all(d.weights is None for d in driver.decisions), "no traffic moves before approval"
    assert driver.state.reason == approvals.AWAITING
    assert "HTTP 403: not yet" in driver.state.message
    conditions = {c["type"]: c for c in driver.status["conditions"]}
    assert conditions["AwaitingApproval"]["status"] == "True"
    assert driver.status["approval"]["type"] == "pre-rollout"
    driver.tick(T0 + datetime.timedelta(seconds=40))
    assert driver.state.phase is Phase.PROGRESSING
    assert driver.state.weights == {BASE: 90, CAND: 10}
    assert driver.state.approval is None and "approval" not in driver.status
    # One Event per change, not one per poll (Flagger #497).
    assert driver.reasons()[:4] == [approvals.AWAITING, approvals.REFUSED, approvals.GRANTED, "Started"]


def test_the_first_call_is_at_once_and_then_once_per_interval() -> None:
    driver = Driver(gated({"name": "load-test", "type": "pre-rollout"}), refuse)
    first = driver.tick(T0)
    assert first.requeue_after == datetime.timedelta(0)
    assert driver.calls == []
    second = driver.tick(T0 + datetime.timedelta(seconds=1))
    assert [name for _, name in driver.calls] == ["load-test"]
    assert second.requeue_after == datetime.timedelta(seconds=10)


def test_confirm_promotion_waits_at_the_last_step_while_the_guardrails_keep_running() -> None:
    hook = {"name": "qa-signoff", "type": "confirm-promotion"}
    driver = Driver(gated(hook), refuse)
    driver.run(300)
    assert driver.state.phase is Phase.PROGRESSING
    assert driver.state.weights == {BASE: 50, CAND: 50}, "held at the step before 100"
    assert driver.calls, "the gate was asked"
    assert not any(name != "qa-signoff" for _, name in driver.calls)
    # Harm while waiting still rolls back.
    driver.error_rates = (0.01, 0.2)
    driver.run(60, start=310)
    assert driver.state.phase is Phase.ROLLED_BACK
    assert driver.state.weights == {BASE: 100, CAND: 0}
    assert driver.state.approval is None


def test_confirm_promotion_approved_promotes() -> None:
    driver = Driver(gated({"name": "qa-signoff", "type": "confirm-promotion"}), approve_after(120))
    driver.run(400)
    assert driver.state.phase is Phase.SUCCEEDED
    assert driver.state.weights == {BASE: 0, CAND: 100}
    assert (
        min(t for t, _ in driver.calls)
        < T0 + datetime.timedelta(seconds=120)
        <= max(t for t, _ in driver.calls)
    )
    assert approvals.GRANTED in driver.reasons()


def test_confirm_step_asks_before_every_increase_but_not_before_promotion() -> None:
    driver = Driver(gated({"name": "step-ok", "type": "confirm-step"}), approve)
    driver.run(400)
    assert driver.state.phase is Phase.SUCCEEDED
    assert driver.reasons().count(approvals.GRANTED) == 1  # 10 -> 50 only; 50 -> 100 is promotion


def test_deadline_hold_stops_asking_says_why_and_waits_for_a_human() -> None:
    hook = {"name": "qa-signoff", "type": "confirm-promotion", "deadline": "60s"}
    driver = Driver(gated(hook), refuse)
    driver.run(400)
    assert driver.state.phase is Phase.PROGRESSING
    assert driver.state.reason == approvals.DEADLINE_EXCEEDED
    assert driver.state.action is model.Action.HOLD
    assert driver.state.weights == {BASE: 50, CAND: 50}
    assert driver.status["approval"]["deadlineExceeded"] is True
    conditions = {c["type"]: c for c in driver.status["conditions"]}
    assert conditions["AwaitingApproval"]["reason"] == "GateDeadlineExceeded"
    assert "not approved within 1m" in driver.state.message
    assert driver.reasons().count(approvals.DEADLINE_EXCEEDED) == 1
    last_call = max(t for t, _ in driver.calls)
    assert last_call <= T0 + datetime.timedelta(seconds=400) - datetime.timedelta(seconds=200), (
        "stopped asking"
    )
    # A human promotes: the gate does not stand in the way.
    driver.annotations = {model.Gate.PROMOTE.value: "yes"}
    driver.run(10, start=410)
    assert driver.state.phase is Phase.SUCCEEDED


def test_a_spec_change_rearms_an_expired_gate() -> None:
    hook = {"name": "qa-signoff", "type": "confirm-promotion", "deadline": "30s"}
    driver = Driver(gated(hook), refuse)
    driver.run(300)
    assert driver.state.reason == approvals.DEADLINE_EXCEEDED
    calls = len(driver.calls)
    driver.generation = 2
    driver.answer = approve
    driver.run(100, start=310)
    assert len(driver.calls) > calls
    assert driver.state.phase is Phase.SUCCEEDED


def test_deadline_rollback_rolls_back() -> None:
    hook = {"name": "load-test", "type": "pre-rollout", "deadline": "30s", "onDeadline": "Rollback"}
    driver = Driver(gated(hook), refuse)
    driver.run(100)
    assert driver.state.phase is Phase.ROLLED_BACK
    assert driver.state.reason == approvals.DEADLINE_EXCEEDED
    assert driver.state.weights == {BASE: 100, CAND: 0}


def test_no_answer_is_never_an_approval() -> None:
    """A gate the reconciler could not call (no caller) holds -- it never opens by default."""
    experiment = gated({"name": "qa-signoff", "type": "pre-rollout"})
    state = model.State()
    for seconds in range(0, 100, 10):
        decision = canary.decide(experiment, state, observe(), T0 + datetime.timedelta(seconds=seconds))
        state = decision.state
    assert state.phase is Phase.PENDING and decision.weights is None


def test_paused_experiments_call_no_webhooks() -> None:
    experiment = gated({"name": "load-test", "type": "pre-rollout"}, paused=True)
    state = model.State(approval=model.ApprovalWait("pre-rollout", since=T0))
    assert approvals.due(experiment, state) == []


def test_every_webhook_of_a_gate_must_approve() -> None:
    hooks = ({"name": "a", "type": "pre-rollout"}, {"name": "b", "type": "pre-rollout"})
    driver = Driver(gated(*hooks), lambda name, now: (name == "a", "HTTP 200" if name == "a" else "HTTP 500"))
    driver.run(50)
    assert driver.state.phase is Phase.PENDING
    assert "b: HTTP 500" in driver.state.message and "a:" not in driver.state.message


@pytest.mark.parametrize("seed", range(40))
def test_every_phase_and_weight_change_comes_with_an_event(seed: int) -> None:
    """Random gates, answers and guardrails: whatever happens, nothing changes silently."""
    rng = random.Random(seed)
    types = ["pre-rollout", "confirm-step", "confirm-promotion"]
    hooks = [
        {"name": f"h{i}", "type": t, "deadline": f"{rng.choice([20, 60, 3600])}s",
         "onDeadline": rng.choice(["Hold", "Rollback"])}
        for i, t in enumerate(rng.sample(types, rng.randint(0, 3)))
    ]  # fmt: skip
    driver = Driver(
        gated(*hooks), lambda name, now: (rng.random() < 0.3, rng.choice(["HTTP 403", "HTTP 500"]))
    )
    for tick in range(60):
        if rng.random() < 0.1:
            driver.error_rates = (0.01, rng.choice([0.01, 0.3]))
        if rng.random() < 0.03:
            driver.annotations = {rng.choice(list(model.Gate)).value: str(tick)}
        before = driver.state
        decision = driver.tick(T0 + datetime.timedelta(seconds=10 * tick))
        moved = decision.weights is not None and dict(decision.weights) != dict(before.weights)
        if decision.state.phase is not before.phase or moved:
            assert decision.events, f"tick {tick}: {before.phase} -> {decision.state.phase} without an Event"
        if decision.weights is not None:
            assert sum(decision.weights.values()) == 100


# --------------------------------------------------------------------------- a Ship: A/B test and bandit


Measure = Callable[[model.State, int], model.Observation]


def drive_ship(
    experiment: spec.ExperimentSpec,
    measure: Measure,
    answer: Answer,
    *,
    every: datetime.timedelta,
    ticks: int,
) -> tuple[model.State, list[model.Decision], list[datetime.datetime]]:
    """Tick every ``every`` (an evaluation each time), asking the webhooks whenever a gate waits; the
    state goes through the status each tick.  Returns the last state, the decisions and the calls."""
    stored: dict[str, Any] = {}
    decisions: list[model.Decision] = []
    calls: list[datetime.datetime] = []
    for i in range(ticks):
        now = T0 + every * i
        state = status.parse_state(stored)
        if state.phase.is_final:
            break
        hooks = approvals.due(experiment, state)
        answers = None
        if hooks:
            calls.append(now)
            answers = tuple(model.WebhookOutcome(h.name, *answer(h.name, now)) for h in hooks)
        obs = measure(state, i) if state.phase is not Phase.PENDING else model.Observation(None)
        decision = canary.decide(experiment, state, dataclasses.replace(obs, webhooks=answers), now)
        decisions.append(decision)
        stored = status.render(decision, stored, now, experiment.workloads)
    return status.parse_state(stored), decisions, calls


def shipped_at(decisions: list[model.Decision]) -> int:
    return next(i for i, d in enumerate(decisions) if any(e.reason == canary.SHIPPED for e in d.events))


def test_an_ab_test_that_ships_waits_for_confirm_promotion_holding_the_split() -> None:
    hook = {"name": "qa-signoff", "type": "confirm-promotion", "url": URL, "deadline": "24h"}
    experiment = test_abtest.ab_spec(autoPromote=True, webhooks=[hook])
    truth = test_abtest.Truth({BASE: 0.05, CAND: 0.065})
    rng = np.random.default_rng(1)
    measure: Measure = lambda state, i: test_abtest.interval(rng, experiment, truth)  # noqa: E731
    every = test_abtest.INTERVAL
    state, decisions, calls = drive_ship(experiment, measure, refuse, every=every, ticks=150)
    ship = shipped_at(decisions)
    assert state.phase is Phase.PROGRESSING and state.outcome == "Ship"
    assert state.reason == approvals.AWAITING and "Ship: " in state.message and "403" in state.message
    assert all(d.weights == {BASE: 50, CAND: 50} for d in decisions[ship:]), "the split holds"
    assert not canary.evaluation_due(experiment, state, T0 + every * 1000), "nothing more is measured"
    assert calls and min(calls) > T0 + every * ship
    reasons = [e.reason for d in decisions for e in d.events]
    assert reasons.count(canary.SHIPPED) == 1 and "Promoted" not in reasons
    # Approved later: promoted, once.
    approving, approved_decisions, _ = drive_ship(
        experiment, measure, approve_after(every.total_seconds() * (ship + 3)), every=every, ticks=150
    )
    assert approving.phase is Phase.SUCCEEDED and approving.reason == canary.SHIPPED
    assert dict(approving.weights) == {BASE: 0, CAND: 100} and approving.outcome == "Ship"
    assert "confirm-promotion approved by webhook qa-signoff" in approving.message
    said = [e.reason for d in approved_decisions for e in d.events]
    assert said.count(canary.SHIPPED) == 1 and said.count("Promoted") == 1
    assert said.index(canary.SHIPPED) < said.index(approvals.GRANTED) < said.index("Promoted")


def test_an_ab_test_ship_refused_past_the_deadline_rolls_back_with_on_deadline_rollback() -> None:
    hook = {"name": "qa", "type": "confirm-promotion", "url": URL, "deadline": "5m", "onDeadline": "Rollback"}
    experiment = test_abtest.ab_spec(autoPromote=True, webhooks=[hook])
    truth = test_abtest.Truth({BASE: 0.05, CAND: 0.065})
    rng = np.random.default_rng(1)
    measure: Measure = lambda state, i: test_abtest.interval(rng, experiment, truth)  # noqa: E731
    state, _, _ = drive_ship(experiment, measure, refuse, every=test_abtest.INTERVAL, ticks=150)
    assert state.phase is Phase.ROLLED_BACK and state.reason == approvals.DEADLINE_EXCEEDED
    assert dict(state.weights) == {BASE: 100, CAND: 0}
    assert "not approved within 5m" in state.message


def test_a_bandit_that_ships_waits_for_confirm_promotion_then_promotes_its_winner() -> None:
    hook = {"name": "qa-signoff", "type": "confirm-promotion", "url": URL}
    experiment = tb.bandit_spec().model_copy(
        update={"webhooks": gated(hook).webhooks}  # the same parsed webhook on the bandit's spec
    )
    observe = tb.at_rates({tb.V1: 0.04, tb.V2: 0.04, tb.V3: 0.08})
    state, decisions, calls = drive_ship(experiment, observe, refuse, every=tb.TICK, ticks=150)
    ship = shipped_at(decisions)
    held = decisions[ship].weights
    assert state.phase is Phase.PROGRESSING and state.outcome == "Ship" and state.results["winner"] == tb.V3
    assert held is not None and all(d.weights == held for d in decisions[ship:]), "the allocation holds"
    assert state.results["bandit"]["stage"] == "Decided" and calls
    opened, later, _ = drive_ship(
        experiment, observe, approve_after(tb.TICK.total_seconds() * (ship + 2)), every=tb.TICK, ticks=150
    )
    assert opened.phase is Phase.SUCCEEDED and opened.results["winner"] == tb.V3
    assert dict(opened.weights) == {tb.V1: 0, tb.V2: 0, tb.V3: 100}
    assert approvals.GRANTED in [e.reason for d in later for e in d.events]
