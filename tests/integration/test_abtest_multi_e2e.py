"""An A/B test of several candidates end to end: the real operator, the emulator, mesh users, Prometheus.

examples/03-demo/abtest-candidates.yaml on 3000 sticky users: churn-v2 converts as the baseline
(5 %), churn-v3 far better (12 %), churn-v4 as the baseline but failing 30 % of its requests, which
breaks the error-rate guardrail.  churn-v4 is dropped at once (its users go back to the others with
a new cookie) while the test goes on; churn-v3 ships, waits for the promote annotation and gets all
traffic.  Next to it, on the same operator, a test whose two candidates are both worse is discarded.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout import report
from modelrollout.localstack import mesh, stack
from modelrollout.localstack.traffic import Outcomes

from conftest import BAD_ERRORS, BASELINE, EXAMPLES, FINAL, GOOD, App, load

pytestmark = pytest.mark.integration

NAME = "churn-ab"
COOKIE = f"mexp-{NAME}"
REGIONS = {"region": {"eu": 0.5, "us": 0.5}}
BASE = Outcomes(conversion=0.05, revenue_mean=20.0, revenue_sigma=0.8)
BETTER = dataclasses.replace(BASE, conversion=0.12)
WORSE = dataclasses.replace(BASE, conversion=0.015)


def users(outcomes: dict[str, Outcomes], seed: int) -> mesh.Users:
    return mesh.Users(count=3000, segments=REGIONS, outcomes=outcomes, seed=seed)


# Both run at once on one operator watching their two namespaces (as test_abtest_e2e.py does).
SCENARIOS: dict[str, tuple[mesh.Users, dict[str, Any], dict[str, Any]]] = {
    # candidates: churn-v2 as the baseline, churn-v3 better, churn-v4 broken (errors; see `more` below).
    "ship": (
        users({"churn-v1": BASE, "churn-v2": BASE, "churn-v3": BETTER, "churn-v4": BASE}, 21),
        {"v3": GOOD, "v4": BAD_ERRORS},
        # alpha 0.01 (0.0033 per candidate): churn-v2's own chance of a false difference is then tiny.
        {"analysis": {"alpha": 0.01, "noDataLimit": 6}},
    ),
    # Two candidates, both far worse: both dropped, the test discarded.
    "discard": (
        users({"churn-v1": BASE, "churn-v2": WORSE, "churn-v3": WORSE}, 22),
        {"v3": GOOD},
        {"candidates": [{"subset": "v2", "workload": "churn-v2"}, {"subset": "v3", "workload": "churn-v3"}]},
    ),
}


@pytest.fixture(scope="module")
def apps(local: stack.LocalStack) -> Iterator[dict[str, App]]:
    stamp = int(time.time() * 1000) % 10**7
    launched = {name: App(local, f"abm-{name}-{stamp}") for name in SCENARIOS}
    for name, app in launched.items():
        population, more, _ = SCENARIOS[name]
        local.create_namespace(app.namespace)
        local.add_ab_app(app.namespace, BASELINE, GOOD, population, 300, more=more)
    watched = [arg for app in launched.values() for arg in ("--namespace", app.namespace)]
    operator = local.start_operator(*watched, name=f"abm-{stamp}")
    for name, app in launched.items():
        app.operator = operator
        app.local.apply(manifest(app, **SCENARIOS[name][2]))
    try:
        yield launched
    finally:
        operator.stop()
        for app in launched.values():
            local.mesh.remove_app(app.namespace, "churn")


def manifest(app: App, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(load(EXAMPLES / "03-demo" / "abtest-candidates.yaml"))
    body["metadata"]["namespace"] = app.namespace
    body["spec"].update(copy.deepcopy(changes))
    return body


def http_routes(app: App) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = app.local.virtual_service(app.namespace, "churn")["spec"]["http"]
    return routes


def route_names(app: App) -> list[str]:
    return [route.get("name", "") for route in http_routes(app)]


def wait_routes(app: App, names: list[str]) -> None:
    """The status is written before the routes move (see reconciler): give the write a moment."""
    deadline = time.monotonic() + 10
    while route_names(app) != names:
        assert time.monotonic() < deadline, route_names(app)
        time.sleep(0.1)


def served_between(app: App, seconds: float) -> dict[str, dict[str, int]]:
    """Per user, the requests each workload served over the next ``seconds``."""
    before = app.local.mesh.assignments(app.namespace, "churn")
    time.sleep(seconds)
    after = app.local.mesh.assignments(app.namespace, "churn")
    delta: dict[str, dict[str, int]] = {}
    for user, served in after.items():
        old = before.get(user, {})
        grew = {w: n - old.get(w, 0) for w, n in served.items() if n > old.get(w, 0)}
        if grew:
            delta[user] = grew
    return delta


def test_the_best_candidate_ships_a_broken_one_is_dropped_and_its_users_reassigned(
    apps: dict[str, App],
) -> None:
    app = apps["ship"]
    seen = app.wait_for(lambda s: s.get("phase") in (*FINAL, "Paused"), timeout=120, name=NAME)
    shipped = seen[-1]
    assert shipped["phase"] == "Paused" and shipped["reason"] == "AwaitingPromotion", shipped.get("message")
    assert shipped["outcome"] == "Ship" and shipped["winner"] == "churn-v3"
    records = {r["workload"]: r for r in shipped["candidates"]}
    assert records["churn-v4"]["state"] == "Dropped" and records["churn-v4"]["reason"] == "GuardrailFailed"
    assert "error-rate" in records["churn-v4"]["message"]
    assert records["churn-v2"]["state"] == records["churn-v3"]["state"] == "Active"
    # Each candidate's lift against the baseline; status.objective is the winner's.
    winner = records["churn-v3"]["objective"]
    low, high = winner["interval"]
    assert low > 0 and winner["lift"] >= 0.1 and low < 1.4 < high  # the truth: 12 % vs 5 %
    assert shipped["objective"] == {**winner, "variant": "churn-v3"}
    low, high = records["churn-v2"]["objective"]["interval"]
    assert low < 0 < high
    # The split: 60 % over three, then churn-v4's 20 % back to the baseline.
    weights = [s["weights"] for s in seen if s.get("weights")]
    assert {"churn-v1": 40, "churn-v2": 20, "churn-v3": 20, "churn-v4": 20} in weights
    assert shipped["weights"] == {"churn-v1": 60, "churn-v2": 20, "churn-v3": 20, "churn-v4": 0}
    assert all(sum(w.values()) == 100 for w in weights)

    # While it waits: one sticky route per variant with users (none for churn-v4), then assign.
    prefix = f"mexp-{NAME}-main-"
    wait_routes(
        app, [f"{prefix}churn-v1", f"{prefix}churn-v2", f"{prefix}churn-v3", f"{prefix}assign", "main"]
    )
    assign = next(r for r in http_routes(app) if r["name"] == f"{prefix}assign")
    assert {e["destination"]["subset"]: e["weight"] for e in assign["route"]} == {
        "v1": 60, "v2": 20, "v3": 20, "v4": 0,
    }  # fmt: skip
    # Every user is served by one variant, the one its cookie names; churn-v4's users were
    # assigned anew (they were served by it once, and hold another variant's cookie now).
    delta = served_between(app, 4)
    cookies = app.local.mesh.cookies(app.namespace, "churn")
    assert len(delta) > 500
    for user, served in delta.items():
        assert len(served) == 1 and "churn-v4" not in served, (user, served)
        assert cookies[user] == {COOKIE: next(iter(served))}
    ever = app.local.mesh.assignments(app.namespace, "churn")
    moved = [u for u, served in ever.items() if served.get("churn-v4") and u in delta]
    assert len(moved) > 30  # about 90 of the 1000 seen
    assert all(cookies[u][COOKIE] != "churn-v4" for u in moved)

    app.local.patch_experiment(
        app.namespace, NAME, {"metadata": {"annotations": {"modelrollout.io/promote": "go"}}}
    )
    final = app.wait_for(lambda s: s.get("phase") in FINAL, name=NAME)[-1]
    assert final["phase"] == "Succeeded" and final["outcome"] == "Ship" and final["winner"] == "churn-v3"
    wait_routes(app, ["main"])
    main = http_routes(app)[0]["route"]
    assert {e["destination"]["subset"]: e.get("weight") for e in main} == {
        "v1": 0,
        "v2": 0,
        "v3": 100,
        "v4": 0,
    }
    app.wait_event("Promoted", name=NAME)  # Events follow the status write
    reasons = app.event_reasons(NAME)
    assert reasons.count("CandidateDropped") == 1
    for reason in ("Started", "Shipped", "AwaitingPromotion", "Promoted"):
        assert reason in reasons, reasons
    # The report lists every candidate's lift.
    body = app.local.experiment(app.namespace, NAME)
    assert body is not None
    text = report.render(body, "md", plots=False)
    assert "## Candidates" in text and all(w in text for w in ("churn-v2", "churn-v3 (winner)", "churn-v4"))


def test_every_candidate_worse_is_discarded(apps: dict[str, App]) -> None:
    app = apps["discard"]
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=120, name=NAME)
    final = seen[-1]
    assert final["phase"] == "RolledBack" and final["outcome"] == "Discard", final.get("message")
    assert final["reason"] == "Discarded" and "winner" not in final
    for record in final["candidates"]:
        assert record["state"] == "Dropped" and record["reason"] == "Discarded", record
        assert record["objective"]["interval"][1] < 0.1  # the minimum effect ruled out
    wait_routes(app, ["main"])
    main = http_routes(app)[0]["route"]
    assert {e["destination"]["subset"]: e.get("weight", 100) for e in main}["v1"] == 100
    app.wait_event("Discarded", name=NAME)  # Events follow the status write
