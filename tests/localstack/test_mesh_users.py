"""The mesh simulator's users: sticky cookies and header cohorts as Istio routes them, business outcomes.

Driven by ``step()`` (no thread, no port) except where the endpoint or a real
Prometheus is the point.
"""

from __future__ import annotations

import collections
import copy
import itertools
import math
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from modelrollout.localstack import mesh, stack, traffic
from modelrollout.localstack.mesh import MeshApp, MeshSimulator, Users
from modelrollout.localstack.traffic import Outcomes

HEALTHY = traffic.VariantProfile(error_rate=0.0, latency_median_ms=40.0, latency_sigma=0.4)
NS = "ml"
COOKIE = "mexp-churn-v2"
REGIONS = {"region": {"eu": 0.6, "us": 0.4}}
BETA = {"x-user-tier": {"beta": 0.3}}


def sticky_routes(split: int = 50, cohort: bool = True, max_age: int = 1209600) -> dict[str, Any]:
    """VirtualService churn as the operator writes it for a sticky A/B test of churn-v2 on route main."""
    tier = {"x-user-tier": {"exact": "beta"}} if cohort else {}

    def sticky(subset: str) -> dict[str, Any]:
        regex = f"^(.*?;\\s*)?mexp\\-churn\\-v2=churn\\-{subset}(;.*)?$"
        return {
            "name": f"mexp-churn-v2-main-churn-{subset}",
            "match": [{"headers": {"cookie": {"regex": regex}, **tier}}],
            "route": [{"destination": {"host": "churn", "subset": subset}, "weight": 100}],
        }

    def assign(subset: str, weight: int) -> dict[str, Any]:
        cookie = f"{COOKIE}=churn-{subset}; Max-Age={max_age}; Path=/"
        return {
            "destination": {"host": "churn", "subset": subset},
            "weight": weight,
            "headers": {"response": {"add": {"set-cookie": cookie}}},
        }

    assign_route: dict[str, Any] = {
        "name": "mexp-churn-v2-main-assign",
        **({"match": [{"headers": tier}]} if cohort else {}),
        "route": [assign("v1", 100 - split), assign("v2", split)],
    }
    main = {
        "name": "main",
        "route": [
            {"destination": {"host": "churn", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "churn", "subset": "v2"}, "weight": 0},
        ],
    }
    http = [sticky("v1"), sticky("v2"), assign_route, main]
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "spec": {"http": http}}


class Objects:
    """VirtualServices by (namespace, name), as the simulator's fetch callable reads them."""

    def __init__(self, **by_name: dict[str, Any]) -> None:
        self.objects = {(NS, name): obj for name, obj in by_name.items()}

    def fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.objects.get((namespace, name)))


def ab_app(users: Users, rps: float = 300.0, **fields: Any) -> MeshApp:
    variants = {"v1": ("churn-v1", HEALTHY), "v2": ("churn-v2", HEALTHY)}
    return MeshApp(NS, "churn", "churn", variants, rps=rps, users=users, **fields)


def run(simulator: MeshSimulator, seconds: int, tick: float = 1.0) -> None:
    for _ in range(int(seconds / tick)):
        simulator.step(tick)


def business(simulator: MeshSimulator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of the model_* counters, as /metrics serves them."""
    text = prometheus_client.generate_latest(simulator.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("model_")
    }


def counter(
    values: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of a model_* counter over the series that have ``labels``."""
    return sum(v for (n, ls), v in values.items() if n == name and labels.items() <= dict(ls).items())


def assert_binomial(count: float, n: float, p: float) -> None:
    low, high = stats.binom.interval(1 - 1e-6, int(n), p)
    assert low <= count <= high, f"{count} of {n} is implausible for p={p}"


# --------------------------------------------------------------------------- the population


def test_population_is_drawn_once_per_seed_with_the_shares_asked() -> None:
    users = Users(
        count=4000, segments={**REGIONS, "device": {"ios": 0.5, "android": 0.5}}, headers=BETA, seed=3
    )
    population = users.population()
    assert population == users.population() != Users(count=4000, segments=REGIONS, seed=4).population()
    assert [u.id for u in population[:2]] == ["u0000", "u0001"] and len({u.id for u in population}) == 4000
    assert all(set(u.segments) == {"region", "device"} for u in population)
    assert_binomial(sum(u.segments["region"] == "us" for u in population), 4000, 0.4)
    assert_binomial(sum(u.headers == {"x-user-tier": "beta"} for u in population), 4000, 0.3)
    assert all(u.headers in ({}, {"x-user-tier": "beta"}) for u in population)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"count": 0}, "at least one user"),
        ({"segments": {"region": {"eu": 0.6, "us": 0.3}}}, "sum to 1"),
        ({"segments": {"destination_workload": {"a": 1.0}}}, "cannot be a label"),
        ({"segments": {"re-gion": {"a": 1.0}}}, "cannot be a label"),
        ({"segments": {"region": {}}}, "shares within"),
        ({"headers": {"x-tier": {"a": 0.7, "b": 0.4}}}, "must not exceed 1"),
        ({"headers": {"Cookie": {"a=1": 0.5}}}, "cookie jar"),
        ({"segments": REGIONS, "segment_outcomes": {"churn-v2": {"region=asia": Outcomes(0.1)}}}, "no label"),
        ({"segment_outcomes": {"churn-v2": {"device=ios": Outcomes(0.1)}}}, "no label"),
        ({"segments": REGIONS, "segment_outcomes": {"v2": {"region=eu,region=us": Outcomes(0.1)}}}, "twice"),
    ],
)
def test_users_reject_nonsense(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Users(**fields)


def test_outcomes_must_name_the_apps_workloads() -> None:
    with pytest.raises(ValueError, match="not workloads"):
        ab_app(Users(outcomes={"churn-v3": Outcomes(0.1)}))


# --------------------------------------------------------------------------- routing users


def test_cohort_users_stick_to_one_variant_and_the_others_stay_on_the_baseline() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(split=50)).fetch, seed=21)
    users = Users(count=2000, segments=REGIONS, headers=BETA, seed=1)
    simulator.add_app(ab_app(users, rps=300))
    run(simulator, 60)  # ~9 requests per user

    assignments = simulator.assignments(NS, "churn")
    cookies = simulator.cookies(NS, "churn")
    beta = {u.id for u in users.population() if u.headers.get("x-user-tier") == "beta"}
    assert len(assignments) > 1990  # P(a user never called in 60 s) ~ e^-9
    for user, served in assignments.items():
        if user in beta:
            (workload,) = served  # exactly one variant served every request of the user...
            assert cookies[user] == {COOKIE: workload}  # ...the one their cookie names
        else:
            assert set(served) == {"churn-v1"} and user not in cookies
    on_candidate = sum(set(served) == {"churn-v2"} for user, served in assignments.items() if user in beta)
    assert_binomial(on_candidate, len(beta & set(assignments)), 0.5)
    # Istio's series count the same requests.
    for workload in ("churn-v1", "churn-v2"):
        served_total = sum(served.get(workload, 0) for served in assignments.values())
        assert simulator.observed(NS, workload).requests == served_total > 0
    assert simulator.status(NS, "churn") == mesh.AppStatus({"churn-v1": 100, "churn-v2": 0}, 0, 0)


def test_new_users_are_split_by_weight_once() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(split=20, cohort=False)).fetch, seed=22)
    simulator.add_app(ab_app(Users(count=3000, seed=2), rps=1000))
    run(simulator, 2)  # ~1/3 of the users have called once or more
    first = simulator.assignments(NS, "churn")
    assert all(len(served) == 1 for served in first.values())
    assert_binomial(sum("churn-v2" in served for served in first.values()), len(first), 0.2)
    run(simulator, 20)
    later = simulator.assignments(NS, "churn")
    assert len(later) > 2990
    assert all(later[user].keys() == served.keys() for user, served in first.items())  # stayed put
    assert_binomial(sum("churn-v2" in served for served in later.values()), len(later), 0.2)
    # Each user is counted as assigned once, by the variant that got them (the sample-ratio check's unit).
    values = business(simulator)
    for workload in ("churn-v1", "churn-v2"):
        users_there = sum(workload in served for served in later.values())
        assert counter(values, "model_assignments_total", destination_workload=workload) == users_there


def test_an_expired_cookie_means_a_new_assignment() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(cohort=False, max_age=5)).fetch, seed=23)
    simulator.add_app(ab_app(Users(count=200, seed=3), rps=200))
    run(simulator, 60, tick=0.5)  # each user calls every ~second: mostly within a cookie's 5 s
    assignments = simulator.assignments(NS, "churn")
    both = sum(len(served) == 2 for served in assignments.values())
    assert both > 150  # ~11 reassignments each: ~1 - 2^-10 of the users have seen both variants
    # An expired cookie is a new assignment: about one every 5 s per user (and not one per request).
    values = business(simulator)
    reassigned = counter(values, "model_assignments_total")
    requests = counter(values, "model_requests_total")
    assert 200 * 60 / 7 < reassigned < requests / 2
    fresh = MeshSimulator(Objects(churn=sticky_routes(cohort=False)).fetch, seed=23)
    fresh.add_app(ab_app(Users(count=200, seed=3), rps=200))
    run(fresh, 60, tick=0.5)
    assert all(len(served) == 1 for served in fresh.assignments(NS, "churn").values())


def test_before_any_virtual_service_users_go_to_the_first_variant_uncookied() -> None:
    objects = Objects()
    simulator = MeshSimulator(objects.fetch, seed=24)
    simulator.add_app(ab_app(Users(count=100), rps=200, headers={"Cookie": "session=1"}))
    run(simulator, 2)
    assert {w for served in simulator.assignments(NS, "churn").values() for w in served} == {"churn-v1"}
    assert simulator.cookies(NS, "churn") == {}
    assert simulator.status(NS, "churn") == mesh.AppStatus(None, fetch_failures=2, unrouted=0)

    # The app's own cookie header goes first; the jar's follow it.
    objects.objects[NS, "churn"] = sticky_routes(cohort=False, split=100)
    run(simulator, 2)
    cookies = simulator.cookies(NS, "churn")
    assert cookies and all(c == {COOKIE: "churn-v2"} for c in cookies.values())
    before = simulator.observed(NS, "churn-v2").requests
    objects.objects[NS, "churn"]["spec"]["http"][2]["route"][1]["weight"] = 0  # new users: baseline only
    run(simulator, 2)
    assert simulator.observed(NS, "churn-v2").requests > before  # the cookied ones stay on v2


def test_unrouted_user_requests_are_counted() -> None:
    only_beta = sticky_routes()
    del only_beta["spec"]["http"][3]  # no main route: users outside the cohort match nothing (404)
    simulator = MeshSimulator(Objects(churn=only_beta).fetch, seed=25)
    users = Users(count=500, headers=BETA, seed=5)
    simulator.add_app(ab_app(users, rps=500))
    run(simulator, 4)
    status = simulator.status(NS, "churn")
    assignments = simulator.assignments(NS, "churn")
    served = sum(n for s in assignments.values() for n in s.values())
    outsiders = sum(not u.headers for u in users.population())
    assert_binomial(status.unrouted, status.unrouted + served, outsiders / users.count)
    beta = {u.id for u in users.population() if u.headers}
    assert set(assignments) <= beta
    assert status.last_weights == {}  # a request without the user's headers matches nothing


def test_apps_without_users_export_no_business_series() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes()).fetch, seed=26)
    variants = {"v1": ("churn-v1", HEALTHY), "v2": ("churn-v2", HEALTHY)}
    simulator.add_app(MeshApp(NS, "churn", "churn", variants, rps=500))
    run(simulator, 2)
    assert simulator.observed(NS, "churn-v1").requests > 0
    assert business(simulator) == {}
    with pytest.raises(ValueError, match="no users"):
        simulator.assignments(NS, "churn")
    with pytest.raises(KeyError):
        simulator.set_outcomes(NS, "churn-v1", Outcomes(0.1))


# --------------------------------------------------------------------------- business outcomes


def test_business_counters_follow_each_variants_outcomes() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(cohort=False)).fetch, seed=31)
    outcomes = {
        "churn-v1": Outcomes(conversion=0.05, revenue_mean=20.0, revenue_sigma=1.0),
        "churn-v2": Outcomes(conversion=0.08, revenue_mean=30.0, revenue_sigma=0.5),
    }
    simulator.add_app(ab_app(Users(count=2000, segments=REGIONS, outcomes=outcomes, seed=7), rps=2000))
    run(simulator, 20)
    values = business(simulator)

    assert {name for name, _ in values} == {
        "model_requests_total",
        "model_conversions_total",
        "model_revenue_total",
        "model_revenue_squared_total",
        "model_assignments_total",
    }
    assert {labels for _, labels in values} == {
        (("destination_workload", w), ("destination_workload_namespace", NS), ("region", r))
        for w, r in itertools.product(("churn-v1", "churn-v2"), ("eu", "us"))
    }
    for workload, expected in outcomes.items():
        requests = counter(values, "model_requests_total", destination_workload=workload)
        conversions = counter(values, "model_conversions_total", destination_workload=workload)
        revenue = counter(values, "model_revenue_total", destination_workload=workload)
        squared = counter(values, "model_revenue_squared_total", destination_workload=workload)
        assert requests == simulator.observed(NS, workload).requests > 10_000
        assert_binomial(conversions, requests, expected.conversion)
        sd = expected.revenue_mean * math.sqrt(math.expm1(expected.revenue_sigma**2))
        assert revenue / conversions == pytest.approx(expected.revenue_mean, abs=5 * sd / conversions**0.5)
        assert squared >= revenue**2 / conversions  # Cauchy-Schwarz: a variance is never negative


def test_errors_do_not_convert() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(cohort=False, split=0)).fetch, seed=32)
    simulator.add_app(ab_app(Users(count=500, outcomes={"churn-v1": Outcomes(1.0)}, seed=8), rps=1000))
    simulator.set_profile(NS, "churn-v1", traffic.VariantProfile(0.25, 40.0, 0.4))
    run(simulator, 4)
    observed = simulator.observed(NS, "churn-v1")
    values = business(simulator)
    assert counter(values, "model_requests_total") == observed.requests
    assert counter(values, "model_conversions_total") == observed.requests - observed.errors


def test_a_segment_override_reverses_the_effect_in_that_segment() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(cohort=False)).fetch, seed=33)
    users = Users(
        count=2000,
        segments=REGIONS,
        outcomes={"churn-v1": Outcomes(0.05), "churn-v2": Outcomes(0.08)},
        segment_outcomes={"churn-v2": {"region=eu": Outcomes(0.02)}},
        seed=9,
    )
    simulator.add_app(ab_app(users, rps=2000))
    run(simulator, 20)
    values = business(simulator)

    def rate(workload: str, region: str) -> tuple[float, float]:
        labels = {"destination_workload": workload, "region": region}
        return (
            counter(values, "model_conversions_total", **labels),
            counter(values, "model_requests_total", **labels),
        )

    for workload, region, p in [
        ("churn-v1", "eu", 0.05),
        ("churn-v1", "us", 0.05),
        ("churn-v2", "eu", 0.02),
        ("churn-v2", "us", 0.08),
    ]:
        assert_binomial(*rate(workload, region), p)

    # At runtime: the reversal flips (us worse), then the override goes and eu follows the variant again.
    simulator.set_outcomes(NS, "churn-v2", Outcomes(0.0), segment="region=us")
    simulator.set_outcomes(NS, "churn-v2", None, segment="region=eu")
    before = business(simulator)
    run(simulator, 20)
    after = business(simulator)
    assert counter(after, "model_conversions_total", region="us", destination_workload="churn-v2") == counter(
        before, "model_conversions_total", region="us", destination_workload="churn-v2"
    )
    eu = {"region": "eu", "destination_workload": "churn-v2"}
    assert_binomial(
        counter(after, "model_conversions_total", **eu) - counter(before, "model_conversions_total", **eu),
        counter(after, "model_requests_total", **eu) - counter(before, "model_requests_total", **eu),
        0.08,
    )
    with pytest.raises(ValueError, match="no label"):
        simulator.set_outcomes(NS, "churn-v2", Outcomes(0.1), segment="region=asia")


def test_the_most_specific_override_wins() -> None:
    simulator = MeshSimulator(Objects(churn=sticky_routes(cohort=False, split=0)).fetch, seed=34)
    users = Users(
        count=400,
        segments={**REGIONS, "device": {"ios": 0.5, "android": 0.5}},
        outcomes={"churn-v1": Outcomes(0.5)},
        segment_outcomes={
            "churn-v1": {"region=us,device=ios": Outcomes(1.0), "region=us": Outcomes(0.0)},
        },
        seed=10,
    )
    simulator.add_app(ab_app(users, rps=1000))
    run(simulator, 4)
    values = business(simulator)
    by_segment = collections.defaultdict(list)
    for region, device in itertools.product(("eu", "us"), ("ios", "android")):
        labels = {"region": region, "device": device}
        by_segment[region, device] = [
            counter(values, "model_conversions_total", **labels),
            counter(values, "model_requests_total", **labels),
        ]
    conversions, requests = by_segment["us", "ios"]
    assert conversions == requests > 0
    assert by_segment["us", "android"][0] == 0 < by_segment["us", "android"][1]
    assert_binomial(*by_segment["eu", "ios"], 0.5)


def test_business_series_are_served_on_metrics() -> None:
    with MeshSimulator(Objects(churn=sticky_routes()).fetch, tick_seconds=0.05, seed=35) as simulator:
        simulator.add_app(ab_app(Users(count=100, segments=REGIONS, outcomes={"churn-v1": Outcomes(0.5)})))
        deadline = time.monotonic() + 5
        while not simulator.assignments(NS, "churn"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with urllib.request.urlopen(simulator.url, timeout=5) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in ("model_requests", "model_conversions", "model_revenue", "model_revenue_squared"):
        assert families[name].type == "counter"
        assert {s.name for s in families[name].samples} == {f"{name}_total"}
    assert "istio_requests" in families


# --------------------------------------------------------------------------- the local stack


@pytest.mark.integration
def test_local_stack_ab_app_serves_business_series_to_prometheus() -> None:
    users = Users(
        count=500,
        segments=REGIONS,
        outcomes={"churn-v1": Outcomes(0.5, 10.0, 0.5), "churn-v2": Outcomes(0.5, 10.0, 0.5)},
        seed=11,
    )
    with stack.LocalStack(mesh_tick=0.1, seed=12) as local:
        local.create_namespace("ab")
        local.add_ab_app("ab", HEALTHY, HEALTHY, users, rps=200, route_name="main", timeout=30)
        vs = local.virtual_service("ab", "churn")
        assert [r["name"] for r in vs["spec"]["http"]] == ["main"]
        query = (
            'sum by (region) (increase(model_conversions_total{destination_workload="churn-v1",'
            'destination_workload_namespace="ab"}[10s]))'
        )
        deadline = time.monotonic() + 20
        while len(result := local.prometheus.provider().query_series(query).series) < 2:
            assert time.monotonic() < deadline, f"{query!r} answers {result}"
            time.sleep(0.2)
        assert {labels["region"] for labels, _ in result} == {"eu", "us"}
        assert all(value > 0 for _, value in result)
