"""The shadow phase (dark launch): the candidate answers copies of live requests, users never see them.

While it lasts, Istio mirrors ``shadow.mirrorPercent`` % of the baseline's
requests to the candidate and throws its answers away; all traffic stays on
the baseline (weights 100/0).  The guardrails judge the candidate's own
errors and latency on the mirrored requests against the baseline's, with the
canary's sequential tests (each interval's observed share of requests is its
stratum, so the mirror's share needs no configuring).  An optional agreement
metric (a ratio: answers that agreed of those compared, measured on the
candidate) must stay above ``agreement.min``.

After ``shadow.duration`` with every check passing: ``strategy: Shadow``
ends Succeeded with nothing user-facing changed; a Canary with ``shadow:``
starts its steps.  Any failure ends the mirror and the experiment
RolledBack (baseline 100 %).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import durations, spec
from modelrollout.core import canary, guardrails, lift, model, srm
from modelrollout.core.model import Action, Event, Phase, State, Verdict

KEY = "shadow"  # State.results[KEY]: the phase's own record, shown as status.shadow
PASSED, AGREEMENT_TOO_LOW = "ShadowPassed", "AgreementTooLow"
# Mixing scale of the agreement's confidence sequence: most powerful near a few points of agreement.
_AGREEMENT_TAU = 0.05


def active(state: State) -> bool:
    record = state.results.get(KEY)
    return isinstance(record, Mapping) and record.get("active") is True


def mirror_percent(experiment: spec.ExperimentSpec, state: State) -> float | None:
    """What the routes must mirror to the candidate now: the percent while shadowing, else None."""
    if experiment.shadow is None or not active(state) or state.phase.is_final:
        return None
    return float(experiment.shadow.mirror_percent)


def start(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    assert experiment.shadow is not None  # the caller starts a shadow phase only when there is one
    percent = experiment.shadow.mirror_percent
    message = (
        f"shadow: {percent}% of {experiment.baseline.workload}'s requests mirrored to "
        f"{experiment.the_candidate.workload} for {durations.format_duration(experiment.shadow.duration)}; "
        f"users get only {experiment.baseline.workload}'s answers"
    )
    record = {"active": True, "startedAt": model.to_iso(now), "mirrorPercent": percent}
    return canary.begin(
        experiment,
        state,
        now,
        step=0,
        percent=0,
        reason="ShadowStarted",
        message=message,
        results={**state.results, KEY: record},
    )


def evaluate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    assert experiment.shadow is not None
    shadow = experiment.shadow
    guarded = experiment.model_copy(update={"metrics": experiment.guardrails})
    assessments, memory = canary.assess(guarded, state, obs, analyses)
    record = dict(state.results.get(KEY) or {})
    agreement, kept = _agreement(experiment, obs, state.analysis.get(KEY), record)
    if kept is not None:
        memory[KEY] = kept
    all_assessments = (*assessments, *([agreement] if agreement is not None else []))
    state = dataclasses.replace(
        state,
        last_evaluated_at=now,
        samples=canary.add_samples(state.samples, obs),
        analysis=memory,
        results={**state.results, KEY: record},
    )
    where = f"the shadow phase ({shadow.mirror_percent}% mirrored)"
    # The mirror is not a randomized split of users: there is no configured share to check.
    unchecked = srm.Finding(False, 1.0, "", {})
    held = canary.guard(experiment, state, now, all_assessments, unchecked, where)
    if held is not None:
        if held.state.phase.is_final:
            return _ended(held, passed=False)
        return held
    state = dataclasses.replace(state, failed_checks=0, no_data_checks=0)
    started = _started(record, state, now)
    summary = "; ".join(a.reason for a in all_assessments)
    waiting = _waiting(experiment, state, now - started)
    doubtful = any(a.verdict is Verdict.INCONCLUSIVE for a in all_assessments)
    if waiting or doubtful:
        why = f"waiting for {waiting}" if waiting else "not conclusive yet"
        message = f"{where}: {summary}; {why}"
        going = dataclasses.replace(state, reason="Shadowing", message=message, action=Action.CONTINUE)
        return model.Decision(
            going, dict(state.weights), (), all_assessments, canary.until_due(experiment, going, now)
        )
    if agreement is not None and agreement.verdict is not Verdict.PASS:
        message = f"rolled back after {where}: {agreement.reason}"
        failed = canary.finish(
            experiment,
            state,
            Phase.ROLLED_BACK,
            now,
            AGREEMENT_TOO_LOW,
            message,
            step=0,
            assessments=all_assessments,
        )
        return _ended(failed, passed=False)
    return _passed(experiment, state, now, summary, all_assessments)


def _passed(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    summary: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    record = {**dict(state.results.get(KEY) or {}), "active": False, "passed": True}
    state = dataclasses.replace(state, results={**state.results, KEY: record})
    message = f"shadow phase passed: {summary or 'no guardrails to judge'}"
    told = Event("Normal", PASSED, message)
    if experiment.strategy is spec.Strategy.SHADOW:
        weights = canary.split(experiment, 0)
        done = dataclasses.replace(
            state,
            phase=Phase.SUCCEEDED,
            weights=weights,
            reason=PASSED,
            message=f"{message}; nothing user-facing changed",
            action=Action.CONTINUE,
            approval=None,
        )
        return model.Decision(done, weights, (told,), assessments, experiment.interval)
    steps = canary.start_steps(experiment, state, now)  # a shadow phase before a canary: now the steps
    return dataclasses.replace(steps, events=(told, *steps.events), assessments=assessments)


def _ended(decision: model.Decision, *, passed: bool) -> model.Decision:
    """The mirror comes off with the phase."""
    state = decision.state
    record = {**dict(state.results.get(KEY) or {}), "active": False, "passed": passed}
    return dataclasses.replace(
        decision, state=dataclasses.replace(state, results={**state.results, KEY: record})
    )


def _agreement(
    experiment: spec.ExperimentSpec,
    obs: model.Observation,
    kept: Mapping[str, Any] | None,
    record: dict[str, Any],
) -> tuple[model.MetricAssessment | None, dict[str, Any] | None]:
    """The candidate's agreement so far, with an always-valid interval: Fail once it is surely below min."""
    assert experiment.shadow is not None
    wanted = experiment.shadow.agreement
    if wanted is None:
        return None, None
    cand = experiment.the_candidate.workload
    sample = next((s for s in obs.metrics or () if s.name == wanted.metric), None)
    moments = lift.Moments.from_dict((kept or {}).get("agreement"))
    sums = sample.sums.get(cand) if sample is not None and sample.sums is not None else None
    if sums is None:
        result = sample.results.get(cand) if sample is not None else None
        cause = f" ({result.outcome.value}: {result.detail})" if result is not None and not result.ok else ""
        missing = model.MetricAssessment(
            wanted.metric, Verdict.NO_DATA, f"{wanted.metric}: no counts for {cand} in this interval{cause}"
        )
        return missing, {"agreement": moments.to_dict()}
    moments = moments.add(sums.count, sums.total)
    memory = {"agreement": moments.to_dict()}
    if moments.count < 1:
        return model.MetricAssessment(
            wanted.metric, Verdict.INCONCLUSIVE, f"{wanted.metric}: nothing compared yet"
        ), memory
    rate = min(max(moments.total / moments.count, 0.0), 1.0)
    variance = max(rate * (1 - rate), 1 / moments.count) / moments.count
    width = lift.half_width(variance, experiment.analysis.alpha, _AGREEMENT_TAU)
    low, high = max(rate - width, 0.0), min(rate + width, 1.0)
    record["agreement"] = {
        "value": round(rate, 6),
        "interval": [round(low, 6), round(high, 6)],
        "min": wanted.min,
    }
    words = (
        f"{wanted.metric} {rate:.2%} [{low:.2%}, {high:.2%}] of {moments.count:.0f} compared, "
        f"min {wanted.min:.2%}"
    )
    if high < wanted.min:
        verdict, reason = Verdict.FAIL, f"{words}: surely below the minimum"
    elif rate >= wanted.min:
        verdict, reason = Verdict.PASS, f"{words} (ok)"
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{words}: below the minimum so far"
    extra = {"interval": [round(low, 6), round(high, 6)], "role": "Agreement"}
    return model.MetricAssessment(wanted.metric, verdict, reason, candidate=rate, extra=extra), memory


def _waiting(experiment: spec.ExperimentSpec, state: State, elapsed: datetime.timedelta) -> str:
    assert experiment.shadow is not None
    needs: list[str] = []
    if elapsed < experiment.shadow.duration:
        needs.append(f"{elapsed.total_seconds():.0f}s of {experiment.shadow.duration.total_seconds():.0f}s")
    minimum = experiment.canary.min_samples
    for workload in (experiment.baseline.workload, experiment.the_candidate.workload):
        seen = state.samples.get(workload, 0)
        if seen < minimum:
            needs.append(f"{seen}/{minimum} {workload} requests")
    return ", ".join(needs)


def _started(record: Mapping[str, Any], state: State, now: datetime.datetime) -> datetime.datetime:
    return model.from_iso(record.get("startedAt")) or state.step_started_at or now
