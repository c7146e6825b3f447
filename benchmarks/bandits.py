"""The bandit benchmark: Thompson sampling against epsilon-greedy, UCB1 and a fixed equal split.

Simulated arms with constant conversion rates (or, in the A/A scenario, a base rate
drifting over time), batched updates as the operator makes them: every interval
``--requests`` requests are routed at random by the current weights (multinomial),
each converts with its arm's rate, the counts go into ``core.bandit.add_interval``
and the allocator sets the next weights under the same constraints as the operator
(``--min-weight`` 5, ``--max-step`` 20).  Every allocator starts from the equal split
and sees the same seeds (common random numbers).  Prints Markdown tables (and writes
them to ``--output``)::

    .venv/bin/python benchmarks/bandits.py [--runs 10] [--seed 20261201] [--output PATH]
    .venv/bin/python benchmarks/bandits.py --runs 500 --workers 2 --scenarios a,b
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import multiprocessing
import shlex
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from modelrollout.core import bandit, lift
from modelrollout.routers.istio_routes import apportion

ALPHA = 0.05
CONFIDENCE = 0.95  # bandit.confidence: P(best) needed by the stopping rule
INTERVALS_REQUIRED = 3  # consecutive intervals at that confidence
CHUNK = 25  # runs per task handed to a worker process


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    rates: tuple[float, ...]  # baseline first
    # Every rate times ``end + (start - end) exp(-t / decay)`` at interval t: (start, end, decay).
    campaign: tuple[float, float, float] | None = None

    def rates_at(self, t: int) -> np.ndarray:
        if self.campaign is None:
            return np.array(self.rates)
        start, end, decay = self.campaign
        return np.array(self.rates) * (end + (start - end) * math.exp(-t / decay))

    @property
    def best(self) -> int | None:
        """The index of the best arm, None when several share the best rate."""
        top = max(self.rates)
        return self.rates.index(top) if self.rates.count(top) == 1 else None


SCENARIOS = (
    Scenario("a", "a: 2 arms, 4.5 % vs 5.2 %", (0.045, 0.052)),
    Scenario("b", "b: 3 arms, 4.5 / 5.2 / 4.8 %", (0.045, 0.052, 0.048)),
    Scenario("c", "c: 5 arms, 4.5 / 4.3 / 4.8 / 5.2 / 4.9 %", (0.045, 0.043, 0.048, 0.052, 0.049)),
    Scenario(
        "d",
        "d: 2 arms, 5.2 % vs 4.5 %, rates x3 decaying to x0.5 (campaign)",
        (0.052, 0.045),
        (3.0, 0.5, 50.0),
    ),
)


def make_allocator(name: str, draws: int) -> bandit.Allocator:
    if name == "thompson":
        return bandit.ThompsonAllocator(draws)
    if name == "epsilon-greedy":
        return bandit.EpsilonGreedyAllocator(0.1)
    if name == "ucb1":
        return bandit.UCBAllocator()
    if name == "fixed":
        return bandit.FixedAllocator()
    raise ValueError(name)


ALLOCATORS = ("thompson", "epsilon-greedy", "ucb1", "fixed")


@dataclasses.dataclass(frozen=True)
class Config:
    intervals: int
    requests: int
    min_weight: int
    max_step: int
    draws: int


@dataclasses.dataclass(frozen=True)
class RunResult:
    reward: float  # conversions over the whole horizon
    regret: float  # expected conversions lost against sending everything to the best arm
    lead_from: int | None  # the interval from which the best arm holds the largest weight to the end
    stop_at: int | None  # the interval at which the stopping rule fired
    stop_arm: int | None  # the arm it named
    winner_at_stop: int | None  # final_comparison's winner on the data at the stop
    winner_end: int  # ... at the end of the horizon (maxDuration)
    winner_end_pooled: int  # the same decision made on pooled counts
    # The first candidate's rate minus the baseline's, estimated from the paired traffic-weighted
    # stratified sums (reported), and from pooled counts.
    difference_stratified: float | None
    difference_pooled: float | None
    # The first candidate's log rate ratio to the baseline, Mantel-Haenszel (what decides), and
    # whether its always-valid interval (as in final_comparison, Bonferroni over the candidates)
    # held the true ratio at the end and at every interval where it was defined.
    log_ratio_mh: float | None
    covered_end: bool
    covered_always: bool
    # The standard error of that log ratio at the end, Mantel-Haenszel (Greenland-Robins) and
    # from the traffic-weighted sums (delta method, as decisions were made before), and the
    # baseline's conversions over the run.
    se_mh: float | None
    se_traffic: float | None
    baseline_conversions: float


def pooled_comparison(stats: dict[str, bandit.ArmStats], arms: list[str]) -> list[lift.Estimate]:
    """``bandit.final_comparison`` made the biased way, on pooled counts (``core.lift.estimate``)."""
    level = lift.bonferroni(ALPHA, len(arms) - 1)
    moments = [lift.Moments().add(stats[arm].trials, stats[arm].successes) for arm in arms]
    return [lift.estimate(moments[0], m, "ratio", level) for m in moments[1:]]


def pooled_winner(estimates: list[lift.Estimate]) -> int:
    """What ``bandit.winner`` would say on those estimates."""
    better = [
        (est.lift, i)
        for i, est in enumerate(estimates, start=1)
        if est.ready and est.lift is not None and est.interval is not None and est.interval[0] > 0
    ]
    return max(better)[1] if better else 0


def mh_interval(stats: bandit.ArmStats, level: float) -> tuple[float, float] | None:
    """The always-valid interval on the log ratio from one candidate's Mantel-Haenszel sums, as
    ``bandit.final_comparison`` makes it (without building the whole estimate every interval)."""
    mh = stats.mantel_haenszel
    variance = mh.log_variance
    if mh.ratio is None or mh.candidate <= 0 or variance is None or not 1e-300 < variance < math.inf:
        return None
    log_ratio = math.log(mh.candidate) - math.log(mh.baseline)
    width = lift.half_width(variance, level, lift.DEFAULT_TAU)
    return log_ratio - width, log_ratio + width


def traffic_weighted_se(stats: bandit.ArmStats) -> float | None:
    """The standard error of the log ratio of the paired traffic-weighted rates (delta method)."""
    mine, theirs = stats.paired, stats.paired_baseline
    if mine.weighted_rate <= 0 or theirs.weighted_rate <= 0:
        return None
    variance = (
        mine.weighted_variance / mine.weighted_rate / mine.weighted_rate
        + theirs.weighted_variance / theirs.weighted_rate / theirs.weighted_rate
    )
    return math.sqrt(variance)


def simulate(scenario: Scenario, allocator_name: str, config: Config, seed: int, run: int) -> RunResult:
    """One run of one allocator; the world's randomness depends only on (seed, scenario, run)."""
    world_seed, allocator_seed = np.random.SeedSequence([seed, SCENARIOS.index(scenario), run]).spawn(2)
    world, rng = np.random.default_rng(world_seed), np.random.default_rng(allocator_seed)
    allocator = make_allocator(allocator_name, config.draws)
    arms = ["baseline", *(f"candidate-{i}" for i in range(1, len(scenario.rates)))]
    index = {arm: i for i, arm in enumerate(arms)}
    weights: dict[str, int] = dict(zip(arms, apportion(100, [1] * len(arms)), strict=True))
    stats: dict[str, bandit.ArmStats] = {arm: bandit.ArmStats() for arm in arms}
    history: deque[dict[str, float]] = deque(maxlen=INTERVALS_REQUIRED)
    best = scenario.best
    reward = regret = 0.0
    lead_from: int | None = None
    stop_at = stop_arm = winner_at_stop = None
    true_log_ratio = math.log(scenario.rates[1] / scenario.rates[0])  # the campaign scales every rate alike
    level = lift.bonferroni(ALPHA, len(arms) - 1)
    covered_always, interval = True, None
    for t in range(config.intervals):
        shares = np.array([weights[arm] for arm in arms]) / 100
        leading = best is not None and all(shares[best] > x for i, x in enumerate(shares) if i != best)
        if not leading:
            lead_from = None  # "for good" starts later, if at all
        elif lead_from is None:
            lead_from = t + 1
        rates = scenario.rates_at(t)
        trials = world.multinomial(config.requests, shares)
        successes = world.binomial(trials, rates)
        reward += float(successes.sum())
        regret += float((trials * (rates.max() - rates)).sum())
        counts = {arm: (float(s), float(n)) for arm, s, n in zip(arms, successes, trials, strict=True)}
        stats = bandit.add_interval(stats, counts, baseline=arms[0])
        interval = mh_interval(stats[arms[1]], level)
        if interval is not None and not interval[0] <= true_log_ratio <= interval[1]:
            covered_always = False
        if stop_at is None:
            history.append(bandit.probability_best(stats, rng, config.draws))
            stopped = bandit.should_stop(list(history), CONFIDENCE, INTERVALS_REQUIRED)
            if stopped is not None:
                stop_at, stop_arm = t + 1, index[stopped]
                winner_at_stop = index[bandit.winner(stats, arms[0], alpha=ALPHA)]
        weights = allocator.allocate(
            stats, weights, rng, min_weight=config.min_weight, max_step_change=config.max_step
        )
    winner_end = index[bandit.winner(stats, arms[0], alpha=ALPHA)]
    pooled = pooled_comparison(stats, arms)
    pair = stats[arms[1]].paired.rate, stats[arms[1]].paired_baseline.rate
    base_rate, rate = stats[arms[0]].pooled_rate, stats[arms[1]].pooled_rate
    ratio_mh = stats[arms[1]].mantel_haenszel.ratio
    variance_mh = stats[arms[1]].mantel_haenszel.log_variance
    return RunResult(
        reward,
        regret,
        lead_from,
        stop_at,
        stop_arm,
        winner_at_stop,
        winner_end,
        pooled_winner(pooled),
        None if pair[0] is None or pair[1] is None else pair[0] - pair[1],
        None if base_rate is None or rate is None else rate - base_rate,
        None if not ratio_mh else math.log(ratio_mh),
        interval is not None and interval[0] <= true_log_ratio <= interval[1],
        covered_always,
        None if variance_mh is None else math.sqrt(variance_mh),
        traffic_weighted_se(stats[arms[1]]),
        stats[arms[0]].successes,
    )


def simulate_chunk(
    scenario: Scenario, allocator_name: str, config: Config, seed: int, runs: range
) -> list[RunResult]:
    return [simulate(scenario, allocator_name, config, seed, run) for run in runs]


def simulate_all(
    scenarios: list[Scenario], config: Config, *, runs: int, seed: int, workers: int
) -> dict[tuple[str, str], list[RunResult]]:
    tasks = [
        (s, name, range(start, min(start + CHUNK, runs)))
        for s in scenarios
        for name in ALLOCATORS
        for start in range(0, runs, CHUNK)
    ]
    results: dict[tuple[str, str], list[RunResult]] = {(s.name, a): [] for s in scenarios for a in ALLOCATORS}
    if workers <= 1:
        for s, name, indices in tasks:
            results[s.name, name].extend(simulate_chunk(s, name, config, seed, indices))
        return results
    parts: dict[tuple[str, str], list[tuple[int, list[RunResult]]]] = {key: [] for key in results}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {
            pool.submit(simulate_chunk, s, name, config, seed, indices): (s.name, name, indices.start)
            for s, name, indices in tasks
        }
        for future in concurrent.futures.as_completed(futures):
            scenario_name, name, start = futures[future]
            parts[scenario_name, name].append((start, future.result()))
    for key, chunks in parts.items():  # in run order, whatever the scheduling
        for _, chunk in sorted(chunks, key=lambda pair: pair[0]):
            results[key].extend(chunk)
    return results


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _median(values: list[int | None], horizon: int) -> str:
    """Median over all runs, a run without a value counting as later than the horizon."""
    ranked = sorted(horizon + 1 if v is None else v for v in values)
    middle = statistics.median_low(ranked) if ranked else horizon + 1
    return f"> {horizon}" if middle > horizon else str(middle)


def render(
    scenarios: list[Scenario],
    results: dict[tuple[str, str], list[RunResult]],
    config: Config,
    *,
    runs: int,
    seed: int,
    command: str,
    wall: float,
) -> str:
    lines = [
        f"Runs per row: {runs}; seed {seed}; {config.intervals} intervals of {config.requests} requests; "
        f"minWeight {config.min_weight}, maxStepChange {config.max_step}; P(best) from {config.draws} "
        f"posterior draws; stopping rule P(best) >= {CONFIDENCE} for {INTERVALS_REQUIRED} consecutive "
        f"intervals; final comparison alpha {ALPHA} (Bonferroni over the candidates), default tau; "
        f"{wall:.0f} s wall time.",
        f"Command: `{command}`",
        "",
        "### Allocation",
        "",
        "| scenario | allocator | conversions (mean) | regret (mean) | regret / best possible "
        "| best arm leads for good: median interval | ... by the end |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        tops = [s.rates_at(t).max() for t in range(config.intervals)]
        best_total = config.requests * float(np.sum(tops))  # always-best's expected conversions
        for name in ALLOCATORS:
            part = results[s.name, name]
            reward = statistics.fmean(r.reward for r in part)
            regret = statistics.fmean(r.regret for r in part)
            leads = [r.lead_from for r in part]
            lead = "-" if s.best is None else _median(leads, config.intervals)
            lead_share = "-" if s.best is None else _pct(sum(v is not None for v in leads), len(part))
            lines.append(
                f"| {s.story} | {name} | {reward:.0f} | {regret:.1f} | {100 * regret / best_total:.2f} % "
                f"| {lead} | {lead_share} |"
            )
    lines += [
        "",
        "### Decisions",
        "",
        "| scenario | allocator | stopping rule fired | median stop interval | stopped on a wrong arm "
        "| winner at the stop: best / wrong | winner at the end: best / wrong "
        "| pooled counts at the end: best / wrong |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        for name in ALLOCATORS:
            part = results[s.name, name]
            n = len(part)
            fired = [r for r in part if r.stop_at is not None]

            def rates(arms: list[int | None], scenario: Scenario = s, n: int = n) -> str:
                """Runs whose winner is the best arm / a candidate that is not the best (the rest keep
                the baseline, or never decided)."""
                best = sum(arm == scenario.best for arm in arms)
                wrong = sum(arm is not None and arm not in (0, scenario.best) for arm in arms)
                return f"{_pct(best, n)} / {_pct(wrong, n)}"

            stopped_wrong = _pct(sum(r.stop_arm != s.best for r in fired), n)
            median_stop = _median([r.stop_at for r in part], config.intervals)
            lines.append(
                f"| {s.story} | {name} | {_pct(len(fired), n)} | {median_stop} | {stopped_wrong} "
                f"| {rates([r.winner_at_stop for r in fired])} | {rates([r.winner_end for r in part])} "
                f"| {rates([r.winner_end_pooled for r in part])} |"
            )
    lines += [
        "",
        "### The first candidate's rate minus the baseline's, estimated at the end (percentage points)",
        "",
        "| scenario | allocator | truth (time average) | traffic-weighted stratified: mean (s.e.) "
        "| pooled counts: mean (s.e.) |",
        "|---|---|---:|---:|---:|",
    ]
    for s in scenarios:
        truth = statistics.fmean(float(np.diff(s.rates_at(t)[[0, 1]])[0]) for t in range(config.intervals))
        for name in ALLOCATORS:
            part = results[s.name, name]
            cells = []
            for values in ([r.difference_stratified for r in part], [r.difference_pooled for r in part]):
                known = [v for v in values if v is not None]
                se = statistics.stdev(known) / math.sqrt(len(known)) if len(known) > 1 else math.nan
                cells.append(f"{100 * statistics.fmean(known):+.3f} ({100 * se:.3f})" if known else "-")
            lines.append(f"| {s.story} | {name} | {100 * truth:+.3f} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "### The first candidate's log rate ratio to the baseline (Mantel-Haenszel, what decides)",
        "",
        "| scenario | allocator | truth: 100 log ratio | estimate at the end: mean (s.e.) "
        "| one run's standard error (median): MH / traffic-weighted | baseline conversions (median) "
        "| always-valid interval holds the truth: at the end | ... at every interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        truth = 100 * math.log(s.rates[1] / s.rates[0])
        for name in ALLOCATORS:
            part = results[s.name, name]
            known = [100 * r.log_ratio_mh for r in part if r.log_ratio_mh is not None]
            se = statistics.stdev(known) / math.sqrt(len(known)) if len(known) > 1 else math.nan
            mean = f"{statistics.fmean(known):+.2f} ({se:.2f})" if known else "-"
            end = _pct(sum(r.covered_end for r in part), len(part))
            always = _pct(sum(r.covered_always for r in part), len(part))
            errors = []
            for values in ([r.se_mh for r in part], [r.se_traffic for r in part]):
                finite = [100 * v for v in values if v is not None]
                errors.append(f"{statistics.median(finite):.2f}" if finite else "-")
            conversions = statistics.median(r.baseline_conversions for r in part)
            lines.append(
                f"| {s.story} | {name} | {truth:+.2f} | {mean} | {errors[0]} / {errors[1]} "
                f"| {conversions:.0f} | {end} | {always} |"
            )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per (scenario, allocator) (default 10)")
    parser.add_argument("--seed", type=int, default=20261201, help="seed of the simulated worlds")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS), help="comma-separated")
    parser.add_argument("--intervals", type=int, default=300, help="intervals per run (default 300)")
    parser.add_argument("--requests", type=int, default=200, help="requests per interval (default 200)")
    parser.add_argument("--min-weight", type=int, default=5, help="bandit.minWeight (default 5)")
    parser.add_argument("--max-step", type=int, default=20, help="bandit.maxStepChange (default 20)")
    parser.add_argument("--draws", type=int, default=2000, help="posterior draws for P(best) (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1: run in this one)")
    parser.add_argument("--output", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)

    chosen = args.scenarios.split(",")
    scenarios = [s for s in SCENARIOS if s.name in chosen]
    if set(chosen) - {s.name for s in SCENARIOS} or args.runs < 1 or args.intervals < 1 or args.requests < 1:
        parser.error(f"scenarios from {[s.name for s in SCENARIOS]}; runs, intervals, requests >= 1")
    config = Config(args.intervals, args.requests, args.min_weight, args.max_step, args.draws)
    started = time.perf_counter()
    results = simulate_all(scenarios, config, runs=args.runs, seed=args.seed, workers=args.workers)
    wall = time.perf_counter() - started
    command = shlex.join(["python", "benchmarks/bandits.py", *(argv if argv is not None else sys.argv[1:])])
    report = render(scenarios, results, config, runs=args.runs, seed=args.seed, command=command, wall=wall)
    print(report)
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
