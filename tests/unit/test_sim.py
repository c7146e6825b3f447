"""The simulator: its public scenario format, replayable runs, Prometheus' arithmetic and the peers' rules."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import optimize, stats

from modelrollout import cli
from modelrollout.localstack import traffic
from modelrollout.sim import engine, kayenta, observe, policies, scenario

REFERENCE: dict[str, Any] = {
    "traffic": {"rate": 200},
    "schedule": {"steps": [5, 25, 50, 100], "stepDuration": "60s", "interval": "10s"},
    "baseline": {"errorRate": 0.01, "latency": {"median": 200, "sigma": 0.5}},
    "candidate": {"errorRate": 0.01, "latency": {"median": 200, "sigma": 0.5}},
}


def make(**changes: Any) -> scenario.Scenario:
    raw = {**REFERENCE, **changes}
    return scenario.parse(raw)


def candidate(error_rate: float, median: float = 200, sigma: float = 0.5) -> dict[str, Any]:
    return {"errorRate": error_rate, "latency": {"median": median, "sigma": sigma}}


# --------------------------------------------------------------------------- the format


def test_documented_example_parses_into_an_experiment() -> None:
    parsed = make(
        candidate=candidate(0.02),
        events=[{"at": "120s", "variant": "both", "errorRate": 0.03}],
        analysis={"alpha": 0.01, "failureLimit": 2},
        errors={"dispersion": 100},
        duration="15m",
    )
    experiment = parsed.experiment()
    assert experiment.canary.steps == [5, 25, 50, 100]
    assert experiment.canary.interval.total_seconds() == 10
    assert experiment.canary.step_duration.total_seconds() == 60
    assert (experiment.analysis.alpha, experiment.analysis.failure_limit) == (0.01, 2)
    assert [m.builtin.value for m in experiment.metrics if m.builtin] == ["error-rate", "latency-p95"]
    assert parsed.nominal_seconds() == 180
    assert parsed.horizon_seconds() == 900


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"candidate": candidate(1.5)}, "candidate.errorRate: Input should be less than or equal to 1"),
        ({"trafic": {"rate": 1}}, "trafic: is not a field of the scenario format"),
        ({"traffic": {"rate": 0}}, "traffic.rate: Input should be greater than 0"),
        ({"candidate": None}, "candidate: Input should be a valid dictionary"),
        ({"schedule": {"interval": "10 seconds"}}, "schedule.interval: must be a duration like 30s"),
        ({"schedule": {"steps": [5, 5, 100]}}, "schedule.steps[1]: must be greater than the step before it"),
        (
            {"events": [{"at": "60s", "variant": "canary", "errorRate": 0.1}]},
            "events[0].variant: Input should be",
        ),
        ({"events": [{"at": "60s", "variant": "both"}]}, "events[0]: an event must set errorRate or latency"),
        (
            {"events": [{"at": "60s", "variant": "both", "latency": {"p50": 3}}]},
            "events[0].latency.p50: is not",
        ),
        ({"duration": "5s"}, "scenario: duration must be at least one schedule.interval"),
    ],
)
def test_bad_scenarios_name_the_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(scenario.ScenarioError) as caught:
        make(**changes)
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_a_missing_variant_is_required() -> None:
    raw = {key: value for key, value in REFERENCE.items() if key != "candidate"}
    with pytest.raises(scenario.ScenarioError, match=r"candidate: is required"):
        scenario.parse(raw)


def test_load_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {rate: 50}\nbaseline: {errorRate: 0, latency: {median: 1, sigma: 0}}\n")
    with pytest.raises(scenario.ScenarioError, match="candidate: is required"):
        scenario.load(path)


def test_events_split_intervals_at_their_virtual_time() -> None:
    parsed = make(
        events=[{"at": "125s", "variant": "candidate", "errorRate": 0.5, "latency": {"median": 300}}]
    )
    pieces = parsed.timeline().segments(120, 130)
    assert [length for length, _ in pieces] == [5, 5]
    before, after = pieces[0][1][scenario.CANDIDATE], pieces[1][1][scenario.CANDIDATE]
    assert (before.error_rate, before.latency_median_ms) == (0.01, 200)
    assert (after.error_rate, after.latency_median_ms, after.latency_sigma) == (0.5, 300, 0.5)
    assert pieces[1][1][scenario.BASELINE].error_rate == 0.01  # the other variant is untouched


def test_a_candidate_that_breaks_at_60s_is_caught_on_the_interval_after() -> None:
    parsed = make(
        candidate=candidate(0.0),
        events=[{"at": "60s", "variant": "candidate", "errorRate": 1.0}],
    )
    summary = engine.run(parsed, runs=20, seed=3)
    assert summary.rolled_back_rate == 1.0
    assert summary.median_seconds_to_rollback == 70  # the first window holding failures ends at 70 s
    # Every candidate error was served after the event, at the 25 % step it had just reached at 60 s:
    # 25 % of 200 req/s over 10 s, 500 on average.
    assert summary.median_candidate_errors_at_rollback is not None
    assert 400 <= summary.median_candidate_errors_at_rollback <= 600


# --------------------------------------------------------------------------- runs


def test_same_seed_same_summary_and_single_runs_replay() -> None:
    parsed = make(candidate=candidate(0.02))
    assert engine.run(parsed, runs=15, seed=11) == engine.run(parsed, runs=15, seed=11)
    policy = policies.get("modelrollout")
    whole = engine.replicate(parsed, policy, 11, range(15))
    assert engine.replicate(parsed, policy, 11, [7]) == [whole[7]]


def test_good_candidate_mostly_promoted_crash_loop_always_rolled_back() -> None:
    good = engine.run(make(), runs=200, seed=1)
    assert good.promoted_rate >= 0.9
    assert good.reached_full_rate == good.promoted_rate
    crash = engine.run(make(candidate=candidate(1.0)), runs=50, seed=1)
    assert crash.rolled_back_rate == 1.0
    assert crash.reached_full_rate == 0.0


@pytest.mark.parametrize("name", [name for name in policies.NAMES if name != "modelrollout"])
def test_each_peer_rolls_back_a_crash_loop_and_promotes_a_clear_twin(name: str) -> None:
    crash = engine.run(make(candidate=candidate(1.0)), runs=20, seed=2, policy=name)
    assert crash.rolled_back_rate == 1.0
    clear = {"errorRate": 0.0, "latency": {"median": 200, "sigma": 0.0}}
    twin = engine.run(make(baseline=clear, candidate=clear), runs=20, seed=2, policy=name)
    assert twin.promoted_rate == 1.0
    assert twin.first_try_promotion_rate == 1.0


def test_flagger_counts_failed_checks_and_rolls_back_on_the_next_tick() -> None:
    # 3 % errors always fail the 1.5 % check: hold, hold, then roll back at the third evaluation.
    summary = engine.run(make(candidate=candidate(0.03)), runs=10, seed=4, policy="flagger")
    assert summary.rolled_back_rate == 1.0
    assert summary.median_seconds_to_rollback == 30


def test_summary_json_has_the_documented_keys() -> None:
    summary = engine.run(make(candidate=candidate(1.0)), runs=3, seed=0).as_json()
    assert summary["runs"] == 3 and summary["rolledBackRate"] == 1.0
    assert summary["meanCandidateErrors"] > 0


# --------------------------------------------------------------------------- Prometheus' arithmetic


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(100, 10), (200, 30), (math.inf, 40)], 150.0),  # rank 20: 100 + 100 * (10 / 20)
        (0.1, [(100, 10), (200, 30), (math.inf, 40)], 40.0),  # lowest bucket interpolates from 0
        (0.9, [(100, 10), (200, 30), (math.inf, 40)], 200.0),  # rank 36 in +Inf: highest finite bound
        (0.5, [(200, 30), (math.inf, 40), (100, 10)], 150.0),  # sorted by le first
        (0.5, [(100, 4), (100, 6), (200, 30), (math.inf, 40)], 150.0),  # equal le merged
        (0.25, [(100, 12), (200, 10), (math.inf, 40)], 100 * 10 / 12),  # counts forced monotonic
        (0.5, [(100, 0), (200, 0), (math.inf, 0)], math.nan),  # no observations
        (0.5, [(100, 10), (200, 30)], math.nan),  # no +Inf bucket
        (0.5, [(math.inf, 10)], math.nan),  # fewer than two buckets
        (1.5, [(100, 10), (math.inf, 10)], math.inf),
        (-0.5, [(100, 10), (math.inf, 10)], -math.inf),
    ],
)
def test_histogram_quantile_matches_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float
) -> None:
    got = observe.histogram_quantile(q, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_observation_of_an_interval_without_traffic_is_nan_not_zero() -> None:
    experiment = make().experiment()
    rng = np.random.default_rng(0)
    profile = traffic.VariantProfile(0.5, 100, 0.5)
    batches = {
        scenario.BASELINE: traffic.simulate_batch(rng, 1000, profile),
        scenario.CANDIDATE: traffic.simulate_batch(rng, 0, profile),
    }
    samples, requests = observe.observe(experiment, batches)
    errors, latency = samples
    assert errors.results[scenario.CANDIDATE].outcome.is_no_data
    assert errors.counts is not None and errors.counts[scenario.CANDIDATE].total == 0
    assert errors.results[scenario.BASELINE].value == pytest.approx(batches[scenario.BASELINE].errors / 1000)
    assert latency.results[scenario.CANDIDATE].outcome.is_no_data
    assert latency.histograms is not None and latency.histograms[scenario.BASELINE][-1] == (math.inf, 1000)
    assert requests[scenario.CANDIDATE].value == 0


# --------------------------------------------------------------------------- Kayenta's classifier


def _kayenta_brent(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float]:
    """Kayenta's MannWhitney.calculateConfidenceInterval, literally: Brent on wilcoxonDiff."""

    def diff(mu: float, quantile: float) -> float:
        combined = np.concatenate([x - mu, y])
        ranks = stats.rankdata(combined)
        n, m = len(x), len(y)
        dz = ranks[:n].sum() - n * (n + 1) / 2 - n * m / 2
        ties = np.unique(combined, return_counts=True)[1]
        sigma = math.sqrt(n * m / 12 * ((n + m + 1) - (ties**3 - ties).sum() / ((n + m) * (n + m - 1))))
        return float((dz - 0.5 * np.sign(dz)) / sigma - quantile)

    z = float(stats.norm.ppf((1 - confidence) / 2))
    low, high = x.min() - y.max(), x.max() - y.min()

    def root(quantile: float) -> float:
        if diff(low, quantile) <= 0:
            return float(low)
        if diff(high, quantile) >= 0:
            return float(high)
        return float(optimize.brentq(diff, low, high, args=(quantile,), xtol=1e-12))

    return root(-z), root(z)


def test_kayenta_interval_equals_brent_on_its_step_function() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n, m = rng.integers(2, 15, size=2)
        x = np.round(rng.normal(0.5, 1, n), 1)  # rounded: plenty of ties, as error rates have
        y = np.round(rng.normal(0.0, 1, m), 1)
        lower, upper, _ = kayenta.shift_interval(x, y, 0.98)
        assert (lower, upper) == pytest.approx(_kayenta_brent(x, y, 0.98), abs=1e-9)


def test_kayenta_classifies_a_clear_increase_high_and_twins_pass() -> None:
    classifier = kayenta.MannWhitneyClassifier()
    control = [0.010, 0.011, 0.009, 0.010, 0.012, 0.010]
    worse = [0.030, 0.028, 0.033, 0.031, 0.029, 0.030]
    assert classifier.classify(control, worse, kayenta.Direction.INCREASE).label is kayenta.Label.HIGH
    assert classifier.classify(worse, control, kayenta.Direction.INCREASE).label is kayenta.Label.PASS
    assert classifier.classify(worse, control, kayenta.Direction.EITHER).label is kayenta.Label.LOW
    assert classifier.classify(control, control, kayenta.Direction.EITHER).label is kayenta.Label.PASS
    assert classifier.classify([], worse, kayenta.Direction.EITHER).label is kayenta.Label.NODATA


# --------------------------------------------------------------------------- the command


def test_cli_simulate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "crash.yaml"
    path.write_text(json.dumps({**REFERENCE, "candidate": candidate(1.0)}))  # JSON is YAML
    with pytest.raises(SystemExit) as exited:
        cli.main(["simulate", str(path), "--runs", "4", "--seed", "9", "--policy", "argo", "--json"])
    assert exited.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert {
        "runs",
        "rolledBackRate",
        "promotedRate",
        "medianSecondsToRollback",
        "p90SecondsToRollback",
        "medianCandidateErrorsAtRollback",
        "meanCandidateErrors",
        "reachedFullRate",
        "unfinishedRate",
    } <= set(printed)
    assert printed["runs"] == 4 and printed["rolledBackRate"] == 1.0


def test_cli_simulate_reports_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**REFERENCE, "candidate": candidate(2.0)}))
    with pytest.raises(SystemExit) as exited:
        cli.main(["simulate", str(path)])
    assert exited.value.code == 2
    assert "candidate.errorRate" in capsys.readouterr().err
