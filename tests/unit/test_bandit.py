"""The bandit: constraints on the weights, Thompson sampling, stratified estimates, stopping, the winner.

Monte Carlo checks use fixed seeds and bounds from the theory plus a few standard
errors, never the values one run happened to give.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from modelrollout.core import bandit, lift
from modelrollout.core.bandit import ArmStats

ROOT = Path(__file__).resolve().parents[2]
ARMS = [f"arm-{i}" for i in range(8)]
ALLOCATORS = {
    "thompson": bandit.ThompsonAllocator(draws=2000),
    "epsilon-greedy": bandit.EpsilonGreedyAllocator(0.1),
    "ucb1": bandit.UCBAllocator(),
    "fixed": bandit.FixedAllocator(),
}


def fed(schedule: list[dict[str, tuple[float, float]]], baseline: str = "a") -> dict[str, ArmStats]:
    """The sums after feeding the intervals of ``schedule`` (per arm: successes, trials)."""
    sums: dict[str, ArmStats] = {}
    for counts in schedule:
        sums = bandit.add_interval(sums, counts, baseline=baseline)
    return sums


def composition(draw: st.DrawFn, arms: int, floor: int) -> list[int]:
    """Feasible weights: ``arms`` integers of at least ``floor`` summing to 100."""
    spare = 100 - arms * floor
    cuts = sorted(draw(st.lists(st.integers(0, spare), min_size=arms - 1, max_size=arms - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, spare], strict=True)]
    return [floor + p for p in parts]


@st.composite
def problems(draw: st.DrawFn, feasible_previous: bool = True) -> dict:
    k = draw(st.integers(1, 8))
    arms = ARMS[:k]
    floor = draw(st.integers(0, 100 // k))
    step = draw(st.integers(1, 100))
    dropped = set(draw(st.lists(st.sampled_from(arms), max_size=k - 1, unique=True)))
    if feasible_previous:
        previous: dict = dict(zip(arms, composition(draw, k, floor), strict=True))
    else:
        junk = st.one_of(
            st.none(), st.integers(-50, 300), st.floats(allow_nan=True), st.text(max_size=3), st.booleans()
        )
        previous = draw(st.dictionaries(st.sampled_from(arms), junk))
    counts = [
        {arm: (draw(st.integers(0, 50)), 50 + draw(st.integers(0, 500))) for arm in arms}
        for _ in range(draw(st.integers(0, 3)))
    ]
    return {
        "arms": arms,
        "floor": floor,
        "step": step,
        "dropped": dropped,
        "previous": previous,
        "stats": fed(counts, arms[0]) if counts else {arm: ArmStats() for arm in arms},
        "allocator": draw(st.sampled_from(sorted(ALLOCATORS))),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _allocate(p: dict) -> dict[str, int]:
    stats_ = {arm: p["stats"].get(arm, ArmStats()) for arm in p["arms"]}
    return ALLOCATORS[p["allocator"]].allocate(
        stats_,
        p["previous"],
        np.random.default_rng(p["seed"]),
        min_weight=p["floor"],
        max_step_change=p["step"],
        dropped=p["dropped"],
    )


def _check_basics(p: dict, weights: dict[str, int]) -> None:
    assert set(weights) >= set(p["arms"])
    assert all(isinstance(w, int) for w in weights.values())
    assert sum(weights.values()) == 100
    for arm in p["arms"]:
        if arm in p["dropped"]:
            assert weights[arm] == 0
        else:
            assert p["floor"] <= weights[arm] <= 100


# --------------------------------------------------------------------------- constraints


@settings(max_examples=300, deadline=None)
@given(problems())
def test_constraints_hold_from_feasible_weights(p):
    weights = _allocate(p)
    _check_basics(p, weights)
    active = [arm for arm in p["arms"] if arm not in p["dropped"]]
    freed = sum(p["previous"][arm] for arm in p["dropped"])
    # Nothing dropped: the step limit holds as given.  Dropped weight must go somewhere: spread
    # over the k remaining arms, no arm moves more than max(step, ceil(freed / k)).
    bound = max(p["step"], math.ceil(freed / len(active)))
    for arm in active:
        assert abs(weights[arm] - p["previous"][arm]) <= bound
        if not p["dropped"]:
            assert abs(weights[arm] - p["previous"][arm]) <= p["step"]


@settings(max_examples=200, deadline=None)
@given(problems(feasible_previous=False))
def test_constraints_hold_from_garbage_previous_weights(p):
    _check_basics(p, _allocate(p))


def test_projection_is_the_closest_allowed_point():
    wanted = {"a": 0.7, "b": 0.3}
    assert bandit.project(wanted, {"a": 50, "b": 50}, min_weight=5, max_step_change=100) == {"a": 70, "b": 30}
    assert bandit.project(wanted, {"a": 50, "b": 50}, min_weight=5, max_step_change=10) == {"a": 60, "b": 40}
    assert bandit.project({"a": 1.0, "b": 0.0}, {"a": 50, "b": 50}, min_weight=5, max_step_change=100) == {
        "a": 95,
        "b": 5,
    }
    # Three arms, one pinned by the step limit: the rest of the sum is repaired on the others.
    got = bandit.project(
        {"a": 0.0, "b": 0.5, "c": 0.5}, {"a": 80, "b": 10, "c": 10}, min_weight=5, max_step_change=20
    )
    assert got == {"a": 60, "b": 20, "c": 20}


def test_a_dropped_arm_gets_zero_at_once():
    previous = {"a": 20, "b": 60, "c": 20}
    got = bandit.ThompsonAllocator(2000).allocate(
        {arm: ArmStats() for arm in previous},
        previous,
        np.random.default_rng(1),
        min_weight=5,
        max_step_change=10,
        dropped={"b"},
    )
    assert got["b"] == 0 and sum(got.values()) == 100
    assert max(abs(got[arm] - previous[arm]) for arm in "ac") <= 30  # ceil(60 / 2)


def test_a_new_arm_jumps_to_the_floor():
    got = bandit.project({"a": 1, "b": 1, "c": 1}, {"a": 100}, min_weight=30, max_step_change=10)
    assert sum(got.values()) == 100 and min(got.values()) >= 30


@pytest.mark.parametrize(
    ("arms", "floor", "step", "dropped", "message"),
    [
        (3, 34, 20, (), "infeasible"),
        (2, 5, 20, ("arm-0", "arm-1"), "every arm is dropped"),
        (2, -1, 20, (), "min_weight"),
        (2, 5, 101, (), "max_step_change"),
        (2, 5.0, 20, (), "min_weight"),
    ],
)
def test_infeasible_or_invalid_inputs_raise(arms, floor, step, dropped, message):
    names = ARMS[:arms]
    for allocator in ALLOCATORS.values():
        with pytest.raises(ValueError, match=message):
            allocator.allocate(
                {a: ArmStats() for a in names},
                {},
                np.random.default_rng(0),
                min_weight=floor,
                max_step_change=step,
                dropped=dropped,
            )


def test_the_floor_of_the_remaining_arms_decides_feasibility():
    # 3 arms at 40 % would need 120 %, but with one dropped 80 % is fine.
    got = bandit.FixedAllocator().allocate(
        {a: ArmStats() for a in "abc"},
        {"a": 34, "b": 33, "c": 33},
        np.random.default_rng(0),
        min_weight=40,
        max_step_change=20,
        dropped={"c"},
    )
    assert got == {"a": 50, "b": 50, "c": 0}


# --------------------------------------------------------------------------- allocators


def test_thompson_moves_most_weight_to_a_clearly_best_arm():
    rates = {"a": 0.02, "b": 0.02, "c": 0.05}
    world, rng = np.random.default_rng(11), np.random.default_rng(12)
    weights = {"a": 34, "b": 33, "c": 33}
    sums = {arm: ArmStats() for arm in rates}
    history = []
    for _ in range(30):
        trials = world.multinomial(1000, [weights[a] / 100 for a in rates])
        counts = {
            a: (float(world.binomial(n, rates[a])), float(n)) for a, n in zip(rates, trials, strict=True)
        }
        sums = bandit.add_interval(sums, counts)
        weights = bandit.ThompsonAllocator().allocate(sums, weights, rng, min_weight=5, max_step_change=20)
        history.append(weights["c"])
    assert history[-1] == 90  # everything but the two floors
    assert min(history[-10:]) >= 85


def test_epsilon_greedy_and_ucb_targets():
    sums = fed([{"a": (10.0, 100.0), "b": (20.0, 100.0), "c": (5.0, 100.0)}])
    rng = np.random.default_rng(0)
    assert bandit.EpsilonGreedyAllocator(0.3).target(sums, rng) == pytest.approx([0.1, 0.8, 0.1])
    assert bandit.UCBAllocator().target(sums, rng) == [0.0, 1.0, 0.0]
    # An untried arm comes first for both.
    fresh = {**sums, "d": ArmStats()}
    assert bandit.UCBAllocator().target(fresh, rng) == [0.0, 0.0, 0.0, 1.0]
    assert bandit.EpsilonGreedyAllocator(0.0).target(fresh, rng) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        bandit.EpsilonGreedyAllocator(1.5)


def test_fixed_split_is_reached_within_the_step_limit():
    weights: dict[str, int] = {"a": 100, "b": 0, "c": 0}
    seen = []
    for _ in range(4):
        weights = bandit.FixedAllocator().allocate(
            {a: ArmStats() for a in weights},
            weights,
            np.random.default_rng(0),
            min_weight=5,
            max_step_change=20,
        )
        seen.append(dict(weights))
    assert seen[0] == {"a": 80, "b": 10, "c": 10}  # b and c: 0 -> 5 (floor) -> up to 20 by the step
    assert seen[-1] == {"a": 34, "b": 33, "c": 33}


# --------------------------------------------------------------------------- probability of being best


def _exact_two_arm(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), by quadrature."""
    value, _ = integrate.quad(
        lambda x: stats.beta.pdf(x, a2, b2) * stats.beta.cdf(x, a1, b1), 0, 1, limit=200
    )
    return float(value)


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), [(3, 10, 5, 10), (40, 1000, 55, 1000), (0, 0, 2, 3)])
def test_probability_best_matches_the_analytic_two_arm_case(s1, n1, s2, n2):
    sums = fed([{"a": (s1, n1), "b": (s2, n2)}]) if n1 else fed([{"b": (s2, n2)}], "b") | {"a": ArmStats()}
    draws = 200_000
    got = bandit.probability_best(sums, np.random.default_rng(5), draws)
    exact = _exact_two_arm(1 + s1, 1 + n1 - s1, 1 + s2, 1 + n2 - s2)
    assert got["b"] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / draws) + 1e-9)
    assert got["a"] + got["b"] == pytest.approx(1.0, abs=1e-12)


def test_probability_best_sums_to_one_and_handles_edges():
    sums = fed([{f"x{i}": (float(i), 50.0) for i in range(6)}], "x0")
    got = bandit.probability_best(sums, np.random.default_rng(3), draws=123_457)  # several blocks
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    assert got["x5"] == max(got.values())
    assert bandit.probability_best({}, np.random.default_rng(0)) == {}
    assert bandit.probability_best({"only": ArmStats()}, np.random.default_rng(0)) == {"only": 1.0}
    equal = bandit.probability_best({"a": ArmStats(), "b": ArmStats()}, np.random.default_rng(0), 40_000)
    assert equal["a"] == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(40_000))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            bandit.probability_best(sums, np.random.default_rng(0), bad)


# --------------------------------------------------------------------------- stratification


def _simpson_schedule(total: float) -> tuple[list[dict[str, tuple[float, float]]], np.ndarray]:
    """B is 20 % better than A in every interval; the base rate falls from 10 % to 2 % while
    the allocation moves from A to B (as a bandit's would).  Expected counts, no noise."""
    base = np.linspace(0.10, 0.02, 9)
    schedule = []
    for i, f in enumerate(base):
        n_b = total * (i + 1) / 10  # 10 % ... 90 % of the traffic
        n_a = total - n_b
        schedule.append({"a": (n_a * f, n_a), "b": (n_b * 1.2 * f, n_b)})
    return schedule, base


def test_pooled_counts_pick_the_wrong_arm_where_mantel_haenszel_is_right():
    schedule, base = _simpson_schedule(100_000.0)
    sums = fed(schedule)
    a, b = sums["a"], sums["b"]
    # Pooled: B looks over 20 % worse (its traffic came when every rate was low) ...
    assert b.pooled_rate < 0.8 * a.pooled_rate
    pooled = lift.estimate(
        lift.Moments().add(a.trials, a.successes), lift.Moments().add(b.trials, b.successes)
    )
    assert pooled.ready and pooled.interval is not None and pooled.interval[1] < 0  # "significantly worse"
    # ... the traffic-weighted rates (reported) are exactly the time-averaged rates ...
    assert a.stratified.rate == pytest.approx(base.mean(), rel=1e-12)
    assert b.paired.rate == pytest.approx(1.2 * base.mean(), rel=1e-12)
    # ... and the Mantel-Haenszel ratio, which decides, is exactly B's 20 % lift.
    assert b.mantel_haenszel.ratio == pytest.approx(1.2, rel=1e-12)
    est = bandit.final_comparison(sums, "a")["b"]
    assert est.ready and est.lift == pytest.approx(0.2, rel=1e-9)
    assert est.candidate / est.baseline == pytest.approx(1.2, rel=1e-12)
    assert est.log_lift == pytest.approx(math.log(1.2), rel=1e-12)
    assert est.interval is not None and est.interval[0] > 0
    assert bandit.winner(sums, "a") == "b"


def test_mantel_haenszel_is_centred_where_pooled_is_biased():
    """The Simpson schedule with binomial noise: the allocation moves with the base rate, fixed in advance."""
    schedule, base = _simpson_schedule(2000.0)
    rng = np.random.default_rng(2024)
    mh, reported, pooled, traffic = [], [], [], []
    for _ in range(400):
        noisy = [
            {arm: (float(rng.binomial(round(n), s / n)), n) for arm, (s, n) in counts.items()}
            for counts in schedule
        ]
        sums = fed(noisy)
        ratio, variance = sums["b"].mantel_haenszel.ratio, sums["b"].mantel_haenszel.log_variance
        assert ratio is not None and variance is not None
        mh.append(math.log(ratio))
        reported.append(variance)
        pooled.append(math.log(sums["b"].pooled_rate / sums["a"].pooled_rate))
        traffic.append(sums["b"].paired.rate - sums["b"].paired_baseline.rate)
    truth = math.log(1.2)
    se_mh = np.std(mh, ddof=1) / math.sqrt(len(mh))
    se_pooled = np.std(pooled, ddof=1) / math.sqrt(len(pooled))
    assert abs(np.mean(mh) - truth) < 4 * se_mh
    assert np.mean(pooled) < 0 < truth and abs(np.mean(pooled) - truth) > 20 * se_pooled
    # The Greenland-Robins variance: its average over the runs is within a few percent of the
    # variance at the expected counts (E[P_i] is P_i at the expected counts: the two arms are
    # independent), and that matches the spread of the estimates (3.5 standard errors of a
    # variance at 400 runs).
    predicted = fed(schedule)["b"].mantel_haenszel.log_variance
    assert predicted is not None
    assert np.mean(reported) == pytest.approx(predicted, rel=0.05)
    assert np.var(mh, ddof=1) == pytest.approx(predicted, rel=0.25)
    # The traffic-weighted difference (reported) stays unbiased, with the variance its sums predict.
    se_traffic = np.std(traffic, ddof=1) / math.sqrt(len(traffic))
    assert abs(np.mean(traffic) - 0.2 * base.mean()) < 4 * se_traffic
    assert np.var(traffic, ddof=1) == pytest.approx(_predicted_variance(schedule), rel=0.25)


def _predicted_variance(schedule: list[dict[str, tuple[float, float]]]) -> float:
    """Var(r_b - r_a) with the true rates: sum N^2 p (1 - p) / n over (sum N)^2, per arm."""
    total = sum(n for counts in schedule for _, n in counts.values()) / len(schedule)
    var = 0.0
    for counts in schedule:
        for s, n in counts.values():
            p = s / n
            var += total * total * p * (1 - p) / n
    return var / (total * len(schedule)) ** 2


def _thompson_run(
    rng: np.random.Generator, ratio: float, base: np.ndarray, requests: int, alpha: float
) -> tuple[float, float, bool]:
    """One run of a two-arm Thompson bandit (floor 5, step 20), B's rate ``ratio`` times A's in
    every interval while the base rate drifts: log RR_MH, its variance, and whether the
    always-valid interval held the truth at every interval."""
    weights: dict[str, int] = {"a": 50, "b": 50}
    sums = {"a": ArmStats(), "b": ArmStats()}
    allocator = bandit.ThompsonAllocator(draws=500)
    covered = True
    for f in base:
        trials = rng.multinomial(requests, [weights["a"] / 100, weights["b"] / 100])
        successes = rng.binomial(trials, [f, ratio * f])
        counts = {arm: (float(s), float(n)) for arm, s, n in zip("ab", successes, trials, strict=True)}
        sums = bandit.add_interval(sums, counts)
        est = bandit.final_comparison(sums, "a", alpha=alpha)["b"]
        if est.interval is not None and not est.interval[0] <= ratio - 1 <= est.interval[1]:
            covered = False
        weights = allocator.allocate(sums, weights, rng, min_weight=5, max_step_change=20)
    mh = sums["b"].mantel_haenszel
    assert mh.ratio is not None and mh.log_variance is not None
    return math.log(mh.ratio), mh.log_variance, covered


@pytest.mark.parametrize("ratio", [1.2, 1.0])
def test_mantel_haenszel_under_adaptive_allocation(ratio):
    """Thompson sampling steers the traffic from the data while the base rate falls from 10 % to 2 %.

    ``R - theta S`` is a martingale under any allocation, so the always-valid interval must hold
    the true ratio at every one of the 30 looks in at least ``1 - alpha`` of the runs.  The point
    estimate is consistent, not exactly unbiased: its weights depend on the allocation, hence on
    earlier data, and the ratio of the two sums picks up the O(1/n) bias of adaptively collected
    data (the baseline, pushed to its floor after an unlucky start, stays underestimated).  Here it
    must stay a fraction of the estimate's own standard deviation (0.1-0.2 of it over several
    seeds).  With a clear winner the allocation settles and the reported variance matches the
    spread (``z`` has variance 1 within 3 standard errors).  With the ratio 1 (A/A) it never
    settles; the reported variance then runs 5-25 % below the spread (bandit data with no margin
    are not asymptotically normal: Zhang, Janson & Murphy 2020), which the confidence sequence's
    width absorbs: coverage is what is asked of it there.
    """
    alpha, runs = 0.05, 300
    base = np.linspace(0.10, 0.02, 30)
    rng = np.random.default_rng(31 if ratio > 1 else 32)
    results = [_thompson_run(rng, ratio, base, 2000, alpha) for _ in range(runs)]
    logs = np.array([r[0] for r in results])
    variances = np.array([r[1] for r in results])
    coverage = np.mean([r[2] for r in results])
    assert coverage >= 1 - alpha
    z = (logs - math.log(ratio)) / np.sqrt(variances)
    assert abs(float(np.mean(logs)) - math.log(ratio)) < 0.4 * float(np.std(logs, ddof=1))
    if ratio != 1:
        assert float(np.var(z, ddof=1)) == pytest.approx(1.0, rel=0.25)


@pytest.mark.parametrize(
    ("n_c", "n_b", "p_b", "theta"), [(2, 1, 0.3, 1.5), (3, 5, 0.05, 1.0), (7, 4, 0.4, 0.8), (1, 1, 0.5, 1.2)]
)
def test_the_greenland_robins_term_is_the_conditional_variance(n_c, n_b, p_b, theta):
    """E[P_i] = Var(R_i - theta S_i) / theta exactly when p_c = theta p_b: summed over the binomial
    outcomes of one interval, for any (even tiny) allocation."""
    p_c, n = theta * p_b, n_c + n_b
    expected = sum(
        stats.binom.pmf(k_c, n_c, p_c)
        * stats.binom.pmf(k_b, n_b, p_b)
        * bandit.MantelHaenszel().add(float(k_c), float(n_c), float(k_b), float(n_b)).spread
        for k_c in range(n_c + 1)
        for k_b in range(n_b + 1)
    )
    variance = (n_b / n) ** 2 * n_c * p_c * (1 - p_c) + theta**2 * (n_c / n) ** 2 * n_b * p_b * (1 - p_b)
    assert expected == pytest.approx(variance / theta, rel=1e-12)


def test_mantel_haenszel_weighs_intervals_by_their_information():
    """Expected counts, the baseline at 5 % of the traffic every other interval and at 50 % in the
    rest: the traffic-weighted comparison gives the thin intervals full weight, Mantel-Haenszel
    about a tenth, and its variance is far smaller."""
    schedule = []
    for i in range(20):
        f, n_a = 0.05 * (1.5 if i < 10 else 1.0), (10.0 if i % 2 else 100.0)
        schedule.append({"a": (n_a * f, n_a), "b": ((200 - n_a) * 1.2 * f, 200 - n_a)})
    b = fed(schedule)["b"]
    mh_variance = b.mantel_haenszel.log_variance
    traffic_variance = (
        b.paired.weighted_variance / b.paired.weighted_rate**2
        + b.paired_baseline.weighted_variance / b.paired_baseline.weighted_rate**2
    )
    assert b.mantel_haenszel.ratio == pytest.approx(1.2, rel=1e-12)
    assert mh_variance is not None and mh_variance < 0.7 * traffic_variance


def test_the_sums_of_one_interval():
    sums = bandit.add_interval({}, {"a": (1.0, 2.0), "b": (3.0, 4.0)})
    a, b = sums["a"], sums["b"]
    assert a.stratified == bandit.Strata(6.0, 3.0, 36 * 0.25 / 1, 2.0, 1)  # N = 6, p = 1/2, n - 1 = 1
    assert b.stratified == bandit.Strata(6.0, 4.5, 36 * 0.1875 / 3, 4.0, 1)
    assert b.paired == b.stratified and b.paired_baseline == a.stratified
    assert a.paired == bandit.Strata() == a.paired_baseline  # the baseline is not paired with itself
    # n = 6: R = 3 * 2 / 6, S = 1 * 4 / 6, P = (3 * 4 * (2 - 1) + 1 * 2 * (4 - 3)) / 36, w = 4 * 2 / 6.
    got = dataclasses.astuple(b.mantel_haenszel)
    assert got == pytest.approx((1.0, 4 / 6, 14 / 36, 8 / 6, 4.0, 2.0, 1), rel=1e-12)
    assert b.mantel_haenszel.log_variance == pytest.approx(14 / 36 / (4 / 6), rel=1e-12)
    assert a.mantel_haenszel == bandit.MantelHaenszel()


@pytest.mark.parametrize(("n", "p"), [(2, 0.3), (3, 0.05), (7, 0.5)])
def test_the_per_interval_variance_is_unbiased_even_for_few_requests(n, p):
    """E[p_hat (1 - p_hat) / (n - 1)] = p (1 - p) / n exactly: summed over the binomial outcomes."""
    expected = sum(
        stats.binom.pmf(k, n, p) * bandit.Strata().add(1.0, float(k), float(n)).weighted_variance
        for k in range(n + 1)
    )
    assert expected == pytest.approx(p * (1 - p) / n, rel=1e-12)


def test_comparisons_use_only_intervals_where_both_arms_had_traffic():
    sums = fed(
        [
            {"a": (10.0, 100.0), "b": (12.0, 100.0)},  # both served at a high base rate
            {"a": (1.0, 100.0), "b": (0.0, 0.0)},  # only the baseline, at a low one
            {"a": (1.0, 100.0), "b": (0.0, 1.0)},  # one request: counts for MH with a tiny weight
            {"a": (1.0, 100.0), "b": ("x", -1)},  # garbage for b
        ]
    )
    a, b = sums["a"], sums["b"]
    assert a.stratified.intervals == 4 and b.stratified.intervals == 1
    assert b.paired.intervals == b.paired_baseline.intervals == 1
    assert b.mantel_haenszel.intervals == 2
    est = bandit.final_comparison(sums, "a")["b"]
    # w = 50 and 100 / 101: nearly the rates of the first interval, not 0.10 vs 0.0325 (pooled).
    weight = 50 + 100 / 101
    assert est.baseline == pytest.approx((5 + 1 / 101) / weight, rel=1e-12)
    assert est.candidate == pytest.approx(6 / weight, rel=1e-12)
    assert est.samples == {"a": 200.0, "b": 101.0}
    assert b.trials == 101.0  # the pooled counts keep every valid request


@pytest.mark.parametrize(
    "garbage",
    [
        (math.nan, 10.0),
        (1.0, math.inf),
        (-1.0, 10.0),
        (11.0, 10.0),
        ("1", 10),
        (1.0,),
        None,
        3.0,
        (1, 2, 3),
        "ab",
    ],
)
def test_counts_no_exporter_produces_are_ignored(garbage):
    before = fed([{"a": (5.0, 100.0), "b": (6.0, 100.0)}])
    after = bandit.add_interval(before, {"a": (5.0, 100.0), "b": garbage})
    assert after["b"] == before["b"]
    assert after["a"].trials == 200.0


# --------------------------------------------------------------------------- stopping and the winner


def test_stopping_needs_consecutive_intervals():
    hi, lo = {"a": 0.02, "b": 0.98}, {"a": 0.4, "b": 0.6}
    assert bandit.should_stop([hi, hi, lo, hi, hi], 0.95, 3) is None
    assert bandit.should_stop([hi, hi, lo, hi, hi, hi], 0.95, 3) == "b"
    assert bandit.should_stop([hi, hi], 0.95, 3) is None  # not enough intervals yet
    assert bandit.should_stop([hi], 0.95, 1) == "b"
    assert bandit.should_stop([{"b": 0.95}] * 2, 0.95, 2) == "b"  # at the threshold counts
    assert bandit.should_stop([{"b": math.nan}, {"b": "x"}, None], 0.5, 1) is None  # type: ignore[list-item]
    for confidence, required in ((0.0, 3), (1.5, 3), (0.95, 0), (0.95, 1.5)):
        with pytest.raises(ValueError):
            bandit.should_stop([hi], confidence, required)  # type: ignore[arg-type]


def _two_arms(rate_a: float, rate_b: float, n: float, intervals: int = 20) -> dict[str, ArmStats]:
    return fed([{"a": (n * rate_a, n), "b": (n * rate_b, n)}] * intervals)


def test_winner_keeps_the_baseline_when_nothing_is_significantly_better():
    assert bandit.winner(_two_arms(0.05, 0.05, 100_000), "a") == "a"  # A/A
    assert bandit.winner(_two_arms(0.05, 0.04, 100_000), "a") == "a"  # significantly worse
    assert bandit.winner(_two_arms(0.05, 0.055, 100), "a") == "a"  # better, not yet significant
    assert bandit.winner(_two_arms(0.05, 0.06, 100_000), "a") == "b"  # clearly better
    assert bandit.winner(_two_arms(0.05, 0.06, 100_000), "a", dropped={"b"}) == "a"  # but dropped
    assert bandit.winner({}, "a") == "a"


def test_winner_is_the_best_of_the_significant_candidates():
    sums = fed([{"a": (500.0, 10_000.0), "b": (600.0, 10_000.0), "c": (700.0, 10_000.0)}] * 20)
    assert bandit.winner(sums, "a") == "c"
    assert bandit.winner(sums, "a", dropped={"c"}) == "b"


def test_comparisons_are_corrected_for_the_number_of_candidates():
    """A candidate significant on its own is not once nine null candidates are compared too."""
    for n in np.geomspace(200, 20_000, 60):
        alone = fed([{"a": (n * 0.05, n), "b": (n * 0.055, n)}] * 20)
        crowd = fed(
            [{"a": (n * 0.05, n), "b": (n * 0.055, n)} | {f"z{i}": (n * 0.05, n) for i in range(9)}] * 20
        )
        if bandit.winner(alone, "a") == "b" and bandit.winner(crowd, "a") == "a":
            wide, narrow = bandit.final_comparison(crowd, "a")["b"], bandit.final_comparison(alone, "a")["b"]
            assert wide.interval[0] < narrow.interval[0] and wide.interval[1] > narrow.interval[1]
            return
    pytest.fail("no sample size where Bonferroni changes the decision")


def test_final_comparison_never_raises():
    assert not bandit.final_comparison({"a": ArmStats(), "b": ArmStats()}, "a")["b"].ready
    zero = _two_arms(0.0, 0.05, 100)
    assert "zero" in bandit.final_comparison(zero, "a")["b"].reason
    assert not bandit.final_comparison(_two_arms(0.05, 0.05, 100), "a", alpha=2.0)["b"].ready
    assert set(bandit.final_comparison(_two_arms(0.05, 0.05, 100), "missing")) == {"a", "b"}


# --------------------------------------------------------------------------- persistence


JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**15), 10**15),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=20,
)
FIELDS = ["successes", "trials", "stratified", "paired", "paired_baseline", "mantel_haenszel"]
STRATA = ["weight", "weighted_rate", "weighted_variance", "trials", "intervals"]
STRATA += [f.name for f in dataclasses.fields(bandit.MantelHaenszel) if f.name not in STRATA]


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        JSONISH,
        st.dictionaries(st.sampled_from(FIELDS), JSONISH | st.dictionaries(st.sampled_from(STRATA), JSONISH)),
    )
)
def test_from_dict_never_raises_on_garbage(data):
    got = ArmStats.from_dict(data)
    assert isinstance(got, ArmStats)
    json.dumps(got.to_dict(), allow_nan=False)
    assert ArmStats.from_dict(got.to_dict()) == got
    assert isinstance(bandit.load_stats({"x": data, 3: data}), dict)
    assert bandit.load_stats(data) == {} or isinstance(data, dict)


def test_round_trip_and_corrupt_sums():
    sums = fed([{"a": (5.0, 100.0), "b": (7.0, 90.0)}, {"a": (3.0, 80.0), "b": (9.0, 120.0)}])
    text = json.dumps(bandit.dump_stats(sums), allow_nan=False)
    assert bandit.load_stats(json.loads(text)) == sums
    good = sums["b"].to_dict()
    for path, value in [
        (("successes",), 1000.0),  # more successes than trials
        (("stratified", "weighted_rate"), 1e9),  # a rate above 1
        (("paired", "intervals"), 1.5),
        (("paired_baseline", "intervals"), 7),  # the two sides of a pair differ
        (("stratified", "weight"), math.nan),
        (("trials",), True),
        (("mantel_haenszel", "candidate"), 1e9),  # a rate above 1
        (("mantel_haenszel", "spread"), -1.0),
        (("mantel_haenszel", "spread"), 1e9),  # more spread than the counts allow
        (("mantel_haenszel", "intervals"), 0),  # sums without intervals
        (("mantel_haenszel", "baseline_trials"), 0.5),  # less traffic than the weight implies
        (("mantel_haenszel",), None),
    ]:
        broken = json.loads(json.dumps(good))
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert ArmStats.from_dict(broken) == ArmStats(), path


# --------------------------------------------------------------------------- the benchmark


def test_bandit_benchmark_runs(tmp_path, capsys, monkeypatch):
    """The committed benchmark's main runs end to end (2 short runs per row) and writes its tables."""
    spec = importlib.util.spec_from_file_location("bandits_benchmark", ROOT / "benchmarks" / "bandits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    output = tmp_path / "bandits.md"
    argv = ["--runs", "2", "--intervals", "12", "--draws", "200", "--workers", "1", "--output", str(output)]
    assert module.main(argv) == 0
    report = output.read_text()
    assert "Runs per row: 2" in report
    for name in ("thompson", "epsilon-greedy", "ucb1", "fixed"):
        assert f"| a: 2 arms, 4.5 % vs 5.2 % | {name} |" in report
    assert report.strip() in capsys.readouterr().out
