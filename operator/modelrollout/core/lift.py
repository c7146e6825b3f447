"""The statistics of A/B tests on business metrics: relative lift with an always-valid interval.

Per variant and metric the operator keeps a few running sums (``Moments``).  From
them, the candidate's relative lift over the baseline is ``m_c / m_b - 1``, with
``m`` a variant's mean (a conversion rate, revenue per request).  Its interval is
built on the log scale, ``L = log m_c - log m_b``, whose variance the delta method
gives:

    Var(L) ~ sigma_c^2 / (n_c m_c^2) + sigma_b^2 / (n_b m_b^2)

with ``sigma^2 = p (1 - p)`` for a ratio of 0/1 observations, and for a mean the
sample variance (from the sum of squares) or, when the squares are not exported,
the batch-means variance across intervals.

The operator looks every interval and may stop at any look, so a fixed 95 %
interval would be wrong far more often than 5 % of the time.  The interval here
is a confidence sequence: the normal mixture of Robbins (1970), as in Howard et
al. (2021) and Johari, Pekelis & Walsh, "Always valid inference" (2017), used
with an estimated variance as an asymptotic confidence sequence (Waudby-Smith et
al., 2024).  Mixing the likelihood ratios of effects ``N(0, tau^2)`` gives a
martingale; by Ville's inequality it ever exceeds ``1/alpha`` with probability at
most ``alpha``, and the effects it has not rejected are the interval

    L_hat +- sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) ),

valid at every look at once.  It is wider than the fixed interval and shrinks
like ``sqrt(V log(1/V))`` instead of ``sqrt(V)``: the price of looking freely.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

from modelrollout.core.model import MAX_COUNT

MIN_INTERVALS = 5  # batch means: below this the variance estimate is too noisy to use
# Less than this is no observation at all (a float from increase() of nothing, or an exporter's noise).
MIN_COUNT = 1e-6
DEFAULT_TAU = math.log(1.05)  # mixing scale when no usable minimum effect is given
_EXP_CAP = 700.0  # exp() of more overflows; an interval this wide says "no idea" anyway


def _number(value: object, limit: float = math.inf) -> float | None:
    """A finite, non-negative number below ``limit`` (bool and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value < limit else None


@dataclasses.dataclass(frozen=True)
class Moments:
    """Running sums of one variant's metric: constant size, so they live in the status.

    ``count`` observations with sum ``total`` and sum of squares ``squares`` (None once
    an interval came without them); ``batch`` is the sum over intervals of
    ``total_i^2 / count_i`` and ``intervals`` the number of intervals with data, the
    raw material of the batch-means variance.
    """

    count: float = 0.0
    total: float = 0.0
    squares: float | None = 0.0
    batch: float = 0.0
    intervals: int = 0

    def add(self, count: float, total: float, squares: float | None = None) -> Moments:
        """These sums plus one interval's; counts no exporter can produce leave them as they were."""
        n, s = _number(count, MAX_COUNT), _number(total, MAX_COUNT)
        q = None if squares is None else _number(squares, MAX_COUNT**2)  # squares scale like total^2
        if n is None or s is None or (squares is not None and q is None) or n < MIN_COUNT:
            return self  # garbage, or nothing happened (an empty interval adds no squares either)
        known = None if q is None or self.squares is None else self.squares + q
        batch = self.batch + s * s / n
        if not math.isfinite(batch):
            return self  # a total no count of observations can hold (s^2/n overflows)
        return Moments(self.count + n, self.total + s, known, batch, self.intervals + 1)

    def sane(self) -> bool:
        """Made by ``add``/``from_dict`` (not constructed by hand from garbage)."""
        numbers = (self.count, self.total, self.batch, 0.0 if self.squares is None else self.squares)
        return all(_number(v) is not None for v in numbers) and _number(self.intervals) is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Moments:
        """The sums back from ``to_dict``; anything malformed starts afresh."""
        if not isinstance(data, Mapping):
            return cls()
        fields = [_number(data.get(key)) for key in ("count", "total", "batch", "intervals")]
        squares = data.get("squares")
        q = None if squares is None else _number(squares)
        if any(v is None for v in fields) or (squares is not None and q is None):
            return cls()
        count, total, batch, intervals = (float(v or 0.0) for v in fields)
        if intervals != int(intervals):
            return cls()
        return cls(count, total, q, batch, int(intervals))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The candidate's lift over the baseline.  Fields that cannot be computed are None."""

    baseline: float | None  # the baseline's mean
    candidate: float | None
    lift: float | None  # relative: candidate / baseline - 1
    interval: tuple[float, float] | None  # always-valid interval on the lift (only when ready)
    log_lift: float | None
    variance: float | None  # of the log-lift, by the delta method
    samples: dict[str, float]  # observations per variant, keyed by the names given to estimate()
    ready: bool
    reason: str  # one readable line: the result, or why there is none


def half_width(variance: float, alpha: float, tau: float) -> float:
    """Half-width of the normal-mixture confidence sequence on the log-lift (module docstring)."""
    v, t2 = variance, tau * tau
    return math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))


def mixture_tau(minimum_effect: float) -> float:
    """The mixing scale: ``|log(1 + minimum_effect)|``.

    The mixture spreads its power over effects of about ``tau`` on the log scale: a
    tau far larger wastes power on effects nobody expects, a far smaller one on effects
    too small to matter.  Centring it on the effect of interest makes the interval
    tightest around the time that effect becomes detectable.
    """
    tau = abs(math.log1p(minimum_effect)) if math.isfinite(minimum_effect) and minimum_effect > -1 else 0.0
    return tau if tau > 1e-9 else DEFAULT_TAU


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _describe(lift: float, interval: tuple[float, float], metric: str = "lift") -> str:
    return f"{metric} {_pct(lift)} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _variance(m: Moments, mean: float, kind: str) -> tuple[float | None, str]:
    """Per-observation variance of one variant, or None and why not."""
    if kind == "ratio":
        return mean * (1 - mean), ""
    if m.squares is not None and m.count >= 2:
        return max(m.squares - m.total * m.total / m.count, 0.0) / (m.count - 1), ""
    if m.intervals >= MIN_INTERVALS:
        # sum_i s_i^2/n_i - S^2/N has expectation (k - 1) sigma^2 for independent observations;
        # drift between intervals only inflates it (wider, still valid intervals).
        return max(m.batch - m.total * m.total / m.count, 0.0) / (m.intervals - 1), ""
    return None, (
        f"not enough intervals yet to estimate the variance ({m.intervals} of {MIN_INTERVALS}; "
        "exporting the sum of squares removes this wait)"
    )


def estimate(
    baseline: Moments,
    candidate: Moments,
    kind: str = "ratio",
    alpha: float = 0.05,
    tau: float = DEFAULT_TAU,
    *,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> Estimate:
    """The lift of ``candidate`` over ``baseline`` (``kind`` "ratio" or "mean") at level ``alpha``.

    Never raises: degenerate data give ``ready=False`` with the reason, and whatever
    could still be computed (the means, the lift).
    """
    arms = list(zip(names, (baseline, candidate), strict=True))
    samples = {name: m.count if m.sane() else 0.0 for name, m in arms}

    def fail(reason: str, mb: float | None = None, mc: float | None = None) -> Estimate:
        lift = mc / mb - 1 if mb and mc is not None and math.isfinite(mc / mb) else None
        return Estimate(mb, mc, lift, None, None, None, samples, False, reason)

    if kind not in ("ratio", "mean"):
        return fail(f"unknown metric kind {kind!r}")
    if not (0 < alpha < 1 and 0 < tau < math.inf):
        return fail(f"alpha {alpha} or tau {tau} out of range")
    if not (baseline.sane() and candidate.sane()):
        return fail("the running sums are corrupt")
    empty = [name for name, m in arms if m.count <= 0]
    if empty:
        return fail(f"no data yet for {' and '.join(empty)}")
    mb, mc = baseline.total / baseline.count, candidate.total / candidate.count
    if not (math.isfinite(mb) and math.isfinite(mc)):
        return fail("the means are out of range")
    if kind == "ratio" and max(mb, mc) > 1:
        return fail("more successes than observations: not a ratio metric")
    if mb <= 0:
        return fail("the baseline's mean is zero: no relative lift", mb, mc)
    if mc <= 0:
        return fail("the candidate's mean is zero: the log-lift is undefined", mb, mc)
    vb, why_b = _variance(baseline, mb, kind)
    vc, why_c = _variance(candidate, mc, kind)
    if vb is None or vc is None:
        return fail(why_b or why_c, mb, mc)
    try:  # variance over (n m^2), divided step by step: a tiny mean may not square to anything
        variance = vc / candidate.count / mc / mc + vb / baseline.count / mb / mb
    except (ZeroDivisionError, OverflowError):
        variance = math.inf
    if not 1e-300 < variance < math.inf:
        return fail("no variance in the data yet: the interval is undefined", mb, mc)
    log_lift = math.log(mc) - math.log(mb)
    width = half_width(variance, alpha, tau)
    interval = (math.expm1(min(log_lift - width, _EXP_CAP)), math.expm1(min(log_lift + width, _EXP_CAP)))
    lift = math.expm1(log_lift)
    reason = (
        f"{_describe(lift, interval)} (always-valid, alpha {alpha:.3g}): "
        f"{mc:.4g} vs {mb:.4g} on {candidate.count:.0f} and {baseline.count:.0f} observations"
    )
    return Estimate(mb, mc, lift, interval, log_lift, variance, samples, True, reason)


class Outcome(str, enum.Enum):
    SHIP = "Ship"
    DISCARD = "Discard"
    ITERATE = "Iterate"


def _sign(direction: str) -> int:
    return -1 if direction == "Decrease" else 1  # anything but "Decrease" means "higher is better"


def judge(
    est: Estimate, direction: str, minimum_effect: float, *, metric: str = "lift"
) -> tuple[Outcome | None, str]:
    """Ship, Discard, or None (keep running), read in the good ``direction``.

    Ship: the interval excludes 0 on the good side and the point estimate reaches the
    minimum effect.  Discard: the interval excludes 0 on the harmful side (significant
    harm), or lies wholly short of the minimum effect (futility: it is ruled out).
    """
    if not est.ready or est.lift is None or est.interval is None:
        return None, est.reason
    sign = _sign(direction)
    effect = minimum_effect if math.isfinite(minimum_effect) and minimum_effect > 0 else 0.0
    good = sign * est.lift
    low, high = sorted((sign * est.interval[0], sign * est.interval[1]))
    what, target = _describe(est.lift, est.interval, metric), _pct(sign * effect)
    if low > 0 and good >= effect:
        return Outcome.SHIP, f"{what} excludes 0 and reaches the minimum effect {target}"
    if high < 0:
        return Outcome.DISCARD, f"{what} excludes 0 on the harmful side: the candidate is worse"
    if high < effect:
        return Outcome.DISCARD, f"{what} rules out the minimum effect {target} (futility)"
    if low > 0:
        return None, f"{what} excludes 0 but has not reached the minimum effect {target} yet"
    return None, f"{what} covers 0: not conclusive yet"


def at_deadline(
    est: Estimate, direction: str, minimum_effect: float, *, metric: str = "lift"
) -> tuple[Outcome, str]:
    """At the maximum duration: the judgement if there is one, else Iterate."""
    outcome, why = judge(est, direction, minimum_effect, metric=metric)
    return (outcome, why) if outcome is not None else (Outcome.ITERATE, f"no decision by the deadline: {why}")


def aa_check(est: Estimate, *, metric: str = "lift") -> tuple[bool, str]:
    """A/A test (identical arms): passes while the interval covers 0, or has no data yet."""
    if not est.ready or est.lift is None or est.interval is None:
        return True, f"no interval yet: {est.reason}"
    what = _describe(est.lift, est.interval, metric)
    if est.interval[0] <= 0 <= est.interval[1]:
        return True, f"{what} covers 0"
    return False, f"{what} excludes 0"


def bonferroni(alpha: float, k: int) -> float:
    """Level per comparison so that all ``k`` together err with probability at most ``alpha``."""
    return alpha / max(k, 1)


# --------------------------------------------------------------------------- planning


def samples_per_arm(
    kind: str,
    baseline_mean: float,
    baseline_sd: float | None,
    minimum_effect: float,
    alpha: float,
    power: float,
    split: float,
    *,
    direction: str = "Increase",
    tau: float | None = None,
) -> int | None:
    """Observations in the smaller arm for the always-valid interval to exclude 0 with
    probability ``power`` when the true lift is ``minimum_effect`` (None if impossible).

    ``split`` is the candidate's share in percent; ``tau`` defaults to
    ``mixture_tau(minimum_effect)``.  For a mean, the effect is taken to scale every
    value, so both arms share the baseline's coefficient of variation.  With ``n`` in
    the smaller arm, ``Var(L) = c / n``; the interval excludes 0 with probability
    ``Phi((|L| - halfwidth(V)) / sqrt(V))``, found equal to ``power`` by bisection.
    Decisions come earlier in many runs (the interval may exclude 0 at an earlier look),
    but Ship also needs the point estimate to reach the minimum effect.
    """
    values = (baseline_mean, minimum_effect, alpha, power, split)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    if not (0 < alpha < 1 and 0 < power < 1 and 1 <= split <= 99 and minimum_effect > 0):
        return None
    lift = _sign(direction) * minimum_effect
    mb, mc = baseline_mean, baseline_mean * (1 + lift)
    if kind == "ratio" and 0 < mb < 1 and 0 < mc < 1:
        cv2_b, cv2_c = (1 - mb) / mb, (1 - mc) / mc
    elif kind == "mean" and mb > 0 and mc > 0 and baseline_sd is not None and 0 < baseline_sd < math.inf:
        cv = baseline_sd / mb
        if not cv < 1e150:  # a mean vanishing against its spread: nothing to plan for
            return None
        cv2_b = cv2_c = cv * cv
    else:
        return None
    tau = mixture_tau(minimum_effect) if tau is None else tau
    share = split / 100
    small = min(share, 1 - share)
    c = cv2_c * small / share + cv2_b * small / (1 - share)
    target, z = abs(math.log1p(lift)), NormalDist().inv_cdf(power)

    def enough(n: int) -> bool:
        v = c / n
        return (target - half_width(v, alpha, tau)) / math.sqrt(v) >= z

    high = 1
    while not enough(high):
        high *= 2
        if high > MAX_COUNT:
            return None
    low = high // 2  # not enough (or 0); bisect to the smallest n that is
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def expected_duration(
    samples_per_arm: int | None, observations_per_second: float, split: float
) -> datetime.timedelta | None:
    """Time for the smaller arm to reach ``samples_per_arm`` at a total rate (both arms)."""
    if samples_per_arm is None or not isinstance(observations_per_second, (int, float)):
        return None
    if not (math.isfinite(observations_per_second) and observations_per_second > 0 and 1 <= split <= 99):
        return None
    seconds = samples_per_arm / min(split, 100 - split) * 100 / observations_per_second
    if not 0 <= seconds < datetime.timedelta.max.total_seconds():
        return None
    return datetime.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- segments


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    segment: str
    estimate: Estimate  # at alpha / (number of segments)
    reversed: bool  # significantly on the other side of 0 than the overall lift


def segment_table(
    per_segment: Mapping[str, tuple[Moments, Moments]],
    overall: Estimate,
    kind: str,
    alpha: float,
    tau: float,
    *,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> list[SegmentResult]:
    """Per segment (baseline, candidate): the lift at ``alpha / S`` (Bonferroni over S segments).

    A segment is ``reversed`` when its whole interval lies on the other side of 0 than the
    overall point estimate: the average hides a group that goes the other way.
    """
    level = bonferroni(alpha, len(per_segment))
    table = []
    for key, (base, cand) in per_segment.items():
        est = estimate(base, cand, kind, level, tau, names=names)
        flipped = False
        if est.interval is not None and overall.lift is not None:
            flipped = est.interval[1] < 0 if overall.lift > 0 else overall.lift < 0 and est.interval[0] > 0
        table.append(SegmentResult(key, est, flipped))
    return table


def unfair_segments(results: Sequence[SegmentResult], margin: float, direction: str) -> list[SegmentResult]:
    """Segments harmed by more than ``margin`` (relative), significantly after the correction:
    their whole interval lies beyond ``-margin`` on the harmful side."""
    sign = _sign(direction)
    return [
        r
        for r in results
        if r.estimate.interval is not None and max(sign * x for x in r.estimate.interval) < -margin
    ]
