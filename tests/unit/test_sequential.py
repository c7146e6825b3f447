"""The sequential tests: validity under continuous monitoring, power, and their verdicts."""

from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np
import pytest

from modelrollout.core import canary, evidence, model, sequential, srm
from modelrollout.core.model import Phase, Verdict

from core_helpers import BASE, CAND, T0, healthy, histogram, make_spec, observe, ok, step

S = datetime.timedelta(seconds=1)
STEPS = (0.05, 0.25, 0.5)


def monitor(
    theta: float, runs: int, seed: int, incident: bool = False, bound: float = 40.0
) -> list[int | None]:
    """Per run, the interval at which evidence first crossed ``bound`` (None: never), over
    18 intervals of 2000 requests at shares 5/25/50 %, checking after every interval."""
    rng = np.random.default_rng(seed)
    crossed: list[int | None] = []
    for _ in range(runs):
        loglik, hit = evidence.zeros(), None
        for i in range(18):
            share = STEPS[i // 6]
            n = rng.poisson(2000)
            nc = rng.binomial(n, share)
            rate = 0.01 * (3 if incident and 6 <= i < 12 else 1)  # an incident hits both variants
            xb, xc = rng.binomial(n - nc, rate), rng.binomial(nc, min(1.0, rate * theta))
            loglik = loglik + evidence.interval_loglik(xc, xb, nc / n)
            if evidence.harm_evidence(loglik) >= bound:
                hit = i
                break
        crossed.append(hit)
    return crossed


def false_alarm_limit(alpha: float, runs: int) -> float:
    """alpha plus three binomial standard errors: a true rate <= alpha stays below it."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


@pytest.mark.parametrize("incident", [False, True])
def test_no_harm_rarely_crosses_the_bound_however_often_one_looks(incident):
    crossed = monitor(1.0, runs=600, seed=11, incident=incident)
    rate = sum(c is not None for c in crossed) / len(crossed)
    assert rate <= false_alarm_limit(1 / 40, 600)


def test_doubled_error_rate_is_caught_early():
    crossed = monitor(2.0, runs=200, seed=12)
    assert sum(c is not None for c in crossed) >= 195
    assert np.median([c for c in crossed if c is not None]) <= 8  # early in the 25 % step


def test_confidence_interval_covers_the_true_effect():
    rng = np.random.default_rng(13)
    covered = 0
    for _ in range(200):
        loglik = evidence.zeros()
        for _ in range(12):
            nc, nb = rng.poisson(500), rng.poisson(1500)
            loglik = loglik + evidence.interval_loglik(
                rng.binomial(nc, 0.03), rng.binomial(nb, 0.02), nc / (nc + nb)
            )
        low, high = evidence.confidence_interval(loglik, 40.0)  # coverage >= 1 - 2/40
        covered += low <= 1.5 <= high
    assert covered >= 190


def test_the_grid_state_round_trips_through_status_lists():
    loglik = evidence.interval_loglik(30, 200, 0.05)
    assert np.allclose(evidence.from_list(evidence.to_list(loglik)), loglik, atol=1e-4)
    assert not evidence.from_list(None).any()
    assert not evidence.from_list([1.0, 2.0]).any()  # a garbled state is no state, not a crash


# --------------------------------------------------------------------------- the analysis


def assess(experiment, counts=None, histograms=None, memory=None, name="error-rate"):
    metric = next(m for m in experiment.metrics if m.name == name)
    sample = model.MetricSample(name, {BASE: ok(0.01), CAND: ok(0.01)}, counts=counts, histograms=histograms)
    return sequential.SequentialTests().assess(experiment, metric, sample, memory)


def counts(base_events, base_total, cand_events, cand_total):
    return {BASE: model.Counts(base_events, base_total), CAND: model.Counts(cand_events, cand_total)}


def test_harm_fails_with_a_reason_a_user_understands():
    assessment, memory = assess(make_spec(), counts(19, 1900, 12, 100))
    assert assessment.verdict is Verdict.FAIL
    assert assessment.reason.startswith("error rate 12% vs 1%, ratio ")
    assert "evidence" in assessment.reason and "> 40" in assessment.reason  # two guardrails share alpha
    assert assessment.extra["bound"] == 40.0
    low, high = assessment.extra["interval"]
    assert low <= assessment.extra["effect"] <= high and low > 1
    assert assessment.extra["pValue"] < 1 / 40
    assert len(memory["loglik"]) == len(evidence.GRID)


def test_no_harm_passes_and_keeps_its_memory_across_intervals():
    experiment = make_spec()
    memory = None
    for _ in range(6):
        assessment, memory = assess(experiment, counts(19, 1900, 1, 100), memory=memory)
    assert assessment.verdict is Verdict.PASS
    assert memory["totals"] == [114.0, 11400.0, 6.0, 600.0]
    assert assessment.extra["evidence"] < 1


STRICT = [  # no tolerated increase: any evidence of harm counts
    {"name": "error-rate", "builtin": "error-rate", "max": 0.5},
    {"name": "latency-p95", "builtin": "latency-p95", "max": 500},
]


def test_some_evidence_is_suspicious_not_conclusive():
    assessment, _ = assess(make_spec(metrics=STRICT), counts(19, 1900, 5, 100))  # E ~ 11.6
    assert assessment.verdict is Verdict.INCONCLUSIVE
    assert "suspicious" in assessment.reason


def test_missing_counts_are_no_data_never_a_pass():
    assessment, _ = assess(make_spec(), counts=None)
    assert assessment.verdict is Verdict.NO_DATA
    no_traffic, _ = assess(make_spec(), counts(19, 1900, 0, 0))
    assert no_traffic.verdict is Verdict.NO_DATA


def test_tolerated_increase_is_not_harm():
    one = [{"name": "error-rate", "builtin": "error-rate"}]
    tolerant = [{"name": "error-rate", "builtin": "error-rate", "maxRelativeIncrease": 2.0}]
    strict_verdict, _ = assess(make_spec(metrics=one), counts(95, 9500, 15, 500))
    tolerant_verdict, _ = assess(make_spec(metrics=tolerant), counts(95, 9500, 15, 500))
    assert strict_verdict.verdict is Verdict.FAIL  # 3 % vs 1 %: harm
    assert tolerant_verdict.verdict is Verdict.PASS  # within the tolerated 3x
    assert strict_verdict.extra["bound"] == 20.0  # one sequential guardrail: alpha alone


def test_latency_calibrates_an_edge_on_the_baseline_then_tests_slow_requests():
    experiment = make_spec()
    first, memory = assess(
        experiment, histograms={BASE: histogram(1900, 0.03), CAND: histogram(100, 0.03)}, name="latency-p95"
    )
    assert first.verdict is Verdict.INCONCLUSIVE and memory["edge"] == 250.0
    slow, memory = assess(
        experiment,
        histograms={BASE: histogram(1900, 0.03), CAND: histogram(100, 0.4)},
        memory=memory,
        name="latency-p95",
    )
    assert slow.verdict is Verdict.FAIL
    assert "requests over 250ms" in slow.reason
    assert slow.extra["edge"] == 250.0


def test_a_ratio_guarded_by_min_is_harmed_by_going_down():
    metrics = [{"name": "conversion", "ratio": {"success": "s", "total": "t"}, "min": 0.01}]
    experiment = make_spec(metrics=metrics)
    worse, _ = assess(experiment, counts(190, 1900, 2, 100), name="conversion")  # 10 % -> 2 %
    better, _ = assess(experiment, counts(190, 1900, 20, 100), name="conversion")
    assert worse.verdict is Verdict.FAIL and worse.reason.startswith("conversion 2% vs 10%")
    assert better.verdict is Verdict.PASS


# --------------------------------------------------------------------------- SRM


def requests(base, cand):
    return {BASE: ok(base), CAND: ok(cand)}


def test_srm_fires_when_shares_do_not_follow_the_weights():
    memory = None
    for _ in range(5):
        finding = srm.check(memory, requests(1840, 160), {BASE: 95, CAND: 5}, CAND, previous_weight=None)
        memory = finding.memory
    assert finding.detected
    assert "churn-v2 got 8.0% of requests at 5% configured" in finding.message


def test_srm_stays_quiet_on_matching_shares_and_on_straddled_windows():
    rng = np.random.default_rng(3)
    memory = None
    for i in range(60):
        weight = [5, 25, 50][i // 20]
        n = 2000
        if i % 20 == 0:  # the window straddling the change: a share between old and new weight
            previous = [0, 5, 25][i // 20]
            cand = rng.binomial(n, (0.3 * previous + 0.7 * weight) / 100)
        else:
            previous = None
            cand = rng.binomial(n, weight / 100)
        finding = srm.check(
            memory,
            requests(n - cand, cand),
            {BASE: 100 - weight, CAND: weight},
            CAND,
            previous_weight=previous,
        )
        memory = finding.memory
    assert not finding.detected
    assert finding.evidence < 1 / srm.ALPHA


def test_a_straddled_window_anywhere_between_the_two_weights_is_no_evidence():
    """The routes change a little after the window starts: most of it may still be at the old weight."""
    for share in (0.001, 0.02, 0.049):
        cand = round(5000 * share)
        finding = srm.check(None, requests(5000 - cand, cand), {BASE: 95, CAND: 5}, CAND, previous_weight=0)
        assert not finding.detected and finding.evidence <= 1.0, share
    # Outside the two weights it still counts.
    outside = srm.check(None, requests(4000, 1000), {BASE: 95, CAND: 5}, CAND, previous_weight=0)
    assert outside.detected


# --------------------------------------------------------------------------- in the core


def progressing(experiment, step_no=1, **changes):
    weight = experiment.canary.steps[step_no - 1]
    state = model.State(
        phase=Phase.PROGRESSING,
        step=step_no,
        weights=canary.split(experiment, weight),
        step_started_at=T0,
        last_evaluated_at=T0,
        observed_generation=1,
        analysis={"latency-p95/1": {"edge": 250.0}},
    )
    return dataclasses.replace(state, **changes)


def test_suspicious_evidence_holds_the_step_at_most_twice_its_duration():
    experiment = make_spec(canary={"minSamples": 0}, metrics=STRICT)
    state = progressing(experiment)
    # 5 of 100 candidate requests fail vs 19 of 1900: suspicious (E ~ 11.6), not conclusive.
    first = step(experiment, state, T0 + 10 * S, **healthy(error=(0.01, 0.05)))
    assert first.assessments[0].verdict is Verdict.INCONCLUSIVE
    assert first.state.step == 1  # the step (10 s) is over, but it is held
    assert "not conclusive yet" in first.message
    # Still suspicious (E ~ 12.4) at twice the step duration: the hold ends, the step advances.
    second = step(experiment, first.state, T0 + 20 * S, **healthy(error=(0.01, 0.02)))
    assert second.assessments[0].verdict is Verdict.INCONCLUSIVE
    assert second.state.step == 2


def test_srm_holds_with_a_condition_and_one_event_but_harm_still_rolls_back():
    experiment = make_spec(canary={"minSamples": 0, "minStepDuration": "1m"})
    state = progressing(experiment, last_evaluated_at=T0 - 10 * S)
    events = []
    for i in range(1, 6):
        decision = step(experiment, state, T0 + 10 * i * S, **healthy(requests=(1800, 200)))
        events += [e.reason for e in decision.events]
        state = decision.state
    assert state.reason == "SampleRatioMismatch"
    assert state.action is model.Action.HOLD and state.step == 1
    assert events.count("SampleRatioMismatch") == 1
    harmful = step(experiment, state, T0 + 60 * S, **healthy(requests=(1800, 200), error=(0.01, 0.3)))
    assert harmful.state.phase is Phase.ROLLED_BACK


def test_windows_starting_soon_after_a_weight_change_may_still_show_the_old_split():
    """Envoy and Prometheus lag the routes: a window starting 4 s into a step straddles the change."""
    experiment = make_spec(canary={"minSamples": 0, "interval": "2s", "minStepDuration": "1m"})
    split_between = healthy(requests=(4500, 500))  # 10 %: between step 1 (5 %) and step 2 (25 %)
    early = progressing(experiment, 2, last_evaluated_at=T0 + 4 * S)
    assert not step(experiment, early, T0 + 6 * S, **split_between).state.analysis["srm"]["detected"]
    settled = progressing(experiment, 2, last_evaluated_at=T0 + 12 * S)
    assert step(experiment, settled, T0 + 14 * S, **split_between).state.analysis["srm"]["detected"]


def test_default_analyses_leave_relative_rules_of_count_metrics_to_the_sequential_test():
    metrics = [{"name": "error-rate", "builtin": "error-rate", "maxRelativeIncrease": 0.1}]
    experiment = make_spec(metrics=metrics)
    # 1.5 % vs 1 % in one small interval: a ratio rule would fail; the evidence is weak.
    obs = observe({BASE: 95, CAND: 5}, **healthy(error=(0.01, 0.015), total=400))
    decision = canary.decide(experiment, progressing(experiment), obs, T0 + 10 * S)
    assert decision.state.phase is Phase.PROGRESSING
    assert decision.assessments[0].verdict is not Verdict.FAIL


def test_doubt_at_the_last_step_never_promotes():
    experiment = make_spec(canary={"minSamples": 0}, metrics=STRICT)
    long_ago = T0 - 100 * S  # far past twice the step duration
    # 14 of 400 candidate requests fail vs 4 of 400: suspicious (E ~ 9), not conclusive.
    doubt = healthy(error=(0.01, 0.035), total=800)
    last = step(experiment, progressing(experiment, 3, step_started_at=long_ago), T0 + 10 * S, **doubt)
    assert last.assessments[0].verdict is Verdict.INCONCLUSIVE
    assert last.state.phase is Phase.PROGRESSING and last.state.step == 3  # held, not promoted
    # At 25 %: 12 of 400 candidate requests fail vs 12 of 1200 (E ~ 14): suspicious too.
    earlier = step(
        experiment,
        progressing(experiment, 2, step_started_at=long_ago),
        T0 + 10 * S,
        **healthy(error=(0.01, 0.03), total=1600),
    )
    assert earlier.assessments[0].verdict is Verdict.INCONCLUSIVE
    assert earlier.state.step == 3  # an earlier step's hold is bounded


def test_every_tolerances_harm_evidence_at_once_matches_each_tolerance_on_its_own():
    """The interval's matrix-vector form against the definition, tolerance by tolerance."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        loglik = evidence.zeros()
        for _ in range(rng.integers(0, 80)):
            n, share = int(rng.integers(1, 20000)), float(rng.uniform(0.01, 0.6))
            effect = float(np.exp(rng.normal(0, 0.7)))
            bad = int(rng.binomial(n, share * effect / (share * effect + 1 - share)))
            loglik += evidence.interval_loglik(bad, n - bad, share)
        for increase in (True, False):
            fast = evidence._all_harm_log_evidence(loglik, increase)
            for index in range(0, len(evidence.GRID), 4):
                log_e = evidence._log_mix(loglik, evidence._harm_prior(index, increase)) - loglik[index]
                if log_e > -15:
                    assert fast[index] == pytest.approx(log_e, abs=1e-8)
                else:  # far below any bound, on both sides
                    assert fast[index] < -10


@pytest.mark.parametrize("increase", [True, False])
def test_the_priors_are_scipys_densities_normalised_on_the_grid(increase: bool) -> None:
    from scipy import stats  # the operator itself does not import scipy.stats (see test_imports)

    for null in (0, 30, 60, 90, 120):
        distance = evidence.GRID - evidence.GRID[null] if increase else evidence.GRID[null] - evidence.GRID
        harmful = distance > 1e-12
        expected = np.full_like(evidence.GRID, -np.inf)
        density = stats.halfnorm.logpdf(distance[harmful], scale=evidence.HARM_SCALE)
        expected[harmful] = density - np.logaddexp.reduce(density) if harmful.any() else density
        assert np.allclose(evidence._harm_prior(null, increase), expected, atol=1e-12)
    far = np.abs(evidence.GRID) >= evidence.SRM_MIN_DEVIATION
    density = stats.norm.logpdf(evidence.GRID[far], scale=0.7)
    assert np.allclose(evidence._mismatch_prior()[far], density - np.logaddexp.reduce(density), atol=1e-12)
    assert np.all(np.isneginf(evidence._mismatch_prior()[~far]))
