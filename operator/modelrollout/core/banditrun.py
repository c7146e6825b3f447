"""``strategy: Bandit``: the traffic goes where the reward is, then a stratified comparison decides.

Builds on the canary's state machine (gates, pause, drift, final phases) and on the
several-candidates canary's per-candidate guardrails (``core.candidates``); the
statistics are ``core.bandit``'s.  The baseline and every candidate are *arms*.

Start: an equal split (every arm gets at least ``minWeight``).  Every ``interval``:

1. each candidate with traffic is judged against the baseline by the guardrails (the
   metrics but the reward), with its own memory, sample-ratio check and alpha /
   candidates, as in a canary with several candidates; one that fails (or whose data
   stays missing ``noDataLimit`` times) is *dropped*: weight 0 at once, a
   ``CandidateDropped`` Event, and the others carry on.  Every candidate dropped: the
   baseline is kept (RolledBack, outcome Discard);
2. the reward (a ratio metric) must have counts for the baseline and each candidate
   with traffic: missing counts are never good data -- they hold everything (no new
   weights, nothing added) under ``noData``/``noDataLimit`` like a guardrail, as does a
   check failing below ``failureLimit`` or a sample-ratio mismatch;
3. the interval's counts go into the running sums (``bandit.add_interval``: pooled for
   the posteriors, per interval for the stratified comparison), each arm's posterior
   probability of being the best is estimated, and the weights move towards those
   probabilities (Thompson sampling) within ``minWeight`` and ``maxStepChange``;
4. exploration stops when one arm's probability of being best is at least
   ``confidence`` for ``intervalsRequired`` intervals in a row, or at ``maxDuration``.

Then the final comparison decides (``bandit.winner``: per candidate, the Mantel-Haenszel
rate ratio over the intervals with the Greenland-Robins variance in the always-valid
interval of ``core.lift``, at alpha / candidates):

- a candidate significantly better than the baseline: **Ship** -- Succeeded with that
  candidate at 100 % (``status.winner``), or with ``autoPromote: false`` Paused
  (AwaitingPromotion, weights kept) until the promote annotation;
- the stopping rule picked a candidate that is not significantly better *yet*: the
  **confirmation** stage.  The leader and the baseline share the traffic evenly (the
  other candidates go to 0, reached within ``maxStepChange``) until the comparison says
  Ship, the leader is significantly worse (Discard) or ``maxDuration`` (Iterate).  At
  the stop the baseline sits at its floor and has too little data for any test
  (benchmarks/RESULTS.md, "Bandit benchmark"); an even split gives the comparison the
  most information per request.  The intervals are always-valid, so looking at every
  interval of the confirmation costs nothing in error;
- the stopping rule picked the baseline: **Discard** (RolledBack) unless a candidate is
  significantly better;
- ``maxDuration`` without a significant candidate: **Discard** when every candidate still
  in the race is significantly worse, else **Iterate** (RolledBack, baseline 100 %).

Memory: the arms' running sums, the recent probabilities and the weights before the last
move are in ``status.analysisState.bandit``; what a user reads (stage, probabilities,
rates, comparison, allocation history) in ``status.bandit``.  Nothing is kept in the
process: the Monte Carlo draws come from a generator seeded by the experiment's start,
its variants and the interval's number, so an operator restarted at any point makes the
same allocation from the same status.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from modelrollout import durations, spec, spec_bandit
from modelrollout.core import abtest, arms, bandit, canary, candidates, drift, guardrails, lift, model
from modelrollout.core.model import Action, Event, Phase, State, Verdict

KEY = "bandit"  # status.bandit (State.results) and status.analysisState.bandit (State.analysis)
EXPLORING, CONFIRMING, DECIDED = "Exploring", "Confirming", "Decided"
ALLOCATION_LIMIT = 100  # allocation points kept in status; every other one dropped when full
DRAWS = 20000  # posterior draws per estimate of the probabilities of being best
BASELINE_BEST = "BaselineBest"


def _settings(experiment: spec.ExperimentSpec) -> spec_bandit.BanditSpec:
    assert experiment.bandit is not None  # the spec requires it for strategy Bandit
    return experiment.bandit


def start(experiment: spec.ExperimentSpec, state: State, now: datetime.datetime) -> model.Decision:
    """Every arm gets an equal share (the baseline the rounding's extra point)."""
    settings = _settings(experiment)
    percent = 100 - math.ceil(100 / (len(experiment.arms) + 1))  # the candidates' together
    weights = canary.split(experiment, percent)
    record = {
        "stage": EXPLORING,
        "startedAt": model.to_iso(now),
        "intervals": 0,
        "reward": settings.reward,
        "allocation": [{"time": model.to_iso(now), "weights": weights}],
    }
    message = (
        f"bandit on {settings.reward}: {drift.show(weights)}, re-allocated every "
        f"{durations.format_duration(settings.interval)}"
    )
    results = {key: value for key, value in state.results.items() if key not in (KEY, "winner")}
    begun = canary.begin(
        experiment,
        dataclasses.replace(state, analysis={}),
        now,
        step=1,
        percent=percent,
        reason="Started",
        message=message,
        results={**results, KEY: record},
    )
    return dataclasses.replace(begun, state=dataclasses.replace(begun.state, outcome=None))


def evaluate(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    now: datetime.datetime,
    analyses: Sequence[guardrails.Analysis],
) -> model.Decision:
    settings = _settings(experiment)
    base = experiment.baseline.workload
    record = dict(state.results.get(KEY) or {})
    kept = dict(state.analysis.get(KEY) or {})
    records = arms.records(experiment, state)
    # Candidates with traffic in this window: the others (dropped, or set aside while confirming)
    # have nothing to measure.
    playing = [r for r in records if r["state"] == arms.ACTIVE and state.weights.get(r["workload"], 0) > 0]
    guarded = experiment.model_copy(update={"metrics": experiment.guardrails})
    # The weights before the last move (the start's: all on the baseline): every window straddles one.
    previous = _weights(kept.get("previous")) or canary.split(experiment, 0)
    per, memory, mismatch = candidates.assess_each(
        guarded, state, obs, analyses, [r["workload"] for r in playing], previous
    )
    reward = next((s for s in obs.metrics or () if s.name == settings.reward), None)
    for r in playing:
        per[r["workload"]] = (*per[r["workload"]], _reward(settings.reward, reward, base, r["workload"]))
    every = tuple(a for workload in per for a in per[workload])
    dropped, holds, codes = candidates.tally(experiment, playing, per)
    state = candidates.with_records(state, records)
    memory[KEY] = kept  # until this interval's counts are added
    state = dataclasses.replace(
        state, last_evaluated_at=now, samples=canary.add_samples(state.samples, obs), analysis=memory
    )
    where = f"bandit interval {_count(record.get('intervals')) + 1}"

    if not arms.active(experiment, state):
        why = "; ".join(f"{r['workload']}: {r['message']}" for r in records)
        record["stage"] = DECIDED
        ended = canary.finish(
            experiment,
            _with_record(state, record),
            Phase.ROLLED_BACK,
            now,
            codes[0] if codes else "GuardrailFailed",
            f"rolled back at {where}: every candidate was dropped, {base} stays: {why}",
            step=state.step,
            assessments=every,
        )
        return dataclasses.replace(
            ended, state=dataclasses.replace(ended.state, outcome=lift.Outcome.DISCARD.value)
        )
    if dropped:
        return _drop(experiment, state, record, kept, dropped, now, where, every)
    held = candidates.hold(experiment, state, now, where, holds, codes, mismatch, every)
    if held is not None:
        return held
    state = dataclasses.replace(state, failed_checks=0, no_data_checks=0)
    counts = reward.counts if reward is not None and reward.counts is not None else {}
    measured = {w: (c.events, c.total) for w, c in counts.items()}
    return _interval(experiment, state, obs, record, kept, measured, now, where, every)


# --------------------------------------------------------------------------- one interval


def _interval(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    record: dict[str, Any],
    kept: dict[str, Any],
    measured: Mapping[str, tuple[float, float]],
    now: datetime.datetime,
    where: str,
    every: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """The interval's counts added, the probabilities updated, and the bandit's move."""
    settings = _settings(experiment)
    base = experiment.baseline.workload
    racing = arms.active(experiment, state)
    gone = [w for w in experiment.workloads if w not in racing]
    stats = bandit.add_interval(_stats(experiment, kept), measured, baseline=base)
    intervals = _count(record.get("intervals")) + 1
    rng = _generator(experiment, record, intervals)
    chances = bandit.probability_best({w: stats[w] for w in (base, *racing)}, rng, DRAWS)
    history = [*_history(kept), chances][-settings.intervals_required :]
    alpha, tau = experiment.analysis.alpha, lift.mixture_tau(settings.minimum_effect)
    comparison = bandit.final_comparison(stats, base, alpha=alpha, tau=tau)
    chosen = bandit.winner(stats, base, alpha=alpha, tau=tau, dropped=gone)
    started = model.from_iso(record.get("startedAt")) or state.step_started_at or now
    deadline = now - started >= settings.max_duration
    stage, leader = _stage(record, racing)

    record.update(
        intervals=intervals,
        reward=settings.reward,
        probabilityBest={w: round(p, 4) for w, p in chances.items()},
        alpha=round(lift.bonferroni(alpha, len(experiment.arms)), 6),
        comparison=[_comparison_entry(w, est) for w, est in comparison.items()],
    )
    kept = {"stats": bandit.dump_stats(stats), "history": history, "previous": dict(state.weights)}
    state = dataclasses.replace(state, analysis={**state.analysis, KEY: kept})
    best = max(chances, key=lambda w: chances[w])

    if chosen != base:
        why = f"{chosen} is better than {base}: {comparison[chosen].reason}"
        return _ship(experiment, state, obs, record, stats, chances, chosen, why, now, every)
    if stage == EXPLORING:
        stop = bandit.should_stop(history, settings.confidence, settings.intervals_required)
        rule = f"P(best) >= {settings.confidence:g} for {settings.intervals_required} interval(s) in a row"
        if stop == base:
            why = f"{base} is the best arm ({rule}) and no candidate is significantly better"
            return _keep(experiment, state, record, stats, chances, BASELINE_BEST, why, now, every)
        if deadline:
            return _at_deadline(experiment, state, record, stats, chances, comparison, racing, now, every)
        if stop is not None:
            stage, leader = CONFIRMING, stop
            record.update(stage=CONFIRMING, leader=stop)
            message = (
                f"{where}: {stop} is the best arm ({rule}) but not yet significantly better than "
                f"{base} ({comparison[stop].reason}): confirming it against {base} at an even split"
            )
            events: tuple[Event, ...] = (Event("Normal", CONFIRMING, message),)
        else:
            record.update(stage=EXPLORING, leader=best)
            message = f"{where}: leader {best} (P(best) {chances[best]:.3f})"
            events = ()
    else:
        assert leader is not None  # confirming has one
        estimate = comparison[leader]
        if estimate.interval is not None and estimate.interval[1] < 0:
            why = f"{leader}, the bandit's pick, is worse than {base}: {estimate.reason}"
            return _keep(experiment, state, record, stats, chances, abtest.DISCARDED, why, now, every)
        if deadline:
            return _at_deadline(experiment, state, record, stats, chances, comparison, racing, now, every)
        message = f"{where}: confirming {leader} against {base}: {estimate.reason}"
        events = ()

    if stage == CONFIRMING and leader is not None:
        target = {base: 1.0, leader: 1.0}
        aside: Collection[str] = [w for w in experiment.workloads if w != leader]
    else:
        target = dict(chances)
        aside = gone
    weights = _move(experiment, state, target, aside)
    record["arms"] = _arm_entries(experiment, stats, weights, chances)
    record["allocation"] = _allocation(record.get("allocation"), now, weights, chances)
    moved = dataclasses.replace(
        state,
        weights=weights,
        results={**state.results, KEY: record},
        reason=stage,
        message=f"{message}; weights {drift.show(weights)}",
        action=Action.CONTINUE,
    )
    return model.Decision(moved, weights, events, every, canary.until_due(experiment, moved, now))


def _move(
    experiment: spec.ExperimentSpec, state: State, target: Mapping[str, float], aside: Collection[str]
) -> dict[str, int]:
    """Weights as close to ``target`` as the floor and the step limit allow; ``aside`` at 0 at once."""
    settings = _settings(experiment)
    variants = (experiment.baseline.workload, *experiment.workloads)
    weights = bandit.project(
        {w: float(target.get(w, 0.0)) for w in variants},
        state.weights,
        min_weight=settings.min_weight,
        max_step_change=settings.max_step_change,
        dropped=aside,
    )
    return {w: weights.get(w, 0) for w in variants}  # in spec order, as every other split


def _drop(
    experiment: spec.ExperimentSpec,
    state: State,
    record: dict[str, Any],
    kept: dict[str, Any],
    dropped: list[dict[str, Any]],
    now: datetime.datetime,
    where: str,
    every: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """The dropped candidates go to 0 at once, their weight shared by the others in proportion to theirs.

    The interval adds nothing to the sums: the others' counts come with the next one.
    """
    racing = arms.active(experiment, state)
    gone = [w for w in experiment.workloads if w not in racing]
    if record.get("stage") == CONFIRMING and record.get("leader") not in racing:
        record.update(stage=EXPLORING, leader=None)  # the pick failed: back to exploring the rest
        kept = {**kept, "history": []}
    target = {w: float(weight) for w, weight in state.weights.items()}
    if record.get("stage") == CONFIRMING:
        aside: Collection[str] = [w for w in experiment.workloads if w != record.get("leader")]
    else:
        aside = gone
    weights = _move(experiment, state, target, aside)
    record["allocation"] = _allocation(record.get("allocation"), now, weights, None)
    names = ", ".join(r["workload"] for r in dropped)
    message = f"{where}: dropped {names} ({dropped[0]['reason']}); carrying on with {drift.show(weights)}"
    events = tuple(
        Event("Warning", "CandidateDropped", f"dropped {r['workload']} at {where}: {r['message']}")
        for r in dropped
    )
    going = dataclasses.replace(
        state,
        weights=weights,
        analysis={**state.analysis, KEY: {**kept, "previous": dict(state.weights)}},
        results={**state.results, KEY: {k: v for k, v in record.items() if v is not None}},
        reason="CandidateDropped",
        message=message,
        action=Action.CONTINUE,
    )
    return model.Decision(going, weights, events, every, canary.until_due(experiment, going, now))


# --------------------------------------------------------------------------- endings


def _ship(
    experiment: spec.ExperimentSpec,
    state: State,
    obs: model.Observation,
    record: dict[str, Any],
    stats: Mapping[str, bandit.ArmStats],
    chances: Mapping[str, float],
    chosen: str,
    why: str,
    now: datetime.datetime,
    every: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """Promote ``chosen`` once the confirm-promotion gate approves (Succeeded), or wait for the promote
    annotation without ``autoPromote``."""
    record.update(stage=DECIDED, leader=chosen)
    record["arms"] = _arm_entries(experiment, stats, state.weights, chances)
    state = _with_record(state, record)
    state = dataclasses.replace(
        state, outcome=lift.Outcome.SHIP.value, results={**state.results, "winner": chosen}
    )
    if not _settings(experiment).auto_promote:
        message = (
            f"Ship: {why}; waiting for the modelrollout.io/promote annotation "
            f"(the weights stay at {drift.show(state.weights)})"
        )
        waiting = dataclasses.replace(
            state, phase=Phase.PAUSED, reason=canary.AWAITING_PROMOTION, message=message, action=Action.HOLD
        )
        events = (
            Event("Normal", abtest.SHIPPED, message),
            Event("Normal", canary.AWAITING_PROMOTION, message),
        )
        return model.Decision(waiting, dict(state.weights), events, every, experiment.interval)
    return canary.ship(experiment, state, obs, now, why, every)


def _at_deadline(
    experiment: spec.ExperimentSpec,
    state: State,
    record: dict[str, Any],
    stats: Mapping[str, bandit.ArmStats],
    chances: Mapping[str, float],
    comparison: Mapping[str, lift.Estimate],
    racing: Sequence[str],
    now: datetime.datetime,
    every: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """``maxDuration`` without a significantly better candidate: the baseline stays."""
    base = experiment.baseline.workload
    limit = durations.format_duration(_settings(experiment).max_duration)
    worse = all((est := comparison[w]).interval is not None and est.interval[1] < 0 for w in racing)
    if worse:
        why = f"every candidate is significantly worse than {base} at maxDuration {limit}"
        return _keep(experiment, state, record, stats, chances, abtest.DISCARDED, why, now, every)
    why = f"no candidate is significantly better than {base} by maxDuration {limit}"
    details = "; ".join(comparison[w].reason for w in racing)
    return _keep(experiment, state, record, stats, chances, abtest.ITERATE, f"{why}: {details}", now, every)


def _keep(
    experiment: spec.ExperimentSpec,
    state: State,
    record: dict[str, Any],
    stats: Mapping[str, bandit.ArmStats],
    chances: Mapping[str, float],
    reason: str,
    why: str,
    now: datetime.datetime,
    every: tuple[model.MetricAssessment, ...],
) -> model.Decision:
    """The baseline stays (RolledBack, baseline 100 %): Discard, or Iterate when nothing is conclusive."""
    outcome = lift.Outcome.ITERATE if reason == abtest.ITERATE else lift.Outcome.DISCARD
    record.update(stage=DECIDED, leader=experiment.baseline.workload)
    record["arms"] = _arm_entries(experiment, stats, state.weights, chances)
    state = dataclasses.replace(_with_record(state, record), outcome=outcome.value)
    message = f"{outcome.value}: {why}"
    finished = canary.finish(
        experiment, state, Phase.ROLLED_BACK, now, reason, message, step=state.step, assessments=every
    )
    told = Event("Warning", reason, message)
    return dataclasses.replace(finished, events=(told, *finished.events))


def to_promote(experiment: spec.ExperimentSpec, state: State) -> str:
    """The candidate a promotion sends all traffic to: the one the comparison chose, else (a promotion
    by hand) the candidate still in the race most likely the best, the earliest on a tie."""
    chosen = state.results.get("winner")
    if isinstance(chosen, str) and chosen in experiment.workloads:
        return chosen
    racing = arms.active(experiment, state) or experiment.workloads
    record = state.results.get(KEY)
    chances = record.get("probabilityBest") if isinstance(record, Mapping) else None
    known = chances if isinstance(chances, Mapping) else {}
    return max(racing, key=lambda w: _number(known.get(w)))


# --------------------------------------------------------------------------- the interval's data


def _reward(name: str, sample: model.MetricSample | None, base: str, workload: str) -> model.MetricAssessment:
    """The reward's counts of one candidate and the baseline this interval: there, or missing data."""
    counts = (sample.counts if sample is not None else None) or {}
    results = sample.results if sample is not None else {}
    extra = {"role": "Reward", "variant": workload}
    bad = [w for w in (base, workload) if w in counts and not _plausible(counts[w])]
    missing = [w for w in (base, workload) if w not in counts]
    if bad:
        why = f"{name}: implausible counts for {' and '.join(bad)} (negative, huge, or successes > trials)"
        return model.MetricAssessment(name, Verdict.ERROR, why, extra=extra)
    if missing:
        causes = "; ".join(
            f"{results[w].outcome.value}: {results[w].detail}" for w in missing if w in results
        )
        error = any(w in results and not results[w].outcome.is_no_data for w in missing)
        why = f"{name}: no counts for {' and '.join(missing)} in this interval" + (
            f" ({causes})" if causes else ""
        )
        return model.MetricAssessment(name, Verdict.ERROR if error else Verdict.NO_DATA, why, extra=extra)
    mine, theirs = counts[workload], counts[base]
    rate, base_rate = _rate(mine), _rate(theirs)
    why = (
        f"{name}: {mine.events:.4g}/{mine.total:.4g} ({_pct(rate)}) vs {base} "
        f"{theirs.events:.4g}/{theirs.total:.4g} ({_pct(base_rate)}) this interval"
    )
    return model.MetricAssessment(name, Verdict.PASS, why, baseline=base_rate, candidate=rate, extra=extra)


def _plausible(counts: model.Counts) -> bool:
    """Counts an exporter can produce: finite, not negative, no more successes than trials."""
    events, total = counts.events, counts.total
    return model.plausible_count(events) and model.plausible_count(total) and events <= total


def _rate(counts: model.Counts) -> float | None:
    return counts.events / counts.total if counts.total > 0 else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


# --------------------------------------------------------------------------- memory and status


def _stats(experiment: spec.ExperimentSpec, kept: Mapping[str, Any]) -> dict[str, bandit.ArmStats]:
    """Every arm's running sums (the baseline first, as ``bandit.add_interval`` expects)."""
    loaded = bandit.load_stats(kept.get("stats"))
    return {
        w: loaded.get(w, bandit.ArmStats()) for w in (experiment.baseline.workload, *experiment.workloads)
    }


def _history(kept: Mapping[str, Any]) -> list[dict[str, float]]:
    found = kept.get("history")
    if not isinstance(found, list):
        return []
    return [{str(w): _number(p) for w, p in entry.items()} for entry in found if isinstance(entry, Mapping)]


def _stage(record: Mapping[str, Any], racing: Sequence[str]) -> tuple[str, str | None]:
    """Confirming and the leader confirmed, or exploring (also when that leader is no longer racing)."""
    leader = record.get("leader")
    if record.get("stage") == CONFIRMING and isinstance(leader, str) and leader in racing:
        return CONFIRMING, leader
    return EXPLORING, None


def _generator(
    experiment: spec.ExperimentSpec, record: Mapping[str, Any], interval: int
) -> np.random.Generator:
    """The interval's random numbers: the same for the same experiment run and interval, in any process."""
    seed = "|".join(
        (str(record.get("startedAt", "")), experiment.baseline.workload, *experiment.workloads, str(interval))
    )
    return np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def _with_record(state: State, record: Mapping[str, Any]) -> State:
    shown = {k: v for k, v in record.items() if v is not None}
    return dataclasses.replace(state, results={**state.results, KEY: shown})


def _arm_entries(
    experiment: spec.ExperimentSpec,
    stats: Mapping[str, bandit.ArmStats],
    weights: Mapping[str, int],
    chances: Mapping[str, float],
) -> list[dict[str, Any]]:
    entries = []
    for workload in (experiment.baseline.workload, *experiment.workloads):
        s = stats.get(workload, bandit.ArmStats())
        entry = {
            "workload": workload,
            "weight": int(weights.get(workload, 0)),
            "successes": round(s.successes, 3),
            "trials": round(s.trials, 3),
            "pooledRate": _round(s.pooled_rate),
            "stratifiedRate": _round(s.stratified.rate),
            "probabilityBest": round(chances.get(workload, 0.0), 4),
        }
        entries.append({k: v for k, v in entry.items() if v is not None})
    return entries


def _comparison_entry(workload: str, estimate: lift.Estimate) -> dict[str, Any]:
    interval = estimate.interval
    entry = {
        "workload": workload,
        "baseline": _round(estimate.baseline),
        "candidate": _round(estimate.candidate),
        "lift": _round(estimate.lift),
        "interval": [round(interval[0], 6), round(interval[1], 6)] if interval is not None else None,
        "better": interval is not None and interval[0] > 0,
        "reason": estimate.reason,
    }
    return {k: v for k, v in entry.items() if v is not None}


def _allocation(
    previous: Any, now: datetime.datetime, weights: Mapping[str, int], chances: Mapping[str, float] | None
) -> list[dict[str, Any]]:
    points = [dict(p) for p in previous if isinstance(p, Mapping)] if isinstance(previous, list) else []
    point: dict[str, Any] = {"time": model.to_iso(now), "weights": dict(weights)}
    if chances is not None:
        point["probabilityBest"] = {w: round(p, 4) for w, p in chances.items()}
    points.append(point)
    if len(points) > ALLOCATION_LIMIT:
        points = [*points[:-1:2], points[-1]]  # every other point, and always the latest
    return points


def _weights(value: Any) -> dict[str, int] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(w): v for w, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _number(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else 0.0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
