"""The A/B test: is the candidate better for the business? (docs/abtest.md)

Builds on the canary's state machine (gates, pause, drift, guardrails, final
phases) and replaces its steps with one fixed split of sticky users.  Every
interval it adds the objective's counts per variant, computes the candidate's
lift with an always-valid interval (``lift``) and decides:

- **Ship**: the improvement is significant and at least the minimum effect --
  Succeeded with ``autoPromote``, else Paused (AwaitingPromotion, split kept)
  until the promote annotation;
- **Discard**: significant harm, or the minimum effect is ruled out
  (futility), or a segment is harmed beyond the fairness margin -- RolledBack;
- **Iterate**: nothing conclusive by ``maxDuration`` -- RolledBack.

Guardrail metrics still roll back as in a canary.  An A/A test (``aa``) has
only one good end: no difference at ``maxDuration`` (Iterate), with the
sample-ratio check passing; a difference means the pipeline is broken.

With several candidates (``spec.candidates``) the split is shared equally among
those still in the test, and each is judged against the baseline on its own at
alpha over the candidates (``_evaluate_several``): one whose guardrails break,
that is judged Discard or is unfair to a segment is *dropped* (its users go back
to the baseline, ``core.candidates``) while the others go on; the first Ship
ends the test with the Ship candidate of the largest lift as the winner.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import ports, spec, spec_ab
from modelrollout.core import arms, canary, candidates, guardrails, lift, model, srm
from modelrollout.core.model import Action, Event, Phase, State, Verdict

TIMELINE_LIMIT = 100  # points kept for the report's plots; halved (every other point) when full
MAX_SEGMENTS = 64  # segment rows kept in status (the largest); fairness is judged on all of them
MAX_SEGMENT_ROWS = 256  # ... and with several candidates, all of theirs together (the CRD's maxItems)
SHIPPED, DISCARDED, ITERATE = canary.SHIPPED, "Discarded", "Iterate"
AA_FAILED, NO_DIFFERENCE, UNFAIR = "AAFailed", "NoDifference", "UnfairToSegment"


def start(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    ab = experiment.ab
    shared = " (shared equally)" if arms.several(experiment) else ""
    message = (
        f"A/B test: {ab.split}% of participating users to {', '.join(experiment.workloads)}{shared}, "
        f"sticky by cookie; objective {_objective(experiment).metric}"
    )
    begun = canary.begin(
        experiment,
        state,
        now,
        step=1,
        percent=ab.split,
        reason="Started",
        message=message,
        results={"startedAt": model.to_iso(now)},
    )
    return dataclasses.replace(begun, state=dataclasses.replace(begun.state, outcome=None))


def evaluate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    if arms.several(experiment):
        return _evaluate_several(experiment, state, obs, now, analyses)
    ab = experiment.ab
    objective = _objective(experiment)
    base, cand = experiment.baseline.workload, experiment.the_candidate.workload
    where = f"the A/B test ({ab.split}% to {cand})"
    guarded = experiment.model_copy(update={"metrics": experiment.guardrails})
    assessments, memory = canary.assess(guarded, state, obs, analyses)
    samples = {sample.name: sample for sample in obs.metrics or ()}

    # The objective's and secondary metrics' running sums, overall and per segment.
    kept, sums, segment_sums, fairness_metric = _running_sums(experiment, state, samples)

    # Sample-ratio mismatch on the unit the split randomizes (users newly assigned).
    # The first windows straddle the start: routes land and new series appear (counted from their first
    # sample), so the candidate's share lies anywhere between 0 and the split there.
    window_start = state.last_evaluated_at or state.step_started_at or now
    first = window_start - _started(state, now) < canary.WEIGHT_CHANGE_SETTLE
    mismatch = srm.check(
        state.analysis.get("srm"), obs.assignments, state.weights, cand, previous_weight=0 if first else None
    )
    memory["srm"] = mismatch.memory
    memory["abtest"] = kept
    results = dict(state.results)
    results["srm"] = _srm_summary(ab, mismatch, obs.assignments)

    kind = _kind(experiment, objective.metric)
    alpha = experiment.analysis.alpha
    tau = lift.mixture_tau(objective.minimum_effect)
    moments = sums.get(objective.metric, {})
    estimate = lift.estimate(
        _moments(moments, base), _moments(moments, cand), kind, alpha, tau, names=(base, cand)
    )
    objective_sample = samples.get(objective.metric)
    objective_assessment = _assess_objective(objective, estimate, objective_sample, base, cand)
    results["objective"] = _objective_entry(objective, estimate)
    results["secondary"] = _secondary(experiment, sums, alpha)
    fair_here = ab.fairness is not None and fairness_metric is None
    segment_results = _segments(
        experiment, objective.metric, segment_sums, estimate, kind, alpha, tau, fair_here
    )
    if fairness_metric is not None:  # fairness judged on a metric of its own: its segments too
        fair_kind = _kind(experiment, fairness_metric)
        fair_moments = sums.get(fairness_metric, {})
        fair_overall = lift.estimate(
            _moments(fair_moments, base),
            _moments(fair_moments, cand),
            fair_kind,
            alpha,
            tau,
            names=(base, cand),
        )
        segment_results += _segments(
            experiment, fairness_metric, kept["fairnessSegments"], fair_overall, fair_kind, alpha, tau, True
        )
    if experiment.segments:
        # The largest segments, if there are more than a status can hold (fairness looks at all).
        shown = sorted(segment_results, key=lambda e: -sum(e.get("samples", {}).values()))[:MAX_SEGMENTS]
        results["segments"] = [e for e in segment_results if any(e is x for x in shown)]
    plan = results.get("abPlan") or _plan(experiment, kind, objective_sample, state, now)
    if plan:
        results["abPlan"] = plan
    results["timeline"] = _timeline(results.get("timeline"), now, estimate, state.weights, moments)

    all_assessments = (objective_assessment, *assessments)
    state = dataclasses.replace(
        state,
        last_evaluated_at=now,
        samples=_samples(moments),
        analysis=memory,
        results=results,
    )
    held = canary.guard(experiment, state, now, all_assessments, mismatch, where)
    if held is not None:
        if ab.aa and mismatch.detected and held.state.reason == "SampleRatioMismatch":
            why = mismatch.message
            return _end(experiment, state, obs, now, lift.Outcome.DISCARD, AA_FAILED, why, all_assessments)
        if held.state.phase is Phase.ROLLED_BACK:  # a guardrail broke, or data stayed missing
            return _with_outcome(held, lift.Outcome.DISCARD.value)
        return held
    state = dataclasses.replace(state, failed_checks=0, no_data_checks=0)

    started = _started(state, now)
    deadline = now - started >= ab.max_duration
    enough = (
        all(estimate.samples.get(w, 0) >= ab.min_samples for w in (base, cand)) if estimate.ready else False
    )
    summary = "; ".join(a.reason for a in all_assessments)

    if ab.aa:
        passed, why = lift.aa_check(estimate)
        ended: tuple[lift.Outcome, str, str] | None = None
        if enough and not passed:
            ended = (
                lift.Outcome.DISCARD,
                AA_FAILED,
                f"A/A test found a difference between identical arms: {why}",
            )
        elif deadline and not enough:
            ended = (
                lift.Outcome.ITERATE,
                ITERATE,
                f"A/A test ended at maxDuration without enough data: {summary}",
            )
        elif deadline:
            ended = (
                lift.Outcome.ITERATE,
                NO_DIFFERENCE,
                f"A/A test passed: no difference, the split matches ({why})",
            )
        if ended is not None:
            return _end(experiment, state, obs, now, *ended, all_assessments)
        return _continue(experiment, state, now, f"A/A test running: {summary}", all_assessments)

    if enough and ab.fairness is not None:
        unfair = _unfair(experiment, segment_results)
        if unfair:
            return _end(experiment, state, obs, now, lift.Outcome.DISCARD, UNFAIR, unfair, all_assessments)

    outcome: lift.Outcome | None
    if enough:
        if deadline:
            outcome, why = lift.at_deadline(estimate, objective.direction.value, objective.minimum_effect)
        else:
            outcome, why = lift.judge(estimate, objective.direction.value, objective.minimum_effect)
    else:
        outcome, why = (lift.Outcome.ITERATE, "not enough data by maxDuration") if deadline else (None, "")
    if outcome is None:
        return _continue(experiment, state, now, f"A/B test running: {summary}", all_assessments)
    reason = {lift.Outcome.SHIP: SHIPPED, lift.Outcome.DISCARD: DISCARDED, lift.Outcome.ITERATE: ITERATE}[
        outcome
    ]
    return _end(experiment, state, obs, now, outcome, reason, why, all_assessments)


# --------------------------------------------------------------------------- several candidates


def _evaluate_several(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    """Each candidate still in the test against the baseline, at alpha over the candidates.

    Per candidate: its guardrails, missing data and sample-ratio check as in a canary of several
    (``candidates.assess_each``, ``tally``: broken guardrails drop it, a check failing or data missing
    below its limit or a mismatch holds everything), its objective's lift, secondary metrics and
    segments.  Then a candidate judged Discard or unfair is dropped; any Ship ends the test with the
    Ship candidate of the largest lift as the winner; at ``maxDuration`` without one it is Iterate;
    with every candidate dropped, Discard.
    """
    ab = experiment.ab
    objective = _objective(experiment)
    base = experiment.baseline.workload
    records = arms.records(experiment, state)
    racing = [r for r in records if r["state"] == arms.ACTIVE]
    workloads = [r["workload"] for r in racing]
    where = f"the A/B test ({ab.split}% to {', '.join(workloads)})"
    # Bonferroni over every candidate the test started with: dropping one does not buy the others alpha.
    count = len(experiment.arms)
    alpha = lift.bonferroni(experiment.analysis.alpha, count)
    tau = lift.mixture_tau(objective.minimum_effect)
    kind = _kind(experiment, objective.metric)
    samples = {sample.name: sample for sample in obs.metrics or ()}

    # The running sums, keyed by workload: one set for all candidates (the baseline's is shared).
    kept, sums, segment_sums, fairness_metric = _running_sums(experiment, state, samples)

    # Guardrails and the sample-ratio check (on the users newly assigned) per (baseline, candidate).
    previous, before = candidates.straddled(state)
    guarded = experiment.model_copy(update={"metrics": experiment.guardrails})
    on_users = dataclasses.replace(obs, requests=obs.assignments)
    per, memory, mismatch = candidates.assess_each(guarded, state, on_users, analyses, workloads, previous)
    memory["srm"] = {**memory["srm"], "weights": dict(state.weights), "before": before}
    memory["abtest"] = kept
    results = dict(state.results)
    results["srm"] = _srm_summary(ab, mismatch, obs.assignments)

    moments = sums.get(objective.metric, {})
    objective_sample = samples.get(objective.metric)
    fair_here = ab.fairness is not None and fairness_metric is None
    limit = min(MAX_SEGMENTS, MAX_SEGMENT_ROWS // count)
    estimates: dict[str, lift.Estimate] = {}
    segment_rows: dict[str, list[dict[str, Any]]] = {}
    secondary: list[dict[str, Any]] = []
    for record in racing:
        cand = record["workload"]
        estimate = lift.estimate(
            _moments(moments, base), _moments(moments, cand), kind, alpha, tau, names=(base, cand)
        )
        estimates[cand] = estimate
        assessed = _assess_objective(objective, estimate, objective_sample, base, cand)
        per[cand] = (dataclasses.replace(assessed, extra={**assessed.extra, "variant": cand}), *per[cand])
        record["objective"] = _objective_entry(objective, estimate)
        interval_sums = (objective_sample.sums or {}).get(cand) if objective_sample is not None else None
        if interval_sums is not None and interval_sums.count > 0:  # ranks the leader (``arms.leader``)
            arms.add_score(
                record, objective.metric, interval_sums.total / interval_sums.count, interval_sums.count
            )
        secondary += [{**e, "variant": cand} for e in _secondary(experiment, sums, alpha, cand)]
        rows = _segments(
            experiment, objective.metric, segment_sums, estimate, kind, alpha, tau, fair_here, cand
        )
        if fairness_metric is not None:
            fair_kind = _kind(experiment, fairness_metric)
            fair_moments = sums.get(fairness_metric, {})
            fair_overall = lift.estimate(
                _moments(fair_moments, base), _moments(fair_moments, cand), fair_kind, alpha, tau,
                names=(base, cand),
            )  # fmt: skip
            rows += _segments(
                experiment, fairness_metric, kept["fairnessSegments"], fair_overall, fair_kind, alpha, tau,
                True, cand,
            )  # fmt: skip
        segment_rows[cand] = [{**e, "variant": cand} for e in rows]

    # Dropped candidates keep the entries they had when they left.
    results["secondary"] = [
        *(e for e in _entries(results.get("secondary")) if e.get("variant") not in workloads),
        *secondary,
    ]
    if experiment.segments:
        shown: list[dict[str, Any]] = []
        for rows in segment_rows.values():
            largest = sorted(rows, key=lambda e: -sum(e.get("samples", {}).values()))[:limit]
            shown += [e for e in rows if any(e is x for x in largest)]
        old = [e for e in _entries(results.get("segments")) if e.get("variant") not in workloads]
        results["segments"] = [*old, *shown][:MAX_SEGMENT_ROWS]
    plan = results.get("abPlan") or _plan(experiment, kind, objective_sample, state, now, count)
    if plan:
        results["abPlan"] = plan
    every = tuple(a for cand in per for a in per[cand])
    state = dataclasses.replace(
        state, last_evaluated_at=now, samples=_samples(moments), analysis=memory, results=results
    )

    dropped, holds, codes = candidates.tally(experiment, racing, per)
    state = _standing(experiment, state, records)
    leader = arms.leader(experiment, state)
    if leader in estimates:
        timeline = _timeline(results.get("timeline"), now, estimates[leader], state.weights, moments, leader)
        state = dataclasses.replace(state, results={**state.results, "timeline": timeline})
    if dropped and len(dropped) == len(racing):
        why = "; ".join(f"{r['workload']}: {r['message']}" for r in dropped)
        message = f"rolled back at {where}: every candidate failed: {why}"
        finished = canary.finish(
            experiment, state, Phase.ROLLED_BACK, now, codes[0], message, step=state.step, assessments=every
        )
        return _with_outcome(finished, lift.Outcome.DISCARD.value)
    if dropped:
        return candidates.drop(experiment, state, dropped, now, where, every)
    held = candidates.hold(experiment, state, now, where, holds, codes, mismatch, every)
    if held is not None:
        return held
    state = dataclasses.replace(state, failed_checks=0, no_data_checks=0)

    # Each candidate's judgement: None while it runs on.
    deadline = now - _started(state, now) >= ab.max_duration
    judged: dict[str, tuple[lift.Outcome | None, str, str]] = {}  # workload -> (outcome, reason, why)
    for record in racing:
        cand = record["workload"]
        estimate = estimates[cand]
        enough = estimate.ready and all(estimate.samples.get(w, 0) >= ab.min_samples for w in (base, cand))
        unfair = _unfair(experiment, segment_rows[cand], cand) if enough and ab.fairness is not None else ""
        outcome: lift.Outcome | None
        if unfair:
            judged[cand] = (lift.Outcome.DISCARD, UNFAIR, unfair)
            continue
        if enough and deadline:
            outcome, why = lift.at_deadline(estimate, objective.direction.value, objective.minimum_effect)
        elif enough:
            outcome, why = lift.judge(estimate, objective.direction.value, objective.minimum_effect)
        else:
            outcome, why = (
                (lift.Outcome.ITERATE, "not enough data by maxDuration") if deadline else (None, "")
            )
        judged[cand] = (outcome, _REASONS[outcome] if outcome is not None else "", why)

    shipped = [r for r in racing if judged[r["workload"]][0] is lift.Outcome.SHIP]
    discarded = [r for r in racing if judged[r["workload"]][0] is lift.Outcome.DISCARD]
    for record in discarded:
        _, reason, why = judged[record["workload"]]
        record.update(state=arms.DROPPED, reason=reason, message=f"{lift.Outcome.DISCARD.value}: {why}")
    if discarded:
        weights = candidates.to_baseline(experiment, state.weights, [r["workload"] for r in discarded])
        state = dataclasses.replace(_standing(experiment, state, records), weights=weights)
    told = tuple(
        Event("Warning", "CandidateDropped", f"dropped {r['workload']} at {where}: {r['message']}")
        for r in discarded
    )

    def each(chosen: Sequence[Mapping[str, Any]]) -> str:
        """Why, per candidate: this evaluation's judgement, else why it was dropped earlier."""
        return "; ".join(
            f"{r['workload']}: {judged[r['workload']][2] if r['workload'] in judged else r['message']}"
            for r in chosen
        )

    if shipped:
        sign = -1.0 if objective.direction is spec_ab.Direction.DECREASE else 1.0
        winner = max(shipped, key=lambda r: sign * (estimates[r["workload"]].lift or 0.0))["workload"]
        state = dataclasses.replace(state, results={**state.results, "winner": winner})
        state = _standing(experiment, state, records)  # the winner's entry in status.objective
        why = f"{winner} wins: {judged[winner][2]}"
        if len(shipped) > 1:
            why += f" (the largest lift of the candidates that ship: {each(shipped)})"
        decision = _end(experiment, state, obs, now, lift.Outcome.SHIP, SHIPPED, why, every)
    elif len(discarded) == len(racing):
        reason = UNFAIR if all(judged[r["workload"]][1] == UNFAIR for r in discarded) else DISCARDED
        why = f"every candidate was discarded: {each(records)}"
        decision = _end(experiment, state, obs, now, lift.Outcome.DISCARD, reason, why, every)
    elif deadline:
        left = [r for r in racing if r not in discarded]
        why = f"no candidate ships by maxDuration: {each(left)}"
        decision = _end(experiment, state, obs, now, lift.Outcome.ITERATE, ITERATE, why, every)
    elif discarded:
        return candidates.drop(experiment, state, discarded, now, where, every)
    else:
        summary = "; ".join(f"{w}: " + ", ".join(a.reason for a in per[w]) for w in per)
        return _continue(experiment, state, now, f"A/B test running: {summary}", every)
    return dataclasses.replace(decision, events=(*told, *decision.events))


_REASONS = {lift.Outcome.SHIP: SHIPPED, lift.Outcome.DISCARD: DISCARDED, lift.Outcome.ITERATE: ITERATE}


def _standing(experiment: spec.ExperimentSpec, state: State, records: list[dict[str, Any]]) -> State:
    """The candidates' records into the status, and as ``status.objective`` the objective entry of the
    winner once there is one, else of the leader (``arms.winner``), naming it (``variant``)."""
    state = candidates.with_records(state, records)
    chosen = arms.winner(experiment, state)
    entry = next((r.get("objective") for r in records if r["workload"] == chosen), None)
    if not isinstance(entry, Mapping):
        return state
    return dataclasses.replace(state, results={**state.results, "objective": {**entry, "variant": chosen}})


def _entries(value: Any) -> list[Mapping[str, Any]]:
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


# --------------------------------------------------------------------------- transitions


def _continue(
    experiment: spec.ExperimentSpec,
    state: State,
    now: datetime.datetime,
    message: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    going = dataclasses.replace(state, reason="Running", message=message, action=Action.CONTINUE)
    return model.Decision(
        going, dict(state.weights), (), assessments, canary.until_due(experiment, going, now)
    )


def _end(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    outcome: lift.Outcome,
    reason: str,
    why: str,
    assessments: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    state = dataclasses.replace(state, outcome=outcome.value)
    if outcome is lift.Outcome.SHIP and not experiment.ab.auto_promote:
        message = (
            f"Ship: {why}; waiting for the modelrollout.io/promote annotation "
            f"(the split stays at {arms.candidate_share(experiment, state.weights)}%)"
        )
        waiting = dataclasses.replace(
            state, phase=Phase.PAUSED, reason=canary.AWAITING_PROMOTION, message=message, action=Action.HOLD
        )
        events = (Event("Normal", SHIPPED, message), Event("Normal", canary.AWAITING_PROMOTION, message))
        return model.Decision(waiting, dict(state.weights), events, assessments, experiment.ab.interval)
    if outcome is lift.Outcome.SHIP:
        return canary.ship(experiment, state, obs, now, why, assessments)
    message = f"{outcome.value}: {why}"
    finished = canary.finish(
        experiment, state, Phase.ROLLED_BACK, now, reason, message, step=1, assessments=assessments
    )
    return dataclasses.replace(finished, events=(Event("Warning", reason, message), *finished.events))


def _with_outcome(decision: model.Decision, outcome: str) -> model.Decision:
    return dataclasses.replace(decision, state=dataclasses.replace(decision.state, outcome=outcome))


# --------------------------------------------------------------------------- sums


def _running_sums(
    experiment: spec.ExperimentSpec, state: State, samples: Mapping[str, model.MetricSample]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]], str | None]:
    """The A/B memory with this interval's sums added: the memory, the objective's and secondary
    metrics' sums, the objective's per segment, and the fairness metric when it has its own."""
    objective = _objective(experiment)
    kept = dict(state.analysis.get("abtest", {}))
    sums = _accumulate(kept.get("sums"), samples, [objective.metric, *_secondary_names(experiment)])
    segment_sums = _accumulate_segments(kept.get("segments"), samples.get(objective.metric))
    kept.update(sums=sums, segments=segment_sums)
    fairness_metric = _fairness_metric(experiment)
    if fairness_metric is not None:
        kept["fairnessSegments"] = _accumulate_segments(
            kept.get("fairnessSegments"), samples.get(fairness_metric)
        )
    return kept, sums, segment_sums, fairness_metric


def _accumulate(
    kept: Any, samples: Mapping[str, model.MetricSample], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """metric -> workload -> running moments (as dicts), with this interval's sums added."""
    result: dict[str, dict[str, Any]] = {}
    previous = kept if isinstance(kept, Mapping) else {}
    for name in names:
        found = previous.get(name)
        before: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        sample = samples.get(name)
        result[name] = _add(before, sample.sums if sample is not None else None)
    return result


def _accumulate_segments(kept: Any, sample: model.MetricSample | None) -> dict[str, dict[str, Any]]:
    result = (
        {str(k): dict(v) for k, v in kept.items() if isinstance(v, Mapping)}
        if isinstance(kept, Mapping)
        else {}
    )
    for segment, sums in ((sample.segments or {}) if sample is not None else {}).items():
        result[segment] = _add(result.get(segment, {}), sums)
    return result


def _add(before: Mapping[str, Any], sums: Mapping[str, model.Sums] | None) -> dict[str, Any]:
    after = {str(w): m for w, m in before.items()}
    for workload, s in (sums or {}).items():
        moments = lift.Moments.from_dict(after.get(workload)).add(s.count, s.total, s.squares)
        after[workload] = moments.to_dict()
    return after


def _moments(by_workload: Mapping[str, Any], workload: str) -> lift.Moments:
    return lift.Moments.from_dict(by_workload.get(workload))


def _samples(by_workload: Mapping[str, Any]) -> dict[str, int]:
    return {w: round(_moments(by_workload, w).count) for w in by_workload}


# --------------------------------------------------------------------------- reporting


def _objective(experiment: spec.ExperimentSpec) -> spec_ab.ObjectiveSpec:
    assert experiment.objective is not None  # the spec requires one for ABTest
    return experiment.objective


def _kind(experiment: spec.ExperimentSpec, name: str) -> str:
    metric = experiment.metric(name)
    return "mean" if metric is not None and metric.mean is not None else "ratio"


def _secondary_names(experiment: spec.ExperimentSpec) -> list[str]:
    return [m.name for m in experiment.secondary_metrics]


def _assess_objective(
    objective: spec_ab.ObjectiveSpec,
    estimate: lift.Estimate,
    sample: model.MetricSample | None,
    base: str,
    cand: str,
) -> model.MetricAssessment:
    name = objective.metric
    if sample is None or sample.sums is None or base not in sample.sums or cand not in sample.sums:
        results = sample.results if sample is not None else {}
        missing = [w for w in (base, cand) if w not in results or not results[w].ok]
        causes = "; ".join(
            f"{results[w].outcome.value}: {results[w].detail}" for w in missing if w in results
        )
        who = " and ".join(missing) or "a variant"
        error = any(w in results and not results[w].outcome.is_no_data for w in missing)
        verdict = Verdict.ERROR if error else Verdict.NO_DATA
        return model.MetricAssessment(
            name,
            verdict,
            f"{name}: no counts for {who} in this interval" + (f" ({causes})" if causes else ""),
        )
    extra: dict[str, Any] = {"role": "Objective"}
    if estimate.lift is not None:
        extra["lift"] = round(estimate.lift, 6)
    if estimate.interval is not None:
        extra["interval"] = [round(estimate.interval[0], 6), round(estimate.interval[1], 6)]
    return model.MetricAssessment(
        name,
        Verdict.PASS if estimate.ready else Verdict.INCONCLUSIVE,
        f"{name}: {estimate.reason}",
        baseline=estimate.baseline,
        candidate=estimate.candidate,
        extra=extra,
    )


def _objective_entry(objective: spec_ab.ObjectiveSpec, estimate: lift.Estimate) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "metric": objective.metric,
        "direction": objective.direction.value,
        "minimumEffect": objective.minimum_effect,
        "baseline": _round(estimate.baseline),
        "candidate": _round(estimate.candidate),
        "lift": _round(estimate.lift),
        "interval": _interval(estimate),
        "samples": {w: round(n) for w, n in estimate.samples.items()},
        "reason": estimate.reason,
    }
    return _present(entry)


def _secondary(
    experiment: spec.ExperimentSpec,
    sums: Mapping[str, Mapping[str, Any]],
    alpha: float,
    cand: str | None = None,
) -> list[dict[str, Any]]:
    """Each secondary metric's lift of ``cand`` (default: the candidate), at alpha over the metrics."""
    metrics = experiment.secondary_metrics
    corrected = lift.bonferroni(alpha, len(metrics))
    base, cand = experiment.baseline.workload, cand or experiment.the_candidate.workload
    entries = []
    for metric in metrics:
        moments = sums.get(metric.name, {})
        kind = "mean" if metric.mean is not None else "ratio"
        tau = lift.mixture_tau(experiment.objective.minimum_effect if experiment.objective else 0.05)
        est = lift.estimate(
            _moments(moments, base), _moments(moments, cand), kind, corrected, tau, names=(base, cand)
        )
        entry = {
            "metric": metric.name,
            "baseline": _round(est.baseline),
            "candidate": _round(est.candidate),
            "lift": _round(est.lift),
            "interval": _interval(est),
            "alpha": round(corrected, 6),
        }
        entries.append(_present(entry))
    return entries


def _fairness_metric(experiment: spec.ExperimentSpec) -> str | None:
    """The metric fairness judges when it is not the objective (None: the objective, or no fairness)."""
    fairness = experiment.ab.fairness
    if fairness is None or fairness.metric is None or fairness.metric == _objective(experiment).metric:
        return None
    return fairness.metric


def _segments(
    experiment: spec.ExperimentSpec,
    metric: str,
    segment_sums: Mapping[str, Mapping[str, Any]],
    overall: lift.Estimate,
    kind: str,
    alpha: float,
    tau: float,
    judge_fairness: bool,
    cand: str | None = None,
) -> list[dict[str, Any]]:
    base, cand = experiment.baseline.workload, cand or experiment.the_candidate.workload
    per_segment = {
        key: (_moments(sums, base), _moments(sums, cand)) for key, sums in sorted(segment_sums.items())
    }
    table = lift.segment_table(per_segment, overall, kind, alpha, tau, names=(base, cand))
    unfair: set[str] = set()
    fairness = experiment.ab.fairness
    if fairness is not None and judge_fairness:
        # Harm is the objective's direction for the objective; for another metric, a decrease.
        direction = (
            _objective(experiment).direction.value if metric == _objective(experiment).metric else "Increase"
        )
        unfair = {r.segment for r in lift.unfair_segments(table, fairness.margin, direction)}
    entries = []
    for result in table:
        est = result.estimate
        entry = {
            "segment": _segment_labels(result.segment),
            "metric": metric,
            "baseline": _round(est.baseline),
            "candidate": _round(est.candidate),
            "lift": _round(est.lift),
            "interval": _interval(est),
            "samples": {w: round(n) for w, n in est.samples.items()},
            "reversed": result.reversed,
            "unfair": result.segment in unfair,
        }
        entries.append(_present(entry))
    return entries


def _unfair(
    experiment: spec.ExperimentSpec, segments: Sequence[Mapping[str, Any]], who: str = "the candidate"
) -> str:
    harmed = [s for s in segments if s.get("unfair")]
    if not harmed:
        return ""
    fairness = experiment.ab.fairness
    assert fairness is not None
    names = ", ".join(
        ",".join(f"{k}={v}" for k, v in s["segment"].items()) + f" ({s['metric']} {_pct(s.get('lift'))})"
        for s in harmed
    )
    return (
        f"{who} is worse than the baseline by more than {fairness.margin:.0%} in {names} "
        f"(intervals corrected across {len(segments)} segments)"
    )


def _segment_labels(key: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in key.split(","):
        name, _, value = part.partition("=")
        labels[name] = value
    return labels


def _plan(
    experiment: spec.ExperimentSpec,
    kind: str,
    sample: model.MetricSample | None,
    state: State,
    now: datetime.datetime,
    candidates: int = 1,
) -> dict[str, Any] | None:
    """Sample size up front, from the first interval with data: the baseline's rate and the traffic.

    With several ``candidates`` the split is shared among them: the plan is for one (baseline,
    candidate) comparison at alpha over the candidates, and its duration for the smallest arm."""
    objective = _objective(experiment)
    base = experiment.baseline.workload
    if sample is None or sample.sums is None or base not in sample.sums:
        return None
    first = sample.sums[base]
    window = (now - (state.last_evaluated_at or now)).total_seconds()
    if first.count <= 0 or window <= 0:
        return None
    mean = first.total / first.count
    sd: float | None = None
    if kind == "mean":
        if first.squares is None:
            return None  # the variance needs several intervals: planned once it is known
        sd = max(first.squares / first.count - mean * mean, 0.0) ** 0.5
    ab = experiment.ab
    each = ab.split / candidates  # a candidate's share of the users
    per_arm = lift.samples_per_arm(
        kind,
        mean,
        sd,
        objective.minimum_effect,
        lift.bonferroni(experiment.analysis.alpha, candidates),
        objective.power,
        ab.split if candidates == 1 else 100 * each / (100 - ab.split + each),  # its share of the pair
        direction=objective.direction.value,
    )
    total = sum(s.count for s in sample.sums.values())
    rate = total / window
    smallest = ab.split if candidates == 1 else min(each, 100 - ab.split)
    duration = lift.expected_duration(per_arm, rate, smallest) if per_arm is not None else None
    what = f"{objective.minimum_effect:+.1%} {objective.metric}"
    if per_arm is None or duration is None:
        message = f"cannot plan for {what} from the first interval"
    else:
        message = (
            f"detecting {what} with {objective.power:.0%} power needs {per_arm} observations in the smaller "
            f"arm: about {_duration(duration)} at a {ab.split}% split"
            + (f" over {candidates} candidates" if candidates > 1 else "")
            + f" and {rate:.3g}/s"
        )
        if duration > ab.max_duration:
            message += f", longer than maxDuration {_duration(ab.max_duration)}"
    plan: dict[str, Any] = {
        "baselineRate": _round(mean),
        "samplesPerArm": per_arm,
        "requestsPerSecond": round(rate, 3),
        "expectedDuration": _duration(duration) if duration is not None else None,
        "message": message,
    }
    return _present(plan)


def _timeline(
    previous: Any,
    now: datetime.datetime,
    estimate: lift.Estimate,
    weights: Mapping[str, int],
    moments: Mapping[str, Any],
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """The timeline with this evaluation's point added (``variant``: whose lift it is, with several)."""
    points = [p for p in previous if isinstance(p, Mapping)] if isinstance(previous, list) else []
    point: dict[str, Any] = {
        "time": model.to_iso(now),
        "weights": dict(weights),
        "samples": _samples(moments),
    }
    if variant is not None:
        point["variant"] = variant
    if estimate.lift is not None:
        point["lift"] = round(estimate.lift, 6)
    if estimate.interval is not None:
        point["interval"] = _interval(estimate)
    points.append(point)
    if len(points) > TIMELINE_LIMIT:
        points = [*points[:-1:2], points[-1]]  # every other point, and always the latest
    return [dict(p) for p in points]


def _srm_summary(
    ab: spec_ab.ABTestSpec,
    finding: srm.Finding | None,
    assignments: Mapping[str, ports.QueryResult] | None,
) -> dict[str, Any]:
    if ab.assignment_query is None:
        return {
            "checked": False,
            "message": "not checked: set abTest.assignmentQuery to count assigned users",
        }
    if finding is not None and finding.detected:
        return {"checked": True, "passed": False, "message": finding.message}
    return {"checked": True, "passed": True, "message": "the users' shares match the split"}


def _started(state: State, now: datetime.datetime) -> datetime.datetime:
    return model.from_iso(state.results.get("startedAt")) or state.step_started_at or now


def _present(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A status entry without the fields that could not be computed (status holds no nulls)."""
    return {k: v for k, v in entry.items() if v is not None}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _interval(estimate: lift.Estimate) -> list[float] | None:
    if estimate.interval is None:
        return None
    return [round(estimate.interval[0], 6), round(estimate.interval[1], 6)]


def _pct(value: Any) -> str:
    return f"{value:+.1%}" if isinstance(value, (int, float)) else "n/a"


def _duration(value: datetime.timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = "".join(parts)
    return text or f"{seconds}s"
