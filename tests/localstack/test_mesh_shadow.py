"""The mesh simulator's shadow traffic: Istio's ``mirror`` copies requests, users only get the primary.

Driven by ``step()`` (no thread, no port) except where the endpoint is the point.
The VirtualServices are the ones the operator writes (``istio_routes`` with a
``RouteTarget.mirror_percent``), so the router and the simulator agree on the shape.
"""

from __future__ import annotations

import copy
import dataclasses
import urllib.request
from collections.abc import Mapping
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from modelrollout import ports
from modelrollout.localstack import traffic
from modelrollout.localstack.mesh import MeshApp, MeshSimulator, Users
from modelrollout.localstack.traffic import Outcomes
from modelrollout.routers import istio_routes

HEALTHY = traffic.VariantProfile(error_rate=0.0, latency_median_ms=40.0, latency_sigma=0.4)
FAILING = traffic.VariantProfile(error_rate=0.5, latency_median_ms=40.0, latency_sigma=0.4)
NS = "ml"
VARIANTS = {"v1": ("churn-v1", HEALTHY), "v2": ("churn-v2", HEALTHY)}
TARGET = ports.RouteTarget(
    experiment="churn-v2",
    namespace=NS,
    name="churn",
    routes=None,
    variants=(ports.Destination("churn-v1", subset="v1"), ports.Destination("churn-v2", subset="v2")),
)
COOKIE = "variant"


def user_vs(cookies: bool = False) -> dict[str, Any]:
    """The user's VirtualService: everything to v1 (which, with ``cookies``, names itself in a cookie)."""
    entry: dict[str, Any] = {"destination": {"host": "churn", "subset": "v1"}}
    if cookies:
        entry["headers"] = {"response": {"add": {"set-cookie": f"{COOKIE}=churn-v1; Path=/"}}}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": NS},
        "spec": {"hosts": ["churn"], "http": [{"name": "main", "route": [entry]}]},
    }


def shadowed(percent: float | None, cookies: bool = False) -> dict[str, Any]:
    """The VirtualService as the operator writes it in a shadow phase mirroring ``percent`` to v2."""
    vs = istio_routes.ensure_structure(user_vs(cookies), dataclasses.replace(TARGET, mirror_percent=percent))
    if cookies:  # the candidate's destination (weight 0) would name itself too, if it ever answered
        entry = vs["spec"]["http"][0]["route"][1]
        entry["headers"] = {"response": {"add": {"set-cookie": f"{COOKIE}=churn-v2; Path=/"}}}
    return vs


class Objects:
    def __init__(self, **by_name: dict[str, Any]) -> None:
        self.objects = {(NS, name): obj for name, obj in by_name.items()}

    def fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.objects.get((namespace, name)))


def run(simulator: MeshSimulator, seconds: int, tick: float = 1.0) -> None:
    for _ in range(int(seconds / tick)):
        simulator.step(tick)


def samples(simulator: MeshSimulator) -> list[Any]:
    text = prometheus_client.generate_latest(simulator.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(simulator: MeshSimulator, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(simulator) if s.name == name and labels.items() <= s.labels.items())


def assert_binomial(count: float, n: float, p: float) -> None:
    low, high = stats.binom.interval(1 - 1e-6, int(n), p)
    assert low <= count <= high, f"{count} of {n} is implausible for p={p}"


# --------------------------------------------------------------------------- the batch path


def test_the_candidate_gets_the_mirrored_share_and_only_copies() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(50.0)).fetch, seed=41)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=2000))
    run(simulator, 10)

    primary, shadow = simulator.observed(NS, "churn-v1"), simulator.observed(NS, "churn-v2")
    assert primary.requests > 15_000
    assert_binomial(shadow.requests, primary.requests, 0.5)
    assert simulator.mirrored(NS, "churn-v2") == shadow.requests  # none of them reached a user
    assert simulator.mirrored(NS, "churn-v1") == 0
    assert simulator.last_weights(NS, "churn") == {"churn-v1": 100, "churn-v2": 0}
    # Istio's series count the copies at the shadow workload, as any request, histogram included.
    assert total(simulator, "istio_requests_total", destination_workload="churn-v2") == shadow.requests
    assert (
        total(simulator, "istio_request_duration_milliseconds_count", destination_workload="churn-v2")
        == shadow.requests
    )


def test_a_mirror_without_a_percentage_copies_every_request() -> None:
    vs = shadowed(100.0)
    del vs["spec"]["http"][0]["mirrorPercentage"]  # Istio's default: 100 %
    simulator = MeshSimulator(Objects(churn=vs).fetch, seed=42)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=500))
    run(simulator, 4)
    assert simulator.observed(NS, "churn-v2").requests == simulator.observed(NS, "churn-v1").requests > 0


def test_without_a_mirror_nothing_is_copied() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(None)).fetch, seed=43)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=500, agreement={"churn-v2": 0.9}))
    run(simulator, 4)
    assert simulator.observed(NS, "churn-v2").requests == simulator.mirrored(NS, "churn-v2") == 0
    assert not [s for s in samples(simulator) if s.name.startswith("model_shadow_")]


def test_a_failing_candidate_fails_in_istios_series_only() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(100.0)).fetch, seed=44)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=1000))
    simulator.set_profile(NS, "churn-v2", FAILING)
    run(simulator, 10)

    primary, shadow = simulator.observed(NS, "churn-v1"), simulator.observed(NS, "churn-v2")
    assert primary.errors == 0  # users never see the candidate's errors
    assert_binomial(shadow.errors, shadow.requests, 0.5)
    errors = total(simulator, "istio_requests_total", destination_workload="churn-v2", response_code="500")
    assert errors == shadow.errors > 0


def test_agreement_counters_follow_the_configured_probability() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(25.0)).fetch, seed=45)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=2000, agreement={"churn-v2": 0.8}))
    run(simulator, 10)

    shadow = simulator.observed(NS, "churn-v2")
    compared, agreed = simulator.shadow_agreement(NS, "churn-v2")
    assert compared == shadow.requests > 2000  # both healthy: every copy is compared
    assert_binomial(agreed, compared, 0.8)
    labels = {"destination_workload": "churn-v2", "destination_workload_namespace": NS}
    by_name = {s.name: s for s in samples(simulator) if s.name.startswith("model_shadow_")}
    assert set(by_name) == {"model_shadow_compared_total", "model_shadow_agreed_total"}
    assert by_name["model_shadow_compared_total"].labels == labels
    assert by_name["model_shadow_compared_total"].value == compared
    assert by_name["model_shadow_agreed_total"].value == agreed
    assert simulator.shadow_agreement(NS, "churn-v1") == (0, 0)


def test_failed_answers_are_not_compared() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(100.0)).fetch, seed=46)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=1000, agreement={"churn-v2": 1.0}))
    simulator.set_profile(NS, "churn-v2", FAILING)
    run(simulator, 10)
    shadow = simulator.observed(NS, "churn-v2")
    assert simulator.shadow_agreement(NS, "churn-v2") == (shadow.requests - shadow.errors,) * 2


def test_a_mirror_to_a_destination_without_endpoints_is_dropped() -> None:
    vs = shadowed(100.0)
    vs["spec"]["http"][0]["mirror"] = {"host": "churn", "subset": "v9"}
    simulator = MeshSimulator(Objects(churn=vs).fetch, seed=47)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=500))
    run(simulator, 2)
    assert simulator.observed(NS, "churn-v1").requests > 0
    assert simulator.observed(NS, "unknown").requests == 0
    assert simulator.observed(NS, "churn-v2").requests == 0


def test_the_mirror_follows_the_live_virtual_service() -> None:
    objects = Objects(churn=shadowed(100.0))
    simulator = MeshSimulator(objects.fetch, seed=48)
    simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=500))
    run(simulator, 2)
    copies = simulator.mirrored(NS, "churn-v2")
    assert copies > 0
    # The canary starts: the operator removes the mirror and sends 10 % for real.
    target = dataclasses.replace(TARGET, mirror_percent=None)
    objects.objects[NS, "churn"] = istio_routes.with_weights(
        istio_routes.ensure_structure(objects.objects[NS, "churn"], target),
        target,
        {"churn-v1": 90, "churn-v2": 10},
    )
    before = simulator.observed(NS, "churn-v2").requests
    run(simulator, 4)
    assert simulator.mirrored(NS, "churn-v2") == copies  # no more copies...
    assert simulator.observed(NS, "churn-v2").requests > before  # ...but real requests


def test_agreement_must_name_a_workload_with_a_probability() -> None:
    with pytest.raises(ValueError, match="not a workload"):
        MeshApp(NS, "churn", "churn", VARIANTS, agreement={"churn-v9": 0.5})
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        MeshApp(NS, "churn", "churn", VARIANTS, agreement={"churn-v2": 1.5})


# --------------------------------------------------------------------------- users


def test_no_user_ever_gets_the_shadows_answer() -> None:
    simulator = MeshSimulator(Objects(churn=shadowed(50.0, cookies=True)).fetch, seed=51)
    outcomes = {"churn-v1": Outcomes(conversion=0.05), "churn-v2": Outcomes(conversion=0.5)}
    users = Users(count=500, segments={"region": {"eu": 0.5, "us": 0.5}}, outcomes=outcomes, seed=9)
    simulator.add_app(
        MeshApp(NS, "churn", "churn", VARIANTS, rps=1000, users=users, agreement={"churn-v2": 0.7})
    )
    simulator.set_profile(NS, "churn-v2", FAILING)
    run(simulator, 10)

    assignments = simulator.assignments(NS, "churn")
    assert len(assignments) == 500
    assert all(set(served) == {"churn-v1"} for served in assignments.values())
    cookies = simulator.cookies(NS, "churn")
    assert len(cookies) == 500 and all(c == {COOKIE: "churn-v1"} for c in cookies.values())

    primary, shadow = simulator.observed(NS, "churn-v1"), simulator.observed(NS, "churn-v2")
    assert primary.errors == 0
    assert_binomial(shadow.requests, primary.requests, 0.5)
    assert simulator.mirrored(NS, "churn-v2") == shadow.requests
    assert_binomial(shadow.errors, shadow.requests, 0.5)
    # Business outcomes come from the answers users got: the shadow's never convert anyone.
    business: dict[tuple[str, str], float] = {}
    for s in samples(simulator):
        if s.name.startswith("model_") and not s.name.startswith("model_shadow_"):
            key = (s.name, s.labels["destination_workload"])
            business[key] = business.get(key, 0.0) + s.value  # summed over the regions
    assert {workload for _, workload in business} == {"churn-v1"}
    assert business["model_requests_total", "churn-v1"] == primary.requests
    assert_binomial(business["model_conversions_total", "churn-v1"], primary.requests, 0.05)
    assert business["model_assignments_total", "churn-v1"] == 500
    # The comparisons count the copies both answered.
    compared, agreed = simulator.shadow_agreement(NS, "churn-v2")
    assert compared == shadow.requests - shadow.errors
    assert_binomial(agreed, compared, 0.7)


def test_shadow_counters_are_served_on_metrics() -> None:
    objects = Objects(churn=shadowed(100.0))
    with MeshSimulator(objects.fetch, tick_seconds=0.05, seed=52) as simulator:
        simulator.add_app(MeshApp(NS, "churn", "churn", VARIANTS, rps=500, agreement={"churn-v2": 0.5}))
        simulator.step(1.0)
        with urllib.request.urlopen(simulator.url, timeout=5) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in ("model_shadow_compared", "model_shadow_agreed"):
        assert families[name].type == "counter"
        (sample,) = families[name].samples
        assert sample.name == f"{name}_total"
        assert sample.labels == {"destination_workload": "churn-v2", "destination_workload_namespace": NS}
