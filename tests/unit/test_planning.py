"""Planning: the power of the operator's sequential test for a plan, and ``modelrollout plan``.

The simulation must compute the operator's statistic exactly (checked against
``evidence`` itself and against a slow, independent loop with the canary's
step rules), its answers must move the right way with traffic, step length
and effect, and its minimum detectable effect must hold up when re-measured
with other random numbers.
"""

from __future__ import annotations

import datetime
import json
import math

import numpy as np
import pytest

from modelrollout import cli
from modelrollout.core import canary, evidence, planning

S = datetime.timedelta(seconds=1)
REFERENCE = planning.Plan(
    rate=200, steps=[5, 25, 50, 100], step_duration=60 * S, interval=10 * S, baseline_rate=0.01
)
REFERENCE_FLAGS = [
    "plan",
    "--rate",
    "200",
    "--steps",
    "5,25,50,100",
    "--step-duration",
    "60s",
    "--interval",
    "10s",
    "--baseline-error-rate",
    "0.01",
]


def plan(**changes: object) -> planning.Plan:
    fields = {
        "rate": REFERENCE.rate,
        "steps": REFERENCE.steps,
        "step_duration": REFERENCE.step_duration,
        "interval": REFERENCE.interval,
        "baseline_rate": REFERENCE.baseline_rate,
        **changes,
    }
    return planning.Plan(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the statistic


def test_vectorised_loglik_is_evidence_interval_loglik_row_by_row() -> None:
    rng = np.random.default_rng(1)
    candidate = rng.poisson(3, 200).astype(float)
    baseline = rng.poisson(20, 200).astype(float)
    shares = rng.uniform(0.01, 0.99, 200)
    candidate[:5], baseline[:5] = 0, 0  # no events: no information
    shares[5:8] = [0.0, 1.0, 0.0]  # one variant without traffic: no information
    rows = planning.interval_logliks(candidate, baseline, shares)
    for i in range(200):
        expected = evidence.interval_loglik(candidate[i], baseline[i], shares[i])
        np.testing.assert_allclose(rows[i], expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("tolerance", "increase"), [(1.0, True), (1.5, True), (1.0, False), (2.0, False)])
def test_vectorised_evidence_is_harm_evidence_row_by_row(tolerance: float, increase: bool) -> None:
    rng = np.random.default_rng(2)
    intervals = planning.interval_logliks(
        rng.poisson(4, 300), rng.poisson(30, 300), rng.uniform(0.05, 0.5, 300)
    ).reshape(30, 10, -1)
    loglik = intervals.sum(axis=1)  # 30 runs of 10 intervals each
    log_e = planning.harm_log_evidence(loglik, tolerance, increase)
    for row, value in zip(loglik, log_e, strict=True):
        assert math.exp(min(value, 700.0)) == pytest.approx(evidence.harm_evidence(row, tolerance, increase))


def reference_detection(p: planning.Plan, effect: float, runs: int, seed: int) -> float:
    """A slow, independent replay of the operator: per-interval Poisson traffic and binomial
    errors, ``evidence`` itself, and canary's rules for when a step ends (minStepDuration,
    minSamples, held while suspicious up to MAX_STEP_EXTENSION step durations)."""
    rng = np.random.default_rng(seed)
    tick = p.interval.total_seconds()
    step_seconds = p.step_duration.total_seconds()
    detected = 0
    for _ in range(runs):
        loglik = evidence.zeros()
        for weight in p.tested_steps:
            elapsed, samples = 0.0, [0, 0]
            while True:
                elapsed += tick
                nc = rng.poisson(p.rate * weight / 100 * tick)
                nb = rng.poisson(p.rate * (100 - weight) / 100 * tick)
                xb, xc = (
                    rng.binomial(nb, p.baseline_rate),
                    rng.binomial(nc, min(1.0, p.baseline_rate * effect)),
                )
                samples = [samples[0] + nc, samples[1] + nb]
                if nc + nb:
                    loglik = loglik + evidence.interval_loglik(xc, xb, nc / (nc + nb))
                e = evidence.harm_evidence(loglik)
                if e >= p.bound:
                    break
                if e >= math.sqrt(p.bound) and elapsed < step_seconds * canary.MAX_STEP_EXTENSION:
                    continue
                if elapsed >= step_seconds and min(samples) >= p.min_samples:
                    break
            if e >= p.bound:
                detected += 1
                break
    return detected / runs


@pytest.mark.parametrize("effect", [1.3, 2.0])
def test_simulation_agrees_with_an_independent_replay(effect: float) -> None:
    runs = 400
    fast = planning.detection_probability(REFERENCE, effect, runs=8000, seed=5)
    slow = reference_detection(REFERENCE, effect, runs=runs, seed=6)
    spread = math.sqrt(fast * (1 - fast) / 8000 + slow * (1 - slow) / runs) + 1e-3
    assert abs(fast - slow) <= 4 * spread


def test_no_harm_rarely_rolls_back() -> None:
    # Bonferroni share of alpha for one guardrail: 1/40; holds add looks, not false alarms.
    assert planning.detection_probability(REFERENCE, 1.0, runs=4000) <= 0.025 + 3 * math.sqrt(0.025 / 4000)


# --------------------------------------------------------------------------- answers


def test_reference_plan_minimum_detectable_effect_holds_up_with_other_random_numbers() -> None:
    mde = planning.minimum_detectable_effect(REFERENCE)
    assert mde is not None
    assert 1.3 <= mde <= 1.8  # ~+50 %: double errors are caught, +20 % mostly not
    again = planning.detection_probability(REFERENCE, mde, runs=4000, seed=99)
    below = planning.detection_probability(REFERENCE, mde * 0.8, runs=4000, seed=99)
    assert again >= 0.8 - 0.04  # Monte Carlo error of the search and of this check
    assert below < 0.8 - 0.1
    assert planning.minimum_detectable_effect(REFERENCE) == mde  # reproducible


def test_more_traffic_or_longer_steps_detect_smaller_effects() -> None:
    def mde(p: planning.Plan) -> float:
        found = planning.minimum_detectable_effect(p, runs=1000, precision=0.02)
        assert found is not None
        return found

    assert mde(plan(rate=800)) < mde(plan(rate=200)) < mde(plan(rate=50))
    assert mde(plan(step_duration=240 * S)) < mde(REFERENCE) < mde(plan(step_duration=20 * S))


def test_bigger_effects_are_detected_more_often() -> None:
    probabilities = [planning.detection_probability(REFERENCE, e, runs=1000) for e in (1.1, 1.3, 1.6, 2, 3)]
    assert probabilities == sorted(probabilities)
    assert probabilities[0] < 0.2 and probabilities[-1] > 0.99


def test_required_step_duration_is_whole_intervals_and_just_enough() -> None:
    needed = planning.required_step_duration(REFERENCE, 2.0)
    assert needed is not None
    intervals = needed / REFERENCE.interval
    assert intervals == int(intervals) and intervals >= 1
    assert planning.detection_probability(REFERENCE.with_step_duration(needed), 2.0) >= 0.8
    if intervals > 1:  # exact to the interval for short steps: one interval less is not enough
        shorter = REFERENCE.with_step_duration(needed - REFERENCE.interval)
        assert planning.detection_probability(shorter, 2.0) < 0.8
    assert planning.required_step_duration(REFERENCE, 1.0, runs=200) is None  # no harm: never


def test_small_effects_need_longer_steps() -> None:
    quick = planning.required_step_duration(REFERENCE, 2.0, runs=500)
    slow = planning.required_step_duration(REFERENCE, 1.3, runs=500)
    assert quick is not None and slow is not None and quick < slow


def test_too_little_traffic_detects_nothing() -> None:
    scarce = plan(rate=0.5, min_samples=0)
    assert planning.minimum_detectable_effect(scarce, runs=300) is None
    assert "cannot detect" in planning.plan_summary(scarce)


def test_min_samples_lengthens_steps_of_a_quiet_service() -> None:
    quiet = plan(rate=20)
    assert quiet.step_intervals(5) == 10  # 1 candidate request/s: 100 s to reach 100 requests
    assert quiet.step_intervals(25) == quiet.intervals_per_step == 6
    hurried = plan(rate=20, min_samples=0)
    assert planning.detection_probability(quiet, 3.0, runs=1000) > planning.detection_probability(
        hurried, 3.0, runs=1000
    )


def test_only_steps_before_100_are_tested() -> None:
    assert plan(steps=[100]).tested_steps == ()
    assert planning.detection_probability(plan(steps=[100]), 5.0, runs=100) == 0.0
    assert planning.minimum_detectable_effect(plan(steps=[100]), runs=100) is None
    assert plan(steps=[10, 50]).tested_steps == (10, 50)  # no 100: promoted after the last step


def test_latency_plan_counts_slow_requests_after_calibration() -> None:
    latency = planning.latency_plan(REFERENCE)
    assert (latency.baseline_rate, latency.warmup_intervals) == (planning.SLOW_SHARE, 1)
    errors = planning.minimum_detectable_effect(REFERENCE, runs=1000, precision=0.02)
    slow = planning.minimum_detectable_effect(latency, runs=1000, precision=0.02)
    assert errors is not None and slow is not None and slow < errors  # five times the events
    calibrated = planning.detection_probability(latency, 1.2, runs=1000)
    uncalibrated = planning.detection_probability(plan(baseline_rate=0.05), 1.2, runs=1000)
    assert calibrated <= uncalibrated


def test_long_steps_are_looked_at_in_blocks_with_little_loss() -> None:
    hour = plan(step_duration=3600 * S)
    coarse = planning.detection_probability(hour, 1.08, runs=1000, max_looks=10)
    fine = planning.detection_probability(hour, 1.08, runs=1000, max_looks=60)
    assert abs(coarse - fine) < 0.05


def test_summary_for_status_is_one_fast_sentence() -> None:
    planning.plan_summary.cache_clear()
    fresh = plan(rate=201)  # not cached by another test
    started = datetime.datetime.now()
    sentence = planning.plan_summary(fresh)
    assert (datetime.datetime.now() - started).total_seconds() < 1.0  # ~0.1 s; generous for CI
    assert sentence.startswith("this plan detects >= +") and sentence.endswith("error rate (80 % power)")
    coarse = float(sentence.split("+")[1].split(" %")[0]) / 100 + 1
    mde = planning.minimum_detectable_effect(fresh, runs=1000)
    assert mde is not None and abs(math.log(coarse / mde)) < 0.15
    assert planning.plan_summary(fresh) is sentence  # cached


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"steps": []}, "steps"),
        ({"steps": [5, 5]}, "steps"),
        ({"steps": [0, 50]}, "steps"),
        ({"interval": 0 * S}, "interval"),
        ({"step_duration": -S}, "step_duration"),
        ({"baseline_rate": 1.0}, "baseline_rate"),
        ({"alpha": 0}, "alpha"),
        ({"guardrails": 0}, "guardrails"),
        ({"tolerance": 0.5}, "tolerance"),
        ({"min_samples": -1}, "min_samples"),
    ],
)
def test_invalid_plans_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(planning.PlanError) as caught:
        plan(**changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_increase_in_words() -> None:
    assert planning.increase(1.6) == "+60 %"
    assert planning.increase(4.2) == "x4.2"


# --------------------------------------------------------------------------- the command


def run_cli(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(flags))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_plan_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, *REFERENCE_FLAGS, "--effect", "2", "--runs", "300")
    assert code == 0
    assert "rollback at evidence >= 40" in out
    assert "step 1 (5 %)" in out and "600" in out and "11,400" in out
    assert "P(detect x2)" in out and "step needed for x2 (80 %)" in out
    rows = {line[:22].strip(): line[22:].split() for line in out.splitlines()}
    errors, latency = rows["error rate"], rows["latency (slow share)"]
    assert errors[:3] == ["1", "%", ">="] and errors[3].startswith("+")
    assert latency[:3] == ["5", "%", ">="] and latency[3].startswith("+")
    assert errors[-1].endswith("s") and latency[-1].endswith("s")  # the step durations needed


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, *REFERENCE_FLAGS, "--effect", "2", "--runs", "300", "--json")
    assert code == 0
    document = json.loads(out)
    assert set(document) == {"plan", "requestsPerStep", "metrics", "notes"}
    assert document["plan"]["bound"] == 40
    assert [row["candidate"] for row in document["requestsPerStep"]] == [600, 3000, 6000]
    assert [m["metric"] for m in document["metrics"]] == ["error-rate", "latency"]
    errors = document["metrics"][0]
    assert set(errors) == {
        "metric",
        "baselineRate",
        "minimumDetectableEffect",
        "minimumDetectableIncrease",
        "effect",
        "detectionProbability",
        "requiredStepDuration",
    }
    assert 1.2 < errors["minimumDetectableEffect"] < 2
    assert errors["detectionProbability"] > 0.95
    assert errors["requiredStepDuration"].endswith("s")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate", "-3"),
        ("--rate", "fast"),
        ("--steps", "5,3"),
        ("--steps", "5,x"),
        ("--interval", "10x"),
        ("--step-duration", "0s"),
        ("--baseline-error-rate", "1.5"),
        ("--baseline-slow-share", "0"),
        ("--alpha", "2"),
        ("--guardrails", "0"),
        ("--effect", "0.5"),
        ("--power", "80"),
        ("--min-samples", "-1"),
    ],
)
def test_bad_flags_are_named_with_their_value(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    flags = [*REFERENCE_FLAGS, flag, value]
    code, _, err = run_cli(capsys, *flags)
    assert code == 2
    assert f"argument {flag}: " in err and repr(value) in err


def test_binomial_quantile_is_scipys_binom_ppf() -> None:
    from scipy import stats  # the operator itself does not import scipy.stats (see test_imports)

    rng = np.random.default_rng(7)
    for p in (0.0, 1e-9, 1e-4, 0.005, 0.05, 0.3, 0.5, 0.99, 1.0):
        q = np.concatenate([[1e-12, 0.5, 1 - 1e-12, 0.999999], rng.random(5000)])
        n = np.concatenate([[0.0, 0.0, 1.0, 1.0], rng.integers(0, 5000, 5000).astype(float)])
        assert np.array_equal(planning.binomial_quantile(q, n, p), stats.binom.ppf(q, n.astype(int), p)), p
