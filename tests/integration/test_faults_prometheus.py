"""Prometheus faults end to end: the real operator asks a fault-injecting proxy in front of the
real Prometheus (``spec.prometheus.address``), and must never take "could not measure" for a pass.

Every test checks what a user sees -- phase, decision, the ``MetricsAvailable`` condition, the
message naming the metric and the cause, Events -- and that the routes hold the weights the
status names once the operator settles.
"""

from __future__ import annotations

import re
from typing import Any

import faultkit
from faultkit import SEQUENTIAL, Apps, conditions, routes_of, steps_of

from modelrollout.localstack.promproxy import Mode, PromProxy

from conftest import FINAL, App

scenario = faultkit.Registry("pf")
scenarios = scenario.fixture()

# 4 s: a few scrapes (1 s) per window, so each evaluation sees traffic of both variants.
FAST = {"steps": [5, 25, 50, 100], "interval": "4s", "minStepDuration": "4s", "minSamples": 10}
LATENCY = "istio_request_duration_milliseconds"  # in every latency query, in no error-rate query
# A user's query: metric (the builtins never use rate()): what NaN, +Inf and several series break.
SERVED = {
    "name": "served-rps",
    "query": 'sum(rate(istio_requests_total{reporter="destination", destination_workload="{{ workload }}",'
    ' destination_workload_namespace="{{ namespace }}"}[{{ interval }}]))',
    "min": 0.001,
}
CUSTOM = r"^sum\(rate\("


def start(app: App, proxy: PromProxy, timeout: str = "1s", **spec: Any) -> None:
    spec.setdefault("canary", FAST)
    spec.setdefault("metrics", SEQUENTIAL)
    app.apply_experiment(prometheus={"address": proxy.url, "timeout": timeout}, **spec)


def measured(status: dict[str, Any]) -> bool:
    """An evaluation in which every metric had data (a new candidate has no series at first)."""
    return conditions(status).get("MetricsAvailable", {}).get("status") == "True"


HOLD_STEP = {**FAST, "minStepDuration": "60s"}  # stays at step 1 while the faults play out


def settles_at(app: App, status: dict[str, Any], routes: dict[str, int]) -> None:
    """The status names ``routes`` and the VirtualService comes to hold them (and stays)."""
    assert routes_of(status) == routes, status.get("weights")
    app.wait_weights(routes)


def holds(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in seen if s.get("decision") == "Hold"]


def assert_never_promoted_while_missing(seen: list[dict[str, Any]]) -> None:
    for status in seen:
        if status.get("phase") == "Succeeded":
            available = conditions(status)["MetricsAvailable"]
            assert available["status"] == "True", f"promoted without data: {status.get('message')}"


@scenario
def test_prometheus_down_from_the_start_holds_then_rolls_back_after_no_data_limit(apps: Apps) -> None:
    proxy = apps.proxy()
    app = apps.new()
    proxy.down()
    start(app, proxy, analysis={"noDataLimit": 3})
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=60)
    final = seen[-1]

    first = holds(seen)[0]
    assert first["phase"] == "Progressing" and first["step"] == 1 and first["reason"] == "NoData"
    assert "no data (1/3)" in first["message"]
    for metric in ("error-rate", "latency-p95"):
        assert f"{metric}: no usable candidate value: Unreachable" in first["message"]
    assert "Connection refused" in first["message"]
    available = conditions(first)["MetricsAvailable"]
    assert (available["status"], available["reason"]) == ("False", "QueryError")
    assert "error-rate: no usable candidate value: Unreachable" in available["message"]
    assert all(s.get("step") in (None, 0, 1) for s in seen), "advanced a step without data"

    assert final["phase"] == "RolledBack" and final["decision"] == "Rollback"
    assert conditions(final)["RolledBack"]["reason"] == "NoData"
    assert "no data in 3 evaluations in a row" in final["message"] and "Unreachable" in final["message"]
    assert conditions(final)["MetricsAvailable"]["status"] == "False"
    settles_at(app, final, {"v1": 100, "v2": 0})
    app.wait_event("RolledBack")
    reasons = app.event_reasons()
    assert reasons.count("NoData") == 1  # one Warning when the hold starts, not one per evaluation
    assert "StepAdvanced" not in reasons and "Promoted" not in reasons
    assert proxy.log() == [], "the proxy was down: nothing can have been answered"


@scenario
def test_prometheus_down_mid_step_and_back_before_the_limit_carries_on(apps: Apps) -> None:
    proxy = apps.proxy()
    app = apps.new()
    start(app, proxy, analysis={"noDataLimit": 4})
    app.wait_for(measured, timeout=30)
    proxy.down()
    held = app.wait_for(lambda s: "Unreachable" in s.get("message", ""), timeout=30)[-1]
    assert held["decision"] == "Hold" and held["reason"] == "NoData" and held["noDataChecks"] < 4
    assert conditions(held)["MetricsAvailable"]["reason"] == "QueryError"
    app.wait_weights(routes_of(held))  # held where it was
    proxy.up()

    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)
    final = seen[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert max(s.get("noDataChecks", 0) for s in seen) < 4
    # While it held, the step and the weights stayed put; then it carried on from there.
    down = [s for s in seen if "Unreachable" in s.get("message", "")]
    assert {(s["step"], s["candidateWeight"]) for s in down} == {(held["step"], held["candidateWeight"])}
    assert all(s["step"] >= held["step"] for s in seen)
    assert measured(final)
    assert steps_of(final) == [1, 2, 3, 4], final["history"]  # every step once, none repeated
    settles_at(app, final, {"v1": 0, "v2": 100})
    app.wait_event("Promoted")
    reasons = app.event_reasons()
    assert reasons.count("Promoted") == 1 and "RolledBack" not in reasons
    assert any("Unreachable" in e.message for e in app.local.events(app.namespace) if e.reason == "NoData")


@scenario
def test_slow_latency_queries_time_out_and_only_latency_is_missing(apps: Apps) -> None:
    proxy = apps.proxy()
    app = apps.new()
    start(app, proxy, analysis={"noDataLimit": 2}, canary=HOLD_STEP)
    app.wait_for(measured, timeout=30)
    proxy.slow(10.0, match=LATENCY)  # the provider gives up after spec.prometheus.timeout (1 s)
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=60)
    final = seen[-1]

    first = holds(seen)[0]
    assert "latency-p95: no usable candidate value: Timeout (no answer from" in first["message"]
    assert "within 1 s" in first["message"]
    available = conditions(first)["MetricsAvailable"]
    assert (available["status"], available["reason"]) == ("False", "QueryError")
    assert "latency-p95" in available["message"] and "error-rate" not in available["message"]
    verdicts = {m["name"]: m["verdict"] for m in first["metrics"]}
    assert verdicts["latency-p95"] == "Error" and verdicts["error-rate"] in ("Pass", "Inconclusive")

    assert final["phase"] == "RolledBack" and conditions(final)["RolledBack"]["reason"] == "NoData"
    assert (
        "no data in 2 evaluations in a row: latency-p95" in final["message"] and "Timeout" in final["message"]
    )
    assert final["step"] == 1
    settles_at(app, final, {"v1": 100, "v2": 0})
    slowed = proxy.answered(Mode.SLOW)
    assert slowed and all(LATENCY in q for q in slowed)
    assert proxy.answered(None), "the error-rate queries went through"


@scenario
def test_empty_nan_inf_several_series_and_5xx_each_hold_naming_the_cause(apps: Apps) -> None:
    """One cause per evaluation, five holds in a row, then the limit (6) rolls back.

    Prometheus first answers nothing at all; then a user's ``query:`` metric answers NaN
    (0/0), +Inf (x/0), two series where it needs one (a missing ``sum``), and HTTP 503.
    """
    proxy = apps.proxy()
    app = apps.new()
    causes: list[tuple[Mode, str | None, str, dict[str, Any]]] = [
        (Mode.EMPTY, None, "Empty", {}),
        (Mode.NAN, CUSTOM, "NaN", {}),
        (Mode.INF, CUSTOM, "Inf", {}),
        (Mode.SERIES, CUSTOM, "MultipleSeries (the query returned 2 series, expected 1", {}),
        (
            Mode.ERROR,
            CUSTOM,
            "Error (Prometheus answered HTTP 503 unavailable: injected fault)",
            {"status": 503},
        ),
    ]
    start(app, proxy, analysis={"noDataLimit": 6}, metrics=[*SEQUENTIAL, SERVED], canary=HOLD_STEP)
    app.wait_for(measured, timeout=30)
    for count, (mode, match, word, options) in enumerate(causes, start=1):
        proxy.clear()
        proxy.set(mode, match, **options)
        status = app.wait_for(lambda s, n=count: s.get("noDataChecks", 0) >= n or s.get("phase") in FINAL)[-1]
        assert status["phase"] == "Progressing" and status["noDataChecks"] == count, status.get("message")
        assert status["decision"] == "Hold" and status["step"] == 1 and status["candidateWeight"] == 5
        assert f"no data ({count}/6)" in status["message"]
        available = conditions(status)["MetricsAvailable"]
        assert available["status"] == "False"
        assert available["reason"] == ("NoData" if mode in (Mode.EMPTY, Mode.NAN) else "QueryError")
        if match:  # only the user's query was broken: the builtins had their data
            assert f"served-rps: no usable candidate value: {word}" in available["message"], available
            assert "error-rate" not in available["message"] and "latency-p95" not in available["message"]
        else:
            for metric in ("error-rate", "latency-p95", "served-rps"):
                assert f"{metric}: " in available["message"], available
            assert available["message"].count(word) >= 3, available
        verdicts = {m["name"]: m["verdict"] for m in status["metrics"]}
        assert verdicts["served-rps"] in ("NoData", "Error")
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=30)[-1]
    assert final["phase"] == "RolledBack" and conditions(final)["RolledBack"]["reason"] == "NoData"
    assert "no data in 6 evaluations in a row" in final["message"] and "HTTP 503" in final["message"]
    settles_at(app, final, {"v1": 100, "v2": 0})
    for mode, match, _, _ in causes:
        answered = proxy.answered(mode)
        assert answered and all(match is None or re.search(match, q) for q in answered), mode
    assert "StepAdvanced" not in app.event_reasons()


@scenario
def test_no_data_fail_rolls_back_at_the_first_missing_evaluation(apps: Apps) -> None:
    proxy = apps.proxy()
    app = apps.new()
    proxy.error(400, error_type="bad_data", error="1:1: parse error: injected")
    start(app, proxy, analysis={"noData": "Fail", "noDataLimit": 5})
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=30)
    final = seen[-1]
    assert final["phase"] == "RolledBack" and final["decision"] == "Rollback"
    assert not holds(seen), "noData: Fail must not hold"
    assert final["step"] == 1 and conditions(final)["RolledBack"]["reason"] == "NoData"
    assert "InvalidQuery (Prometheus rejected the query: 1:1: parse error: injected)" in final["message"]
    available = conditions(final)["MetricsAvailable"]
    assert (available["status"], available["reason"]) == ("False", "QueryError")
    settles_at(app, final, {"v1": 100, "v2": 0})
    assert app.wait_event("RolledBack").type == "Warning"


@scenario
def test_candidate_without_data_is_never_promoted(apps: Apps) -> None:
    """A one-step experiment would promote at its first passing check: missing candidate data must
    hold it, and after the limit roll it back, while the baseline's data keeps flowing."""
    proxy = apps.proxy()
    app = apps.new()
    proxy.hide("destination_workload", "churn-v2")
    start(
        app,
        proxy,
        canary={"steps": [50, 100], "interval": "2s", "minStepDuration": "2s", "minSamples": 0},
        analysis={"noDataLimit": 3},
    )
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=60)
    final = seen[-1]
    assert_never_promoted_while_missing(seen)
    assert final["phase"] == "RolledBack", final.get("message")
    assert "Promoted" not in app.event_reasons()
    held = holds(seen)
    assert len(held) >= 2 and all(s["candidateWeight"] == 50 for s in held)
    available = conditions(held[0])["MetricsAvailable"]
    assert available["status"] == "False"
    assert (
        "no counts for churn-v2 in this interval (Empty: no series for workload churn-v2"
        in available["message"]
    )
    assert "churn-v1" not in available["message"]  # the baseline had its data...
    errors = next(m for m in held[0]["metrics"] if m["name"] == "error-rate")
    assert errors["baseline"] is not None and errors.get("candidate") is None  # ...and it was read
    settles_at(app, final, {"v1": 100, "v2": 0})
    assert proxy.answered(Mode.HIDE), "no answer lost the candidate's series"
    # The candidate did serve traffic: only its measurements were missing.
    assert app.local.mesh.observed(app.namespace, "churn-v2").requests > 0
