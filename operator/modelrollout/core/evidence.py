"""Anytime-valid evidence on a fixed grid of effect sizes (see docs/statistics.md).

Per interval, the candidate's share of the interval's bad events is binomial
given their total, with a probability set by the candidate's *observed*
traffic share and the effect ``theta`` (candidate rate / baseline rate).  The
log-likelihood ratio against ``theta = 1`` is summed over intervals on a grid
of ``log(theta)`` values; that vector is the test's entire state.  Mixtures of
the likelihood ratios over the grid are e-processes: test martingales under
the null, so ``P(ever E >= 1/alpha) <= alpha`` however often one looks.

The same machinery tests sample-ratio mismatch, with the configured weight in
place of the observed share and a two-sided deviation in log-odds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import special  # not scipy.stats: importing it adds ~45 MB to every replica

# log(theta) from 1/32 to 32: wide enough for "all requests fail", fine enough
# (steps of ~6 %) for intervals a user reads.
GRID = np.linspace(-math.log(32), math.log(32), 121)
STEP = float(GRID[1] - GRID[0])
HARM_SCALE = 0.8  # half-normal prior on log(theta) for harm: most mass on 1x..5x
SRM_MIN_DEVIATION = math.log(1.1)  # share deviations below 10 % (in odds) do not count


def zeros() -> np.ndarray:
    return np.zeros_like(GRID)


def interval_loglik(candidate_events: float, baseline_events: float, share: float) -> np.ndarray:
    """``l_i(theta)`` of one interval on the grid: events split between variants at traffic ``share``."""
    total = candidate_events + baseline_events
    if total <= 0 or not 0 < share < 1:
        return zeros()  # nothing happened, or one variant had no traffic: no information
    theta = np.exp(GRID)
    return candidate_events * GRID - total * np.log1p(share * (theta - 1))


def ratio_loglik(
    candidate: float, total: float, weight: float, previous_weight: float | None = None
) -> np.ndarray:
    """``l(delta)`` of ``candidate`` of ``total`` requests when ``weight`` was configured.

    ``delta`` (the grid) is the deviation of the candidate's odds from the configured
    odds.  An interval whose window straddles a change from ``previous_weight`` has a
    composite null -- any share between the two weights -- and is measured against the
    likeliest of them: never more evidence than against the true share, so still valid.
    """
    if total <= 0 or not 0 < weight < 1:
        return zeros()
    low, high = sorted((weight, weight if previous_weight is None else previous_weight))
    null = min(max(candidate / total, low, 1e-9), high, 1 - 1e-9)
    odds = weight / (1 - weight)
    log_q = np.log(odds) + GRID - np.log1p(odds * np.exp(GRID))
    log_1q = -np.log1p(odds * np.exp(GRID))
    base = candidate * math.log(null) + (total - candidate) * math.log(1 - null)
    return candidate * log_q + (total - candidate) * log_1q - base  # type: ignore[no-any-return]


def _index(log_theta: float) -> int:
    return int(np.clip(round((log_theta - GRID[0]) / STEP), 0, len(GRID) - 1))


def _log_mix(loglik: np.ndarray, log_weights: np.ndarray) -> float:
    terms = loglik + log_weights  # -inf weights drop out of the sum
    top = float(terms.max())
    if not math.isfinite(top):  # no alternative at all (a tolerance at the grid's end)
        return -math.inf
    return top + math.log(float(np.exp(terms - top).sum()))


@functools.cache
def _harm_prior(null: int, increase: bool) -> np.ndarray:
    distance = GRID - GRID[null] if increase else GRID[null] - GRID
    harmful = distance > 1e-12
    # A half-normal density up to its constant, which the normalisation below removes.
    log_prior = np.where(harmful, -0.5 * (distance / HARM_SCALE) ** 2, -np.inf)
    log_prior[harmful] -= special.logsumexp(log_prior[harmful])
    return log_prior


@functools.cache
def _mismatch_prior() -> np.ndarray:
    far = np.abs(GRID) >= SRM_MIN_DEVIATION
    # A normal density up to its constant, which the normalisation below removes.
    log_prior = np.where(far, -0.5 * (GRID / 0.7) ** 2, -np.inf)
    log_prior[far] -= special.logsumexp(log_prior[far])
    return log_prior


def harm_evidence(loglik: np.ndarray, tolerance: float = 1.0, increase: bool = True) -> float:
    """``E``: mixture of likelihood ratios of effects beyond ``tolerance`` against ``tolerance``.

    Harm is an effect above the tolerance (more errors, more slow requests), or --
    ``increase=False`` -- below it (fewer conversions): testing the rare events in
    the harmful direction keeps the power that their common complement would lose.
    """
    null = _index(math.log(tolerance))
    log_e = _log_mix(loglik, _harm_prior(null, increase)) - float(loglik[null])
    return math.exp(min(log_e, 700.0)) if math.isfinite(log_e) else 0.0


def mismatch_evidence(loglik: np.ndarray) -> float:
    """``E`` against "shares as configured": deviations of at least 10 % in odds, either way.

    ``loglik`` is already relative to the null of each interval (the configured share, or
    for an interval straddling a weight change the likeliest share between the two weights,
    see :func:`ratio_loglik`), so the mixture itself is the evidence.
    """
    return math.exp(min(_log_mix(loglik, _mismatch_prior()), 700.0))


def estimate(loglik: np.ndarray) -> float:
    """The maximum-likelihood effect on the grid (1.0 when nothing was observed)."""
    if not np.any(loglik):
        return 1.0
    return math.exp(float(GRID[int(np.argmax(loglik))]))


@functools.cache
def _harm_priors(increase: bool) -> np.ndarray:
    """Every tolerance's harm prior at once: row = tolerance index, column = alternative."""
    return np.stack([_harm_prior(null, increase) for null in range(len(GRID))])


@functools.cache
def _harm_weights(increase: bool) -> np.ndarray:
    """``exp`` of :func:`_harm_priors`: the mixing weights themselves (0 where no alternative)."""
    weights: np.ndarray = np.exp(_harm_priors(increase))
    return weights


def _all_harm_log_evidence(loglik: np.ndarray, increase: bool) -> np.ndarray:
    """``log E`` of the harm test at every tolerance on the grid (-inf where no alternative).

    One matrix-vector product: ``E_i = sum_j w_ij exp(l_j - l_i)``, scaled by the largest
    ``l``.  Where that scaling underflows, the row's alternatives lie hundreds of log-units
    below the maximum, and -- the log-likelihood being concave -- so does ``log E``: its
    value is then inexact (or -inf) but far below any bound.  Where ``log E > -15`` it
    agrees with a row-wise log-sum-exp to 1e-9 (checked on random sequences of intervals).
    """
    top = float(loglik.max())
    with np.errstate(divide="ignore"):  # log(0): no alternative, or underflow (see above)
        sums = np.log(_harm_weights(increase) @ np.exp(loglik - top))
    return sums + top - loglik  # type: ignore[no-any-return]


def confidence_interval(loglik: np.ndarray, bound: float) -> tuple[float, float]:
    """Always-valid interval of ``theta``: every ``theta0`` that neither one-sided harm test
    (more than ``theta0``, less than ``theta0``) rejects at ``bound``.

    Built from the very tests the decision uses, so a rollback (evidence >= bound at
    the tolerance) always comes with an interval that excludes the tolerance; its
    coverage is at least ``1 - 2 / bound``.
    """
    limit = math.log(bound)
    kept = np.nonzero(
        (_all_harm_log_evidence(loglik, True) < limit) & (_all_harm_log_evidence(loglik, False) < limit)
    )[0]
    if kept.size == 0:  # cannot happen with a proper bound; report the estimate rather than nothing
        point = estimate(loglik)
        return point, point
    return math.exp(float(GRID[kept[0]])), math.exp(float(GRID[kept[-1]]))


def to_list(loglik: np.ndarray) -> list[float]:
    """Compact, JSON-friendly form for status (4 decimals of log-likelihood are plenty)."""
    return [round(float(v), 4) for v in loglik]


def from_list(values: Sequence[float] | None) -> np.ndarray:
    if values is None or len(values) != len(GRID):
        return zeros()
    return np.asarray(values, dtype=float)
