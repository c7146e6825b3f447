"""``status`` as the operator writes it: conditions, history, and the CRD's status schema.

A real API server prunes status fields its CRD does not declare (the emulator
does not), which would silently break restart-safety; so every status the
core can produce is validated here against the CRD with unknown fields
forbidden.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from modelrollout import status as status_mod
from modelrollout.core import canary, model

from core_helpers import BASE, CAND, T0, healthy, make_spec, observe, run_to_end
from test_crd import CRD_PATH, make_validator


def status_validator():
    crd = yaml.safe_load(CRD_PATH.read_text())
    return make_validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])


class Remembering:
    """An analysis that keeps memory and adds statistical fields, as the sequential tests will."""

    def assess(self, experiment, metric, sample, memory):
        count = (memory or {}).get("count", 0) + 1
        assessment = model.MetricAssessment(
            metric.name,
            model.Verdict.PASS,
            "ok",
            extra={"evidence": 1.5, "pValue": 0.4, "interval": [0.9, 1.2]},
        )
        return assessment, {"count": count, "log": [0.1, 0.2]}


def statuses() -> Iterator[tuple[str, dict[str, Any]]]:
    experiment = make_spec()
    stored: dict[str, Any] = {}
    state, now = model.State(), T0
    for i in range(8):
        now = T0 + datetime.timedelta(seconds=10 * i)
        due = canary.evaluation_due(experiment, state, now)
        decision = canary.decide(
            experiment,
            state,
            observe(dict(state.weights) or None, **(healthy() if due else {})),
            now,
            analyses=(*canary.DEFAULT_ANALYSES, Remembering()),
        )
        stored = status_mod.render(decision, stored, now, CAND)
        state = decision.state
        yield f"good-{i}", stored
    bad = run_to_end(make_spec(), **healthy(error=(0.01, 0.5)))[-1]
    yield "rolled-back", status_mod.render(bad, {}, T0, CAND)
    invalid = canary.reject_spec(model.State(), observe(), "spec.canary.steps[2]: bad (got 3)")
    yield "invalid", status_mod.render(invalid, {}, T0, "")
    paused = canary.decide(make_spec(paused=True), model.State(), observe(), T0)
    yield "paused", status_mod.render(paused, {}, T0, CAND)


@pytest.mark.parametrize(("name", "status"), list(statuses()))
def test_every_status_the_operator_writes_survives_the_crd_schema(name, status):
    errors = sorted(e.message for e in status_validator().iter_errors(status))
    assert errors == [], name


def test_written_analysis_memory_is_read_back():
    stored = dict(statuses())["good-7"]
    state = status_mod.parse_state(stored)
    assert state.analysis["error-rate/2"]["count"] >= 1  # the extra analysis above
    sequential = state.analysis["error-rate/1"]  # the operator's own sequential test
    assert len(sequential["loglik"]) == 121 and sequential["totals"][1] > 0
    assert state.analysis["latency-p95/1"]["edge"] == 250.0  # 97 % of requests within 250 ms
    assert "srm" in state.analysis


def test_condition_transition_time_moves_only_when_the_status_flips():
    experiment = make_spec()
    first = canary.decide(experiment, model.State(), observe(), T0)
    s1 = status_mod.render(first, {}, T0, CAND)
    later = T0 + datetime.timedelta(minutes=5)
    same = status_mod.render(dataclasses.replace(first), s1, later, CAND)
    times = {c["type"]: c["lastTransitionTime"] for c in same["conditions"]}
    assert set(times.values()) == {"2026-11-23T10:00:00Z"}
    done = run_to_end(experiment, **healthy())[-1]
    s2 = status_mod.render(done, s1, later, CAND)
    conditions = {c["type"]: c for c in s2["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["lastTransitionTime"] == "2026-11-23T10:05:00Z"
    assert conditions["Ready"]["lastTransitionTime"] == "2026-11-23T10:00:00Z"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "Succeeded"


def test_conditions_say_why_for_kubectl_wait():
    invalid = canary.reject_spec(model.State(), observe(generation=3), "spec.canary.interval: bad (got 'x')")
    conditions = {c["type"]: c for c in status_mod.render(invalid, {}, T0, "")["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "InvalidSpec"
    assert "spec.canary.interval" in conditions["Ready"]["message"]
    assert conditions["Failed"]["status"] == "True"
    assert all(c["observedGeneration"] == 3 for c in conditions.values())


def test_history_is_bounded_and_records_transitions_only():
    decisions = run_to_end(make_spec(), **healthy())
    stored: dict[str, Any] = {}
    for decision in decisions * 20:
        stored = status_mod.render(decision, stored, T0, CAND)
    assert len(stored["history"]) == status_mod.HISTORY_LIMIT
    assert {h["weight"] for h in stored["history"]} <= {5, 25, 50, 100}
    assert BASE in stored["weights"]
