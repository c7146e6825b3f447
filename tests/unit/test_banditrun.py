"""strategy: Bandit as a state machine: Thompson allocation under floor and step cap, guardrails per arm,
the confirmation stage, the stratified final comparison, and everything kept in status."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from modelrollout import spec
from modelrollout import status as status_mod
from modelrollout.core import arms, banditrun, canary, lift, model
from modelrollout.core.model import Phase

import test_crd
from core_helpers import T0, make_spec, ok

V1, V2, V3 = "churn-v1", "churn-v2", "churn-v3"
VARIANTS = (V1, V2, V3)
REWARD = {
    "name": "conversion",
    "ratio": {"success": 'sum(conv{w="{{ workload }}"})', "total": 'sum(req{w="{{ workload }}"})'},
}
ERRORS = {"name": "error-rate", "builtin": "error-rate", "max": 0.05}
TWO = [{"subset": "v2", "workload": V2}, {"subset": "v3", "workload": V3}]
TICK = datetime.timedelta(seconds=10)  # the bandit's interval in these tests


def bandit_spec(
    candidates: list[dict[str, str]] = TWO, analysis: dict[str, Any] | None = None, **settings: Any
) -> spec.ExperimentSpec:
    """Baseline churn-v1 and ``candidates``, rewarded by conversion, every 10 s; ``settings`` go to bandit."""
    return make_spec(
        strategy="Bandit",
        candidate=None,
        candidates=candidates,
        metrics=[REWARD, ERRORS],
        bandit={"reward": "conversion", "interval": "10s", **settings},
        analysis=analysis or {},
    )


Rates = Mapping[str, float]


def sampled(
    weights: Mapping[str, int],
    rates: Rates,
    rng: np.random.Generator,
    *,
    total: int = 2000,
    errors: Rates | None = None,
    no_reward: frozenset[str] = frozenset(),
) -> model.Observation:
    """One interval: requests routed by the weights (multinomial), each converting at its arm's rate."""
    variants = list(weights)
    served = rng.multinomial(total, [weights[w] / 100 for w in variants]) if variants else []
    n = {w: float(k) for w, k in zip(variants, served, strict=True)}
    s = {w: float(rng.binomial(int(n[w]), rates[w])) for w in variants}
    return measured(weights, n, s, errors=errors, no_reward=no_reward)


def measured(
    weights: Mapping[str, int],
    trials: Mapping[str, float],
    successes: Mapping[str, float],
    *,
    errors: Rates | None = None,
    no_reward: frozenset[str] = frozenset(),
) -> model.Observation:
    errors = errors or {}
    live = [w for w in trials if trials[w] > 0]
    rewarded = [w for w in live if w not in no_reward]
    return model.Observation(
        weights=dict(weights),
        metrics=(
            model.MetricSample(
                "conversion",
                {w: ok(successes[w] / trials[w]) for w in rewarded},
                counts={w: model.Counts(successes[w], trials[w]) for w in rewarded},
            ),
            model.MetricSample(
                "error-rate",
                {w: ok(errors.get(w, 0.01)) for w in live},
                counts={w: model.Counts(trials[w] * errors.get(w, 0.01), trials[w]) for w in live},
            ),
        ),
        requests={w: ok(trials[w]) for w in trials},
    )


Observe = Callable[[model.State, int], model.Observation]


def drive(
    experiment: spec.ExperimentSpec,
    observe: Observe,
    *,
    ticks: int = 200,
    state: model.State | None = None,
    start: int = 0,
    annotations: Callable[[int], Mapping[str, str]] | None = None,
    restart_every_tick: bool = False,
) -> tuple[model.State, list[model.Decision]]:
    """Tick every interval until the end; the routes hold what the core asked.  ``observe(state, i)``
    measures evaluation ``i``.  With ``restart_every_tick`` the state goes through the status each tick."""
    state = state or model.State()
    decisions: list[model.Decision] = []
    previous: dict[str, Any] | None = None
    for i in range(start, start + ticks):
        now = T0 + TICK * i
        due = canary.evaluation_due(experiment, state, now)
        obs = observe(state, i) if due else model.Observation(weights=dict(state.weights) or None)
        if annotations is not None:
            obs = dataclasses.replace(obs, annotations=annotations(i))
        decision = canary.decide(experiment, state, obs, now)
        decisions.append(decision)
        state = decision.state
        if restart_every_tick:
            previous = through_status(decision, previous, now, experiment)
            state = status_mod.parse_state(previous)
        if state.phase.is_final:
            break
    return state, decisions


def through_status(
    decision: model.Decision, previous: dict[str, Any] | None, now: datetime.datetime, experiment: Any
) -> dict[str, Any]:
    """The status the operator writes for ``decision``, as the API server hands it back (JSON)."""
    rendered = status_mod.render(decision, previous, now, experiment.workloads)
    loaded: dict[str, Any] = json.loads(json.dumps(rendered))
    return loaded


def at_rates(rates: Rates, seed: int = 1, **kwargs: Any) -> Observe:
    rng = np.random.default_rng(seed)
    return lambda state, i: sampled(state.weights, rates, rng, **kwargs)


def evaluations(decisions: list[model.Decision]) -> list[model.Decision]:
    """The decisions that measured an interval (those carrying assessments)."""
    return [d for d in decisions if d.assessments]


def reasons(decisions: list[model.Decision]) -> list[str]:
    return [event.reason for d in decisions for event in d.events]


# --------------------------------------------------------------------------- the spec


def test_the_spec_types_the_bandit_block_with_defaults() -> None:
    experiment = make_spec(
        strategy="Bandit",
        candidate=None,
        candidates=TWO,
        metrics=[REWARD, ERRORS],
        bandit={"reward": "conversion"},
    )
    settings = experiment.bandit
    assert settings is not None and experiment.is_bandit
    assert (settings.min_weight, settings.max_step_change, settings.confidence) == (10, 20, 0.95)
    assert (settings.intervals_required, settings.minimum_effect, settings.auto_promote) == (3, 0.05, True)
    assert settings.max_duration == datetime.timedelta(days=7)
    assert experiment.interval == settings.interval == datetime.timedelta(minutes=1)
    assert bandit_spec().interval == TICK
    # The reward is no guardrail; builtins and metrics with thresholds are.
    assert [m.name for m in experiment.guardrails] == ["error-rate"]


@pytest.mark.parametrize(
    ("changes", "path", "mentions"),
    [
        ({"bandit": None}, "spec.bandit", "required for strategy Bandit"),
        ({"bandit": {"reward": "error-rate"}}, "spec.bandit.reward", "ratio metric"),
        ({"bandit": {"reward": "revenue"}}, "spec.bandit.reward", "ratio metric"),
        ({"bandit": {"reward": "conversion", "minWeight": 34}}, "spec.bandit.minWeight", "(3)"),
        ({"bandit": {"reward": "conversion", "minWeight": 0}}, "spec.bandit.minWeight", "greater than"),
        ({"bandit": {"reward": "conversion", "confidence": 1}}, "spec.bandit.confidence", "less than"),
        ({"bandit": {"reward": "conversion", "interval": "0s"}}, "spec.bandit.interval", "longer than"),
        ({"bandit": {"reward": "conversion", "maxStepChange": 0}}, "spec.bandit.maxStepChange", "greater"),
        ({"shadow": {"duration": "5m"}, "candidates": TWO[:1]}, "spec.shadow", "not for Bandit"),
    ],
)
def test_the_spec_refuses_a_bandit_it_cannot_run(changes: dict[str, Any], path: str, mentions: str) -> None:
    raw: dict[str, Any] = {
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": V1},
        "candidates": TWO,
        "strategy": "Bandit",
        "metrics": [REWARD, ERRORS],
        "bandit": {"reward": "conversion"},
    }
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(spec.SpecError) as caught:
        spec.parse_spec(raw)
    (problem,) = caught.value.problems
    assert problem.path == path and mentions in str(problem), problem


# --------------------------------------------------------------------------- allocation


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (1, {V1: 50, "churn-v2": 50}),
        (2, {V1: 34, V2: 33, V3: 33}),
        (4, {V1: 20, "churn-v2": 20, "churn-v3": 20, "churn-v4": 20, "churn-v5": 20}),
    ],
)
def test_it_starts_with_an_equal_split(candidates: int, expected: dict[str, int]) -> None:
    variants = [{"subset": f"v{i}", "workload": f"churn-v{i}"} for i in range(2, candidates + 2)]
    experiment = bandit_spec(variants)
    first = canary.decide(experiment, model.State(), model.Observation(weights=None), T0)
    assert first.weights == expected and first.state.phase is Phase.PROGRESSING
    assert first.state.results["bandit"]["stage"] == banditrun.EXPLORING
    assert [e.reason for e in first.events] == ["Started"]


def test_it_converges_on_the_best_arm_and_promotes_it() -> None:
    experiment = bandit_spec()
    state, decisions = drive(experiment, at_rates({V1: 0.04, V2: 0.04, V3: 0.08}))
    assert state.phase is Phase.SUCCEEDED, state.message
    assert state.outcome == lift.Outcome.SHIP.value and state.reason == "Shipped"
    assert state.results["winner"] == V3 and state.weights == {V1: 0, V2: 0, V3: 100}
    assert [r for r in reasons(decisions) if r != "Confirming"] == ["Started", "Shipped", "Promoted"]
    # Every candidate's guardrails and reward, each entry naming the candidate it compares.
    first = evaluations(decisions)[0]
    named = {(a.name, a.extra["variant"]) for a in first.assessments}
    assert named == {(m, w) for m in ("error-rate", "conversion") for w in (V2, V3)}
    assert all(a.extra["role"] == "Reward" for a in first.assessments if a.name == "conversion")
    # The best arm's weight grew while the bandit explored.
    exploring = [d.weights for d in evaluations(decisions) if d.state.reason == banditrun.EXPLORING]
    assert exploring and exploring[-1] is not None and exploring[-1][V3] > 50
    record = state.results["bandit"]
    assert record["stage"] == banditrun.DECIDED and record["leader"] == V3
    comparison = {c["workload"]: c for c in record["comparison"]}
    assert comparison[V3]["better"] and comparison[V3]["interval"][0] > 0
    assert not comparison[V2]["better"]
    assert record["alpha"] == pytest.approx(0.025)  # alpha over the two candidates
    assert "Mantel-Haenszel" in state.message


def test_a_clear_pick_is_confirmed_at_an_even_split_within_the_step_cap() -> None:
    experiment = bandit_spec(minimumEffect=0.01)  # a wide interval: the stop cannot be the decision
    state, decisions = drive(experiment, at_rates({V1: 0.04, V2: 0.04, V3: 0.08}))
    assert state.phase is Phase.SUCCEEDED and state.results["winner"] == V3
    entered = next(d for d in decisions if any(e.reason == banditrun.CONFIRMING for e in d.events))
    assert "P(best) >= 0.95 for 3 interval(s) in a row" in entered.events[0].message
    confirming = [d.weights for d in evaluations(decisions) if d.state.reason == banditrun.CONFIRMING]
    assert confirming and all(w is not None and w[V2] == 0 for w in confirming)  # the others set aside
    assert confirming[-1] == {V1: 50, V2: 0, V3: 50}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("settings", "rates"),
    [
        ({}, {V1: 0.04, V2: 0.04, V3: 0.08}),
        ({"minWeight": 5, "maxStepChange": 7}, {V1: 0.05, V2: 0.09, V3: 0.05}),
        ({"minWeight": 20, "maxStepChange": 50, "maxDuration": "3m"}, {V1: 0.05, V2: 0.05, V3: 0.05}),
    ],
)
def test_every_allocation_sums_to_100_within_the_floor_and_the_step_cap(
    settings: dict[str, Any], rates: Rates, seed: int
) -> None:
    experiment = bandit_spec(**settings)
    floor = experiment.bandit.min_weight if experiment.bandit else 0
    cap = experiment.bandit.max_step_change if experiment.bandit else 0
    state, decisions = drive(experiment, at_rates(rates, seed))
    assert state.phase.is_final
    weights = [d.weights for d in decisions if d.weights is not None and not d.state.phase.is_final]
    assert len(weights) > 2
    for before, after in itertools.pairwise(weights):
        assert sum(after.values()) == 100 and set(after) == set(VARIANTS)
        in_play = [w for w in VARIANTS if after[w] > 0]
        assert all(after[w] >= floor for w in in_play), after
        if all(after[w] > 0 for w in before if before[w] > 0):  # no arm set aside in this move
            assert all(abs(after[w] - before[w]) <= cap for w in VARIANTS), (before, after)
    final = decisions[-1].state.results["bandit"]
    allocations = final["allocation"]
    assert all(sum(a["weights"].values()) == 100 for a in allocations)


# --------------------------------------------------------------------------- guardrails and data


def test_a_harmful_arm_is_dropped_at_once_and_the_others_carry_on() -> None:
    experiment = bandit_spec()
    observe = at_rates({V1: 0.04, V2: 0.04, V3: 0.08}, errors={V2: 0.30})
    state, decisions = drive(experiment, observe)
    at_drop = next(d for d in decisions if any(e.reason == "CandidateDropped" for e in d.events))
    assert at_drop.state.phase is Phase.PROGRESSING and at_drop.state.reason == "CandidateDropped"
    assert at_drop.weights is not None and at_drop.weights[V2] == 0 and sum(at_drop.weights.values()) == 100
    assert "error-rate" in at_drop.events[0].message
    after = decisions[decisions.index(at_drop) :]
    assert all((d.weights or {}).get(V2, 0) == 0 for d in after)  # never traffic again
    records = {r["workload"]: r for r in state.results["candidates"]}
    assert records[V2]["state"] == arms.DROPPED and records[V2]["reason"] == "GuardrailFailed"
    assert state.phase is Phase.SUCCEEDED and state.results["winner"] == V3


def test_when_every_candidate_is_dropped_the_baseline_stays() -> None:
    experiment = bandit_spec()
    state, _decisions = drive(experiment, at_rates({V1: 0.04, V2: 0.08, V3: 0.08}, errors={V2: 0.3, V3: 0.3}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == lift.Outcome.DISCARD.value
    assert state.reason == "GuardrailFailed" and "every candidate was dropped" in state.message
    assert state.weights == {V1: 100, V2: 0, V3: 0}
    assert "winner" not in state.results


def test_missing_reward_counts_hold_everything_then_drop_the_arm_at_the_no_data_limit() -> None:
    experiment = bandit_spec(analysis={"noDataLimit": 3})
    rng = np.random.default_rng(5)

    def observe(state: model.State, i: int) -> model.Observation:
        missing = frozenset({V2}) if 2 <= i <= 4 else frozenset()  # evaluations 2 to 4
        return sampled(state.weights, {V1: 0.05, V2: 0.05, V3: 0.05}, rng, no_reward=missing)

    _state, decisions = drive(experiment, observe, ticks=5)
    held = evaluations(decisions)[1:3]
    for decision in held:
        assert decision.state.reason == "NoData" and decision.state.action is model.Action.HOLD
        assert decision.weights == decisions[1].state.weights  # nothing moves on no data
        assert decision.state.results["bandit"]["intervals"] == 1  # ... and nothing is added
    assert reasons(held) == ["NoData"]  # told once
    dropped = evaluations(decisions)[3]
    assert [e.reason for e in dropped.events] == ["CandidateDropped"]
    assert "no data in 3 evaluations in a row" in dropped.events[0].message
    assert dropped.weights is not None and dropped.weights[V2] == 0


def test_no_reward_for_the_baseline_is_every_arms_and_keeps_the_baseline_at_the_limit() -> None:
    experiment = bandit_spec()
    rng = np.random.default_rng(5)
    observe: Observe = lambda state, i: sampled(  # noqa: E731
        state.weights, {V1: 0.05, V2: 0.05, V3: 0.05}, rng, no_reward=frozenset({V1})
    )
    state, _ = drive(experiment, observe)
    assert state.phase is Phase.ROLLED_BACK and state.reason == "NoData"
    assert state.weights == {V1: 100, V2: 0, V3: 0}


# --------------------------------------------------------------------------- endings


def test_at_max_duration_the_baseline_stays_when_no_candidate_is_better() -> None:
    experiment = bandit_spec(maxDuration="2m")
    state, decisions = drive(experiment, at_rates({V1: 0.05, V2: 0.05, V3: 0.05}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == lift.Outcome.ITERATE.value
    assert state.reason == "Iterate" and "maxDuration 2m" in state.message
    assert state.weights == {V1: 100, V2: 0, V3: 0} and "winner" not in state.results
    assert len(evaluations(decisions)) == 12  # every interval of the two minutes
    assert "Iterate" in reasons(decisions) and "RolledBack" in reasons(decisions)


def test_when_the_baseline_is_the_best_arm_the_candidates_are_discarded() -> None:
    experiment = bandit_spec()
    state, _ = drive(experiment, at_rates({V1: 0.08, V2: 0.04, V3: 0.04}))
    assert state.phase is Phase.ROLLED_BACK and state.outcome == lift.Outcome.DISCARD.value
    assert state.reason == banditrun.BASELINE_BEST
    assert f"{V1} is the best arm" in state.message
    assert state.weights == {V1: 100, V2: 0, V3: 0}


def test_without_auto_promote_a_ship_waits_for_the_promote_annotation() -> None:
    experiment = bandit_spec(autoPromote=False)
    state, _decisions = drive(experiment, at_rates({V1: 0.04, V2: 0.04, V3: 0.08}), ticks=40)
    assert state.phase is Phase.PAUSED and state.reason == canary.AWAITING_PROMOTION
    assert state.outcome == "Ship" and state.results["winner"] == V3
    held = dict(state.weights)
    waiting = canary.decide(experiment, state, model.Observation(weights=held), T0 + TICK * 50)
    assert waiting.weights == held
    promote = {"modelrollout.io/promote": "yes"}
    done = canary.decide(
        experiment, state, model.Observation(weights=held, annotations=promote), T0 + TICK * 51
    )
    assert done.state.phase is Phase.SUCCEEDED and done.weights == {V1: 0, V2: 0, V3: 100}


def test_gates_and_pause_work_as_for_every_strategy() -> None:
    experiment = bandit_spec()
    observe = at_rates({V1: 0.04, V2: 0.05, V3: 0.06})
    state, _ = drive(experiment, observe, ticks=3)
    assert state.phase is Phase.PROGRESSING
    # Paused: the weights hold, nothing is measured.
    paused_spec = experiment.model_copy(update={"paused": True})
    paused = canary.decide(paused_spec, state, model.Observation(weights=dict(state.weights)), T0 + TICK * 3)
    assert paused.state.phase is Phase.PAUSED and paused.weights == state.weights
    # Promoting by hand promotes the candidate most likely the best.
    chances = state.results["bandit"]["probabilityBest"]
    leader = max((V2, V3), key=lambda w: chances[w])
    promote = {"modelrollout.io/promote": "now"}
    obs = model.Observation(weights=dict(state.weights), annotations=promote)
    promoted = canary.decide(experiment, state, obs, T0 + TICK * 3)
    assert promoted.state.phase is Phase.SUCCEEDED and promoted.state.results["winner"] == leader
    assert promoted.weights is not None and promoted.weights[leader] == 100
    # Aborting keeps the baseline.
    obs = model.Observation(weights=dict(state.weights), annotations={"modelrollout.io/abort": "stop"})
    aborted = canary.decide(experiment, state, obs, T0 + TICK * 3)
    assert aborted.state.phase is Phase.ROLLED_BACK and aborted.weights == {V1: 100, V2: 0, V3: 0}


def test_a_move_that_did_not_land_is_finished_not_taken_for_an_edit() -> None:
    """The status (the new weights) is written before the routes: a crash in between leaves the routes
    at the weights before the bandit's last move, which is no one's edit, even with onWeightDrift: Pause."""
    experiment = bandit_spec().model_copy(update={"on_weight_drift": spec.WeightDrift.PAUSE})
    state, _ = drive(experiment, at_rates({V1: 0.04, V2: 0.05, V3: 0.06}), ticks=3)
    before = state.analysis["bandit"]["previous"]
    assert state.phase is Phase.PROGRESSING and before != state.weights
    assert state.last_evaluated_at is not None
    soon = state.last_evaluated_at + datetime.timedelta(seconds=1)
    finished = canary.decide(experiment, state, model.Observation(weights=before), soon)
    assert finished.state.phase is Phase.PROGRESSING and finished.state.reason == "WeightsApplied"
    assert finished.weights == state.weights and reasons([finished]) == ["WeightsApplied"]
    assert finished.state.last_evaluated_at == soon  # the next window starts once the move landed
    edited = {V1: 80, V2: 10, V3: 10}
    paused = canary.decide(experiment, state, model.Observation(weights=edited), soon)
    assert paused.state.phase is Phase.PAUSED and paused.state.reason == "WeightsEdited"


# --------------------------------------------------------------------------- memory in status


def test_a_restarted_operator_continues_from_the_status_exactly() -> None:
    """The same counts give the same run whether the state stays in memory or goes through the status
    (rendered, JSON, parsed back) at every tick: the sums, the probabilities' history and the seed
    of the draws are all in status."""
    experiment = bandit_spec(minimumEffect=0.01)
    rates = {V1: 0.04, V2: 0.05, V3: 0.08}
    kept, kept_decisions = drive(experiment, at_rates(rates, 9))
    restarted, restarted_decisions = drive(experiment, at_rates(rates, 9), restart_every_tick=True)
    assert [d.weights for d in restarted_decisions] == [d.weights for d in kept_decisions]
    assert restarted.phase is kept.phase is Phase.SUCCEEDED
    assert restarted.results["bandit"]["comparison"] == kept.results["bandit"]["comparison"]
    assert restarted.results["winner"] == kept.results["winner"]
    # What the status holds validates against the CRD (every field typed, lists bounded).
    validator = test_crd.make_validator(_status_schema())
    previous: dict[str, Any] | None = None
    for i, decision in enumerate(restarted_decisions):
        previous = through_status(decision, previous, T0 + TICK * i, experiment)
        assert test_crd.errors_of(validator, previous) == []
    assert previous is not None and previous["bandit"]["stage"] == banditrun.DECIDED
    assert previous["winner"] == kept.results["winner"]


def test_the_allocation_history_is_bounded() -> None:
    experiment = bandit_spec(maxDuration="40m", confidence=0.999999, intervalsRequired=100)
    state, decisions = drive(experiment, at_rates({V1: 0.05, V2: 0.05, V3: 0.05}), ticks=300)
    assert len(evaluations(decisions)) == 240
    allocation = state.results["bandit"]["allocation"]
    assert len(allocation) <= banditrun.ALLOCATION_LIMIT
    # The start is kept, and the last move (the end at maxDuration moves nothing the bandit chose).
    assert allocation[0]["time"] == model.to_iso(T0) and allocation[-1]["time"] == model.to_iso(
        T0 + TICK * 239
    )


def test_the_stratified_comparison_is_not_fooled_by_simpsons_paradox() -> None:
    """The base rate falls while the bandit moves traffic to the candidate, which converts 1.2 times as
    often as the baseline in every interval.  Its pooled rate ends below the baseline's -- pooled counts
    (and the Beta posteriors built on them) would keep the baseline -- but per interval it is better,
    and the Mantel-Haenszel comparison ships it."""
    experiment = bandit_spec([{"subset": "v2", "workload": V2}], minWeight=5, maxStepChange=30)

    def observe(state: model.State, i: int) -> model.Observation:
        record = state.results.get("bandit") or {}
        base_rate = 0.3 * 0.5 ** record.get("intervals", 0)
        trials = {w: 3000 * state.weights[w] / 100 for w in (V1, V2)}
        successes = {V1: trials[V1] * base_rate, V2: trials[V2] * base_rate * 1.2}
        return measured(state.weights, trials, successes)

    state, _ = drive(experiment, observe)
    assert state.phase is Phase.SUCCEEDED and state.results["winner"] == V2
    entries = {a["workload"]: a for a in state.results["bandit"]["arms"]}
    assert entries[V2]["pooledRate"] < entries[V1]["pooledRate"]  # pooled: the baseline looks better
    assert entries[V1]["probabilityBest"] > 0.5  # ... and so do the posteriors
    pooled = lift.estimate(_moments(entries[V1]), _moments(entries[V2]))
    assert pooled.lift is not None and pooled.lift < 0
    (comparison,) = state.results["bandit"]["comparison"]
    assert comparison["lift"] == pytest.approx(0.2) and comparison["interval"][0] > 0
    assert entries[V2]["stratifiedRate"] > entries[V1]["stratifiedRate"]


def _moments(entry: Mapping[str, Any]) -> lift.Moments:
    return lift.Moments().add(entry["trials"], entry["successes"])


def _status_schema() -> dict[str, Any]:
    import yaml

    with test_crd.CRD_PATH.open() as f:
        (crd,) = [doc for doc in yaml.safe_load_all(f) if doc]
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema
