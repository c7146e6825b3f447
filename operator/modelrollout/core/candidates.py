"""A canary with several candidates: each judged against the baseline, a failing one dropped.

Every evaluation runs the canary's analyses once per candidate still in the race, on
the pair (baseline, candidate) with alpha shared among the candidates
(``ExperimentSpec.pair``); each pair keeps its own analysis memory and its own
sample-ratio check.  Per candidate, failed checks and evaluations without data count
as in a single canary (``failureLimit``, ``noData``, ``noDataLimit``); a candidate
that reaches a limit is *dropped*: its weight goes to the baseline at once, an Event
says why, and the step starts afresh for the others (their weights are unchanged, the
clock and samples restart).  Only when every candidate is dropped does the experiment
roll back.  A check failing below its limit, data missing below its limit or a
sample-ratio mismatch holds the whole experiment, as in a single canary.  The step
advances (and at the end promotes the winner, ``core.arms``) when every candidate
still in the race passed.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import spec
from modelrollout.core import arms, canary, guardrails, model, srm
from modelrollout.core.model import Action, Event, Phase, State, Verdict


def _memory_of(state: State, workload: str) -> dict[str, Mapping[str, Any]]:
    """One pair's analysis memory (stored under ``<workload>:`` keys)."""
    prefix = f"{workload}:"
    return {k[len(prefix) :]: v for k, v in state.analysis.items() if k.startswith(prefix)}


def evaluate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    records = arms.records(experiment, state)
    racing = [r for r in records if r["state"] == arms.ACTIVE]
    ranking = arms.rank_metric(experiment)
    previous, before = straddled(state)
    workloads = [r["workload"] for r in racing]
    per, memory, detected = assess_each(experiment, state, obs, analyses, workloads, previous)
    memory["srm"] = {**memory["srm"], "weights": dict(state.weights), "before": before}
    if ranking is not None:
        for record in racing:
            workload = record["workload"]
            value = next((a.candidate for a in per[workload] if a.name == ranking[0]), None)
            served = (obs.requests or {}).get(workload)
            count = served.value if served is not None and served.ok else None
            arms.add_score(record, ranking[0], value, count)
    state = dataclasses.replace(
        state, last_evaluated_at=now, samples=canary.add_samples(state.samples, obs), analysis=memory
    )
    step_name = (
        f"step {state.step}/{len(experiment.canary.steps)} "
        f"({canary.candidate_weight(experiment, state.weights)}%)"
    )
    every = tuple(a for workload in per for a in per[workload])

    dropped, holds, codes = tally(experiment, racing, per)
    state = with_records(state, records)
    if dropped and len(dropped) == len(racing):
        why = "; ".join(f"{r['workload']}: {r['message']}" for r in dropped)
        return canary.finish(
            experiment,
            state,
            Phase.ROLLED_BACK,
            now,
            codes[0],
            f"rolled back at {step_name}: every candidate failed: {why}",
            step=state.step,
            assessments=every,
        )
    if dropped:
        return drop(experiment, state, dropped, now, step_name, every)
    held = hold(experiment, state, now, step_name, holds, codes, detected, every)
    if held is not None:
        return held

    summary = "; ".join(f"{w}: " + ", ".join(a.reason for a in per[w]) for w in per)
    verdict = guardrails.combine(list(every))
    assert state.step_started_at is not None  # set whenever a step starts
    extended = now - state.step_started_at >= experiment.canary.step_duration * canary.MAX_STEP_EXTENSION
    steps = experiment.canary.steps
    last = state.step >= len(steps) or steps[state.step] == 100
    if verdict is Verdict.INCONCLUSIVE and (last or not extended):
        message = f"{step_name}: not conclusive yet: {summary}"
        return _stay(experiment, state, now, "Inconclusive", message, every, warn=False)
    return canary.passed(experiment, state, obs, now, step_name, summary, every)


def straddled(state: State) -> tuple[Mapping[str, int] | None, Any]:
    """The weights before the last change (a step, a drop) when this evaluation's window straddles it
    (None: it does not), and the weights before it to remember (``srm.before``, with ``srm.weights``)."""
    started = state.step_started_at
    window_start = state.last_evaluated_at or started
    first_of_step = (
        started is None or window_start is None or window_start - started < canary.WEIGHT_CHANGE_SETTLE
    )
    kept_srm = state.analysis.get("srm") or {}
    last, before = kept_srm.get("weights"), kept_srm.get("before")
    if not isinstance(last, Mapping):
        before = {}  # nothing evaluated yet: the candidates had nothing before the first step
    elif dict(last) != dict(state.weights):
        before = dict(last)
    return (before if first_of_step and isinstance(before, Mapping) else None), before


def hold(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    where: str,
    holds: Sequence[str],
    codes: Sequence[str],
    mismatch: srm.Finding | None,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision | None:
    """Hold everything on a candidate's check failing or data missing below its limit (``tally``), or
    on a sample-ratio mismatch; None: go on.  ``where`` names the place in the rollout."""
    if holds:
        message = f"holding at {where}: " + "; ".join(holds)
        told = codes[0] == "NoData" and state.reason == "NoData"  # missing data: told once
        return _stay(experiment, state, now, codes[0], message, assessments, warn=not told)
    if mismatch is not None:
        message = f"holding at {where}: {mismatch.message}"
        told = state.reason == "SampleRatioMismatch"
        return _stay(experiment, state, now, "SampleRatioMismatch", message, assessments, warn=not told)
    return None


def _stay(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    reason: str,
    message: str,
    assessments: tuple[model.MetricAssessment, ...],
    *,
    warn: bool,
) -> model.Decision:
    """Stay at the current weights until the next evaluation (holding, or not conclusive yet)."""
    action = Action.CONTINUE if reason == "Inconclusive" else Action.HOLD
    kept = dataclasses.replace(state, reason=reason, message=message, action=action)
    events = (Event("Warning", reason, message),) if warn else ()
    return model.Decision(
        kept, dict(state.weights), events, assessments, canary.until_due(experiment, kept, now)
    )


def assess_each(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    analyses: Sequence[guardrails.Analysis],
    workloads: Sequence[str],
    previous: Mapping[str, int] | None,
) -> tuple[dict[str, tuple[model.MetricAssessment, ...]], dict[str, Mapping[str, Any]], srm.Finding | None]:
    """Each candidate of ``workloads`` against the baseline, with its own memory and sample-ratio check.

    Returns per candidate its assessments (``extra["variant"]`` names it), the analyses' memory to
    keep (under ``<workload>:`` keys, and ``srm`` for the condition) and the first sample-ratio
    mismatch detected (None: none).  ``previous``: the weights before a change the window straddles.
    """
    variants = {v.workload: v for v in experiment.arms}
    per: dict[str, tuple[model.MetricAssessment, ...]] = {}
    memory: dict[str, Mapping[str, Any]] = {}
    mismatches: list[srm.Finding] = []
    for workload in workloads:
        pair = experiment.pair(variants[workload])
        own = dataclasses.replace(state, analysis=_memory_of(state, workload))
        assessments, kept = canary.assess(pair, own, obs, analyses)
        per[workload] = tuple(
            dataclasses.replace(a, extra={**a.extra, "variant": workload}) for a in assessments
        )
        mismatch = _sample_ratio(experiment, state, obs, workload, previous)
        kept["srm"] = mismatch.memory
        mismatches.append(mismatch)
        memory.update({f"{workload}:{key}": value for key, value in kept.items()})
    # Latched per pair; the SampleRatioMismatch condition reads the overall flag.
    detected = next((m for m in mismatches if m.detected), None)
    memory["srm"] = {"detected": detected is not None}
    return per, memory, detected


def _sample_ratio(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    workload: str,
    previous: Mapping[str, int] | None,
) -> srm.Finding:
    """The pair's own sample-ratio check: the candidate's share of (baseline + candidate)."""
    base = experiment.baseline.workload
    weights = {base: state.weights.get(base, 0), workload: state.weights.get(workload, 0)}
    requests = {w: r for w, r in (obs.requests or {}).items() if w in weights}
    before = None
    if previous is not None:
        total = previous.get(base, 0) + previous.get(workload, 0)
        before = 100 * previous.get(workload, 0) / total if total > 0 else 0.0
    return srm.check(_memory_of(state, workload).get("srm"), requests, weights, workload, before)


def tally(
    experiment: spec.ExperimentSpec,
    racing: list[dict[str, Any]],
    per: Mapping[str, tuple[model.MetricAssessment, ...]],
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Count each candidate's failed and no-data checks: those to drop, the holds, their reasons."""
    limits = experiment.analysis
    dropped: list[dict[str, Any]] = []
    holds: list[str] = []
    codes: list[str] = []
    for record in racing:
        assessments = per[record["workload"]]
        missing = [a for a in assessments if a.verdict.is_missing]
        failing = [a for a in assessments if a.verdict is Verdict.FAIL]
        if not failing and missing and limits.no_data is spec.NoDataPolicy.FAIL:
            failing = missing  # noData: Fail -- a query with no data is a failed check
        name = record["workload"]
        if failing:
            why = "; ".join(a.reason for a in failing)
            code = "GuardrailFailed" if any(a.verdict is Verdict.FAIL for a in failing) else "NoData"
            record.update(failedChecks=record["failedChecks"] + 1, noDataChecks=0)
            if record["failedChecks"] >= limits.failure_limit:
                record.update(state=arms.DROPPED, reason=code, message=why)
                dropped.append(record)
            else:
                holds.append(f"{name}: failed check {record['failedChecks']}/{limits.failure_limit}: {why}")
            codes.append(code)
        elif missing:
            why = "; ".join(a.reason for a in missing)
            record.update(noDataChecks=record["noDataChecks"] + 1)
            if record["noDataChecks"] >= limits.no_data_limit:
                message = f"no data in {record['noDataChecks']} evaluations in a row: {why}"
                record.update(state=arms.DROPPED, reason="NoData", message=message)
                dropped.append(record)
            else:
                holds.append(f"{name}: no data ({record['noDataChecks']}/{limits.no_data_limit}): {why}")
            codes.append("NoData")
        else:
            record.update(failedChecks=0, noDataChecks=0)
    # Harm first: a failing guardrail names the hold before missing data does.
    codes.sort(key=lambda code: code != "GuardrailFailed")
    return dropped, holds, codes


def with_records(state: State, records: list[dict[str, Any]]) -> State:
    """The candidates' records into the status; the state's counters are those of the worst one racing."""
    racing = [r for r in records if r["state"] == arms.ACTIVE]
    return dataclasses.replace(
        state,
        results={**state.results, "candidates": records},
        failed_checks=max((r["failedChecks"] for r in racing), default=0),
        no_data_checks=max((r["noDataChecks"] for r in racing), default=0),
    )


def to_baseline(
    experiment: spec.ExperimentSpec, weights: Mapping[str, int], workloads: Sequence[str]
) -> dict[str, int]:
    """``weights`` with the weights of ``workloads`` (candidates) moved to the baseline."""
    moved = dict(weights)
    base = experiment.baseline.workload
    for workload in workloads:
        moved[base] = moved.get(base, 0) + moved.get(workload, 0)
        moved[workload] = 0
    return moved


def drop(
    experiment: spec.ExperimentSpec,
    state: State,
    dropped: list[dict[str, Any]],
    now: datetime.datetime,
    step_name: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """The dropped candidates' weight goes to the baseline; the step starts afresh for the others."""
    weights = to_baseline(experiment, state.weights, [record["workload"] for record in dropped])
    events = tuple(
        Event("Warning", "CandidateDropped", f"dropped {r['workload']} at {step_name}: {r['message']}")
        for r in dropped
    )
    names = ", ".join(r["workload"] for r in dropped)
    left = ", ".join(arms.active(experiment, state))
    message = f"{step_name}: dropped {names} ({dropped[0]['reason']}); carrying on with {left}"
    going = dataclasses.replace(
        state,
        weights=weights,
        step_started_at=now,
        last_evaluated_at=now,
        step_checks=0,
        samples={},
        reason="CandidateDropped",
        message=message,
        action=Action.CONTINUE,
    )
    return model.Decision(going, weights, events, assessments, experiment.interval)
