"""``status`` of a ModelExperiment: the core's State, persisted, plus what users read.

All progress lives here (never in operator memory), so an operator killed
mid-step continues at the same step.  Conditions follow the Kubernetes API
conventions (type/status/reason/message/lastTransitionTime/observedGeneration)
so ``kubectl wait --for=condition=Succeeded`` works; a condition's
``lastTransitionTime`` only moves when its status flips.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout.core import canary, model
from modelrollout.core.model import Phase, State

HISTORY_LIMIT = 50
# Top-level status fields a strategy reports (State.results), read back as they were written.
RESULT_FIELDS = (
    "startedAt", "objective", "secondary", "segments", "abPlan", "srm", "timeline", "report", "shadow",
    "candidates", "winner", "bandit",
)  # fmt: skip
CONDITION_TYPES = (
    "Ready",
    "Progressing",
    "Succeeded",
    "RolledBack",
    "Failed",
    "MetricsAvailable",
    "SampleRatioMismatch",
    "AwaitingApproval",
)


def to_time(value: datetime.datetime | None) -> str | None:
    return None if value is None else model.to_iso(value)


from_time = model.from_iso


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def parse_state(status: Mapping[str, Any] | None) -> State:
    """Read the core's State back from ``status`` (tolerating hand-edited garbage)."""
    status = status or {}
    try:
        phase = Phase(status.get("phase", Phase.PENDING.value))
    except ValueError:
        phase = Phase.PENDING
    try:
        action = model.Action(status["decision"]) if "decision" in status else None
    except ValueError:
        action = None
    gates = status.get("gates")
    analysis = status.get("analysisState")
    generation = status.get("observedGeneration")
    return State(
        phase=phase,
        step=_int(status.get("step")),
        weights=_int_map(status.get("weights")),
        step_started_at=from_time(status.get("stepStartedAt")),
        last_evaluated_at=from_time(status.get("lastEvaluatedAt")),
        step_checks=_int(status.get("stepChecks")),
        failed_checks=_int(status.get("failedChecks")),
        no_data_checks=_int(status.get("noDataChecks")),
        samples=_int_map(status.get("samples")),
        gates={str(k): str(v) for k, v in gates.items()} if isinstance(gates, Mapping) else {},
        reason=str(status.get("reason", "")),
        message=str(status.get("message", "")),
        action=action,
        observed_generation=generation if isinstance(generation, int) else None,
        analysis={str(k): v for k, v in analysis.items() if isinstance(v, Mapping)}
        if isinstance(analysis, Mapping)
        else {},
        approval=_parse_approval(status.get("approval")),
        outcome=status["outcome"] if isinstance(status.get("outcome"), str) else None,
        results={key: status[key] for key in RESULT_FIELDS if key in status},
    )


def _parse_approval(value: Any) -> model.ApprovalWait | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        return None
    since = from_time(value.get("waitingSince"))
    if since is None:
        return None
    return model.ApprovalWait(
        type=value["type"],
        since=since,
        attempts=_int(value.get("attempts")),
        answer=str(value.get("lastAnswer", "")),
        expired=value.get("deadlineExceeded") is True,
    )


def _render_approval(wait: model.ApprovalWait | None) -> dict[str, Any] | None:
    if wait is None:
        return None
    return {
        "type": wait.type,
        "waitingSince": to_time(wait.since),
        "attempts": wait.attempts,
        "lastAnswer": wait.answer,
        "deadlineExceeded": wait.expired,
    }


def render(
    decision: model.Decision,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
    candidate: str | Sequence[str],
) -> dict[str, Any]:
    """The full new ``status`` for ``decision``, given the status it replaces.

    ``candidate``: the candidates' workloads (``candidateWeight`` is their weights together).
    """
    previous = previous or {}
    state = decision.state
    candidates = (candidate,) if isinstance(candidate, str) else tuple(candidate)
    status: dict[str, Any] = {
        "phase": state.phase.value,
        "step": state.step,
        "candidateWeight": sum(state.weights.get(c, 0) for c in candidates),
        "weights": dict(state.weights),
        "observedGeneration": state.observed_generation,
        "stepStartedAt": to_time(state.step_started_at),
        "lastEvaluatedAt": to_time(state.last_evaluated_at),
        "decision": state.action.value if state.action is not None else None,
        "reason": state.reason,
        "message": state.message,
        "samples": dict(state.samples),
        "stepChecks": state.step_checks,
        "failedChecks": state.failed_checks,
        "noDataChecks": state.no_data_checks,
        "gates": dict(state.gates),
        "analysisState": {k: dict(v) for k, v in state.analysis.items()},
        "approval": _render_approval(state.approval),
        "outcome": state.outcome,
    }
    for key in RESULT_FIELDS:
        if key in state.results:
            status[key] = state.results[key]
    if decision.assessments:
        status["metrics"] = [_metric_entry(a) for a in decision.assessments]
    elif isinstance(previous.get("metrics"), list):
        status["metrics"] = previous["metrics"]
    status["conditions"] = conditions(state, status.get("metrics"), previous.get("conditions"), now)
    status["history"] = _history(previous.get("history"), decision, status, now)
    return {key: value for key, value in status.items() if value is not None}


def _metric_entry(assessment: model.MetricAssessment) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": assessment.name,
        "verdict": assessment.verdict.value,
        "reason": assessment.reason,
        "baseline": assessment.baseline,
        "candidate": assessment.candidate,
    }
    entry.update(assessment.extra)
    return entry


def conditions(
    state: State,
    metrics: Sequence[Mapping[str, Any]] | None,
    previous: Any,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    blocked = state.reason in canary.BLOCKING_REASONS
    progressing = state.phase in (Phase.PENDING, Phase.PROGRESSING) and not blocked
    wanted: dict[str, tuple[bool | None, str, str]] = {
        "Ready": (
            not blocked,
            state.reason if blocked else "Ready",
            state.message if blocked else "the spec is valid and its routes were found",
        ),
        "Progressing": (
            progressing,
            state.reason or state.phase.value
            if progressing
            else (state.reason if blocked else state.phase.value),
            state.message,
        ),
    }
    for phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED):
        here = state.phase is phase
        wanted[phase.value] = (
            here,
            state.reason if here else state.phase.value,
            state.message if here else "",
        )
    wanted["MetricsAvailable"] = _metrics_available(metrics)
    wanted["AwaitingApproval"] = _awaiting_approval(state)
    mismatch = bool(state.analysis.get("srm", {}).get("detected"))
    wanted["SampleRatioMismatch"] = (
        mismatch,
        "SampleRatioMismatch" if mismatch else "SharesMatchWeights",
        state.message if mismatch and state.reason == "SampleRatioMismatch" else "",
    )

    before = (
        {c.get("type"): c for c in previous if isinstance(c, Mapping)} if isinstance(previous, list) else {}
    )
    result: list[dict[str, Any]] = []
    for type_ in CONDITION_TYPES:
        flag, reason, message = wanted[type_]
        value = "Unknown" if flag is None else ("True" if flag else "False")
        old = before.get(type_, {})
        changed = old.get("status") != value
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason or "Unknown",
                "message": message,
                "lastTransitionTime": to_time(now)
                if changed
                else old.get("lastTransitionTime", to_time(now)),
                "observedGeneration": state.observed_generation or 0,
            }
        )
    return result


def _awaiting_approval(state: State) -> tuple[bool | None, str, str]:
    wait = state.approval
    if wait is None:
        return False, "NotWaiting", ""
    if wait.expired:
        return True, "GateDeadlineExceeded", state.message
    return True, "AwaitingApproval", state.message


def _metrics_available(metrics: Sequence[Mapping[str, Any]] | None) -> tuple[bool | None, str, str]:
    if not metrics:
        return None, "NotEvaluated", "no evaluation yet"
    missing = [
        m for m in metrics if m.get("verdict") in (model.Verdict.NO_DATA.value, model.Verdict.ERROR.value)
    ]
    if not missing:
        return True, "MetricsAvailable", "every metric had data in the last evaluation"
    reason = "QueryError" if any(m.get("verdict") == model.Verdict.ERROR.value for m in missing) else "NoData"
    return False, reason, "; ".join(str(m.get("reason", m.get("name"))) for m in missing)


def _history(
    previous: Any, decision: model.Decision, status: Mapping[str, Any], now: datetime.datetime
) -> list[dict[str, Any]]:
    history = [h for h in previous if isinstance(h, Mapping)] if isinstance(previous, list) else []
    if decision.events:
        history.append(
            {
                "time": to_time(now),
                "phase": status["phase"],
                "step": status["step"],
                "weight": status["candidateWeight"],
                "decision": status.get("decision") or "",
                "reason": decision.events[-1].message,
            }
        )
    return [dict(h) for h in history[-HISTORY_LIMIT:]]
