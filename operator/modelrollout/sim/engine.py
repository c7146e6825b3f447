"""Seeded replications of a rollout in virtual time, through the real decision core.

Each run drives :func:`modelrollout.core.canary.decide` exactly as the
reconciler does, one tick per interval boundary (as the operator's daemon
ticks): traffic of the last interval is drawn with the weights the routes
held, and when ``evaluation_due`` says so the interval is observed (as
Prometheus would report it) and the core decides; its weights go to the
routes and its state is kept for the next tick.  Nothing sleeps, nothing
talks to a cluster or Prometheus, and there are no threads: a run costs the
core's time plus a few vectorised draws per interval, so the benchmark can
afford tens of thousands of runs per cell.

Run ``i`` uses ``numpy.random.default_rng(seed + i)``, so any single run can
be replayed on its own (:func:`simulate_run`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelrollout import spec
from modelrollout.core import canary, guardrails, model
from modelrollout.core.model import Phase
from modelrollout.localstack import traffic
from modelrollout.sim import observe, policies
from modelrollout.sim.scenario import BASELINE, CANDIDATE, Scenario, Timeline

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
UNFINISHED = "Unfinished"
VARIANTS = (BASELINE, CANDIDATE)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run needs, prepared once per (scenario, policy)."""

    experiment: spec.ExperimentSpec
    analyses: tuple[guardrails.Analysis, ...]
    timeline: Timeline
    rate: float  # requests/s
    interval: float  # seconds
    horizon: float  # seconds
    nominal: float  # seconds to promotion when nothing holds the rollout
    dispersion: float | None

    @classmethod
    def of(cls, scenario: Scenario, policy: policies.Policy) -> Plan:
        experiment = scenario.experiment()
        if policy.failure_limit is not None:
            analysis = experiment.analysis.model_copy(update={"failure_limit": policy.failure_limit})
            experiment = experiment.model_copy(update={"analysis": analysis})
        return cls(
            experiment=experiment,
            analyses=policy.analyses,
            timeline=scenario.timeline(),
            rate=scenario.traffic.rate,
            interval=scenario.schedule.interval.total_seconds(),
            horizon=scenario.horizon_seconds(),
            nominal=scenario.nominal_seconds(),
            dispersion=scenario.errors.dispersion if scenario.errors is not None else None,
        )


@dataclasses.dataclass(frozen=True)
class RunResult:
    outcome: str  # a final Phase value (Succeeded, RolledBack, Failed) or Unfinished
    seconds: float  # virtual time of the final decision (the horizon when unfinished)
    candidate_errors: int  # failed requests the candidate served until then
    reached_full: bool  # the candidate got 100% of the traffic
    first_try: bool  # promoted as early as the plan allows: no check ever held it


@dataclasses.dataclass(frozen=True)
class Summary:
    runs: int
    rolled_back_rate: float
    promoted_rate: float
    median_seconds_to_rollback: float | None
    p90_seconds_to_rollback: float | None
    median_candidate_errors_at_rollback: float | None
    mean_candidate_errors: float  # over all runs, missed regressions included
    reached_full_rate: float
    unfinished_rate: float
    first_try_promotion_rate: float
    outcomes: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document (camelCase keys, as in docs/simulate.md)."""
        return {
            "runs": self.runs,
            "rolledBackRate": self.rolled_back_rate,
            "promotedRate": self.promoted_rate,
            "medianSecondsToRollback": self.median_seconds_to_rollback,
            "p90SecondsToRollback": self.p90_seconds_to_rollback,
            "medianCandidateErrorsAtRollback": self.median_candidate_errors_at_rollback,
            "meanCandidateErrors": self.mean_candidate_errors,
            "reachedFullRate": self.reached_full_rate,
            "unfinishedRate": self.unfinished_rate,
            "firstTryPromotionRate": self.first_try_promotion_rate,
            "outcomes": dict(self.outcomes),
        }

    def describe(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}s"

        errors = self.median_candidate_errors_at_rollback
        lines = [
            f"runs                          {self.runs}",
            f"rolled back                   {self.rolled_back_rate:.2%}",
            f"promoted                      {self.promoted_rate:.2%}"
            f" (first try {self.first_try_promotion_rate:.2%})",
            f"candidate reached 100%        {self.reached_full_rate:.2%}",
            f"unfinished at the horizon     {self.unfinished_rate:.2%}",
            f"time to rollback              median {seconds(self.median_seconds_to_rollback)},"
            f" p90 {seconds(self.p90_seconds_to_rollback)}",
            f"candidate errors at rollback  median {'-' if errors is None else f'{errors:.0f}'}",
            f"candidate errors per run      mean {self.mean_candidate_errors:.1f}",
            "outcomes                      "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
        ]
        return "\n".join(lines)


def run(
    scenario: Scenario,
    *,
    runs: int,
    seed: int = 0,
    policy: str | policies.Policy = policies.DEFAULT,
    workers: int = 1,
) -> Summary:
    """``runs`` seeded replications of ``scenario`` under ``policy``, summarised."""
    chosen = policies.get(policy) if isinstance(policy, str) else policy
    indices = range(runs)
    if workers <= 1 or runs < 2 * workers:
        return summarize(replicate(scenario, chosen, seed, indices))
    chunks = [indices[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = pool.map(replicate, [scenario] * workers, [chosen] * workers, [seed] * workers, chunks)
        return summarize([result for part in parts for result in part])


def replicate(
    scenario: Scenario, policy: policies.Policy, seed: int, indices: Sequence[int]
) -> list[RunResult]:
    plan = Plan.of(scenario, policy)
    return [simulate_run(plan, seed + index) for index in indices]


def simulate_run(plan: Plan, seed: int) -> RunResult:
    """One experiment from its first tick to its final decision (or the horizon)."""
    rng = np.random.default_rng(seed)
    experiment, interval = plan.experiment, plan.interval
    state = model.State()
    routes: dict[str, int] = {BASELINE: 100, CANDIDATE: 0}
    candidate_errors = 0
    reached_full = False
    tick = 0
    while True:
        seconds = tick * interval
        now = T0 + datetime.timedelta(seconds=seconds)
        metrics: tuple[model.MetricSample, ...] | None = None
        requests = None
        if tick:
            batches = _interval_traffic(rng, plan, seconds - interval, seconds, routes)
            candidate_errors += batches[CANDIDATE].errors
            if canary.evaluation_due(experiment, state, now):
                metrics, requests = observe.observe(experiment, batches)
        obs = model.Observation(routes, metrics=metrics, requests=requests)
        decision = canary.decide(experiment, state, obs, now, plan.analyses)
        state = decision.state
        if decision.weights is not None:
            routes = dict(decision.weights)
            reached_full = reached_full or routes.get(CANDIDATE, 0) >= 100
        if state.phase.is_final or seconds >= plan.horizon:
            break
        tick += 1
    promoted = state.phase is Phase.SUCCEEDED
    return RunResult(
        outcome=state.phase.value if state.phase.is_final else UNFINISHED,
        seconds=seconds,
        candidate_errors=candidate_errors,
        reached_full=reached_full,
        first_try=promoted and seconds <= plan.nominal + 1e-9,
    )


def _interval_traffic(
    rng: np.random.Generator, plan: Plan, start: float, end: float, routes: dict[str, int]
) -> dict[str, traffic.Batch]:
    """What each variant served in [start, end): Poisson arrivals, profiles as of each moment."""
    pieces = plan.timeline.segments(start, end)
    batches: dict[str, traffic.Batch] = {}
    for workload in VARIANTS:
        share = plan.rate * routes.get(workload, 0) / 100
        parts = []
        for length, profiles in pieces:
            expected = share * length
            n = int(rng.poisson(expected)) if expected > 0 else 0
            parts.append(traffic.simulate_batch(rng, n, _bursty(rng, profiles[workload], plan.dispersion)))
        batches[workload] = parts[0] if len(parts) == 1 else _total(parts)
    return batches


def _bursty(
    rng: np.random.Generator, profile: traffic.VariantProfile, dispersion: float | None
) -> traffic.VariantProfile:
    """This interval's error probability: Beta(mean, concentration) when errors are overdispersed."""
    rate = profile.error_rate
    if dispersion is None or rate in (0.0, 1.0):
        return profile
    drawn = float(rng.beta(rate * dispersion, (1 - rate) * dispersion))
    return dataclasses.replace(profile, error_rate=drawn)


def _total(parts: list[traffic.Batch]) -> traffic.Batch:
    return traffic.Batch(
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        bucket_counts=np.sum([p.bucket_counts for p in parts], axis=0),
        latency_sum_ms=sum(p.latency_sum_ms for p in parts),
        error_bucket_counts=np.sum([p.error_bucket_counts for p in parts], axis=0),
        error_latency_sum_ms=sum(p.error_latency_sum_ms for p in parts),
    )


def summarize(results: Sequence[RunResult]) -> Summary:
    if not results:
        raise ValueError("no runs to summarise")
    runs = len(results)
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    rolled_back = [r for r in results if r.outcome == Phase.ROLLED_BACK.value]
    times = np.array([r.seconds for r in rolled_back], dtype=float)
    errors = np.array([r.candidate_errors for r in rolled_back], dtype=float)

    def share(count: int) -> float:
        return count / runs

    return Summary(
        runs=runs,
        rolled_back_rate=share(len(rolled_back)),
        promoted_rate=share(outcomes.get(Phase.SUCCEEDED.value, 0)),
        median_seconds_to_rollback=float(np.median(times)) if rolled_back else None,
        p90_seconds_to_rollback=float(np.percentile(times, 90)) if rolled_back else None,
        median_candidate_errors_at_rollback=float(np.median(errors)) if rolled_back else None,
        mean_candidate_errors=float(np.mean([r.candidate_errors for r in results])),
        reached_full_rate=share(sum(r.reached_full for r in results)),
        unfinished_rate=share(outcomes.get(UNFINISHED, 0)),
        first_try_promotion_rate=share(sum(r.first_try for r in results)),
        outcomes=outcomes,
    )
