"""An A/B test of several candidates (core/abtest.py ``_evaluate_several``) driven with synthetic intervals.

As in test_abtest.py, each interval hands the core what the measuring half would, drawn (seeded) from
known truths -- here per variant, at the weights the state holds: a candidate dropped from the test
gets no users and is not measured any more (the reconciler skips it).  Every outcome below is the one
the statistics should reach: the best candidate ships, a harmful, futile, unfair or broken one is
dropped while the others go on, all dropped is Discard, nothing by the deadline is Iterate.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from modelrollout import durations, measure, ports, report, spec, status
from modelrollout.core import abtest, arms, canary, model
from modelrollout.core.model import Phase
from modelrollout.providers.scripted import ScriptedProvider

from core_helpers import BASE, T0, ok
from test_crd import CRD_PATH, errors_of, make_validator

V2, V3, V4 = "churn-v2", "churn-v3", "churn-v4"
INTERVAL = datetime.timedelta(seconds=60)
SUCCESS = 'sum(increase(model_conversions_total{workload="{{ workload }}"}[{{ interval }}]))'
TOTAL = 'sum(increase(model_requests_total{workload="{{ workload }}"}[{{ interval }}]))'
PROMOTE = {"modelrollout.io/promote": "yes"}


def multi_spec(candidates: Sequence[str] = (V2, V3), **ab: Any) -> spec.ExperimentSpec:
    segments = ab.pop("segments", None)
    metrics = ab.pop(
        "metrics",
        [
            {"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}},
            {"name": "error-rate", "builtin": "error-rate", "max": 0.05},
        ],
    )
    raw: dict[str, Any] = {
        "virtualService": {"name": "churn", "routes": ["main"]},
        "baseline": {"subset": "v1", "workload": BASE},
        "candidates": [{"subset": w.removeprefix("churn-"), "workload": w} for w in candidates],
        "strategy": "ABTest",
        "abTest": {
            "split": 50,
            "interval": "1m",
            "maxDuration": "2h",
            "assignmentQuery": "sum(increase(model_assignments_total[{{ interval }}]))",
            **ab,
        },
        "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.05},
        "metrics": metrics,
    }
    if segments is not None:
        raw["segments"] = segments
    return spec.parse_spec(raw)


@dataclasses.dataclass
class Truth:
    """Conversion probability and error rate per variant (and per segment), requests and users."""

    conversion: Mapping[str, float]
    errors: Mapping[str, float] = dataclasses.field(default_factory=dict)  # default 1 %
    requests: float = 8000
    users: float = 800
    segments: Mapping[str, Mapping[str, float]] | None = None  # segment -> variant -> probability


def interval(
    rng: np.random.Generator, experiment: spec.ExperimentSpec, truth: Truth, weights: Mapping[str, int]
) -> model.Observation:
    """One interval at ``weights``: a variant at 0 has no users and is not measured."""
    serving = {w: p for w, p in weights.items() if p > 0}
    sums: dict[str, model.Sums] = {}
    segments: dict[str, dict[str, model.Sums]] = {}
    for workload, percent in serving.items():
        n = int(rng.poisson(truth.requests * percent / 100))
        if truth.segments:
            parts = np.array_split(np.arange(n), len(truth.segments))
            won_all = 0
            for (segment, probabilities), part in zip(truth.segments.items(), parts, strict=True):
                won = int(rng.binomial(len(part), probabilities[workload]))
                segments.setdefault(segment, {})[workload] = model.Sums(float(len(part)), float(won))
                won_all += won
            sums[workload] = model.Sums(float(n), float(won_all))
        else:
            sums[workload] = model.Sums(float(n), float(rng.binomial(n, truth.conversion[workload])))
    objective = model.MetricSample(
        "conversion",
        {w: ok(s.total / s.count) for w, s in sums.items()},
        counts={w: model.Counts(s.total, s.count) for w, s in sums.items()},
        sums=sums,
        segments=segments or None,
    )
    rates = {w: truth.errors.get(w, 0.01) for w in serving}
    errors = model.MetricSample(
        "error-rate",
        {w: ok(rates[w]) for w in serving},
        counts={w: model.Counts(rates[w] * sums[w].count, sums[w].count) for w in serving},
    )
    assigned = {w: ok(float(rng.poisson(truth.users * p / 100))) for w, p in serving.items()}
    requests = {w: ok(s.count) for w, s in sums.items()}
    return model.Observation(
        dict(weights), metrics=(objective, errors), requests=requests, assignments=assigned
    )


def run(
    experiment: spec.ExperimentSpec,
    truth: Truth,
    *,
    seed: int = 1,
    limit: int = 300,
    until: Callable[[model.State], bool] | None = None,
) -> tuple[model.State, list[model.Decision], dict[str, Any]]:
    """Start, then one evaluation per interval until a final phase, a wait for promotion, ``until`` or
    ``limit``; the state goes through the status and back at every tick, as in the operator."""
    rng = np.random.default_rng(seed)
    now = T0
    start = canary.decide(experiment, model.State(), model.Observation(None), now)
    decisions = [start]
    stored: dict[str, Any] = status.render(start, {}, now, experiment.workloads)
    for _ in range(limit):
        state = status.parse_state(stored)
        if state.phase.is_final or state.phase is Phase.PAUSED or (until is not None and until(state)):
            break
        now += INTERVAL
        decision = canary.decide(experiment, state, interval(rng, experiment, truth, state.weights), now)
        decisions.append(decision)
        stored = status.render(decision, stored, now, experiment.workloads)
    return status.parse_state(stored), decisions, stored


def events(decisions: list[model.Decision]) -> list[tuple[str, str]]:
    return [(event.reason, event.message) for d in decisions for event in d.events]


def record(state: model.State, workload: str) -> dict[str, Any]:
    return next(r for r in state.results["candidates"] if r["workload"] == workload)


def dropped_at(decisions: list[model.Decision], workload: str) -> model.Decision:
    return next(
        d
        for d in decisions
        if any(e.reason == "CandidateDropped" and f"dropped {workload} " in e.message for e in d.events)
    )


# --------------------------------------------------------------------------- the split


def test_the_split_is_shared_equally_among_the_candidates() -> None:
    two = canary.decide(multi_spec(), model.State(), model.Observation(None), T0)
    assert two.weights == {BASE: 50, V2: 25, V3: 25}
    assert "50% of participating users to churn-v2, churn-v3 (shared equally)" in two.state.message
    three = canary.decide(multi_spec((V2, V3, V4), split=40), model.State(), model.Observation(None), T0)
    assert three.weights == {BASE: 60, V2: 14, V3: 13, V4: 13}  # largest remainder, earlier first


# --------------------------------------------------------------------------- outcomes


def test_the_better_candidate_ships_while_a_harmful_one_is_dropped() -> None:
    experiment = multi_spec(autoPromote=True)
    state, decisions, _ = run(experiment, Truth({BASE: 0.05, V2: 0.02, V3: 0.065}))
    assert state.phase is Phase.SUCCEEDED and state.outcome == "Ship", state.message
    assert state.reason == "Shipped" and state.results["winner"] == V3
    assert dict(state.weights) == {BASE: 0, V2: 0, V3: 100}
    harmful = record(state, V2)
    assert harmful["state"] == arms.DROPPED and harmful["reason"] == "Discarded"
    assert harmful["message"].startswith("Discard: ") and harmful["objective"]["lift"] < 0
    # Dropped first: its share went back to the baseline while churn-v3 kept its own.
    drop = dropped_at(decisions, V2)
    assert drop.weights == {BASE: 75, V2: 0, V3: 25} and drop.state.phase is Phase.PROGRESSING
    after = decisions[decisions.index(drop) + 1 :]
    assert all(d.state.weights.get(V2, 0) == 0 for d in after)
    # status.objective is the winner's entry, naming it; each candidate keeps its own.
    objective = state.results["objective"]
    assert objective["variant"] == V3 and objective == {**record(state, V3)["objective"], "variant": V3}
    low, high = objective["interval"]
    assert low > 0 and objective["lift"] >= 0.05 and low <= 0.3 <= high  # the truth: +30 %
    reasons = [reason for reason, _ in events(decisions)]
    assert reasons.count("CandidateDropped") == 1 and "Shipped" in reasons and "Promoted" in reasons
    assert "churn-v3 wins" in state.message


def test_a_candidate_discarded_as_another_ships_is_dropped_and_the_rest_of_the_split_kept() -> None:
    state, decisions, _ = run(multi_spec(), Truth({BASE: 0.05, V2: 0.03, V3: 0.065}), seed=1)
    assert state.phase is Phase.PAUSED and state.outcome == "Ship" and state.results["winner"] == V3
    assert record(state, V2)["state"] == arms.DROPPED and dropped_at(decisions, V2) is decisions[-1]
    assert dict(state.weights) == {BASE: 75, V2: 0, V3: 25}  # the harmful one's users back on the baseline
    assert "the split stays at 25%" in state.message
    reasons = [reason for reason, _ in events(decisions[-1:])]
    assert reasons == ["CandidateDropped", "Shipped", "AwaitingPromotion"]


def test_a_futile_candidate_is_dropped_and_the_others_go_on() -> None:
    # churn-v2 is as good as the baseline: +5 % is soon ruled out.  churn-v3 (+3 %) needs much longer.
    experiment = multi_spec(maxDuration="14d")
    truth = Truth({BASE: 0.05, V2: 0.05, V3: 0.0515}, requests=40000)
    state, _, _ = run(experiment, truth, until=lambda s: V2 in arms.dropped(experiment, s))
    assert state.phase is Phase.PROGRESSING, state.message
    futile = record(state, V2)
    assert futile["state"] == arms.DROPPED and futile["reason"] == "Discarded"
    assert "futility" in futile["message"] and futile["objective"]["interval"][1] < 0.05
    assert record(state, V3)["state"] == arms.ACTIVE
    assert dict(state.weights) == {BASE: 75, V2: 0, V3: 25}
    assert state.reason == "CandidateDropped" and "carrying on with churn-v3" in state.message
    assert state.results["objective"]["variant"] == V3  # the one left leads
    assert "winner" not in state.results


def test_every_candidate_dropped_is_discard() -> None:
    state, decisions, _ = run(multi_spec(), Truth({BASE: 0.05, V2: 0.035, V3: 0.03}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == "Discard", state.message
    assert state.reason == "Discarded" and "every candidate was discarded" in state.message
    assert dict(state.weights) == {BASE: 100, V2: 0, V3: 0}
    assert all(r["state"] == arms.DROPPED for r in state.results["candidates"])
    assert "winner" not in state.results
    assert "RolledBack" in [reason for reason, _ in events(decisions)]


def test_nothing_shipped_by_max_duration_is_iterate() -> None:
    state, _, _ = run(multi_spec(maxDuration="10m"), Truth({BASE: 0.05, V2: 0.051, V3: 0.052}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == "Iterate" and state.reason == "Iterate"
    assert "no candidate ships by maxDuration" in state.message
    assert dict(state.weights) == {BASE: 100, V2: 0, V3: 0}
    for workload in (V2, V3):
        low, high = record(state, workload)["objective"]["interval"]
        assert low < 0 < high


def test_a_broken_guardrail_drops_that_candidate_only() -> None:
    experiment = multi_spec(autoPromote=True)
    truth = Truth({BASE: 0.05, V2: 0.065, V3: 0.07}, errors={V3: 0.2})
    state, decisions, _ = run(experiment, truth)
    broken = record(state, V3)
    assert broken["state"] == arms.DROPPED and broken["reason"] == "GuardrailFailed"
    assert "error-rate" in broken["message"]
    assert dropped_at(decisions, V3) is decisions[1]  # at the first evaluation, before any judgement
    assert state.phase is Phase.SUCCEEDED and state.results["winner"] == V2, state.message
    assert dict(state.weights) == {BASE: 0, V2: 100, V3: 0}


def test_every_guardrail_broken_rolls_back_as_discard() -> None:
    truth = Truth({BASE: 0.05, V2: 0.065, V3: 0.07}, errors={V2: 0.2, V3: 0.3})
    state, _, _ = run(multi_spec(), truth)
    assert state.phase is Phase.ROLLED_BACK and state.reason == "GuardrailFailed"
    assert state.outcome == "Discard" and "every candidate failed" in state.message


def test_an_unfair_candidate_is_dropped() -> None:
    # churn-v3 is better overall but harms eu by half: unfair.  churn-v2 helps everyone.
    truth = Truth(
        {},
        requests=18000,
        segments={
            "region=eu": {BASE: 0.08, V2: 0.09, V3: 0.04},
            "region=us": {BASE: 0.04, V2: 0.05, V3: 0.08},
        },
    )
    experiment = multi_spec(segments=["region"], fairness={"margin": 0.1}, autoPromote=True)
    state, _, _ = run(experiment, truth)
    unfair = record(state, V3)
    assert unfair["state"] == arms.DROPPED and unfair["reason"] == "UnfairToSegment", state.message
    assert "churn-v3 is worse than the baseline by more than 10% in region=eu" in unfair["message"]
    assert state.phase is Phase.SUCCEEDED and state.results["winner"] == V2
    rows = {(r["variant"], r["segment"]["region"]): r for r in state.results["segments"]}
    assert set(rows) == {(V2, "eu"), (V2, "us"), (V3, "eu"), (V3, "us")}  # the dropped one's kept
    assert rows[V3, "eu"]["unfair"] is True and rows[V2, "eu"]["unfair"] is False


# --------------------------------------------------------------------------- statistics


def test_each_comparison_runs_at_alpha_over_the_candidates() -> None:
    """Bonferroni: the same data give a wider interval for a candidate among two than alone."""
    metrics = [
        {"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}},
        {"name": "clicks", "ratio": {"success": SUCCESS, "total": TOTAL}},
        {"name": "error-rate", "builtin": "error-rate", "max": 0.05},
    ]
    several = multi_spec(metrics=metrics)
    alone = multi_spec((V2,), metrics=metrics)
    rng = np.random.default_rng(4)
    truth = Truth({BASE: 0.05, V2: 0.06, V3: 0.06})
    obs = interval(rng, several, truth, {BASE: 50, V2: 25, V3: 25})
    clicks = dataclasses.replace(obs.metrics[0], name="clicks")  # type: ignore[index]
    obs = dataclasses.replace(obs, metrics=(*obs.metrics, clicks))  # type: ignore[misc]
    only = {BASE, V2}

    def without_v3(sample: model.MetricSample) -> model.MetricSample:
        kept = {k: v for k, v in sample.results.items() if k in only}
        return dataclasses.replace(
            sample,
            results=kept,
            counts={k: v for k, v in (sample.counts or {}).items() if k in only},
            sums={k: v for k, v in (sample.sums or {}).items() if k in only} or None,
        )

    obs_alone = dataclasses.replace(obs, metrics=tuple(without_v3(m) for m in obs.metrics or ()))
    results = {}
    for experiment, seen in ((several, obs), (alone, obs_alone)):
        state = canary.decide(experiment, model.State(), model.Observation(None), T0).state
        results[len(experiment.arms)] = canary.decide(experiment, state, seen, T0 + INTERVAL).state.results
    two = next(r["objective"] for r in results[2]["candidates"] if r["workload"] == V2)
    one = results[1]["objective"]
    assert (two["baseline"], two["candidate"], two["lift"]) == (
        one["baseline"],
        one["candidate"],
        one["lift"],
    )
    assert two["interval"][0] < one["interval"][0] and two["interval"][1] > one["interval"][1]
    assert "alpha 0.025" in two["reason"] and "alpha 0.05" in one["reason"]
    # Secondary metrics: alpha over the metrics and over the candidates; one entry per candidate.
    assert [(s["metric"], s["variant"], s["alpha"]) for s in results[2]["secondary"]] == [
        ("clicks", V2, 0.025),
        ("clicks", V3, 0.025),
    ]
    assert results[1]["secondary"][0]["alpha"] == 0.05
    # The plan: at alpha over the candidates, for a quarter of the users (not half): it takes longer.
    plan, single = results[2]["abPlan"], results[1]["abPlan"]
    assert "at a 50% split over 2 candidates" in plan["message"]
    longer = durations.parse_duration(plan["expectedDuration"])
    assert longer > durations.parse_duration(single["expectedDuration"])


def test_a_sample_ratio_mismatch_of_one_pair_holds_the_test() -> None:
    experiment = multi_spec()
    rng = np.random.default_rng(3)
    now = T0
    state = canary.decide(experiment, model.State(), model.Observation(None), now).state
    for _ in range(40):
        now += INTERVAL
        obs = interval(rng, experiment, Truth({BASE: 0.05, V2: 0.05, V3: 0.05}), state.weights)
        skewed = {BASE: ok(400.0), V2: ok(200.0), V3: ok(120.0)}  # churn-v3 gets too few new users
        state = canary.decide(experiment, state, dataclasses.replace(obs, assignments=skewed), now).state
        if state.reason == "SampleRatioMismatch":
            break
    assert state.phase is Phase.PROGRESSING and state.reason == "SampleRatioMismatch", state.message
    assert "churn-v3 got" in state.message
    assert state.results["srm"]["passed"] is False
    assert state.analysis["srm"]["detected"] is True
    assert state.analysis[f"{V2}:srm"]["detected"] is False


def test_a_dropped_candidate_is_no_longer_measured() -> None:
    """Without users its counters stand still (a count of 0): measured, it would leave every variant's
    sums incomplete, and the objective without data for the candidates still in the test."""
    experiment = multi_spec(
        metrics=[{"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}}],
        assignmentQuery='sum(increase(model_assignments_total{workload="{{ workload }}"}[{{ interval }}]))',
    )
    counts = {BASE: (50.0, 1000.0), V2: (30.0, 500.0), V3: (0.0, 0.0)}

    def answer(promql: str) -> ports.QueryResult:
        workload = next(w for w in counts if f'workload="{w}"' in promql)
        successes, total = counts[workload]
        return ok(successes if "conversions" in promql else total)

    def measured(skip: tuple[str, ...]) -> tuple[model.MetricSample, ScriptedProvider]:
        provider = ScriptedProvider(answer)
        window = datetime.timedelta(minutes=1)
        samples, _ = measure.measure(experiment, "churn-ab", "ml", provider, window, T0, skip=skip)
        assigned = measure.assignments(experiment, "churn-ab", "ml", provider, window, T0, skip=skip)
        assert assigned is not None and set(assigned) == {BASE, V2, V3} - set(skip)
        return samples[0], provider

    everyone, _ = measured(())
    assert everyone.sums is None  # churn-v3's count of 0: no sums for anyone
    racing, provider = measured((V3,))
    assert racing.sums is not None and set(racing.sums) == {BASE, V2}
    assert not any(V3 in promql for promql in provider.queries)


# --------------------------------------------------------------------------- promotion and status


def test_ship_waits_for_the_annotation_which_promotes_the_winner() -> None:
    experiment = multi_spec((V2, V3, V4), split=60)
    truth = Truth({BASE: 0.05, V2: 0.05, V3: 0.065, V4: 0.02})
    state, _, _ = run(experiment, truth)
    assert state.phase is Phase.PAUSED and state.reason == canary.AWAITING_PROMOTION, state.message
    assert state.outcome == "Ship" and state.results["winner"] == V3
    # The split stays as it was (but for what was dropped) while waiting ...
    assert state.weights[V3] > 0 and state.weights[V4] == 0 and sum(state.weights.values()) == 100
    later = canary.decide(experiment, state, model.Observation(dict(state.weights)), T0 + INTERVAL * 900)
    assert later.state.phase is Phase.PAUSED and later.weights == dict(state.weights)
    # ... until a human promotes: the winner gets everything.
    promote = model.Observation(dict(state.weights), annotations=PROMOTE)
    promoted = canary.decide(experiment, state, promote, T0 + INTERVAL * 901)
    assert promoted.state.phase is Phase.SUCCEEDED and promoted.state.outcome == "Ship"
    assert promoted.weights == {BASE: 0, V2: 0, V3: 100, V4: 0}
    assert promoted.state.results["winner"] == V3


def test_a_promote_annotation_before_any_ship_promotes_the_leader() -> None:
    experiment = multi_spec()
    state, _, _ = run(experiment, Truth({BASE: 0.05, V2: 0.052, V3: 0.058}), limit=6)
    assert state.phase is Phase.PROGRESSING
    leader = state.results["objective"]["variant"]
    assert leader == arms.leader(experiment, state)
    promote = model.Observation(dict(state.weights), annotations=PROMOTE)
    promoted = canary.decide(experiment, state, promote, T0 + INTERVAL * 7)
    assert promoted.state.phase is Phase.SUCCEEDED and promoted.state.results["winner"] == leader
    assert promoted.weights is not None and promoted.weights[leader] == 100


def test_status_round_trip_and_continue() -> None:
    """The status holds all a restarted operator needs: continuing from it decides as from memory."""
    experiment = multi_spec(segments=["region"])
    truth = Truth(
        {},
        segments={
            "region=eu": {BASE: 0.05, V2: 0.02, V3: 0.05},
            "region=us": {BASE: 0.05, V2: 0.02, V3: 0.052},
        },
    )
    state, decisions, stored = run(experiment, truth, limit=12)
    assert state.phase is Phase.PROGRESSING and V2 in arms.dropped(experiment, state), state.message
    again = status.parse_state(status.render(decisions[-1], stored, T0, experiment.workloads))
    assert again.results == decisions[-1].state.results and again.analysis == decisions[-1].state.analysis
    obs = interval(np.random.default_rng(8), experiment, truth, again.weights)
    now = T0 + INTERVAL * 13
    assert canary.decide(experiment, again, obs, now) == canary.decide(
        experiment, decisions[-1].state, obs, now
    )
    # What the operator writes is what the CRD types (no field pruned by the API server).
    schema = make_validator(_status_schema())
    assert errors_of(schema, stored) == []
    records = {r["workload"]: r for r in stored["candidates"]}
    assert set(records) == {V2, V3} and all("objective" in r for r in records.values())
    assert {s["variant"] for s in stored["segments"]} == {V2, V3}
    assert stored["timeline"][-1]["variant"] == stored["objective"]["variant"] == V3
    assert {m["variant"] for m in stored["metrics"]} == {V3}  # the dropped one is no longer compared


def test_the_report_lists_every_candidate() -> None:
    experiment = multi_spec((V2, V3, V4), split=60)
    truth = Truth({BASE: 0.05, V2: 0.05, V3: 0.065, V4: 0.02})
    _, _, stored = run(experiment, truth)
    body = {
        "metadata": {"name": "churn-ab", "namespace": "ml"},
        "spec": {
            "strategy": "ABTest",
            "baseline": {"subset": "v1", "workload": BASE},
            "candidates": [{"subset": w.removeprefix("churn-"), "workload": w} for w in (V2, V3, V4)],
            "abTest": {"split": 60, "maxDuration": "2h"},
            "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.05},
            "metrics": [{"name": "conversion", "ratio": {"success": SUCCESS, "total": TOTAL}}],
        },
        "status": stored,
    }
    text = report.render(body, "md", plots=False)
    section = text[text.index("## Candidates") :]
    for workload in (V2, V3, V4):
        entry = next(r for r in stored["candidates"] if r["workload"] == workload)["objective"]
        assert workload in section and f"{entry['lift'] * 100:+.1f} %" in section
    assert "winner" in section.lower() and "Dropped" in section
    assert report.render(body, "html", plots=True).count("<table") >= 2
    assert report.markdown_summary(body)
    # Odd values in the candidates' records do not break it.
    odd = {**stored, "candidates": [{"workload": 3}, "x", {"workload": V2, "objective": {"lift": "big"}}]}
    assert "## Candidates" in report.render({**body, "status": odd}, "md", plots=False)


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return node


def _status_schema() -> dict[str, Any]:
    node: dict[str, Any] = _crd_schema()["properties"]["status"]
    return node


def test_the_crd_types_and_bounds_what_several_candidates_write() -> None:
    status_node = _status_schema()["properties"]
    record_objective = status_node["candidates"]["items"]["properties"]["objective"]
    overall = dict(status_node["objective"]["properties"])
    assert overall.pop("variant")["type"] == "string"
    assert record_objective["properties"] == overall  # the shape of status.objective
    for name in ("secondary", "segments", "timeline"):
        assert status_node[name]["items"]["properties"]["variant"]["type"] == "string"
    assert status_node["segments"]["maxItems"] >= abtest.MAX_SEGMENT_ROWS
    metrics = _crd_schema()["properties"]["spec"]["properties"]["metrics"]["maxItems"]
    assert status_node["secondary"]["maxItems"] >= (metrics - 1) * spec.MAX_CANDIDATES
