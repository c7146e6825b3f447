"""A/B tests end to end: the real operator, the API emulator, the mesh simulator's users, Prometheus.

Users get a cookie at their first request and stay on their variant; their
conversions and revenue are counted per variant and region by the simulated
model servers; the operator reads them every 5 s (examples/03-demo/abtest.yaml)
and decides.  Each test checks what a user of kubectl would see -- phase,
outcome, the objective's interval, Events -- and the routes and the users'
assignments in the mesh.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from modelrollout import report
from modelrollout.localstack import mesh, stack
from modelrollout.localstack.traffic import Outcomes

from conftest import BASELINE, EXAMPLES, FINAL, GOOD, App, load

pytestmark = pytest.mark.integration

REGIONS = {"region": {"eu": 0.5, "us": 0.5}}
BASE_OUTCOMES = Outcomes(conversion=0.05, revenue_mean=20.0, revenue_sigma=0.8)


def users(candidate: Outcomes, segment_outcomes: Mapping[str, Outcomes] | None = None) -> mesh.Users:
    return mesh.Users(
        count=3000,
        segments=REGIONS,
        outcomes={"churn-v1": BASE_OUTCOMES, "churn-v2": candidate},
        segment_outcomes={"churn-v2": dict(segment_outcomes)} if segment_outcomes else {},
        seed=11,
    )


# The five A/B tests run at once, on one operator watching their five namespaces: each test
# below waits for and checks its own (they take 30-60 s of mesh time each, not in a row).
SCENARIOS: dict[str, tuple[mesh.Users, dict[str, Any]]] = {
    "ship": (users(Outcomes(conversion=0.08, revenue_mean=20.0, revenue_sigma=0.8)), {}),
    "discard": (users(Outcomes(conversion=0.03, revenue_mean=20.0, revenue_sigma=0.8)), {}),
    # alpha 0.01: the A/A's own chance of a false "difference" is then below 1 % (benchmarked in
    # tests/unit/test_lift.py), so this test is not flaky; the pipeline check is the same.
    "aa": (users(BASE_OUTCOMES), {"abTest": {"aa": True, "maxDuration": "40s"}, "analysis": {"alpha": 0.01}}),
    # Better overall (us +120 %), worse in eu (-50 %); no decision before maxDuration (minSamples out of
    # reach) keeps the test running while the segments are watched.
    "reversal": (
        users(
            Outcomes(conversion=0.05),
            {"region=us": Outcomes(conversion=0.11), "region=eu": Outcomes(conversion=0.025)},
        ),
        {"abTest": {"minSamples": 10**9}},
    ),
    "cohort": (
        mesh.Users(
            count=1000,
            segments=REGIONS,
            headers={"x-user-tier": {"beta": 0.3}},
            outcomes={"churn-v1": BASE_OUTCOMES, "churn-v2": BASE_OUTCOMES},
            seed=12,
        ),
        {"abTest": {"match": [{"headers": {"x-user-tier": {"exact": "beta"}}}], "maxDuration": "10m"}},
    ),
}


@pytest.fixture(scope="module")
def apps(local: stack.LocalStack) -> Iterator[dict[str, App]]:
    stamp = int(time.time() * 1000) % 10**7
    launched = {name: App(local, f"ab-{name}-{stamp}") for name in SCENARIOS}
    for name, app in launched.items():
        local.create_namespace(app.namespace)
        local.add_ab_app(app.namespace, BASELINE, GOOD, SCENARIOS[name][0], 200 if name == "cohort" else 300)
    watched = [arg for app in launched.values() for arg in ("--namespace", app.namespace)]
    operator = local.start_operator(*watched, "--report-configmaps", name=f"ab-{stamp}")
    for name, app in launched.items():
        app.operator = operator
        app.local.apply(manifest(app, **SCENARIOS[name][1]))
    try:
        yield launched
    finally:
        operator.stop()
        for app in launched.values():
            local.mesh.remove_app(app.namespace, "churn")


def manifest(app: App, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(load(EXAMPLES / "03-demo" / "abtest.yaml"))
    body["metadata"]["namespace"] = app.namespace
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body


def http_routes(app: App) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = app.local.virtual_service(app.namespace, "churn")["spec"]["http"]
    return routes


def route_names(app: App) -> list[str]:
    return [route.get("name", "") for route in http_routes(app)]


def assignment_delta(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Per user, the requests each workload served between two snapshots."""
    delta: dict[str, dict[str, int]] = {}
    for user, served in after.items():
        old = before.get(user, {})
        grew = {w: n - old.get(w, 0) for w, n in served.items() if n > old.get(w, 0)}
        if grew:
            delta[user] = grew
    return delta


def test_a_better_model_ships_users_stay_on_their_variant_and_promotion_cleans_up(
    apps: dict[str, App],
) -> None:
    app = apps["ship"]
    shipped = app.wait_for(lambda s: s.get("phase") in (*FINAL, "Paused"), timeout=150)[-1]
    assert shipped["phase"] == "Paused" and shipped["reason"] == "AwaitingPromotion", shipped.get("message")
    assert shipped["outcome"] == "Ship"
    objective = shipped["objective"]
    low, high = objective["interval"]
    assert low > 0 and objective["lift"] >= 0.1  # significant, and at least the minimum effect
    assert low < 0.6 < high  # the truth: 8 % vs 5 % conversion
    assert shipped["srm"]["checked"] and shipped["srm"]["passed"]
    assert shipped["abPlan"]["samplesPerArm"] > 0 and "needs" in shipped["abPlan"]["message"]
    assert {s["segment"]["region"] for s in shipped["segments"]} == {"eu", "us"}
    assert [s["metric"] for s in shipped["secondary"]] == ["revenue-per-request"]

    # The split is kept while waiting for promotion, users go on calling: between two snapshots
    # each was served by one workload, the one its cookie names; about half are on the candidate.
    names = route_names(app)
    assert names == [
        "mexp-churn-v2-main-churn-v1",
        "mexp-churn-v2-main-churn-v2",
        "mexp-churn-v2-main-assign",
        "main",
    ]
    first = app.local.mesh.assignments(app.namespace, "churn")
    time.sleep(4)
    later = app.local.mesh.assignments(app.namespace, "churn")
    cookies = app.local.mesh.cookies(app.namespace, "churn")
    delta = assignment_delta(first, later)
    assert len(delta) > 500
    for user, served in delta.items():
        assert len(served) == 1, (user, served)
        assert cookies[user] == {"mexp-churn-v2": next(iter(served))}
    on_candidate = sum("churn-v2" in served for served in delta.values())
    assert 0.4 < on_candidate / len(delta) < 0.6

    app.local.patch_experiment(
        app.namespace, "churn-v2", {"metadata": {"annotations": {"modelrollout.io/promote": "go"}}}
    )
    final = app.wait_for(lambda s: s.get("phase") in FINAL)[-1]
    assert final["phase"] == "Succeeded" and final["outcome"] == "Ship"
    deadline = time.monotonic() + 10
    while route_names(app) != ["main"]:
        assert time.monotonic() < deadline, route_names(app)
        time.sleep(0.1)
    main = http_routes(app)[0]["route"]
    assert {e["destination"]["subset"]: e.get("weight") for e in main} == {"v1": 0, "v2": 100}
    app.wait_event("Promoted")  # Events follow the status write
    reasons = app.event_reasons()
    for reason in ("Started", "Shipped", "AwaitingPromotion", "Promoted"):
        assert reason in reasons, reasons

    # The report is in a ConfigMap named in status.
    assert final["report"] == {"configMap": "churn-v2-report", "key": "report.md"}
    config_map = app.local.core.read_namespaced_config_map("churn-v2-report", app.namespace)
    text = config_map.data["report.md"]
    assert "Ship" in text and "conversion" in text and "region" in text
    # The full report of the live object, with its plots (lift over time, weights and traffic).
    body = app.local.experiment(app.namespace, "churn-v2")
    assert body is not None
    html = report.render(body, "html")
    assert html.count("<svg") == 2 and "Ship" in html


def test_a_worse_model_is_discarded_and_the_routes_are_restored(apps: dict[str, App]) -> None:
    app = apps["discard"]
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=150)[-1]
    assert final["phase"] == "RolledBack" and final["outcome"] == "Discard", final.get("message")
    assert final["reason"] == "Discarded"
    assert final["objective"]["interval"][1] < 0.1  # the minimum effect is ruled out
    assert final["objective"]["lift"] < 0
    deadline = time.monotonic() + 10
    while route_names(app) != ["main"]:
        assert time.monotonic() < deadline, route_names(app)
        time.sleep(0.1)
    main = http_routes(app)[0]["route"]
    assert {e["destination"]["subset"]: e.get("weight", 100) for e in main}["v1"] == 100
    app.wait_event("Discarded")  # Events follow the status write


def test_an_aa_test_finds_no_difference_and_passes_the_sample_ratio_check(apps: dict[str, App]) -> None:
    app = apps["aa"]
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=150)[-1]
    assert final["outcome"] == "Iterate" and final["reason"] == "NoDifference", final.get("message")
    assert final["phase"] == "RolledBack"
    assert final["srm"] == {"checked": True, "passed": True, "message": "the users' shares match the split"}
    low, high = final["objective"]["interval"]
    assert low < 0 < high
    conditions = {c["type"]: c for c in final["conditions"]}
    assert conditions["SampleRatioMismatch"]["status"] == "False"


def test_a_segment_reversal_is_flagged(apps: dict[str, App]) -> None:
    app = apps["reversal"]

    def eu_reversed(status: dict[str, Any]) -> bool:
        return any(s["segment"] == {"region": "eu"} and s.get("reversed") for s in status.get("segments", []))

    seen = app.wait_for(lambda s: eu_reversed(s) or s.get("phase") in FINAL, timeout=150)[-1]
    assert eu_reversed(seen), seen.get("segments")
    assert seen["objective"]["lift"] > 0
    table = {s["segment"]["region"]: s for s in seen["segments"]}
    assert table["eu"]["interval"][1] < 0 and table["eu"]["lift"] < 0
    assert table["us"]["reversed"] is False and table["us"]["lift"] > 0


def test_untargeted_traffic_stays_on_the_baseline_with_a_cohort(apps: dict[str, App]) -> None:
    app = apps["cohort"]
    local, namespace = app.local, app.namespace
    app.wait_for(lambda s: len(s.get("timeline", [])) >= 2)
    first = local.mesh.assignments(namespace, "churn")
    time.sleep(4)
    delta = assignment_delta(first, local.mesh.assignments(namespace, "churn"))
    beta = {u.id for u in local.mesh.users(namespace, "churn") if u.headers.get("x-user-tier") == "beta"}
    outside = [served for user, served in delta.items() if user not in beta]
    inside = [served for user, served in delta.items() if user in beta]
    assert outside and all(set(served) == {"churn-v1"} for served in outside)
    assert inside and all(len(served) == 1 for served in inside)
    assert any("churn-v2" in served for served in inside)
    assign = next(r for r in http_routes(app) if r["name"] == "mexp-churn-v2-main-assign")
    assert assign["match"] == [{"headers": {"x-user-tier": {"exact": "beta"}}}]
