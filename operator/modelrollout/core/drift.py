"""Weights changed by someone else: put ours back (the default) or pause and leave them be.

The routes should hold the weights the state names whenever no change is
planned; anything else was edited outside the operator (a person shifting
traffic by hand during an incident, a GitOps sync without the
ignore-differences rule).  ``onWeightDrift: Restore`` puts the operator's
weights back with a ``WeightsRestored`` Event (Argo Rollouts #849 is what
happens otherwise).  ``onWeightDrift: Pause`` stops the experiment and
leaves the routes as edited -- a human is in charge now -- until the routes
hold the operator's weights again, or a gate (abort, promote, restart) ends
the pause.  Final phases always restore: their weights are the outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from modelrollout import spec
from modelrollout.core import arms, model
from modelrollout.core.model import Action, Event, Phase, State

RESTORED = "WeightsRestored"
EDITED = "WeightsEdited"
APPLIED = "WeightsApplied"


def unfinished_move(experiment: spec.ExperimentSpec, state: State, obs: model.Observation) -> bool:
    """The routes still hold the step before this one: the operator's own move did not land.

    The status (the intent) is written before the routes; a crash in between, or a route write
    that failed, leaves the previous step's weights.  That is no one's edit: finish the move.
    """
    if state.phase is not Phase.PROGRESSING or state.step < 1 or obs.weights is None:
        return False
    if experiment.is_bandit:  # it moves every interval: the weights before its last move are in its memory
        kept = state.analysis.get("bandit") or {}
        last = kept.get("previous")
        moved_from = dict(last) if isinstance(last, Mapping) else arms.split(experiment, 0)
        return dict(obs.weights) == moved_from != dict(state.weights)
    before = experiment.canary.steps[state.step - 2] if state.step > 1 else 0
    held = arms.candidate_share(experiment, obs.weights)
    return held == before and held != arms.candidate_share(experiment, state.weights)


def check(
    experiment: spec.ExperimentSpec, decision: model.Decision, state: State, obs: model.Observation
) -> model.Decision:
    """``decision``, amended if the routes hold weights nobody planned."""
    wanted = decision.weights
    if wanted is None or not state.weights or dict(wanted) != dict(state.weights):
        return decision  # no weights to hold, or a planned change: the write is the operator's own
    if obs.weights is not None and dict(obs.weights) == dict(wanted):
        return decision
    if unfinished_move(experiment, state, obs) and decision.state.reason == APPLIED:
        return decision  # the core is finishing its own move (canary._finish_move)
    held = "routes that disagree" if obs.weights is None else show(obs.weights)
    if experiment.on_weight_drift is spec.WeightDrift.PAUSE and not decision.state.phase.is_final:
        message = (
            f"routes hold {held} instead of {show(wanted)}: paused, traffic left as edited "
            "(put the weights back to carry on, or abort, promote or restart)"
        )
        paused = dataclasses.replace(
            decision.state, phase=Phase.PAUSED, reason=EDITED, message=message, action=Action.HOLD
        )
        return dataclasses.replace(
            decision,
            state=paused,
            weights=None,
            events=(*decision.events, Event("Warning", EDITED, message)),
            requeue_after=experiment.interval,
        )
    message = f"routes held {held}; restored {show(wanted)} (changed outside the operator?)"
    return dataclasses.replace(decision, events=(*decision.events, Event("Warning", RESTORED, message)))


def paused_by_edit(state: State) -> bool:
    return state.phase is Phase.PAUSED and state.reason == EDITED


def still_edited(
    experiment: spec.ExperimentSpec, state: State, obs: model.Observation
) -> model.Decision | None:
    """While paused by an edit: keep out of the way, or None once the routes are ours again."""
    if obs.weights is not None and dict(obs.weights) == dict(state.weights):
        return None
    return model.Decision(state, None, requeue_after=experiment.interval)


def show(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{workload} {weight}%" for workload, weight in weights.items())
