"""Multi-armed bandit allocation for ``strategy: Bandit``: pure, no I/O, no clock.

Every interval the operator counts each variant's successes and trials of the reward
(a ratio metric such as conversions / requests), adds them to constant-size running
sums (``ArmStats``, kept in the status), and re-allocates the traffic among the
baseline and the candidates.  Randomness comes only from the ``numpy`` Generator the
caller passes, so a seeded run is reproducible.

Thompson sampling
-----------------
Each arm's reward rate gets a Beta(1 + successes, 1 + failures) posterior (a uniform
prior updated by the pooled counts).  The probability that an arm is the best is the
posterior mass of "its rate is the largest", estimated by drawing one rate per arm
from every posterior many times and counting how often each arm's draw wins
(``probability_best``).  Thompson sampling gives each request to an arm with exactly
that probability; with batched updates, as the operator makes them, that is a traffic
share proportional to the probability of being best ("randomised probability
matching").  Arms that might still be best keep getting traffic (exploration) in
proportion to how plausible that is; a clearly worse arm fades to the floor.  The
other allocators (epsilon-greedy, UCB1, a fixed equal split) share the interface and
the constraints, for the benchmark (``benchmarks/bandits.py``) and as simple options.

The constraints
---------------
Whatever an allocator wants (its *target*), the weights it returns are integer percents
that (1) sum to exactly 100, (2) give every arm at least ``min_weight``, (3) move no
arm more than ``max_step_change`` points from the previous interval, and (4) give a
dropped arm (a guardrail failed) 0 at once, whatever the step limit.  ``project``
turns a target into such weights:

* the target becomes integer percents summing to 100 by the largest remainder
  method (``routers.istio_routes.apportion``, the routers' own rounding);
* each arm gets a box ``[lo, hi]`` with ``lo = max(min_weight, prev - step)`` and
  ``hi = min(100, prev + step)``; the target is clipped into its box;
* the sum is repaired within the boxes one point at a time, each point going to (or
  coming from) the arm furthest below (above) its target: for a separable convex
  cost and one sum constraint this greedy is optimal, so the result is the closest
  integer point (in squared distance) to the target that meets every constraint.

Feasibility.  The repair terminates with a sum of 100 exactly when
``lo <= hi`` for every arm and ``sum(lo) <= 100 <= sum(hi)``.  When the previous weights
were themselves feasible (same arms, each at least ``min_weight``, summing to 100) they
lie in their boxes, so these hold for any step.  They can fail only when the previous
weights are not feasible under the current constraints: an arm was dropped (its weight
must go somewhere), an arm is new (it must jump to the floor), the floor was raised, or
the previous weights are garbage.  Then the step limit is widened by the least integer
amount that restores feasibility, and only for this interval: the floor and dropping
win over smoothness.  At a step of 100 the boxes are ``[min_weight, 100]``, feasible if
and only if ``active arms * min_weight <= 100``; inputs that violate this (and arms that
are all dropped, or bad parameters) raise ``ValueError``.  After dropping arms of total
previous weight ``D`` from a feasible allocation of ``k`` remaining arms, no weight moves
more than ``max(step, ceil(D / k))`` points.

Why stratify the final comparison
---------------------------------
The allocation adapts to the data, and base rates drift (time of day, campaigns).  The
arm that is winning gets more of the traffic *later*; if the base rate falls meanwhile,
its pooled rate ``sum s / sum n`` mixes its few early high-rate requests with its many
late low-rate ones and comes out lower than a fixed-split estimate would, so pooled
counts can rank the arms the wrong way round even when one arm is better in every
single interval (Simpson's paradox under dynamic allocation).  The final comparison
therefore works per interval (each interval is a stratum) and only then sums.

Traffic-weighted rates (for reporting).  In interval ``i`` with ``N_i`` requests over
all arms and arm ``a``'s rate ``p_ai = s_ai / n_ai``, the arm's stratified rate is

    r_a = sum_i N_i p_ai / sum_i N_i,   Var(r_a) = sum_i N_i^2 Var(p_ai) / (sum_i N_i)^2,

the rate the arm would have had if it had served all the traffic over those intervals.
The weights ``N_i`` do not depend on the allocation, and given the allocation of an
interval (decided before its data) ``p_ai`` is unbiased, so the estimate's error is a
sum of martingale differences: unbiased, whatever the allocator did.  ``Var(p_ai)`` is
estimated by the unbiased ``p(1 - p) / (n - 1)``; an interval counts for an arm only when
it had at least ``MIN_TRIALS`` requests there (the selection depends on traffic, never on
outcomes, so it biases nothing).  Each candidate also keeps these sums over the intervals
where both it and the baseline had traffic (``ArmStats.paired``, ``paired_baseline``).

These rates are reported, not used to decide.  Their weights ignore how much an interval
says about the *difference*: when the bandit has pushed the baseline to its floor, an
interval with 10 baseline requests weighs as much as one with 100, and the baseline's
``Var(p_bi) ~ p / n_bi`` enters multiplied by ``N_i^2``, so the comparison loses variance
in proportion to how unevenly the allocation moves.

The Mantel-Haenszel comparison (the decision).  Per candidate ``c`` and the baseline
``b``, over the intervals where both had traffic, with ``n_i = n_ci + n_bi``, the
Mantel-Haenszel estimator of the common rate ratio (the risk ratio of Cochran-Mantel-
Haenszel stratified analysis) is

    RR_MH = sum_i s_ci n_bi / n_i  /  sum_i s_bi n_ci / n_i  =  sum_i w_i p_ci / sum_i w_i p_bi,

    w_i = n_ci n_bi / (n_ci + n_bi).

It is still a ratio of two stratified rates, now with the same weights ``w_i`` on both
sides, and ``w_i`` is proportional to the inverse variance of ``p_ci - p_bi`` when the
rates are equal: the information the interval carries about the difference.  An interval
where one arm got little traffic gets a small weight, a balanced one a large weight.  The
weights depend only on the allocation, so the argument above still holds: with
``R = sum_i s_ci n_bi / n_i`` and ``S = sum_i s_bi n_ci / n_i``, if the candidate's rate is
``theta`` times the baseline's in every interval (whatever the base rate does), then
``U = R - theta S`` is a sum of martingale differences under any adaptive allocation:
exactly centred on 0, so the drift cannot pass for a difference.  ``log RR_MH - log theta
~ U / R`` is consistent but, unlike the traffic-weighted difference, not exactly unbiased
under adaptive allocation: its weights depend on the allocation, hence on earlier data, and
dividing by ``R`` picks up the O(1/n) bias of adaptively collected data (an arm pushed to
the floor after an unlucky start stays underestimated).  In the tests and the benchmark
that bias is 0.1-0.3 of the estimate's standard deviation, and the always-valid interval
still covers the truth.
Intervals where one arm had no traffic add nothing (``w_i = 0``), so no interval needs to be
left out.  When the ratio itself changes over time, ``RR_MH`` estimates the
information-weighted average of the per-interval ratios (it leans towards the intervals
with a balanced allocation).

The variance of ``log RR_MH`` is the Greenland-Robins estimator for cumulative-incidence
(binomial) data: Greenland & Robins (1985), "Estimation of a common effect parameter from
sparse follow-up data", Biometrics 41:55-68, equation 13 (as in Rothman, Greenland & Lash,
*Modern Epidemiology*, 3rd ed., 2008, ch. 15, and Hmisc's ``mhgr``):

    Var(log RR_MH) = sum_i P_i / (R S),
    P_i = ((s_ci + s_bi) n_ci n_bi - s_ci s_bi n_i) / n_i^2
        = (s_ci n_ci (n_bi - s_bi) + s_bi n_bi (n_ci - s_ci)) / n_i^2   (>= 0).

It is consistent both for a few large strata and for many sparse ones (a baseline at its
floor gets ~10 requests and ~0.5 conversions an interval).  Under a common ratio
``theta`` the conditional expectation of ``P_i`` is exactly ``Var(U_i) / theta`` given the
allocation, so ``sum P_i`` estimates the martingale's predictable variance without bias.
When the arms are equal the allocation never settles and the normal approximation is at
its worst (bandit data with no margin are not asymptotically normal: Zhang, Janson &
Murphy, "Inference for batched bandits", NeurIPS 2020); the reported variance then runs
some 5-25 % below the spread, which the confidence sequence's width absorbs (tests).
The running sums are ``R``, ``S``, ``sum P_i``, ``sum w_i`` (``R / sum w_i`` and
``S / sum w_i`` are the rates reported next to the lift), the two arms' requests and the
number of intervals: constant size, in the status (``ArmStats.mantel_haenszel``).

The Beta posteriors, which steer the traffic and the stopping rule, use the pooled counts:
they are what Thompson sampling is defined on, and a bias there costs some efficiency,
never the validity of the final decision.

Stopping and the final decision
-------------------------------
``should_stop`` fires when one arm's probability of being best reaches ``confidence``
for ``intervals_required`` consecutive intervals.  Looking every interval, that rule on
its own is not error-controlled, so the winner is decided by ``final_comparison``: per
candidate, ``log RR_MH`` and its Greenland-Robins variance go into the always-valid
interval of ``core.lift`` (the normal-mixture confidence sequence, ``lift.half_width``) at
``alpha / candidates`` (Bonferroni).  ``winner`` promotes the candidate with the largest
lift among those whose whole interval lies above 0, and keeps the baseline otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from modelrollout.core import lift
from modelrollout.core.model import MAX_COUNT
from modelrollout.routers.istio_routes import apportion

Arm = str

MIN_TRIALS = 2.0  # requests an arm needs in an interval for it to count in the stratified sums
_EXP_CAP = 700.0  # as in core.lift: exp() of more overflows
_CHUNK = 50_000  # posterior draws per block in probability_best (bounds the memory)


def _number(value: object, limit: float = math.inf) -> float | None:
    """A finite, non-negative number below ``limit`` (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value < limit else None


def _count(value: object) -> int | None:
    """A non-negative integer (a float with an integer value is fine)."""
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


# --------------------------------------------------------------------------- running sums


@dataclasses.dataclass(frozen=True)
class Strata:
    """Stratified sums of one arm's rate over a set of intervals.

    ``weight`` is ``sum N_i`` (all arms' requests in the interval), ``weighted_rate``
    ``sum N_i p_i``, ``weighted_variance`` ``sum N_i^2 p_i (1 - p_i) / (n_i - 1)``, ``trials``
    ``sum n_i`` (this arm's requests) over the ``intervals`` counted.
    """

    weight: float = 0.0
    weighted_rate: float = 0.0
    weighted_variance: float = 0.0
    trials: float = 0.0
    intervals: int = 0

    def add(self, total: float, successes: float, trials: float) -> Strata:
        """These sums plus one interval: ``total`` requests over all arms, this arm's counts."""
        rate = successes / trials
        variance = rate * (1 - rate) / (trials - 1)
        return Strata(
            self.weight + total,
            self.weighted_rate + total * rate,
            self.weighted_variance + total * total * variance,
            self.trials + trials,
            self.intervals + 1,
        )

    @property
    def rate(self) -> float | None:
        """The stratified rate ``sum N_i p_i / sum N_i``, None before any interval."""
        return self.weighted_rate / self.weight if self.weight > 0 else None

    @property
    def variance(self) -> float | None:
        """The variance of ``rate``, None before any interval."""
        return self.weighted_variance / self.weight / self.weight if self.weight > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Strata | None:
        """The sums back from ``to_dict``, or None if anything is malformed."""
        if not isinstance(data, Mapping):
            return None
        weight, rate, variance, trials = (
            _number(data.get(key)) for key in ("weight", "weighted_rate", "weighted_variance", "trials")
        )
        intervals = _count(data.get("intervals"))
        if weight is None or rate is None or variance is None or trials is None or intervals is None:
            return None
        if rate > weight * (1 + 1e-9) or (intervals == 0) != (weight == 0):
            return None  # a rate above 1, or sums without intervals: not made by add()
        return cls(weight, rate, variance, trials, intervals)


@dataclasses.dataclass(frozen=True)
class MantelHaenszel:
    """Running sums of the Mantel-Haenszel comparison of a candidate with the baseline.

    Over the ``intervals`` where both had traffic, with the candidate's ``s_c`` successes of
    ``n_c`` trials, the baseline's ``s_b`` of ``n_b`` and ``n = n_c + n_b`` (module docstring):
    ``candidate`` is ``R = sum s_c n_b / n``, ``baseline`` ``S = sum s_b n_c / n``, ``spread``
    the Greenland-Robins ``sum (s_c n_c (n_b - s_b) + s_b n_b (n_c - s_c)) / n^2``, ``weight``
    ``sum n_c n_b / n``, and ``trials``/``baseline_trials`` the two arms' requests.
    """

    candidate: float = 0.0
    baseline: float = 0.0
    spread: float = 0.0
    weight: float = 0.0
    trials: float = 0.0
    baseline_trials: float = 0.0
    intervals: int = 0

    def add(
        self, successes: float, trials: float, base_successes: float, base_trials: float
    ) -> MantelHaenszel:
        """These sums plus one interval: the candidate's counts, then the baseline's (both with trials)."""
        n = trials + base_trials
        mine = successes * trials * (base_trials - base_successes)
        theirs = base_successes * base_trials * (trials - successes)
        return MantelHaenszel(
            self.candidate + successes * base_trials / n,
            self.baseline + base_successes * trials / n,
            self.spread + (mine + theirs) / n / n,
            self.weight + trials * base_trials / n,
            self.trials + trials,
            self.baseline_trials + base_trials,
            self.intervals + 1,
        )

    @property
    def ratio(self) -> float | None:
        """``RR_MH = R / S``, None while undefined."""
        return self.candidate / self.baseline if self.baseline > 0 else None

    @property
    def log_variance(self) -> float | None:
        """The Greenland-Robins variance of ``log RR_MH``, None while undefined."""
        if self.candidate <= 0 or self.baseline <= 0:
            return None
        return self.spread / self.candidate / self.baseline  # step by step: R S may underflow

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> MantelHaenszel | None:
        """The sums back from ``to_dict``, or None if anything is malformed."""
        if not isinstance(data, Mapping):
            return None
        names = ("candidate", "baseline", "spread", "weight", "trials", "baseline_trials")
        numbers = [_number(data.get(key)) for key in names]
        intervals = _count(data.get("intervals"))
        if intervals is None or any(v is None for v in numbers):
            return None
        candidate, baseline, spread, weight, trials, baseline_trials = (float(v or 0.0) for v in numbers)
        slack = 1 + 1e-9
        if max(candidate, baseline) > weight * slack or spread > (candidate + baseline) * slack:
            return None  # a rate above 1, or more spread than the counts allow: not made by add()
        if (intervals == 0) != (weight == 0) or weight > min(trials, baseline_trials) * slack:
            return None
        return cls(candidate, baseline, spread, weight, trials, baseline_trials, intervals)


@dataclasses.dataclass(frozen=True)
class ArmStats:
    """One arm's running sums: constant size and JSON-serialisable, so they live in the status.

    ``successes``/``trials`` are pooled over all intervals (the Beta posterior);
    ``stratified`` covers every interval where the arm had traffic; ``paired`` and
    ``paired_baseline`` are this arm's and the baseline's traffic-weighted sums over the
    intervals where both had traffic (reported); ``mantel_haenszel`` the sums of its
    comparison with the baseline (the decision).  The last three are empty for the baseline.
    """

    successes: float = 0.0
    trials: float = 0.0
    stratified: Strata = dataclasses.field(default_factory=Strata)
    paired: Strata = dataclasses.field(default_factory=Strata)
    paired_baseline: Strata = dataclasses.field(default_factory=Strata)
    mantel_haenszel: MantelHaenszel = dataclasses.field(default_factory=MantelHaenszel)

    @property
    def failures(self) -> float:
        return max(self.trials - self.successes, 0.0)

    @property
    def pooled_rate(self) -> float | None:
        return self.successes / self.trials if self.trials > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ArmStats:
        """The sums back from ``to_dict``; anything malformed starts afresh (never raises)."""
        if not isinstance(data, Mapping):
            return cls()
        successes, trials = _number(data.get("successes"), MAX_COUNT), _number(data.get("trials"), MAX_COUNT)
        parts = [Strata.from_dict(data.get(key)) for key in ("stratified", "paired", "paired_baseline")]
        if successes is None or trials is None or successes > trials:
            return cls()
        stratified, paired, paired_baseline = parts
        mantel_haenszel = MantelHaenszel.from_dict(data.get("mantel_haenszel"))
        if stratified is None or paired is None or paired_baseline is None or mantel_haenszel is None:
            return cls()
        if paired.intervals != paired_baseline.intervals or paired.weight != paired_baseline.weight:
            return cls()  # the two sides of a pair always grow together
        return cls(successes, trials, stratified, paired, paired_baseline, mantel_haenszel)


def dump_stats(stats: Mapping[Arm, ArmStats]) -> dict[str, dict[str, Any]]:
    """Every arm's sums as JSON-ready dicts (for the status)."""
    return {arm: s.to_dict() for arm, s in stats.items()}


def load_stats(data: object) -> dict[Arm, ArmStats]:
    """The arms' sums back from ``dump_stats``; malformed arms start afresh, never raises."""
    if not isinstance(data, Mapping):
        return {}
    return {arm: ArmStats.from_dict(value) for arm, value in data.items() if isinstance(arm, str)}


def _valid_counts(value: object) -> tuple[float, float] | None:
    """``(successes, trials)`` an exporter can produce, or None."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) != 2:
        return None
    successes, trials = _number(value[0], MAX_COUNT), _number(value[1], MAX_COUNT)
    if successes is None or trials is None or successes > trials:
        return None
    return successes, trials


def add_interval(
    stats: Mapping[Arm, ArmStats],
    counts: Mapping[Arm, tuple[float, float]],
    *,
    baseline: Arm | None = None,
) -> dict[Arm, ArmStats]:
    """The sums plus one interval's ``counts`` (per arm: successes, trials of the reward).

    ``baseline`` defaults to the first arm of ``stats`` (of ``counts`` when ``stats`` is
    empty): the baseline comes first, as everywhere in the operator.  Counts no exporter
    can produce (negative, non-finite, above ``MAX_COUNT``, more successes than trials,
    not a pair) are ignored, as if the arm had no traffic; an arm of ``counts`` not yet in
    ``stats`` starts from empty sums; an arm missing from ``counts`` had no traffic.
    ``N_i``, the interval's total, is the sum of the valid trials of all arms.  The
    Mantel-Haenszel sums of a candidate grow in every interval where it and the baseline
    both had valid counts with trials (however few: a thin interval gets a small weight;
    below ``lift.MIN_COUNT`` is no traffic).
    """
    result = dict(stats)
    for arm in counts:
        result.setdefault(arm, ArmStats())
    if baseline is None:
        baseline = next(iter(result), None)
    valid = {arm: c for arm, c in ((arm, _valid_counts(v)) for arm, v in counts.items()) if c is not None}
    total = sum(trials for _, trials in valid.values())
    served = {arm: c for arm, c in valid.items() if c[1] >= MIN_TRIALS}
    base = served.get(baseline) if baseline is not None else None
    base_counts = valid.get(baseline) if baseline is not None else None
    for arm, (successes, trials) in valid.items():
        old = result[arm]
        stratified, paired, paired_baseline = old.stratified, old.paired, old.paired_baseline
        mantel_haenszel = old.mantel_haenszel
        if arm in served:
            stratified = stratified.add(total, successes, trials)
            if base is not None and arm != baseline:
                paired = paired.add(total, successes, trials)
                paired_baseline = paired_baseline.add(total, *base)
        if base_counts is not None and arm != baseline and min(trials, base_counts[1]) >= lift.MIN_COUNT:
            mantel_haenszel = mantel_haenszel.add(successes, trials, *base_counts)
        result[arm] = ArmStats(
            old.successes + successes,
            old.trials + trials,
            stratified,
            paired,
            paired_baseline,
            mantel_haenszel,
        )
    return result


# --------------------------------------------------------------------------- probability of being best


def _posterior(stats: Mapping[Arm, ArmStats]) -> tuple[np.ndarray, np.ndarray]:
    """Beta parameters ``1 + successes``, ``1 + failures`` per arm (garbage counts as nothing)."""
    wins = [_number(s.successes, MAX_COUNT) or 0.0 for s in stats.values()]
    trials = [_number(s.trials, MAX_COUNT) or 0.0 for s in stats.values()]
    a = np.array([1.0 + w for w in wins])
    b = np.array([1.0 + max(n - w, 0.0) for w, n in zip(wins, trials, strict=True)])
    return a, b


def probability_best(
    stats: Mapping[Arm, ArmStats], rng: np.random.Generator, draws: int = 20000
) -> dict[Arm, float]:
    """Per arm, the posterior probability that its rate is the largest (Monte Carlo, sums to 1).

    One rate per arm is drawn from each Beta(1 + s, 1 + f) posterior ``draws`` times
    (vectorised, in blocks); an arm's probability is the share of draws it wins.  The
    Monte Carlo error is at most ``0.5 / sqrt(draws)`` (0.0035 at 20000).
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, not {draws!r}")
    arms = list(stats)
    if len(arms) <= 1:
        return {arm: 1.0 for arm in arms}
    a, b = _posterior(stats)
    wins = np.zeros(len(arms), dtype=np.int64)
    for start in range(0, draws, _CHUNK):
        size = min(_CHUNK, draws - start)
        samples = rng.beta(a[:, None], b[:, None], size=(len(arms), size))
        wins += np.bincount(samples.argmax(axis=0), minlength=len(arms))
    return {arm: float(w) / draws for arm, w in zip(arms, wins, strict=True)}


# --------------------------------------------------------------------------- constraints


def _percent(value: object) -> int:
    """A previous weight as an integer percent in [0, 100]; garbage counts as 0."""
    number = _number(value, math.inf)
    return 0 if number is None else min(round(number), 100)


def _check_parameters(active: int, min_weight: int, max_step_change: int) -> None:
    for name, value in (("min_weight", min_weight), ("max_step_change", max_step_change)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"{name} must be an integer percent between 0 and 100, not {value!r}")
    if active == 0:
        raise ValueError("no arm left to allocate: every arm is dropped")
    if active * min_weight > 100:
        raise ValueError(
            f"infeasible: {active} arms at a minimum weight of {min_weight} % need {active * min_weight} %"
        )


def _boxes(previous: Sequence[int], min_weight: int, step: int) -> tuple[list[int], list[int]]:
    lows = [max(min_weight, p - step) for p in previous]
    highs = [min(100, p + step) for p in previous]
    return lows, highs


def _feasible(lows: Sequence[int], highs: Sequence[int]) -> bool:
    return all(lo <= hi for lo, hi in zip(lows, highs, strict=True)) and sum(lows) <= 100 <= sum(highs)


def _integer_target(target: Sequence[float]) -> list[int]:
    """Shares (any non-negative scale) as integer percents summing to 100 (largest remainder)."""
    clean = [v if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else 0.0 for v in target]
    whole = sum(clean)
    if not whole > 0:
        clean, whole = [1.0] * len(clean), float(len(clean))  # no preference: an equal split
    return apportion(100, [round(v / whole * 1e9) for v in clean])


def project(
    target: Mapping[Arm, float],
    previous_weights: Mapping[Arm, object],
    *,
    min_weight: int,
    max_step_change: int,
    dropped: Collection[Arm] = (),
) -> dict[Arm, int]:
    """Weights as close to ``target`` (shares, any scale) as the constraints allow.

    Integer percents summing to 100; every arm of ``target`` that is not dropped gets at
    least ``min_weight`` and moves at most ``max_step_change`` points from its previous
    weight (widened just enough when the previous weights are infeasible: module
    docstring); dropped arms, and arms of ``previous_weights`` missing from ``target``, get
    0.  Raises ``ValueError`` when no allocation can satisfy the floor (``active arms *
    min_weight > 100``), no arm is left, or a parameter is out of range.
    """
    active = [arm for arm in target if arm not in dropped]
    _check_parameters(len(active), min_weight, max_step_change)
    wanted = _integer_target([target[arm] for arm in active])
    previous = [_percent(previous_weights.get(arm, 0)) for arm in active]
    step = max_step_change
    lows, highs = _boxes(previous, min_weight, step)
    while not _feasible(lows, highs) and step < 100:  # feasible by step 100: boxes [min_weight, 100]
        step += 1
        lows, highs = _boxes(previous, min_weight, step)
    weights = [min(max(w, lo), hi) for w, lo, hi in zip(wanted, lows, highs, strict=True)]
    order = range(len(active))
    while (gap := 100 - sum(weights)) != 0:
        if gap > 0:  # give a point to the arm furthest below its target (ties: the earliest)
            i = max((i for i in order if weights[i] < highs[i]), key=lambda i: (wanted[i] - weights[i], -i))
            weights[i] += 1
        else:  # take a point from the arm furthest above its target
            i = max((i for i in order if weights[i] > lows[i]), key=lambda i: (weights[i] - wanted[i], -i))
            weights[i] -= 1
    result = dict(zip(active, weights, strict=True))
    for arm in (*target, *previous_weights, *dropped):
        result.setdefault(arm, 0)
    return result


# --------------------------------------------------------------------------- allocators


class Allocator(Protocol):
    """Re-allocates the traffic once per interval; every implementation obeys ``project``'s constraints."""

    name: str

    def allocate(
        self,
        stats: Mapping[Arm, ArmStats],
        previous_weights: Mapping[Arm, object],
        rng: np.random.Generator,
        *,
        min_weight: int,
        max_step_change: int,
        dropped: Collection[Arm] = (),
    ) -> dict[Arm, int]: ...


class _Allocator:
    """Shared ``allocate``: a target over the arms still in play, then ``project``."""

    name = "allocator"

    def target(self, stats: Mapping[Arm, ArmStats], rng: np.random.Generator) -> Sequence[float]:
        raise NotImplementedError

    def allocate(
        self,
        stats: Mapping[Arm, ArmStats],
        previous_weights: Mapping[Arm, object],
        rng: np.random.Generator,
        *,
        min_weight: int,
        max_step_change: int,
        dropped: Collection[Arm] = (),
    ) -> dict[Arm, int]:
        """Integer percents summing to 100 over ``stats``' arms: this allocator's target under the
        floor, the step limit and the drops (``project``); dropped arms take no part in the target."""
        active = {arm: s for arm, s in stats.items() if arm not in dropped}
        _check_parameters(len(active), min_weight, max_step_change)
        shares = self.target(active, rng)
        goal = dict(zip(active, shares, strict=True))
        goal.update({arm: 0.0 for arm in stats if arm in dropped})
        return project(
            goal, previous_weights, min_weight=min_weight, max_step_change=max_step_change, dropped=dropped
        )


def _pooled_means(stats: Mapping[Arm, ArmStats]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _posterior(stats)
    trials = a + b - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(trials > 0, (a - 1) / np.where(trials > 0, trials, 1), np.inf)
    return means, trials


def _argmax(values: np.ndarray, rng: np.random.Generator) -> int:
    """The index of the largest value, ties broken at random."""
    best = np.flatnonzero(values == values.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


class ThompsonAllocator(_Allocator):
    """Weights proportional to each arm's posterior probability of being the best."""

    name = "thompson"

    def __init__(self, draws: int = 20000) -> None:
        self.draws = draws

    def target(self, stats: Mapping[Arm, ArmStats], rng: np.random.Generator) -> Sequence[float]:
        return list(probability_best(stats, rng, self.draws).values())


class EpsilonGreedyAllocator(_Allocator):
    """``1 - epsilon`` to the arm with the best pooled rate, ``epsilon`` spread equally over all.

    Arms without trials count as best (each is tried first); ties go to a random one.
    """

    name = "epsilon-greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        if not (isinstance(epsilon, (int, float)) and 0 <= epsilon <= 1):
            raise ValueError(f"epsilon must be between 0 and 1, not {epsilon!r}")
        self.epsilon = float(epsilon)

    def target(self, stats: Mapping[Arm, ArmStats], rng: np.random.Generator) -> Sequence[float]:
        means, _ = _pooled_means(stats)
        shares = [self.epsilon / len(means)] * len(means)
        shares[_argmax(means, rng)] += 1 - self.epsilon
        return shares


class UCBAllocator(_Allocator):
    """UCB1 on the pooled rates: the whole target to the arm with the largest upper bound
    ``mean + sqrt(2 ln T / n)`` (``T`` all trials, ``n`` the arm's; untried arms first, ties at random).

    The floor and the step limit turn this batch "winner takes the interval" into a
    gradual move, as for every allocator.
    """

    name = "ucb1"

    def target(self, stats: Mapping[Arm, ArmStats], rng: np.random.Generator) -> Sequence[float]:
        means, trials = _pooled_means(stats)
        total = float(trials.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = np.sqrt(2 * math.log(max(total, 1.0)) / np.where(trials > 0, trials, 1))
        index = np.where(trials > 0, means + bonus, np.inf)
        shares = [0.0] * len(index)
        shares[_argmax(index, rng)] = 1.0
        return shares


class FixedAllocator(_Allocator):
    """An equal split (an A/B/n test), reached within the step limit."""

    name = "fixed"

    def target(self, stats: Mapping[Arm, ArmStats], rng: np.random.Generator) -> Sequence[float]:
        return [1.0] * len(stats)


# --------------------------------------------------------------------------- stopping and the decision


def should_stop(
    prob_best_history: Sequence[Mapping[Arm, float]], confidence: float, intervals_required: int
) -> Arm | None:
    """The arm whose probability of being best was at least ``confidence`` in each of the last
    ``intervals_required`` intervals (``prob_best_history`` oldest first), or None.

    Values that are not numbers count as 0.  Should several arms qualify (only possible
    with ``confidence <= 0.5``), the one most probable in the latest interval wins.
    """
    if not (isinstance(confidence, (int, float)) and 0 < confidence <= 1):
        raise ValueError(f"confidence must be in (0, 1], not {confidence!r}")
    required = intervals_required
    if isinstance(required, bool) or not isinstance(required, int) or required < 1:
        raise ValueError(f"intervals_required must be a positive integer, not {intervals_required!r}")
    if len(prob_best_history) < required:
        return None
    recent = [entry if isinstance(entry, Mapping) else {} for entry in prob_best_history[-required:]]

    def value(entry: Mapping[Arm, float], arm: Arm) -> float:
        return _number(entry.get(arm), math.inf) or 0.0

    qualified = [arm for arm in recent[-1] if all(value(entry, arm) >= confidence for entry in recent)]
    return max(qualified, key=lambda arm: value(recent[-1], arm), default=None)


def _compare(baseline: Arm, arm: Arm, s: ArmStats, level: float, tau: float) -> lift.Estimate:
    """One candidate's lift over the baseline from its Mantel-Haenszel sums (module docstring)."""
    mh = s.mantel_haenszel
    samples = {baseline: mh.baseline_trials, arm: mh.trials}
    # The rates reported next to the lift: both arms' rates with the same weights w_i, so
    # that their ratio is RR_MH.
    mb = mh.baseline / mh.weight if mh.weight > 0 else None
    mc = mh.candidate / mh.weight if mh.weight > 0 else None

    def fail(reason: str) -> lift.Estimate:
        point = mh.candidate / mh.baseline - 1 if mh.baseline > 0 and mh.weight > 0 else None
        return lift.Estimate(mb, mc, point, None, None, None, samples, False, reason)

    if mb is None or mc is None:
        return fail(f"no interval yet where both {arm} and {baseline} had traffic")
    if mh.baseline <= 0:
        return fail(f"{baseline}'s rate is zero: no relative lift")
    if mh.candidate <= 0:
        return fail(f"{arm}'s rate is zero: the log-lift is undefined")
    variance = mh.log_variance
    if variance is None or not 1e-300 < variance < math.inf:
        return fail("no variance in the data yet: the interval is undefined")
    log_lift = math.log(mh.candidate) - math.log(mh.baseline)
    width = lift.half_width(variance, level, tau)
    interval = (math.expm1(min(log_lift - width, _EXP_CAP)), math.expm1(min(log_lift + width, _EXP_CAP)))
    point = math.expm1(log_lift)
    reason = (
        f"{arm}: lift {point:+.1%} [{interval[0]:+.1%}, {interval[1]:+.1%}] over {baseline} "
        f"(Mantel-Haenszel over {mh.intervals} intervals, always-valid, alpha {level:.3g}): "
        f"{mc:.4g} vs {mb:.4g}"
    )
    return lift.Estimate(mb, mc, point, interval, log_lift, variance, samples, True, reason)


def final_comparison(
    stats: Mapping[Arm, ArmStats],
    baseline: Arm,
    *,
    alpha: float = 0.05,
    tau: float = lift.DEFAULT_TAU,
) -> dict[Arm, lift.Estimate]:
    """Per candidate (every arm but ``baseline``), its lift over the baseline.

    The lift is ``RR_MH - 1``, the Mantel-Haenszel rate ratio over the intervals where
    both arms had traffic; its interval is the always-valid one of ``core.lift`` on
    ``log RR_MH`` with the Greenland-Robins variance (module docstring), at level
    ``alpha / candidates`` (Bonferroni; dropped candidates count too, they were compared).
    ``baseline`` and ``candidate`` of each estimate are the two arms' rates weighted by
    ``w_i = n_ci n_bi / (n_ci + n_bi)`` (their ratio is ``RR_MH``); the traffic-weighted
    rates stay in ``ArmStats.paired``/``paired_baseline``.  Never raises: an estimate that
    cannot be made is ``ready=False`` with the reason.
    """
    candidates = [arm for arm in stats if arm != baseline]
    level = lift.bonferroni(alpha, len(candidates))
    if not (0 < alpha < 1 and 0 < tau < math.inf):
        bad = f"alpha {alpha} or tau {tau} out of range"
        return {arm: lift.Estimate(None, None, None, None, None, None, {}, False, bad) for arm in candidates}
    return {arm: _compare(baseline, arm, stats[arm], level, tau) for arm in candidates}


def winner(
    stats: Mapping[Arm, ArmStats],
    baseline: Arm,
    *,
    alpha: float = 0.05,
    tau: float = lift.DEFAULT_TAU,
    dropped: Collection[Arm] = (),
) -> Arm:
    """The arm to promote: among the candidates not dropped whose whole (Bonferroni-corrected,
    always-valid) interval on the lift over the baseline lies above 0, the one with the
    largest lift; the baseline when there is none."""
    better = [
        (est.lift, arm)
        for arm, est in final_comparison(stats, baseline, alpha=alpha, tau=tau).items()
        if arm not in dropped and est.ready and est.lift is not None and est.interval and est.interval[0] > 0
    ]
    return max(better, key=lambda pair: pair[0])[1] if better else baseline
