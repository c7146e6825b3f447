"""The Canary state machine: ``decide(spec, state, observation, now) -> Decision``.

Pending -> Progressing -> Succeeded | RolledBack | Failed, plus Paused.
A step advances when its checks pass, it has lasted ``minStepDuration`` and
each variant has served ``minSamples`` requests; reaching a step of 100 % (or
passing the last step) is promotion.  Failed checks roll back after
``failureLimit`` in a row; missing data holds, and turns into a rollback
after ``noDataLimit`` in a row (or at once with ``noData: Fail``).  Final
phases stay final: only a new ``modelrollout.io/restart`` value starts over.

Gates are annotations whose *value* is remembered once acted on, so a gate
left in Git never fires twice (re-set it to a new value to use it again).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import spec
from modelrollout.core import approvals, arms, drift, guardrails, lift, model, sequential, srm
from modelrollout.core.model import Action, Event, Gate, Phase, State, Verdict
from modelrollout.spec_hooks import WebhookType

# Timers fire a little early or late; an evaluation this close to due is due.
DUE_TOLERANCE = 0.9


def _left_to_sequential(metric: spec.MetricSpec) -> bool:
    return not sequential.is_sequential(metric)


# Hard SLO thresholds (max/min) on every metric, relative rules only where no counts
# exist; candidate-vs-baseline comparisons of count metrics are the sequential tests'.
DEFAULT_ANALYSES: tuple[guardrails.Analysis, ...] = (
    guardrails.ThresholdRules(relative=_left_to_sequential),
    sequential.SequentialTests(),
)
# How long after a weight change the measured traffic split may still show the old weights
# (Envoy picking up the routes, Prometheus scraping): windows starting sooner straddle it.
WEIGHT_CHANGE_SETTLE = datetime.timedelta(seconds=10)
# Suspicious evidence may hold a step this many step durations at most.
MAX_STEP_EXTENSION = 2

# Reasons (stable, CamelCase) that mean "the experiment cannot act on its objects".
INVALID_SPEC = "InvalidSpec"
BLOCKING_REASONS = frozenset({INVALID_SPEC, "VirtualServiceNotFound", "RouteNotFound"})
AWAITING_PROMOTION = "AwaitingPromotion"
SHIPPED = "Shipped"  # an A/B test or a bandit decided to ship a candidate


def split(
    experiment: spec.ExperimentSpec, candidate_percent: int, in_race: Sequence[str] | None = None
) -> dict[str, int]:
    """The weights of every variant when the candidates (those ``in_race``, default all) get
    ``candidate_percent`` together."""
    return arms.split(experiment, candidate_percent, in_race)


def candidate_weight(experiment: spec.ExperimentSpec, weights: Mapping[str, int]) -> int:
    """The traffic on the candidates, together."""
    return arms.candidate_share(experiment, weights)


def _to(experiment: spec.ExperimentSpec) -> str:
    """Who a step's traffic goes to, in words."""
    return ", ".join(experiment.workloads)


def evaluation_due(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> bool:
    """Whether this tick should query the metrics (the reconciler asks before observing)."""
    if state.phase is not Phase.PROGRESSING or _awaiting_ship(experiment, state):
        return False  # a decided Ship waiting at its gate measures nothing more
    last = state.last_evaluated_at or state.step_started_at
    return last is None or now - last >= experiment.interval * DUE_TOLERANCE


def decide(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis] = DEFAULT_ANALYSES,
) -> model.Decision:
    decision = _decide(experiment, state, obs, now, analyses)
    return drift.check(experiment, decision, state, obs)


def _decide(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    interval = experiment.interval
    if state.observed_generation is None and state.phase is Phase.PENDING:
        # Never seen before: gates it was created with are history (a value left in Git from an
        # earlier run must not promote a new candidate unseen); only a later change fires one.
        state = dataclasses.replace(state, gates=_acknowledge_all(state, obs))
    restart = _requested(Gate.RESTART, state, obs)
    if restart is not None:
        fresh = State(gates=_acknowledge_all(state, obs), observed_generation=obs.generation)
        started = _start(experiment, fresh, obs, now)
        restarted = Event("Normal", "Restarted", f"restarted by {Gate.RESTART.value}={restart!r}")
        return dataclasses.replace(started, events=(restarted, *started.events))

    if (
        state.phase is Phase.FAILED
        and state.reason == INVALID_SPEC
        and obs.generation != state.observed_generation
    ):
        # The spec that failed validation was fixed: nothing ran yet, so start now.
        state = State(gates=state.gates)
    state = approvals.rearm_on_change(state, obs.generation)
    state = dataclasses.replace(state, observed_generation=obs.generation)
    if state.reason == INVALID_SPEC and not state.phase.is_final:
        # Held mid-rollout on a bad spec that is now fixed: carry on where it was.
        state = dataclasses.replace(state, reason="SpecFixed", message="the spec is valid again", action=None)

    if state.phase.is_final:
        return model.Decision(state, _final_weights(experiment, state), requeue_after=interval)

    # Manual gates: abort wins over promote when both arrive in one tick.
    for gate, phase, reason, verb in (
        (Gate.ABORT, Phase.ROLLED_BACK, "Aborted", "aborted"),
        (Gate.PROMOTE, Phase.SUCCEEDED, "PromotedManually", "promoted"),
    ):
        value = _requested(gate, state, obs)
        if value is not None:
            acknowledged = _acknowledge(state, gate, value)
            return finish(
                experiment, acknowledged, phase, now, reason, f"{verb} by {gate.value}", step=state.step
            )

    if state.phase is Phase.PAUSED and state.reason == AWAITING_PROMOTION:
        # An A/B test that shipped without autoPromote: the split stays until a human promotes or aborts.
        return model.Decision(state, dict(state.weights), requeue_after=interval)
    if experiment.paused:
        return _pause(experiment, state)
    if drift.paused_by_edit(state):
        held = drift.still_edited(experiment, state, obs)
        if held is not None:
            return held
    if state.phase is Phase.PAUSED:
        state = _resume(state, now)
        if state.phase is Phase.PROGRESSING:
            message = f"resumed at step {state.step} ({_cand_pct(experiment, state)}%)"
            resumed = dataclasses.replace(state, reason="Resumed", message=message, action=Action.CONTINUE)
            return model.Decision(
                resumed, dict(state.weights), (Event("Normal", "Resumed", message),), requeue_after=interval
            )
    if state.phase is Phase.PENDING:
        return _start(experiment, state, obs, now)
    if drift.unfinished_move(experiment, state, obs):
        return _finish_move(experiment, state, now)
    if _awaiting_ship(experiment, state):
        return _ship_gate(experiment, state, obs, now, f"Ship: {_shipping(experiment, state)}", None, ())
    if obs.metrics is None:
        if state.approval is not None and obs.webhooks is not None:
            # Between evaluations: the webhooks answered; the step it waits to leave was good.
            return _advance(experiment, state, obs, now, "checks passed", ())
        return model.Decision(state, dict(state.weights), requeue_after=until_due(experiment, state, now))
    return _evaluate(experiment, state, obs, now, analyses)


def reject_spec(state: State, obs: model.Observation, problems: str) -> model.Decision:
    """The spec does not validate: say where, and never move traffic because of it."""
    restart = _requested(Gate.RESTART, state, obs)
    if restart is not None:
        state = State(gates=_acknowledge_all(state, obs))
    retry = datetime.timedelta(seconds=60)
    state = dataclasses.replace(state, observed_generation=obs.generation)
    if state.phase.is_final and state.reason != INVALID_SPEC:
        return model.Decision(state, None, requeue_after=retry)  # finished: spec edits do nothing
    if state.phase in (Phase.PROGRESSING, Phase.PAUSED):
        message = f"holding at the current weights until the spec is fixed: {problems}"
        action: Action | None = Action.HOLD
        phase: Phase = state.phase
    else:
        message = f"invalid spec: {problems}"
        action = None
        phase = Phase.FAILED
    events = () if state.message == message else (Event("Warning", INVALID_SPEC, message),)
    held = dataclasses.replace(state, phase=phase, reason=INVALID_SPEC, message=message, action=action)
    return model.Decision(held, None, events, requeue_after=retry)


def blocked(
    experiment: spec.ExperimentSpec, state: State, obs: model.Observation, reason: str, message: str
) -> model.Decision:
    """The routing object or its routes are missing.

    Before any traffic moved this is a wait (GitOps may apply the experiment
    before its VirtualService); mid-rollout it is a failure, and the
    reconciler puts back whatever of the original routes it still can.
    """
    state = dataclasses.replace(state, observed_generation=obs.generation)
    interval = experiment.interval
    if state.phase.is_final:
        return model.Decision(state, None, requeue_after=interval)
    # Told once: a wait is stored as "waiting: ...", and must not post an Event every interval.
    told = state.message in (message, f"waiting: {message}")
    events = () if told else (Event("Warning", reason, message),)
    if state.phase is Phase.PENDING:
        waiting = dataclasses.replace(state, reason=reason, message=f"waiting: {message}", action=Action.HOLD)
        return model.Decision(waiting, None, events, requeue_after=interval)
    failed = dataclasses.replace(state, phase=Phase.FAILED, reason=reason, message=message, action=None)
    return model.Decision(failed, None, events, requeue_after=interval, restore_routes=True)


# --------------------------------------------------------------------------- transitions


def _start(
    experiment: spec.ExperimentSpec, state: State, obs: model.Observation, now: datetime.datetime
) -> model.Decision:
    state = dataclasses.replace(state, observed_generation=obs.generation)
    return approvals.through(
        experiment,
        state,
        obs,
        now,
        WebhookType.PRE_ROLLOUT,
        "before the first step",
        proceed=lambda approved: _start_now(experiment, approved, now),
        roll_back=lambda s, why: finish(
            experiment, s, Phase.ROLLED_BACK, now, approvals.DEADLINE_EXCEEDED, why, step=0
        ),
    )


def _start_now(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    if experiment.is_ab_test:
        from modelrollout.core import abtest

        return abtest.start(experiment, state, now)
    if experiment.is_bandit:
        from modelrollout.core import banditrun  # the bandit builds on this module

        return banditrun.start(experiment, state, now)
    if experiment.has_shadow_phase and shadow_pending(state):
        from modelrollout.core import shadow  # the shadow phase builds on this module

        return shadow.start(experiment, state, now)  # (again, when resumed before it ended)
    return start_steps(experiment, state, now)


def _before_steps(experiment: spec.ExperimentSpec) -> int:
    """The candidate's share of requests before the first step: 0, or the mirror's after a shadow phase."""
    if experiment.shadow is None:
        return 0
    percent = experiment.shadow.mirror_percent
    return round(100 * percent / (100 + percent))


def shadow_pending(state: State) -> bool:
    """The experiment's shadow phase has not passed yet (an experiment without one: irrelevant)."""
    record = state.results.get("shadow")
    return not (isinstance(record, Mapping) and record.get("passed") is True)


def start_steps(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    """The canary's first step (after a shadow phase, if it had one)."""
    steps = experiment.canary.steps
    if steps[0] == 100:
        return finish(
            experiment, state, Phase.SUCCEEDED, now, "Promoted", "promoted: the only step is 100%", step=1
        )
    message = f"step 1/{len(steps)}: {steps[0]}% of traffic to {_to(experiment)}"
    return begin(experiment, state, now, step=1, percent=steps[0], reason="Started", message=message)


def begin(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    *,
    step: int,
    percent: int,
    reason: str,
    message: str,
    results: Mapping[str, Any] | None = None,
) -> model.Decision:
    """Progressing from now on at ``percent`` to the candidate: a canary's first step, an A/B
    test's split, a shadow phase (0 %); its clock, checks and samples start afresh."""
    weights = split(experiment, percent, arms.active(experiment, state))
    started = dataclasses.replace(
        _new_step_clock(state, now),
        phase=Phase.PROGRESSING,
        step=step,
        weights=weights,
        failed_checks=0,
        no_data_checks=0,
        reason=reason,
        message=message,
        action=Action.CONTINUE,
        results=state.results if results is None else results,
    )
    return model.Decision(
        started, weights, (Event("Normal", reason, message),), requeue_after=experiment.interval
    )


def finish(
    experiment: spec.ExperimentSpec,
    state: State,
    phase: Phase,
    now: datetime.datetime,
    reason: str,
    message: str,
    *,
    step: int,
    assessments: tuple[model.MetricAssessment, ...] = (),
) -> model.Decision:
    promoted = phase is Phase.SUCCEEDED
    results = dict(state.results)
    if promoted and experiment.is_bandit:
        from modelrollout.core import banditrun

        results["winner"] = banditrun.to_promote(experiment, state)
    elif promoted and arms.several(experiment):
        results["winner"] = arms.winner(experiment, state)
    # A Shadow never sends users to the candidate: even promoted by hand, it ends on the baseline.
    to_candidate = promoted and experiment.strategy is not spec.Strategy.SHADOW
    weights = _promoted(experiment, results) if to_candidate else split(experiment, 0)
    record = results.get("shadow")
    if isinstance(record, Mapping) and record.get("active"):  # the mirror ends with the experiment
        results["shadow"] = {**record, "active": False}
    finished = dataclasses.replace(
        state,
        phase=phase,
        step=step,
        weights=weights,
        reason=reason,
        message=message,
        action=Action.PROMOTE if promoted else Action.ROLLBACK,
        last_evaluated_at=state.last_evaluated_at or now,
        approval=None,
        results=results,
    )
    event = Event("Normal" if promoted else "Warning", "Promoted" if promoted else "RolledBack", message)
    return model.Decision(
        finished, weights, (event,), assessments=assessments, requeue_after=experiment.interval
    )


def ship(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    why: str,
    assessments: tuple[model.MetricAssessment, ...] = (),
) -> model.Decision:
    """An A/B test or a bandit decided Ship (``results["winner"]`` names the candidate when there are
    several): a ``Shipped`` Event, then the ``confirm-promotion`` gate, as before a canary's last step,
    and Succeeded.  While that gate is shut the split holds and nothing more is evaluated, as when a
    human is to promote (``autoPromote: false``); its deadline holds or rolls back as for a canary."""
    message = f"Ship: {why}"
    shipped = dataclasses.replace(state, outcome=lift.Outcome.SHIP.value)
    decision = _ship_gate(experiment, shipped, obs, now, message, message, assessments)
    return dataclasses.replace(decision, events=(Event("Normal", SHIPPED, message), *decision.events))


def _ship_gate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    where: str,
    message: str | None,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """Promote the shipped candidate once ``confirm-promotion`` approves; ``message`` says why (else
    the approval does)."""
    hooks = ", ".join(hook.name for hook in experiment.webhooks_of(WebhookType.CONFIRM_PROMOTION))
    said = message or f"{where}: {WebhookType.CONFIRM_PROMOTION.value} approved by webhook {hooks}"
    return approvals.through(
        experiment,
        state,
        obs,
        now,
        WebhookType.CONFIRM_PROMOTION,
        where,
        proceed=lambda approved: finish(
            experiment,
            approved,
            Phase.SUCCEEDED,
            now,
            SHIPPED,
            said,
            step=state.step,
            assessments=assessments,
        ),
        roll_back=lambda s, why: finish(
            experiment, s, Phase.ROLLED_BACK, now, approvals.DEADLINE_EXCEEDED, why, step=state.step
        ),
    )


def _awaiting_ship(experiment: spec.ExperimentSpec, state: State) -> bool:
    """An A/B test's or a bandit's Ship waits at the ``confirm-promotion`` gate."""
    wait = state.approval
    return (
        (experiment.is_ab_test or experiment.is_bandit)
        and state.outcome == lift.Outcome.SHIP.value
        and wait is not None
        and wait.type == WebhookType.CONFIRM_PROMOTION.value
    )


def _shipping(experiment: spec.ExperimentSpec, state: State) -> str:
    """The candidate a Ship promotes."""
    winner = state.results.get("winner")
    return winner if isinstance(winner, str) else experiment.workloads[0]


def _finish_move(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    """Put the step's weights on the routes; its time and samples start now, never on old traffic."""
    where = f"step {state.step}/{len(experiment.canary.steps)}"
    message = f"{where}: applying {drift.show(state.weights)} (the move had not landed)"
    moving = dataclasses.replace(
        _new_step_clock(state, now), reason=drift.APPLIED, message=message, action=Action.CONTINUE
    )
    return model.Decision(
        moving,
        dict(state.weights),
        (Event("Normal", drift.APPLIED, message),),
        requeue_after=experiment.interval,
    )


def _pause(experiment: spec.ExperimentSpec, state: State) -> model.Decision:
    interval = experiment.interval
    held = dict(state.weights) if state.weights else None
    if state.phase is Phase.PAUSED:
        return model.Decision(state, held, requeue_after=interval)
    where = f"step {state.step} ({_cand_pct(experiment, state)}%)" if state.step else "before the first step"
    message = f"paused at {where} by spec.paused"
    paused = dataclasses.replace(
        state, phase=Phase.PAUSED, reason="Paused", message=message, action=Action.HOLD
    )
    return model.Decision(paused, held, (Event("Normal", "Paused", message),), requeue_after=interval)


def _resume(state: State, now: datetime.datetime) -> State:
    if state.step == 0:
        return dataclasses.replace(state, phase=Phase.PENDING)
    # The step starts over in time and samples: what counts is a full step at these weights.
    return dataclasses.replace(_new_step_clock(state, now), phase=Phase.PROGRESSING)


def _new_step_clock(state: State, now: datetime.datetime) -> State:
    """A step's time, evaluations and samples start now (a new step, or one resumed)."""
    return dataclasses.replace(state, step_started_at=now, last_evaluated_at=now, step_checks=0, samples={})


def _evaluate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    if experiment.is_ab_test:
        from modelrollout.core import abtest  # the A/B test builds on this module

        return abtest.evaluate(experiment, state, obs, now, analyses)
    if experiment.is_bandit:
        from modelrollout.core import banditrun

        return banditrun.evaluate(experiment, state, obs, now, analyses)
    if experiment.has_shadow_phase and shadow_pending(state):
        from modelrollout.core import shadow

        return shadow.evaluate(experiment, state, obs, now, analyses)
    if arms.several(experiment):
        from modelrollout.core import candidates  # several candidates: each against the baseline

        return candidates.evaluate(experiment, state, obs, now, analyses)
    assessments, memory = assess(experiment, state, obs, analyses)
    verdict = guardrails.combine(list(assessments))
    # Windows that start right after the weight change straddle it: the mesh applies new routes and
    # Prometheus scrapes with a delay, so their share lies anywhere between the two weights.
    started = state.step_started_at
    window_start = state.last_evaluated_at or started
    first_of_step = started is None or window_start is None or window_start - started < WEIGHT_CHANGE_SETTLE
    previous = experiment.canary.steps[state.step - 2] if state.step > 1 else _before_steps(experiment)
    mismatch = srm.check(
        state.analysis.get("srm"),
        obs.requests,
        state.weights,
        experiment.the_candidate.workload,
        previous_weight=previous if first_of_step else None,
    )
    memory["srm"] = mismatch.memory
    state = dataclasses.replace(
        state, last_evaluated_at=now, samples=add_samples(state.samples, obs), analysis=memory
    )
    step_name = f"step {state.step}/{len(experiment.canary.steps)} ({_cand_pct(experiment, state)}%)"
    held = guard(experiment, state, now, assessments, mismatch, step_name)
    if held is not None:
        return held
    summary = "; ".join(a.reason for a in assessments)
    state = dataclasses.replace(state, failed_checks=0, no_data_checks=0)
    assert state.step_started_at is not None  # set whenever a step starts
    extended = now - state.step_started_at >= experiment.canary.step_duration * MAX_STEP_EXTENSION
    # Promotion needs a passing last check: doubt at the last step holds until it resolves
    # (under no harm the evidence shrinks; under harm it crosses the bound).
    last = state.step >= len(experiment.canary.steps) or experiment.canary.steps[state.step] == 100
    if verdict is Verdict.INCONCLUSIVE and (last or not extended):
        message = f"{step_name}: not conclusive yet: {summary}"
        doubtful = dataclasses.replace(state, reason="Inconclusive", message=message, action=Action.CONTINUE)
        return model.Decision(
            doubtful, dict(state.weights), (), assessments, until_due(experiment, doubtful, now)
        )

    return passed(experiment, state, obs, now, step_name, summary, assessments)


def passed(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    step_name: str,
    summary: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """The step's checks passed: advance once it lasted long enough and saw enough requests."""
    state = dataclasses.replace(state, step_checks=state.step_checks + 1)
    waiting = _waiting_for(experiment, state, now)
    if waiting:
        message = f"{step_name}: {summary}; waiting for {waiting}"
        going = dataclasses.replace(state, reason="Checking", message=message, action=Action.CONTINUE)
        return model.Decision(going, dict(state.weights), (), assessments, until_due(experiment, going, now))
    return _advance(experiment, state, obs, now, summary, assessments)


def guard(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    assessments: tuple[model.MetricAssessment, ...],
    mismatch: srm.Finding,
    where: str,
) -> model.Decision | None:
    """Roll back on failed guardrails, hold on a sample-ratio mismatch or missing data; None: go on.

    Shared by every strategy: ``where`` names the place in the rollout for messages.
    """
    limits = experiment.analysis
    missing = [a for a in assessments if a.verdict.is_missing]
    failing = [a for a in assessments if a.verdict is Verdict.FAIL]
    if not failing and missing and limits.no_data is spec.NoDataPolicy.FAIL:
        failing = missing  # noData: Fail -- a query with no data is a failed check

    if failing:
        why = "; ".join(a.reason for a in failing)
        count = state.failed_checks + 1
        code = "GuardrailFailed" if any(a.verdict is Verdict.FAIL for a in failing) else "NoData"
        if count >= limits.failure_limit:
            return finish(
                experiment,
                state,
                Phase.ROLLED_BACK,
                now,
                code,
                f"rolled back at {where}: {why}",
                step=state.step,
                assessments=assessments,
            )
        message = f"holding at {where}: failed check {count}/{limits.failure_limit}: {why}"
        held = dataclasses.replace(
            state, failed_checks=count, no_data_checks=0, reason=code, message=message, action=Action.HOLD
        )
        return model.Decision(
            held,
            dict(state.weights),
            (Event("Warning", code, message),),
            assessments,
            until_due(experiment, held, now),
        )

    if mismatch.detected:
        # Harm still rolls back (above); anything else waits for a human: the data is suspect.
        message = f"holding at {where}: {mismatch.message}"
        held = dataclasses.replace(state, reason="SampleRatioMismatch", message=message, action=Action.HOLD)
        events = (
            ()
            if state.reason == "SampleRatioMismatch"
            else (Event("Warning", "SampleRatioMismatch", message),)
        )
        return model.Decision(
            held, dict(state.weights), events, assessments, until_due(experiment, held, now)
        )

    if missing:
        why = "; ".join(a.reason for a in missing)
        count = state.no_data_checks + 1
        if count >= limits.no_data_limit:
            message = f"rolled back at {where}: no data in {count} evaluations in a row: {why}"
            return finish(
                experiment,
                state,
                Phase.ROLLED_BACK,
                now,
                "NoData",
                message,
                step=state.step,
                assessments=assessments,
            )
        message = f"holding at {where}: no data ({count}/{limits.no_data_limit}): {why}"
        held = dataclasses.replace(
            state, no_data_checks=count, reason="NoData", message=message, action=Action.HOLD
        )
        events = (Event("Warning", "NoData", message),) if state.no_data_checks == 0 else ()
        return model.Decision(
            held, dict(state.weights), events, assessments, until_due(experiment, held, now)
        )
    return None


def _advance(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    summary: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    steps = experiment.canary.steps
    promoting = state.step >= len(steps) or steps[state.step] == 100
    decision = approvals.through(
        experiment,
        state,
        obs,
        now,
        WebhookType.CONFIRM_PROMOTION if promoting else WebhookType.CONFIRM_STEP,
        f"step {state.step}/{len(steps)} ({_cand_pct(experiment, state)}%)",
        proceed=lambda approved: _advance_now(experiment, approved, now, summary, assessments),
        roll_back=lambda s, why: finish(
            experiment, s, Phase.ROLLED_BACK, now, approvals.DEADLINE_EXCEEDED, why, step=state.step
        ),
    )
    if not decision.assessments and assessments:
        decision = dataclasses.replace(decision, assessments=assessments)
    return decision


def _advance_now(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    summary: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    steps = experiment.canary.steps
    if state.step >= len(steps) or steps[state.step] == 100:
        return finish(
            experiment,
            state,
            Phase.SUCCEEDED,
            now,
            "Promoted",
            f"promoted after step {state.step}/{len(steps)}: {summary}",
            step=len(steps),
            assessments=assessments,
        )
    step = state.step + 1
    weight = steps[step - 1]
    racing = arms.active(experiment, state)
    weights = split(experiment, weight, racing)
    message = f"step {step}/{len(steps)}: {weight}% of traffic to {', '.join(racing)} ({summary})"
    advanced = dataclasses.replace(
        _new_step_clock(state, now),
        step=step,
        weights=weights,
        reason="StepAdvanced",
        message=message,
        action=Action.CONTINUE,
    )
    return model.Decision(
        advanced,
        weights,
        (Event("Normal", "StepAdvanced", message),),
        assessments,
        experiment.interval,
    )


# --------------------------------------------------------------------------- helpers


def assess(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    analyses: Sequence[guardrails.Analysis],
) -> tuple[tuple[model.MetricAssessment, ...], dict[str, Mapping[str, Any]]]:
    """Every metric of ``experiment`` judged by every analysis; the analyses' memory to keep."""
    samples = {sample.name: sample for sample in obs.metrics or ()}
    assessments: list[model.MetricAssessment] = []
    memory: dict[str, Mapping[str, Any]] = {}
    for metric in experiment.metrics:
        sample = samples.get(metric.name, model.MetricSample(metric.name, {}))
        parts: list[model.MetricAssessment] = []
        for index, analysis in enumerate(analyses):
            key = f"{metric.name}/{index}"
            assessment, kept = analysis.assess(experiment, metric, sample, state.analysis.get(key))
            parts.append(assessment)
            if kept is not None:
                memory[key] = kept
        assessments.append(guardrails.merge(metric.name, parts))
    return tuple(assessments), memory


def add_samples(samples: Mapping[str, int], obs: model.Observation) -> dict[str, int]:
    total = dict(samples)
    for workload, result in (obs.requests or {}).items():
        if result.ok and result.value is not None:
            total[workload] = total.get(workload, 0) + round(result.value)
    return total


def _waiting_for(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> str:
    """What the step still needs before it may advance, in words ("" when nothing)."""
    needs: list[str] = []
    assert state.step_started_at is not None  # set whenever a step starts
    elapsed = now - state.step_started_at
    if elapsed < experiment.canary.step_duration:
        needs.append(
            f"{elapsed.total_seconds():.0f}s of {experiment.canary.step_duration.total_seconds():.0f}s"
        )
    minimum = experiment.canary.min_samples
    for workload in (experiment.baseline.workload, *arms.active(experiment, state)):
        seen = state.samples.get(workload, 0)
        if seen < minimum:
            needs.append(f"{seen}/{minimum} {workload} requests")
    return ", ".join(needs)


def until_due(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> datetime.timedelta:
    last = state.last_evaluated_at or now
    remaining = last + experiment.interval - now
    return max(remaining, datetime.timedelta(seconds=0))


def _promoted(experiment: spec.ExperimentSpec, results: Mapping[str, Any]) -> dict[str, int]:
    """All traffic on the winner (the candidate, when there is one)."""
    chosen = results.get("winner")
    if not isinstance(chosen, str) or chosen not in experiment.workloads:
        chosen = experiment.the_candidate.workload
    return arms.to_one(experiment, chosen)


def _final_weights(experiment: spec.ExperimentSpec, state: State) -> dict[str, int] | None:
    if state.phase is Phase.SUCCEEDED and experiment.strategy is spec.Strategy.SHADOW:
        return split(experiment, 0)  # a shadow that passed changed nothing user-facing
    if state.phase is Phase.SUCCEEDED:
        return _promoted(experiment, state.results)
    if state.phase is Phase.ROLLED_BACK:
        return split(experiment, 0)
    return None  # Failed: the routes were restored or could not be touched


def _cand_pct(experiment: spec.ExperimentSpec, state: State) -> int:
    return candidate_weight(experiment, state.weights)


def _requested(gate: Gate, state: State, obs: model.Observation) -> str | None:
    value = obs.annotations.get(gate.value)
    if value is None or state.gates.get(gate.value) == value:
        return None
    return value


def _acknowledge(state: State, gate: Gate, value: str) -> State:
    return dataclasses.replace(state, gates={**state.gates, gate.value: value})


def _acknowledge_all(state: State, obs: model.Observation) -> dict[str, str]:
    """After a restart, gates still present are history: they must not fire on the new run."""
    gates = dict(state.gates)
    for gate in Gate:
        if gate.value in obs.annotations:
            gates[gate.value] = obs.annotations[gate.value]
    return gates
