"""The A/B test's statistics: exact numbers, always-valid coverage under peeking, power, planning.

The Monte Carlo tests use fixed seeds and the module's own functions look by look, as
the operator calls them; their bounds come from the theory plus three Monte Carlo
standard errors, never from the values one run happened to give.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import numpy as np
import pytest

from modelrollout.core import lift
from modelrollout.core.lift import Estimate, Moments, Outcome

ALPHA = 0.05


def slack(p: float, runs: int) -> float:
    """Three Monte Carlo standard errors of a rate ``p`` measured on ``runs`` runs."""
    return 3 * math.sqrt(p * (1 - p) / runs)


def ratio(successes: float, total: float) -> Moments:
    return Moments().add(total, successes)


def made(low: float, high: float, point: float) -> Estimate:
    """A ready estimate with a given lift and interval, for the decision rules."""
    return Estimate(1.0, 1 + point, point, (low, high), math.log1p(point), 0.01, {}, True, "made up")


# --------------------------------------------------------------------------- exact numbers


def test_ratio_delta_method_and_mixture_half_width_by_hand() -> None:
    est = lift.estimate(ratio(100, 1000), ratio(120, 1000), "ratio", 0.05, math.log(1.1))
    # Var(L) = (1 - 0.1) / (1000 * 0.1) + (1 - 0.12) / (1000 * 0.12) = 0.009 + 0.0073333
    assert est.variance == pytest.approx(0.009 + 0.88 / 120, rel=1e-12)
    assert est.log_lift == pytest.approx(math.log(1.2))
    assert est.lift == pytest.approx(0.2)
    # tau^2 = log(1.1)^2 = 0.00908403; (V + tau^2) / tau^2 = 2.79803; V * that = 0.0457012;
    # 2 log(20) + log((V + tau^2) / V) = 5.99146 + 0.44223 = 6.43369; sqrt(0.294028) = 0.542242
    width = 0.5422423
    assert lift.half_width(0.009 + 0.88 / 120, 0.05, math.log(1.1)) == pytest.approx(width, rel=1e-6)
    assert est.interval == pytest.approx(
        (math.exp(math.log(1.2) - width) - 1, math.exp(math.log(1.2) + width) - 1)
    )
    assert est.interval == pytest.approx((-0.302268, 1.063831), abs=1e-6)
    assert est.ready and est.samples == {"baseline": 1000, "candidate": 1000}
    assert est.baseline == pytest.approx(0.1) and est.candidate == pytest.approx(0.12)


def test_mean_with_squares_by_hand() -> None:
    base = Moments().add(2, 3, 5).add(2, 7, 25)  # values 1, 2 | 3, 4: sum 10, squares 30
    cand = Moments().add(4, 14, 54)  # values 2, 3, 4, 5
    est = lift.estimate(base, cand, "mean", 0.05, 0.1)
    # both variances (30 - 100/4) / 3 = (54 - 196/4) / 3 = 5/3; means 2.5 and 3.5
    assert est.variance == pytest.approx((5 / 3) / (4 * 2.5**2) + (5 / 3) / (4 * 3.5**2))
    assert est.lift == pytest.approx(0.4)
    width = lift.half_width(est.variance or 0, 0.05, 0.1)
    assert est.interval == pytest.approx(
        (math.exp(math.log(1.4) - width) - 1, math.exp(math.log(1.4) + width) - 1)
    )


def test_batch_means_by_hand_and_only_from_five_intervals() -> None:
    base, cand = Moments(), Moments()
    for i, ((nb, sb), (nc, sc)) in enumerate(
        zip(
            [(10, 20), (20, 50), (10, 30), (20, 30), (40, 90)],
            [(10, 25), (20, 60), (10, 30), (20, 40), (40, 100)],
            strict=True,
        )
    ):
        base, cand = base.add(nb, sb), cand.add(nc, sc)
        est = lift.estimate(base, cand, "mean", 0.05, 0.1)
        if i < 4:
            assert not est.ready and est.interval is None
            assert "not enough intervals yet" in est.reason and est.lift is not None
    # baseline: sum s^2/n = 40 + 125 + 90 + 45 + 202.5 = 502.5, S^2/N = 220^2/100 = 484 -> 18.5/4
    # candidate: 62.5 + 180 + 90 + 80 + 250 = 662.5, 255^2/100 = 650.25 -> 12.25/4
    assert est.ready
    assert est.variance == pytest.approx(4.625 / (100 * 2.2**2) + 3.0625 / (100 * 2.55**2))
    assert est.lift == pytest.approx(2.55 / 2.2 - 1)


def test_moments_round_trip_and_ignore_garbage() -> None:
    m = Moments().add(10, 3, 5).add(20, 4, 6)
    assert m == Moments(30, 7, 11, 9 / 10 + 16 / 20, 2)
    assert Moments.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.add(5, 1).squares is None  # one interval without squares: unknown for good
    assert m.add(5, 1).add(5, 1, 1).squares is None
    for count, total, squares in [
        (math.nan, 1, None),
        (10, math.inf, None),
        (-1, 0, None),
        (10, -2, None),
        (1e12, 5, None),
        (10, 1, math.nan),
        (10, 1, -1),
        (0, 0, None),  # an empty interval: nothing to add
        (0, 3, None),
        ("10", 1, None),
        (True, 1, None),
    ]:
        assert m.add(count, total, squares) is m  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decisions


def test_judge_increase() -> None:
    assert lift.judge(made(0.031, 0.214, 0.12), "Increase", 0.02) == (
        Outcome.SHIP,
        "lift +12.0% [+3.1%, +21.4%] excludes 0 and reaches the minimum effect +2.0%",
    )
    assert lift.judge(made(0.031, 0.214, 0.12), "Increase", 0.02, metric="conversion")[1].startswith(
        "conversion +12.0%"
    )
    assert lift.judge(made(0.01, 0.30, 0.04), "Increase", 0.05)[0] is None  # significant, too small yet
    assert lift.judge(made(-0.01, 0.30, 0.10), "Increase", 0.05)[0] is None  # covers 0
    outcome, why = lift.judge(made(-0.3, -0.01, -0.1), "Increase", 0.05)
    assert outcome is Outcome.DISCARD and "harmful" in why
    outcome, why = lift.judge(made(-0.02, 0.04, 0.01), "Increase", 0.05)
    assert outcome is Outcome.DISCARD and "futility" in why and "+5.0%" in why
    outcome, why = lift.judge(made(0.01, 0.04, 0.02), "Increase", 0.05)  # real but below the minimum
    assert outcome is Outcome.DISCARD and "futility" in why


def test_judge_decrease_flips_the_sides() -> None:
    outcome, why = lift.judge(made(-0.2, -0.05, -0.12), "Decrease", 0.1)
    assert outcome is Outcome.SHIP and "-10.0%" in why
    assert lift.judge(made(-0.2, -0.05, -0.08), "Decrease", 0.1)[0] is None
    assert lift.judge(made(0.02, 0.2, 0.1), "Decrease", 0.1)[0] is Outcome.DISCARD  # harm: it went up
    assert lift.judge(made(-0.05, 0.02, -0.01), "Decrease", 0.1)[0] is Outcome.DISCARD  # -10 % ruled out
    assert lift.judge(made(-0.3, 0.02, -0.01), "Decrease", 0.1)[0] is None


def test_deadline_aa_and_bonferroni() -> None:
    assert lift.at_deadline(made(-0.01, 0.30, 0.10), "Increase", 0.05)[0] is Outcome.ITERATE
    assert lift.at_deadline(made(0.01, 0.30, 0.10), "Increase", 0.05)[0] is Outcome.SHIP
    not_ready = lift.estimate(Moments(), Moments())
    assert lift.at_deadline(not_ready, "Increase", 0.05)[0] is Outcome.ITERATE
    assert lift.judge(not_ready, "Increase", 0.05) == (None, not_ready.reason)
    assert lift.aa_check(made(-0.01, 0.02, 0.005)) == (True, "lift +0.5% [-1.0%, +2.0%] covers 0")
    assert lift.aa_check(made(0.001, 0.02, 0.01))[0] is False
    assert lift.aa_check(not_ready)[0] is True
    assert lift.bonferroni(0.05, 4) == pytest.approx(0.0125)
    assert lift.bonferroni(0.05, 0) == 0.05


def test_mixture_tau() -> None:
    assert lift.mixture_tau(0.1) == pytest.approx(math.log(1.1))
    assert lift.mixture_tau(-0.1) == pytest.approx(-math.log(0.9))
    for bad in (0.0, math.nan, math.inf, -1.0, -5.0):
        assert lift.mixture_tau(bad) == lift.DEFAULT_TAU


# --------------------------------------------------------------------------- Monte Carlo


def _binomial_runs(
    runs: int, looks: int, per_look: int, p_base: float, p_cand: float, seed: int, tau: float
) -> list[list[Estimate]]:
    """Every run's estimate at every look: ``per_look`` new users per arm and look."""
    rng = np.random.default_rng(seed)
    xb = rng.binomial(per_look, p_base, size=(runs, looks))
    xc = rng.binomial(per_look, p_cand, size=(runs, looks))
    all_runs = []
    for r in range(runs):
        base, cand, ests = Moments(), Moments(), []
        for i in range(looks):
            base, cand = base.add(per_look, int(xb[r, i])), cand.add(per_look, int(xc[r, i]))
            ests.append(lift.estimate(base, cand, "ratio", ALPHA, tau))
        all_runs.append(ests)
    return all_runs


def _excludes(value: float, est: Estimate) -> bool:
    assert est.interval is not None
    return not est.interval[0] <= value <= est.interval[1]


def test_aa_always_valid_under_peeking_while_the_naive_interval_is_not() -> None:
    runs = 1000
    all_runs = _binomial_runs(runs, 50, 2000, 0.05, 0.05, seed=11, tau=lift.mixture_tau(0.1))
    ever = sum(any(_excludes(0.0, est) for est in ests) for ests in all_runs) / runs
    naive = (
        sum(
            any(abs(est.log_lift or 0) > 1.96 * math.sqrt(est.variance or 0) for est in ests)
            for ests in all_runs
        )
        / runs
    )
    assert ever <= ALPHA + slack(ALPHA, runs)
    assert naive > 3 * ALPHA  # a fixed 95 % interval checked 50 times is wrong far more often
    # and one look at a time it is a fair 95 % interval: peeking, not the interval, is the problem
    last = sum(abs(ests[-1].log_lift or 0) > 1.96 * math.sqrt(ests[-1].variance or 0) for ests in all_runs)
    assert last / runs <= ALPHA + slack(ALPHA, runs)


def test_a_real_lift_is_shipped_by_the_planned_size_and_covered() -> None:
    truth, effect, runs, per_look = 0.15, 0.10, 400, 2000
    planned = lift.samples_per_arm("ratio", 0.05, None, effect, ALPHA, 0.8, 50)
    assert planned is not None
    looks = math.ceil(planned / per_look)
    all_runs = _binomial_runs(
        runs, looks, per_look, 0.05, 0.05 * (1 + truth), seed=12, tau=lift.mixture_tau(effect)
    )
    outcomes = []
    for ests in all_runs:
        decided = (lift.judge(est, "Increase", effect)[0] for est in ests)
        outcomes.append(next((o for o in decided if o is not None), None))
    assert outcomes.count(Outcome.SHIP) / runs >= 0.9
    assert outcomes.count(Outcome.DISCARD) / runs <= ALPHA
    missed = sum(any(_excludes(truth, est) for est in ests) for ests in all_runs) / runs
    assert missed <= ALPHA + slack(ALPHA, runs)  # the truth stays inside at every look: coverage >= 95 %


def test_at_exactly_the_minimum_effect_ship_needs_luck_as_well() -> None:
    """A true lift equal to the minimum effect: the interval leaves 0 at the planned size with
    the planned power, but Ship also wants the point estimate at or above the minimum effect."""
    effect, runs, per_look = 0.15, 400, 2000
    planned = lift.samples_per_arm("ratio", 0.05, None, effect, ALPHA, 0.8, 50)
    assert planned is not None
    looks = math.ceil(planned / per_look)
    all_runs = _binomial_runs(
        runs, looks, per_look, 0.05, 0.05 * (1 + effect), seed=13, tau=lift.mixture_tau(effect)
    )
    shipped = sum(
        any(lift.judge(est, "Increase", effect)[0] is Outcome.SHIP for est in ests) for ests in all_runs
    )
    assert 0.5 < shipped / runs < 0.9


def _lognormal_sums(
    rng: np.random.Generator, n: int, mu: float, sigma: float, intervals: int
) -> list[tuple[int, float, float]]:
    values = rng.lognormal(mu, sigma, size=(intervals, n))
    return [(n, float(row.sum()), float((row * row).sum())) for row in values]


@pytest.mark.parametrize("squares", [True, False])
def test_mean_metric_lognormal_revenue_coverage(squares: bool) -> None:
    """Revenue per request, lognormal (skewed): +10 % on every value, 20 looks of 500 per arm."""
    runs, looks, sigma, truth = 300, 20, 1.0, 0.10
    rng = np.random.default_rng(21 if squares else 22)
    tau = lift.mixture_tau(0.05)
    missed, shipped, waited = 0, 0, []
    for _ in range(runs):
        base, cand, miss, ship, first = Moments(), Moments(), False, False, None
        for i, (b, c) in enumerate(
            zip(
                _lognormal_sums(rng, 500, 0.0, sigma, looks),
                _lognormal_sums(rng, 500, math.log1p(truth), sigma, looks),
                strict=True,
            )
        ):
            base = base.add(b[0], b[1], b[2] if squares else None)
            cand = cand.add(c[0], c[1], c[2] if squares else None)
            est = lift.estimate(base, cand, "mean", ALPHA, tau)
            if est.ready:
                first = i if first is None else first
                miss |= _excludes(truth, est)
                ship |= lift.judge(est, "Increase", 0.05)[0] is Outcome.SHIP
        missed += miss
        shipped += ship
        waited.append(first)
    assert set(waited) == {0 if squares else lift.MIN_INTERVALS - 1}
    assert missed / runs <= ALPHA + slack(ALPHA, runs)
    assert shipped / runs > 0.8  # the test has power on a skewed metric too


@pytest.mark.parametrize("squares", [True, False])
def test_mean_metric_aa_under_peeking(squares: bool) -> None:
    """Identical lognormal arms, 30 looks of 500 per arm: the interval ever excludes 0 in at
    most alpha of the runs, also when the variance comes from a few batch means."""
    runs, rng, tau = 300, np.random.default_rng(24 if squares else 25), lift.mixture_tau(0.05)
    ever = 0
    for _ in range(runs):
        base, cand, wrong = Moments(), Moments(), False
        for b, c in zip(
            _lognormal_sums(rng, 500, 0.0, 1.0, 30), _lognormal_sums(rng, 500, 0.0, 1.0, 30), strict=True
        ):
            base = base.add(b[0], b[1], b[2] if squares else None)
            cand = cand.add(c[0], c[1], c[2] if squares else None)
            est = lift.estimate(base, cand, "mean", ALPHA, tau)
            wrong |= est.ready and _excludes(0.0, est)
        ever += wrong
    assert ever / runs <= ALPHA + slack(ALPHA, runs)


def test_batch_means_agree_with_squares_on_a_big_sample() -> None:
    rng = np.random.default_rng(23)
    with_sq, without = Moments(), Moments()
    for n, s, q in _lognormal_sums(rng, 1000, 0.0, 1.0, 200):
        with_sq, without = with_sq.add(n, s, q), without.add(n, s)
    a = lift.estimate(with_sq, with_sq, "mean", ALPHA, 0.1).variance
    b = lift.estimate(without, without, "mean", ALPHA, 0.1).variance
    assert a is not None and b is not None
    assert b == pytest.approx(a, rel=0.25)  # 199 degrees of freedom: about 10 % noise
    assert a == pytest.approx(2 * (math.e - 1) / 200_000, rel=0.15)  # CV^2 = e^(sigma^2) - 1


# --------------------------------------------------------------------------- planning


def test_samples_per_arm_moves_the_right_way() -> None:
    sizes = [lift.samples_per_arm("ratio", 0.05, None, e, ALPHA, 0.8, 50) for e in (0.05, 0.1, 0.2, 0.4)]
    assert all(s is not None for s in sizes)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4  # type: ignore[type-var]
    by_power = [lift.samples_per_arm("ratio", 0.05, None, 0.1, ALPHA, p, 50) for p in (0.5, 0.8, 0.95)]
    assert by_power == sorted(by_power) and len(set(by_power)) == 3  # type: ignore[type-var]
    stricter = lift.samples_per_arm("ratio", 0.05, None, 0.1, 0.01, 0.8, 50)
    assert stricter is not None and stricter > (sizes[1] or 0)
    fixed = (1.959964 + 0.841621) ** 2 * 2 * 0.95 / 0.05 / math.log(1.1) ** 2  # fixed-horizon z-test
    assert fixed < (sizes[1] or 0) < 3 * fixed  # looking freely costs, but not absurdly
    mean = lift.samples_per_arm("mean", 2.0, 3.0, 0.1, ALPHA, 0.8, 50)
    assert mean is not None and mean < (sizes[1] or 0)  # CV^2 2.25 against 19 for a 5 % rate


@pytest.mark.parametrize(
    ("kind", "split", "seed"), [("ratio", 50, 31), ("ratio", 20, 32), ("ratio", 90, 33), ("mean", 50, 34)]
)
def test_the_plan_achieves_its_power(kind: str, split: int, seed: int) -> None:
    """At the planned size, one look: the interval excludes 0 in about ``power`` of the runs."""
    runs, power, effect, rng = 1000, 0.8, 0.1, np.random.default_rng(seed)
    p, mu, sigma = 0.05, 0.0, 1.0
    sd = math.sqrt((math.exp(sigma**2) - 1) * math.exp(2 * mu + sigma**2))
    mean = p if kind == "ratio" else math.exp(mu + sigma**2 / 2)
    n = lift.samples_per_arm(kind, mean, sd if kind == "mean" else None, effect, ALPHA, power, split)
    assert n is not None
    share = split / 100
    n_cand, n_base = (
        round(n * share / min(share, 1 - share)),
        round(n * (1 - share) / min(share, 1 - share)),
    )
    assert min(n_cand, n_base) == n
    tau = lift.mixture_tau(effect)
    hits = 0
    for _ in range(runs):
        if kind == "ratio":
            base = Moments().add(n_base, int(rng.binomial(n_base, p)))
            cand = Moments().add(n_cand, int(rng.binomial(n_cand, p * (1 + effect))))
        else:  # revenue per request, lognormal
            base = Moments().add(n_base, *_sum_squares(rng, n_base, mu, sigma))
            cand = Moments().add(n_cand, *_sum_squares(rng, n_cand, mu + math.log1p(effect), sigma))
        est = lift.estimate(base, cand, kind, ALPHA, tau)
        hits += est.interval is not None and est.interval[0] > 0
    assert hits / runs == pytest.approx(power, abs=0.06)


def _sum_squares(rng: np.random.Generator, n: int, mu: float, sigma: float) -> tuple[float, float]:
    values = rng.lognormal(mu, sigma, size=n)
    return float(values.sum()), float((values * values).sum())


def test_planning_degenerate_and_duration() -> None:
    assert lift.samples_per_arm("ratio", 0.0, None, 0.1, ALPHA, 0.8, 50) is None
    assert lift.samples_per_arm("ratio", 0.95, None, 0.1, ALPHA, 0.8, 50) is None  # 104.5 % conversion
    assert lift.samples_per_arm("ratio", 0.5, None, 1.0, ALPHA, 0.8, 50, direction="Decrease") is None
    assert lift.samples_per_arm("mean", 2.0, None, 0.1, ALPHA, 0.8, 50) is None
    assert lift.samples_per_arm("mean", 2.0, 0.0, 0.1, ALPHA, 0.8, 50) is None
    assert lift.samples_per_arm("ratio", 0.05, None, 1e-9, ALPHA, 0.8, 50) is None  # beyond any traffic
    for args in [
        (math.nan, 0.1, ALPHA, 0.8, 50),
        (0.05, 0.1, 1.0, 0.8, 50),
        (0.05, 0.1, ALPHA, 1.0, 50),
        (0.05, 0.1, ALPHA, 0.8, 0),
        (0.05, -0.1, ALPHA, 0.8, 50),
        (0.05, 0.1, ALPHA, 0.8, math.inf),
    ]:
        assert lift.samples_per_arm("ratio", args[0], None, *args[1:]) is None
    assert lift.samples_per_arm("other", 0.05, None, 0.1, ALPHA, 0.8, 50) is None
    decrease = lift.samples_per_arm("ratio", 0.05, None, 0.1, ALPHA, 0.8, 50, direction="Decrease")
    assert decrease is not None
    # 10,000 in the smaller (candidate) arm at a 20 % split: 50,000 in all, at 100/s
    assert lift.expected_duration(10_000, 100.0, 20) == datetime.timedelta(seconds=500)
    assert lift.expected_duration(10_000, 100.0, 80) == datetime.timedelta(seconds=500)
    assert lift.expected_duration(10_000, 100.0, 50) == datetime.timedelta(seconds=200)
    for rate, split in [(0.0, 50), (math.nan, 50), (-1.0, 50), (1e-300, 50), (100.0, 0)]:
        assert lift.expected_duration(10_000, rate, split) is None
    assert lift.expected_duration(None, 100.0, 50) is None


# --------------------------------------------------------------------------- segments


def test_segments_reversal_and_fairness() -> None:
    per_segment = {
        "region=eu": (ratio(1000, 20_000), ratio(1300, 20_000)),  # +30 %
        "region=us": (ratio(1000, 20_000), ratio(700, 20_000)),  # -30 %: significantly the other way
        "region=apac": (ratio(1000, 20_000), ratio(960, 20_000)),  # -4 %: within a 10 % margin
        "region=latam": (ratio(10, 200), ratio(11, 200)),  # too little to say anything
    }
    overall = lift.estimate(ratio(3010, 60_200), ratio(3971, 60_200), "ratio", ALPHA, 0.1)
    assert overall.lift is not None and overall.lift > 0
    table = lift.segment_table(per_segment, overall, "ratio", ALPHA, 0.1)
    by = {r.segment: r for r in table}
    assert [r.segment for r in table] == list(per_segment)
    assert [k for k, r in by.items() if r.reversed] == ["region=us"]
    # each at alpha / 4: wider than the same counts at alpha
    alone = lift.estimate(*per_segment["region=eu"], "ratio", ALPHA, 0.1).interval
    corrected = by["region=eu"].estimate.interval
    assert alone is not None and corrected is not None and corrected[0] < alone[0]
    assert [r.segment for r in lift.unfair_segments(table, 0.1, "Increase")] == ["region=us"]
    assert lift.unfair_segments(table, 0.5, "Increase") == []  # -30 % is within a 50 % margin
    # for a metric to decrease (latency, churn), harm is an increase: the eu segment
    assert [r.segment for r in lift.unfair_segments(table, 0.1, "Decrease")] == ["region=eu"]
    # an overall decrease flips which side counts as reversed
    down = lift.segment_table(per_segment, made(-0.3, -0.1, -0.2), "ratio", ALPHA, 0.1)
    assert [r.segment for r in down if r.reversed] == ["region=eu"]
    assert not any(
        r.reversed
        for r in lift.segment_table(per_segment, lift.estimate(Moments(), Moments()), "ratio", ALPHA, 0.1)
    )


# --------------------------------------------------------------------------- degenerate input


GARBAGE: list[object] = [
    None,
    5,
    "x",
    [],
    {},
    {"count": "a", "total": 1, "batch": 0, "intervals": 1},
    {"count": -1, "total": 1, "batch": 0, "intervals": 1},
    {"count": math.nan, "total": 1, "batch": 0, "intervals": 1},
    {"count": 10, "total": math.inf, "batch": 0, "intervals": 1},
    {"count": 10, "total": 1, "batch": 0, "intervals": 1.5},
    {"count": 10, "total": 1, "batch": 0, "intervals": 1, "squares": "y"},
    {"count": 10, "total": 1},
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_dicts_start_fresh(data: object) -> None:
    assert Moments.from_dict(data) == Moments()


def test_degenerate_inputs_never_raise_nor_give_nan() -> None:
    nan = math.nan
    cases = [
        Moments(),
        ratio(0, 100),
        ratio(100, 100),
        ratio(5, 100),
        ratio(150, 100),  # more successes than requests
        Moments().add(1, 3, 9),  # one value: no variance
        Moments().add(10, 30, 90),  # ten identical values
        Moments().add(10, 30),
        Moments(nan, 1, 1, 1, 1),  # built by hand from garbage
        Moments(10, -5, None, 1, 1),
        Moments(1e300, 1e-300, 0.0, 0.0, 1),
        Moments(1e-300, 1e300, None, 0.0, 1),
        *(Moments.from_dict(g) for g in GARBAGE),
    ]
    for kind in ("ratio", "mean", "median"):
        for alpha, tau in [
            (ALPHA, 0.1),
            (nan, 0.1),
            (0.0, 0.1),
            (ALPHA, 0.0),
            (ALPHA, nan),
            (ALPHA, math.inf),
        ]:
            for base in cases:
                for cand in cases:
                    est = lift.estimate(base, cand, kind, alpha, tau)
                    json.dumps(dataclasses.asdict(est), allow_nan=False)  # no NaN or inf anywhere
                    assert est.ready == (est.interval is not None) and est.reason
                    lift.judge(est, "Increase", 0.05)
                    lift.at_deadline(est, "Decrease", nan)
                    lift.aa_check(est)
    assert not lift.estimate(ratio(0, 100), ratio(5, 100)).ready  # zero baseline: no relative lift
    zero = lift.estimate(ratio(5, 100), ratio(0, 100))
    assert not zero.ready and zero.lift == -1.0 and "zero" in zero.reason
    flat = lift.estimate(ratio(100, 100), ratio(100, 100))
    assert not flat.ready and "variance" in flat.reason
    table = lift.segment_table(
        {"a": (Moments(), Moments.from_dict("x"))}, made(0.1, 0.2, 0.15), "ratio", nan, nan
    )
    assert not table[0].reversed and lift.unfair_segments(table, nan, "Increase") == []


def test_vanishing_means_do_not_crash_the_estimate_or_the_plan() -> None:
    """Found by fuzzing: squares of tiny means underflow to 0 (division) or sd/mean overflows."""
    est = lift.estimate(lift.Moments().add(1, 1), lift.Moments().add(1, 4.9e-307), "ratio")
    json.dumps(dataclasses.asdict(est), allow_nan=False)  # whatever it says, it says it in JSON
    assert est.interval is None or est.interval[0] <= (est.lift or 0) <= est.interval[1]
    assert lift.samples_per_arm("mean", 1e-300, 1e10, 0.1, 0.05, 0.8, 50) is None
