"""The plan summary (status.plan) computed off the tick: inputs, sharing, the background thread."""

from __future__ import annotations

import datetime
import time

import pytest

from modelrollout import planner, ports, spec
from modelrollout.core import model

WINDOW = datetime.timedelta(seconds=10)


def experiment(**canary: object) -> spec.ExperimentSpec:
    return spec.parse_spec(
        {
            "virtualService": {"name": "churn", "routes": ["primary"]},
            "baseline": {"subset": "v1", "workload": "churn-v1"},
            "candidate": {"subset": "v2", "workload": "churn-v2"},
            "canary": {"interval": "10s", **canary},
            "metrics": [
                {"name": "error-rate", "builtin": "error-rate", "max": 0.05},
                {"name": "latency", "builtin": "latency-p99", "maxRelativeIncrease": 0.2},
            ],
        }
    )


def observed(requests: float, errors: float) -> tuple[list[model.MetricSample], dict[str, ports.QueryResult]]:
    """One evaluation's samples: ``requests`` in the window (95 % on the baseline), ``errors`` of them."""
    ok = ports.QueryOutcome.OK
    base, cand = requests * 0.95, requests * 0.05
    counts = {"churn-v1": model.Counts(errors * 0.95, base), "churn-v2": model.Counts(errors * 0.05, cand)}
    results = {w: ports.QueryResult(ok, c.events / c.total if c.total else 0.0) for w, c in counts.items()}
    samples = [
        model.MetricSample("error-rate", results, counts=counts),
        model.MetricSample("latency", {w: ports.QueryResult(ok, 0.1) for w in counts}),
    ]
    return samples, {"churn-v1": ports.QueryResult(ok, base), "churn-v2": ports.QueryResult(ok, cand)}


def test_inputs_round_traffic_so_experiments_with_similar_traffic_share_one_summary():
    first = planner.inputs(experiment(), *observed(3012.0, 30.4), WINDOW)
    second = planner.inputs(experiment(), *observed(2987.0, 29.8), WINDOW)
    assert first == second  # 301 and 299 requests/s, 1.01 % and 0.998 % errors: both 300/s and 1.0 %
    (errors, what), (latency, slow) = first
    assert (what, slow) == ("error rate", "slow requests")
    assert errors.rate == latency.rate == 300.0 and errors.baseline_rate == 0.01
    assert latency.warmup_intervals == 1
    assert planner.inputs(experiment(), *observed(4000.0, 30.0), WINDOW) != first  # 400/s is not 300/s


def test_no_traffic_and_no_errors_give_nothing_to_summarize():
    assert planner.inputs(experiment(), *observed(0.0, 0.0), WINDOW) == ()
    (only,) = planner.inputs(experiment(), *observed(3000.0, 0.0), WINDOW)  # no errors: latency only
    assert only[1] == "slow requests"
    assert planner.Planner().summary("a", ()) is None


def test_every_request_failing_is_still_a_plan():
    plans = planner.inputs(experiment(), *observed(3000.0, 3000.0), WINDOW)
    assert plans[0][0].baseline_rate == 0.99  # a share under 1, as a plan needs


def test_at_once_the_summary_is_computed_in_the_call_and_kept():
    plans = planner.inputs(experiment(), *observed(3000.0, 30.0), WINDOW)
    planned = planner.Planner()
    sentence = planned.summary("a", plans)
    assert sentence == planner.describe(plans)
    assert sentence is not None and sentence.startswith("this plan detects >= +")
    assert "error rate, " in sentence and sentence.endswith("slow requests (80% power)")
    assert planned.summary("b", plans) is sentence  # another experiment, the same plan: not computed again


def test_in_the_background_a_tick_never_waits_and_an_asker_keeps_its_first_question():
    planned = planner.Planner(background=True)
    try:
        first = planner.inputs(experiment(), *observed(3000.0, 30.0), WINDOW)
        later = planner.inputs(experiment(), *observed(5000.0, 80.0), WINDOW)
        asked = time.perf_counter()
        assert planned.summary("a", first) is None
        assert time.perf_counter() - asked < 0.05  # asked, not computed
        # Asking again with another evaluation's traffic queues nothing new.
        assert planned.summary("a", later) is None
        assert planned.pending() == 1
        assert planned.wait_idle(timeout=60)
        assert planned.summary("a", later) == planner.describe(first)
        # Answered: a new question from "a" is a new question.
        assert planned.summary("a", later) is None and planned.pending() == 1
    finally:
        planned.close()


def test_the_background_thread_rests_between_summaries():
    """With busy_share 1 %, the second summary waits ~99x as long as the first took."""
    planned = planner.Planner(background=True, busy_share=0.01)
    try:
        one = planner.inputs(experiment(), *observed(3000.0, 30.0), WINDOW)
        two = planner.inputs(experiment(minStepDuration="20m"), *observed(3000.0, 30.0), WINDOW)
        assert planned.summary("a", one) is None and planned.summary("b", two) is None
        deadline = time.monotonic() + 60
        while planned.pending() == 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(1.0)
        assert planned.pending() == 1  # resting: the first took > 10 ms, so the rest is > 1 s
        assert planned.summary("a", one) is not None and planned.summary("b", two) is None
    finally:
        planned.close()


def test_busy_share_must_be_a_share():
    with pytest.raises(ValueError, match="busy_share must be in"):
        planner.Planner(busy_share=0)


def test_the_inputs_are_built_only_for_a_first_question() -> None:
    planned = planner.Planner(background=True, busy_share=0.01)
    built: list[int] = []

    def build() -> planner.Inputs:
        built.append(1)
        return planner.inputs(experiment(), *observed(3000.0, 30.0), WINDOW)

    try:
        assert planned.summary("a", build) is None and built == [1]
        assert planned.summary("a", build) is None and built == [1]  # still the first question
    finally:
        planned.close()
