"""Webhook gates: a transition (start, next step, promotion) waits until its webhooks approve.

Pure like the rest of the core.  The wait itself is state (``State.approval``,
persisted in status), so the I/O follows from it: while an experiment waits
at a gate, the reconciler calls that gate's webhooks and passes their answers
in ``Observation.webhooks``; this module turns the answers into a decision.

Waiting never hangs forever: after the gate's ``deadline`` the experiment stops
asking and either holds with ``GateDeadlineExceeded`` until a human acts
(promote, abort, restart, or a spec change that re-arms the gate) or rolls
back (``onDeadline: Rollback``).  While waiting the guardrails keep running,
so harm still rolls back.  Events fire when something changes -- the wait
starts, the answer changes, the gate opens, the deadline passes -- never once
per poll (Flagger #497).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

from modelrollout import spec, spec_hooks
from modelrollout.core import model
from modelrollout.core.model import Action, ApprovalWait, Event, Phase, State
from modelrollout.spec_hooks import OnDeadline, WebhookType

AWAITING = "AwaitingApproval"
REFUSED = "ApprovalRefused"
GRANTED = "ApprovalGranted"
DEADLINE_EXCEEDED = "GateDeadlineExceeded"


def due(experiment: spec.ExperimentSpec, state: State) -> list[spec_hooks.WebhookSpec]:
    """The webhooks the reconciler should call this tick (none unless a live wait is on)."""
    wait = state.approval
    if wait is None or wait.expired or experiment.paused:
        return []
    if state.phase not in (Phase.PENDING, Phase.PROGRESSING):
        return []
    return experiment.webhooks_of(WebhookType(wait.type))


def rearm_on_change(state: State, generation: int) -> State:
    """A gate that gave up is tried afresh once the spec changes (a fixed URL, say)."""
    if state.approval is not None and state.approval.expired and generation != state.observed_generation:
        return dataclasses.replace(state, approval=None)
    return state


def through(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    type_: WebhookType,
    where: str,
    proceed: Callable[[State], model.Decision],
    roll_back: Callable[[State, str], model.Decision],
) -> model.Decision:
    """``proceed`` if the gate's webhooks approve (or there are none); otherwise wait at it."""
    hooks = experiment.webhooks_of(type_)
    if not hooks:
        return proceed(dataclasses.replace(state, approval=None))
    names = ", ".join(hook.name for hook in hooks)
    wait = state.approval
    held = dict(state.weights) or None
    if wait is None or wait.type != type_.value:
        message = f"{where}: waiting for {type_.value} approval from webhook {names}"
        waiting = _holding(state, ApprovalWait(type_.value, since=now), AWAITING, message)
        # Ask at once: the reconciler calls the webhooks on the next tick.
        return model.Decision(
            waiting, held, (Event("Normal", AWAITING, message),), requeue_after=datetime.timedelta(0)
        )
    if wait.expired or obs.webhooks is None:
        return model.Decision(state, held, requeue_after=_next_ask(experiment, state, now))

    refused = [outcome for outcome in obs.webhooks if not outcome.approved]
    if not refused:
        decision = proceed(dataclasses.replace(state, approval=None))
        granted = Event("Normal", GRANTED, f"{type_.value} approved by webhook {names}")
        return dataclasses.replace(decision, events=(granted, *decision.events))

    answer = "; ".join(f"{outcome.name}: {outcome.detail}" for outcome in refused)
    waited = dataclasses.replace(wait, attempts=wait.attempts + 1, answer=answer)
    refusing = [hook for hook in hooks if hook.name in {outcome.name for outcome in refused}] or hooks
    deadline = min(hook.deadline for hook in refusing)
    if now - wait.since >= deadline:
        message = f"{where}: {type_.value} not approved within {_show(deadline)}: {answer}"
        if any(hook.on_deadline is OnDeadline.ROLLBACK for hook in refusing):
            return roll_back(dataclasses.replace(state, approval=None), message)
        message += "; holding until promoted, aborted, restarted or the spec changes"
        expired = _holding(state, dataclasses.replace(waited, expired=True), DEADLINE_EXCEEDED, message)
        return model.Decision(
            expired,
            held,
            (Event("Warning", DEADLINE_EXCEEDED, message),),
            requeue_after=experiment.interval,
        )
    left = wait.since + deadline - now
    message = (
        f"{where}: waiting for {type_.value} approval ({waited.attempts} refused, "
        f"gives up in {_show(left)}): {answer}"
    )
    events = () if answer == wait.answer else (Event("Normal", REFUSED, message),)
    waiting = _holding(state, waited, AWAITING, message)
    return model.Decision(waiting, held, events, requeue_after=_next_ask(experiment, waiting, now))


def _holding(state: State, wait: ApprovalWait, reason: str, message: str) -> State:
    return dataclasses.replace(state, approval=wait, reason=reason, message=message, action=Action.HOLD)


def _next_ask(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> datetime.timedelta:
    """Ask again at the next evaluation, or after one interval when none is scheduled."""
    interval = experiment.interval
    last = state.last_evaluated_at
    if last is None or state.phase is Phase.PENDING:
        return interval
    return max(last + interval - now, datetime.timedelta(0))


def _show(delta: datetime.timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds}s"
