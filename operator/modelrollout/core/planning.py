"""What a rollout plan can detect, before it runs (``modelrollout plan``, docs/planning.md).

A plan that moves traffic fast on little traffic will let a real regression
reach 100 %: the sequential test never sees enough bad events to cross its
bound.  Users should learn that while choosing steps and durations, not from
an incident.  This module answers "how large a regression does this plan
catch with 80 % probability" and "how long must each step be to catch this
one", for the operator's own test.

Closed forms do not fit that test (a mixture e-process, checked after every
interval, with a traffic share that changes between steps and steps that are
held longer while the evidence is suspicious), so the answer is Monte Carlo in
virtual time: the very statistic of :mod:`modelrollout.core.evidence`
(``interval_loglik`` summed over intervals, ``harm_evidence`` against the
rollback bound ``guardrails / alpha``), vectorised across runs.  The same
state machine rules as :mod:`modelrollout.core.canary` decide when a step ends.

Reproducibility and monotonicity: every random draw depends on the seed and on
the plan's traffic, never on the effect.  The candidate's bad events are drawn
by inverse CDF from fixed uniforms, so within a run they only grow with the
effect (common random numbers), and the evidence only grows with them: a
bisection over the effect sees a (nearly) monotone curve and returns the same
answer on every call.

A step lasts ``step_duration``, or longer until each variant is expected to have
served ``minSamples`` requests (the expected pace, not the random one).  Other
assumptions are on the conservative side (the real operator has at least as
much power): ``failureLimit`` 1, one guardrail's evidence decides whether a
step is held (any guardrail's may), constant base rate.  Steps longer than
``MAX_LOOKS`` intervals are simulated in ``MAX_LOOKS`` blocks of consecutive
intervals, each checked once -- fewer looks, so slightly less power.  Not
simulated: intervals without requests for a variant, which the operator counts
as no data (:func:`report` notes when they are likely).

Latency uses the same test on "slow requests" (those above the baseline's
bucket edge near its p95): plan it with the slow share (about 0.05) as the
base rate -- :func:`latency_plan`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special  # not scipy.stats: importing it adds ~45 MB to every replica

from modelrollout.core import evidence
from modelrollout.core.canary import MAX_STEP_EXTENSION
from modelrollout.durations import format_duration

MAX_LOOKS = 30  # evaluations per step simulated one by one; longer steps go in blocks (power -1 % at most)
EFFECT_RANGE = (1.01, 32.0)  # searched rate ratios; 32 is the end of evidence.GRID
LONGEST_STEP = datetime.timedelta(hours=24)  # required_step_duration searches up to this
MIN_SAMPLES = 100  # spec.canary.minSamples' default: requests per variant a step needs
SLOW_SHARE = 0.05  # share of baseline requests above the latency edge (the operator aims at p95)
_EPS = 1e-9


class PlanError(ValueError):
    """A plan's field is out of range; ``field`` names it, the message says why and shows the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclasses.dataclass(frozen=True)
class Plan:
    """A rollout plan and the base rate of the bad events one guardrail counts.

    ``rate``: requests/s over both variants; ``steps``: candidate weights in % (reaching 100
    promotes); ``step_duration``: ``minStepDuration``; ``interval``: time between evaluations;
    ``baseline_rate``: the baseline's share of bad events (errors, or slow requests for latency);
    ``guardrails``: sequential guardrails sharing ``alpha`` (the rollback bound is
    ``guardrails / alpha``); ``tolerance``: ``1 + maxRelativeIncrease``; ``warmup_intervals``:
    intervals at the start that add no evidence (latency: the one that places the bucket edge);
    ``min_samples``: requests per variant a step needs before it may end (``minSamples``).
    """

    rate: float
    steps: Sequence[int]
    step_duration: datetime.timedelta
    interval: datetime.timedelta
    baseline_rate: float
    alpha: float = 0.05
    guardrails: int = 2
    tolerance: float = 1.0
    warmup_intervals: int = 0
    min_samples: int = MIN_SAMPLES

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))  # hashable, and nobody mutates it
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise PlanError("rate", f"must be a positive number of requests per second (got {self.rate})")
        if not self.steps:
            raise PlanError("steps", "must list at least one step")
        for index, weight in enumerate(self.steps):
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
                raise PlanError("steps", f"must be whole percentages in 1..100 (got {weight})")
            if index and weight <= self.steps[index - 1]:
                raise PlanError("steps", f"must increase ({self.steps[index - 1]} then {weight})")
        for name in ("step_duration", "interval"):
            value: datetime.timedelta = getattr(self, name)
            if value.total_seconds() <= 0:
                raise PlanError(name, f"must be longer than zero (got {value})")
        if not 0 < self.baseline_rate < 1:
            raise PlanError("baseline_rate", f"must be a share between 0 and 1 (got {self.baseline_rate})")
        if not 0 < self.alpha < 1:
            raise PlanError("alpha", f"must be between 0 and 1 (got {self.alpha})")
        if isinstance(self.guardrails, bool) or not isinstance(self.guardrails, int) or self.guardrails < 1:
            raise PlanError("guardrails", f"must be a whole number >= 1 (got {self.guardrails})")
        if not (math.isfinite(self.tolerance) and 1 <= self.tolerance < EFFECT_RANGE[1]):
            raise PlanError("tolerance", f"must be a ratio in [1, 32) (got {self.tolerance})")
        if self.warmup_intervals < 0:
            raise PlanError("warmup_intervals", f"must be >= 0 (got {self.warmup_intervals})")
        if self.min_samples < 0:
            raise PlanError("min_samples", f"must be >= 0 (got {self.min_samples})")

    @property
    def bound(self) -> float:
        """The rollback bound on the evidence: ``guardrails / alpha`` (Bonferroni over guardrails)."""
        return self.guardrails / self.alpha

    @property
    def tested_steps(self) -> tuple[int, ...]:
        """The weights at which the candidate is evaluated: every step before 100 %."""
        return tuple(w for w in self.steps if w < 100)

    @property
    def intervals_per_step(self) -> int:
        """Evaluations ``step_duration`` gives a step (the first one comes an interval in)."""
        return max(1, math.ceil(self.step_duration / self.interval - _EPS))

    def step_intervals(self, weight: int) -> int:
        """Evaluations a step at ``weight`` % gets unless evidence holds it: ``step_duration``, or
        longer until each variant is expected to have served ``min_samples`` requests."""
        per_interval = self.rate * min(weight, 100 - weight) / 100 * self.interval.total_seconds()
        needed = math.ceil(self.min_samples / per_interval - _EPS) if per_interval > 0 else 0
        return max(self.intervals_per_step, needed)

    def with_step_duration(self, duration: datetime.timedelta) -> Plan:
        return dataclasses.replace(self, step_duration=duration)


def latency_plan(plan: Plan, slow_share: float = SLOW_SHARE) -> Plan:
    """The plan of the latency guardrail: slow requests are its bad events, and its first
    interval places the bucket edge instead of adding evidence."""
    if not 0 < slow_share < 1:
        raise PlanError("slow_share", f"must be a share between 0 and 1 (got {slow_share})")
    return dataclasses.replace(plan, baseline_rate=slow_share, warmup_intervals=1)


def requests_per_step(plan: Plan) -> list[tuple[int, float, float, datetime.timedelta]]:
    """Per tested step: weight, expected candidate and baseline requests, and how long it lasts
    unless evidence holds it (``step_duration``, or longer to reach ``min_samples``)."""
    rows = []
    for w in plan.tested_steps:
        intervals = plan.step_intervals(w)
        seconds = intervals * plan.interval.total_seconds()
        rows.append(
            (
                w,
                plan.rate * w / 100 * seconds,
                plan.rate * (100 - w) / 100 * seconds,
                plan.interval * intervals,
            )
        )
    return rows


# --------------------------------------------------------------------------- the statistic, vectorised


def interval_logliks(
    candidate_events: np.ndarray, baseline_events: np.ndarray, shares: np.ndarray, columns: Any = slice(None)
) -> np.ndarray:
    """Row ``i`` is ``evidence.interval_loglik(candidate_events[i], baseline_events[i], shares[i])``
    restricted to the grid ``columns``: the same formula, for many intervals at once."""
    candidate = np.asarray(candidate_events, dtype=float)
    total = candidate + np.asarray(baseline_events, dtype=float)
    share = np.asarray(shares, dtype=float)
    informative = (total > 0) & (share > 0) & (share < 1)  # as interval_loglik: otherwise no information
    share = np.where(informative, share, 0.0)
    total = np.where(informative, total, 0.0)
    candidate = np.where(informative, candidate, 0.0)
    grid = evidence.GRID[columns]
    theta = np.exp(grid)
    result: np.ndarray = candidate[:, None] * grid[None, :] - total[:, None] * np.log1p(
        share[:, None] * (theta - 1)[None, :]
    )
    return result


def harm_log_evidence(loglik: np.ndarray, tolerance: float = 1.0, increase: bool = True) -> np.ndarray:
    """Row-wise ``log(evidence.harm_evidence(row, tolerance, increase))`` of a (runs x grid) matrix
    (``-inf`` where the tolerance leaves no alternative)."""
    null = _null_index(tolerance)
    prior = evidence._harm_prior(null, increase)
    harmful = np.isfinite(prior)
    if not harmful.any():
        return np.full(loglik.shape[0], -np.inf)
    mixed = special.logsumexp(loglik[:, harmful] + prior[harmful][None, :], axis=1)
    result: np.ndarray = mixed - loglik[:, null]
    return result


def _log_mix(rows: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """``log E`` per row when column 0 is the null and the others the harmful alternatives."""
    terms = rows[:, 1:] + log_prior[None, :]
    top = terms.max(axis=1)
    result: np.ndarray = top + np.log(np.exp(terms - top[:, None]).sum(axis=1)) - rows[:, 0]
    return result


def _null_index(tolerance: float) -> int:
    return evidence._index(math.log(tolerance))


# --------------------------------------------------------------------------- Monte Carlo


def _blocks(plan: Plan, max_looks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The looks of each tested step: intervals per look (steps x looks, zero-padded), the looks a
    step has before it may end, and the looks it has at most (held while evidence is suspicious).

    The operator holds a step while evidence is suspicious until ``MAX_STEP_EXTENSION`` step
    durations have passed.  More than ``max_looks`` intervals before a step may end are looked
    at in ``max_looks`` blocks of consecutive intervals (and the extension proportionally).
    """

    def split(intervals: int, looks: int) -> list[int]:
        edges = np.round(np.linspace(0, intervals, looks + 1)).astype(int)
        return [int(v) for v in np.diff(edges)]

    held = math.ceil(MAX_STEP_EXTENSION * plan.step_duration / plan.interval - _EPS)
    per_step: list[list[int]] = []
    ends: list[int] = []
    for weight in plan.tested_steps:
        end = plan.step_intervals(weight)
        looks = min(end, max_looks)
        extra = max(held - end, 0)
        extra_looks = min(extra, max(1, round(extra * looks / end))) if extra else 0
        per_step.append(split(end, looks) + (split(extra, extra_looks) if extra else []))
        ends.append(looks)
    width = max(len(sizes) for sizes in per_step)
    table = np.zeros((len(per_step), width), dtype=np.int64)
    for index, sizes in enumerate(per_step):
        table[index, : len(sizes)] = sizes
    return table, np.array(ends), np.array([len(sizes) for sizes in per_step])


def binomial_quantile(q: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """Inverse-CDF draws: the smallest count k with P(Binomial(n, p) <= k) >= q, for q in (0, 1).

    What ``scipy.stats.binom.ppf`` computes, with the same two special functions (a count never
    goes below 0, where scipy would answer -1 for q = 0).  The operator does not import
    scipy.stats: it would add ~45 MB to every replica for this one function.
    """
    counts = np.asarray(n, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        k = np.ceil(special.bdtrik(q, counts, p))
    k = np.where(np.isnan(k), counts if p >= 1 else 0, k)  # n = 0, or p at an end
    below = np.maximum(k - 1, 0)
    k = np.where(special.bdtr(below.astype(np.int64), counts, p) >= q, below, k)
    return np.clip(k, 0, counts).astype(float)


def _simulate(plan: Plan, effect: float, runs: int, seed: int, max_looks: int) -> np.ndarray:
    """Per run, whether the harm evidence crossed the bound before promotion."""
    tested = plan.tested_steps
    detected = np.zeros(runs, dtype=bool)
    if not tested:
        return detected
    sizes, ends, lasts = _blocks(plan, max_looks)
    width = sizes.shape[1]

    # Every draw depends on the seed and the traffic only: common random numbers across effects.
    rng = np.random.default_rng(seed)
    shape = (len(tested), width, runs)
    n_cand = np.empty(shape)
    n_base = np.empty(shape)
    x_base = np.empty(shape)
    uniform = np.empty(shape)
    warm = plan.warmup_intervals
    for index, weight in enumerate(tested):
        live = sizes[index].copy()
        for b in range(width):  # warm-up intervals (at the very start) add no evidence
            taken = min(warm, int(live[b]))
            live[b] -= taken
            warm -= taken
        seconds = live * plan.interval.total_seconds()
        n_cand[index] = rng.poisson((plan.rate * weight / 100 * seconds)[:, None], size=(width, runs))
        n_base[index] = rng.poisson((plan.rate * (100 - weight) / 100 * seconds)[:, None], size=(width, runs))
        x_base[index] = rng.binomial(n_base[index].astype(np.int64), plan.baseline_rate)
        uniform[index] = rng.random((width, runs))
    np.maximum(uniform, 1e-12, out=uniform)  # ppf(0) is -1

    null = _null_index(plan.tolerance)
    prior = evidence._harm_prior(null, True)
    harmful = np.nonzero(np.isfinite(prior))[0]
    if harmful.size == 0:
        return detected
    columns = np.concatenate([[null], harmful])
    log_prior = prior[harmful]
    log_bound = math.log(plan.bound)
    log_suspicious = log_bound / 2  # canary holds the step while evidence >= sqrt(bound)
    p_cand = min(1.0, plan.baseline_rate * effect)

    loglik = np.zeros((runs, len(columns)))
    step = np.zeros(runs, dtype=np.int64)
    look = np.zeros(runs, dtype=np.int64)
    active = np.arange(runs)
    while active.size:
        s, j = step[active], look[active]
        nc, nb, xb = n_cand[s, j, active], n_base[s, j, active], x_base[s, j, active]
        xc = binomial_quantile(uniform[s, j, active], nc, p_cand)
        requests = nc + nb
        share = np.divide(nc, requests, out=np.zeros_like(nc), where=requests > 0)
        loglik[active] += interval_logliks(xc, xb, share, columns)
        log_e = _log_mix(loglik[active], log_prior)
        crossed = log_e >= log_bound
        detected[active[crossed]] = True
        may_end = j + 1 >= ends[s]
        extended = j + 1 >= lasts[s]
        advance = ~crossed & may_end & ((log_e < log_suspicious) | extended)
        stay = ~crossed & ~advance
        step[active[advance]] += 1
        look[active[advance]] = 0
        look[active[stay]] += 1
        still = stay | (advance & (step[active] < len(tested)))
        active = active[still]
    return detected


def detection_probability(
    plan: Plan, effect: float, runs: int = 2000, seed: int = 0, *, max_looks: int = MAX_LOOKS
) -> float:
    """Probability that the operator rolls back a candidate whose bad-event rate is ``effect``
    times the baseline's, before the plan reaches 100 % (Monte Carlo, ``runs`` replications;
    steps longer than ``max_looks`` intervals are looked at in that many blocks)."""
    if not (math.isfinite(effect) and effect > 0):
        raise PlanError("effect", f"must be a positive rate ratio (got {effect})")
    if runs < 1:
        raise PlanError("runs", f"must be >= 1 (got {runs})")
    if max_looks < 1:
        raise PlanError("max_looks", f"must be >= 1 (got {max_looks})")
    return float(_simulate(plan, effect, runs, seed, max_looks).mean())


def minimum_detectable_effect(
    plan: Plan,
    power: float = 0.8,
    runs: int = 2000,
    seed: int = 0,
    precision: float = 0.01,
    *,
    max_looks: int = MAX_LOOKS,
) -> float | None:
    """The smallest rate ratio (1.6 = +60 %) detected with probability >= ``power``.

    Bisection on ``log(effect)`` over ``EFFECT_RANGE`` until the bracket is narrower than
    ``precision`` (relative); the answer is the bracket's upper end, an effect that was
    shown to be detected.  None when even 32x is not: too little traffic for this plan.
    (The lower end is not tried first: it is the costliest call, and the bisection
    converges onto it anyway when it is detected.)
    """
    _check_power(power)
    low, high = EFFECT_RANGE

    def detected(effect: float) -> bool:
        return detection_probability(plan, effect, runs, seed, max_looks=max_looks) >= power

    if not detected(high):
        return None
    lo, hi = math.log(low), math.log(high)
    while hi - lo > math.log1p(precision):
        mid = (lo + hi) / 2
        if detected(math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return math.ceil(math.exp(hi) * 1e4) / 1e4  # rounded up: never below the effect shown


def required_step_duration(
    plan: Plan,
    effect: float,
    power: float = 0.8,
    runs: int = 2000,
    seed: int = 0,
    longest: datetime.timedelta = LONGEST_STEP,
) -> datetime.timedelta | None:
    """The shortest step duration, a whole number of intervals, at which ``effect`` is detected
    with probability >= ``power``; None if even ``longest`` is not enough.

    Exact to the interval up to 50 intervals; beyond, within 2 % (an hour-long step need not
    be known to ten seconds).  The returned duration was itself shown to reach ``power``.
    """
    _check_power(power)
    most = max(1, math.floor(longest / plan.interval + _EPS))

    def detected(intervals: int) -> bool:
        return (
            detection_probability(plan.with_step_duration(plan.interval * intervals), effect, runs, seed)
            >= power
        )

    if not detected(most):
        return None
    failed, ok = 0, 1
    while ok < most and not detected(ok):  # doubling: most plans need few intervals
        failed, ok = ok, min(2 * ok, most)
    while ok - failed > max(1, ok // 50):  # to the interval, or within 2 % for long steps
        mid = (failed + ok) // 2
        if detected(mid):
            ok = mid
        else:
            failed = mid
    return plan.interval * ok


def _check_power(power: float) -> None:
    if not 0 < power < 1:
        raise PlanError("power", f"must be a probability between 0 and 1 (got {power})")


# --------------------------------------------------------------------------- words


def increase(effect: float) -> str:
    """A rate ratio in words: 1.6 -> "+60 %", 4.2 -> "x4.2"."""
    if effect < 3:
        return f"+{(effect - 1) * 100:.0f} %"
    return f"x{effect:.2g}"


@functools.lru_cache(maxsize=64)
def plan_summary(plan: Plan, what: str = "error rate", power: float = 0.8) -> str:
    """One sentence for status when an experiment starts, e.g.
    "this plan detects >= +60 % error rate (80 % power)".

    Fast enough to call once per experiment (400 runs, 5 % precision, long steps in 10
    blocks: about 0.1-0.2 s) and cached per plan; coarser than ``modelrollout plan``, which
    it agrees with to within that precision and the Monte Carlo error of 400 runs.
    """
    found = minimum_detectable_effect(plan, power, runs=400, seed=0, precision=0.05, max_looks=10)
    if found is None:
        return f"this plan cannot detect even a 32-fold {what} (too little traffic per step)"
    return f"this plan detects >= {increase(found)} {what} ({power * 100:.0f} % power)"


def report(
    plan: Plan,
    *,
    slow_share: float | None = SLOW_SHARE,
    effect: float | None = None,
    power: float = 0.8,
    runs: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``modelrollout plan`` prints, as a JSON-friendly document."""
    _check_power(power)
    metrics: list[tuple[str, Plan]] = [("error-rate", plan)]
    if slow_share is not None:
        metrics.append(("latency", latency_plan(plan, slow_share)))
    rows: list[dict[str, Any]] = []
    for name, metric_plan in metrics:
        mde = minimum_detectable_effect(metric_plan, power, runs, seed)
        row: dict[str, Any] = {
            "metric": name,
            "baselineRate": metric_plan.baseline_rate,
            "minimumDetectableEffect": mde,
            "minimumDetectableIncrease": None if mde is None else round(mde - 1, 4),
        }
        if effect is not None:
            needed = required_step_duration(metric_plan, effect, power, runs, seed)
            row["effect"] = effect
            row["detectionProbability"] = detection_probability(metric_plan, effect, runs, seed)
            row["requiredStepDuration"] = None if needed is None else format_duration(needed)
        rows.append(row)
    return {
        "plan": {
            "rate": plan.rate,
            "steps": list(plan.steps),
            "stepDuration": format_duration(plan.step_duration),
            "interval": format_duration(plan.interval),
            "alpha": plan.alpha,
            "guardrails": plan.guardrails,
            "minSamples": plan.min_samples,
            "bound": plan.bound,
            "power": power,
            "runs": runs,
            "seed": seed,
        },
        "requestsPerStep": [
            {"weight": w, "candidate": round(c, 1), "baseline": round(b, 1), "duration": format_duration(d)}
            for w, c, b, d in requests_per_step(plan)
        ],
        "metrics": rows,
        "notes": _notes(plan),
    }


def _notes(plan: Plan) -> list[str]:
    """What a reader of the numbers should know about this plan."""
    notes: list[str] = []
    if not plan.tested_steps:
        notes.append("no step before 100 %: the candidate is promoted without being tested")
    longer = [
        f"{index} ({weight} %)"
        for index, weight in enumerate(plan.tested_steps, start=1)
        if plan.step_intervals(weight) > plan.intervals_per_step
    ]
    if longer:
        which = f"step {longer[0]} lasts" if len(longer) == 1 else f"steps {', '.join(longer)} last"
        notes.append(
            f"{which} longer than the step duration: the operator waits until each variant served "
            f"minSamples ({plan.min_samples}) requests (simulated at the expected pace)"
        )
    for index, weight in enumerate(plan.tested_steps, start=1):
        per_interval = plan.rate * min(weight, 100 - weight) / 100 * plan.interval.total_seconds()
        if math.exp(-per_interval) > 0.01:  # more than 1 % of intervals without a request
            who = "candidate" if weight <= 50 else "baseline"
            notes.append(
                f"step {index} ({weight} %) expects {per_interval:.2g} {who} requests per interval: an "
                "interval without any is no data to the operator, and noDataLimit (5) of them in a row "
                "roll back even a good candidate (not simulated here); lengthen the interval"
            )
            break
    return notes


def format_report(document: dict[str, Any]) -> str:
    """The readable table of a :func:`report`."""
    plan = document["plan"]
    steps = "/".join(str(w) for w in plan["steps"])
    power = f"{plan['power'] * 100:.0f} %"
    lines = [
        f"plan: {plan['rate']:g} req/s, steps {steps} %, {plan['stepDuration']} per step, "
        f"evaluated every {plan['interval']}",
        f"test: alpha {plan['alpha']:g} over {plan['guardrails']} guardrail(s): "
        f"rollback at evidence >= {plan['bound']:g}",
        "",
        f"{'expected requests per step':<30}{'candidate':>12}{'baseline':>12}{'lasts':>10}",
    ]
    for index, row in enumerate(document["requestsPerStep"], start=1):
        label = f"  step {index} ({row['weight']} %)"
        counts = f"{row['candidate']:>12,.0f}{row['baseline']:>12,.0f}"
        lines.append(f"{label:<30}{counts}{row['duration']:>10}")
    if not document["requestsPerStep"]:
        lines.append("  (no step before 100 %: nothing is tested)")
    lines.append("")
    effect = next((row["effect"] for row in document["metrics"] if "effect" in row), None)
    header = f"{'metric':<22}{'baseline':>9}   {'detects (' + power + ' power)':<23}"
    if effect is not None:
        header += f"{'P(detect x' + f'{effect:g})':<15}step needed for x{effect:g} ({power})"
    lines.append(header)
    for row in document["metrics"]:
        mde = row["minimumDetectableEffect"]
        name = "error rate" if row["metric"] == "error-rate" else "latency (slow share)"
        detects = "nothing up to x32" if mde is None else f">= {increase(mde)}"
        line = f"{name:<22}{_share(row['baselineRate']):>9}   {detects:<23}"
        if "effect" in row:
            needed = row["requiredStepDuration"] or "more than 24h"
            line += f"{_share(row['detectionProbability']):<15}{needed}"
        lines.append(line)
    if any(row["metric"] == "latency" for row in document["metrics"]):
        lines.append("")
        lines.append(
            "latency is tested on the share of requests slower than a bucket edge near the baseline's p95;"
        )
        lines.append("its effect is the ratio of slow shares, not of latencies.")
    for note in document["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _share(rate: float) -> str:
    return f"{rate * 100:.3g} %"
