"""Sticky A/B routing (cookie affinity and cohorts): properties, conflicts and where requests land.

The golden files ``golden/sticky-*.yaml`` pin the exact shape; these tests
check the rules over random routes, cohorts and splits, and evaluate the
generated VirtualService with the mesh simulator's Istio matcher.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import ports
from modelrollout.localstack import traffic
from modelrollout.routers import istio_routes

HOST = "churn.ml.svc.cluster.local"
BASELINE = ports.Destination(workload="churn-v1", subset="v1")
CANDIDATE = ports.Destination(workload="churn-v2", subset="v2")
COOKIE = "mexp-churn-v2"
PREFIX = "mexp-churn-v2-"
Scenario = tuple[dict[str, Any], ports.RouteTarget, dict[str, int]]


def _target(
    cohort: tuple[dict[str, Any], ...] = (), routes: tuple[str, ...] | None = None
) -> ports.RouteTarget:
    return ports.RouteTarget(
        experiment="churn-v2",
        namespace="ml",
        name="churn",
        routes=routes,
        variants=(BASELINE, CANDIDATE),
        sticky=ports.Stickiness(cookie=COOKIE, max_age_seconds=3600, cohort=cohort),
    )


def _vs(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": "ml", "resourceVersion": "7"},
        "spec": {"hosts": [HOST], "http": http},
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- strategies

# Cohort matches that never conflict with the route matches below (those use uri and x-model only).
cohort_matches: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"headers": {"x-user-tier": {"exact": "beta"}}},
        {"headers": {"x-user-tier": {"prefix": "gold"}}, "withoutHeaders": {"x-bot": {}}},
        {"queryParams": {"beta": {"exact": "1"}}},
        {"sourceLabels": {"app": "web"}},
        {"uri": {"prefix": "/p"}},  # equal to a route's own uri: fine
        {"headers": {"x-model": {"exact": "churn"}}},  # the same condition as a route's: fine
    ]
)


@st.composite
def splits(draw: st.DrawFn, total: int, parts: int) -> list[int]:
    """``parts`` non-negative integers summing to ``total`` (no parts for a total of 0)."""
    if parts == 0:
        return []
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=parts - 1, max_size=parts - 1)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


@st.composite
def model_routes(draw: st.DrawFn) -> dict[str, Any]:
    """A route holding the baseline, maybe the candidate, maybe destinations the experiment does not own."""
    entries: list[dict[str, Any]] = [{"destination": {"host": HOST, "subset": "v1"}}]
    if draw(st.booleans()):
        entries.append({"destination": {"host": HOST, "subset": "v2"}})
    foreign: list[dict[str, Any]] = [
        {"destination": {"host": f"legacy-{n}.ml.svc.cluster.local", "port": {"number": 80 + n}}}
        for n in range(draw(st.integers(0, 2)))
    ]
    pool = draw(st.integers(0, 100)) if foreign else 100
    for entry, weight in zip(entries, draw(splits(pool, len(entries))), strict=True):
        entry["weight"] = weight
    for entry, weight in zip(foreign, draw(splits(100 - pool, len(foreign))), strict=True):
        entry["weight"] = weight
    route = draw(st.permutations(entries + foreign))
    if len(route) == 1 and draw(st.booleans()):
        del route[0]["weight"]  # Istio's implicit 100
    if draw(st.booleans()):
        route[0]["headers"] = {"response": {"set": {"x-served-by": "churn"}}}
    extras = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "timeout": st.just("5s"),
                "retries": st.just({"attempts": 2}),
                "match": st.sampled_from(
                    [
                        [{"uri": {"prefix": "/p"}}],
                        [{"uri": {"prefix": "/p"}}, {"headers": {"x-model": {"exact": "churn"}}}],
                    ]
                ),
            },
        )
    )
    return {**extras, "route": route}


other_routes = st.fixed_dictionaries(
    {"route": st.just([{"destination": {"host": "docs.ml.svc.cluster.local"}, "weight": 100}])},
    optional={"retries": st.just({"attempts": 2}), "mirror": st.just({"host": "audit"})},
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    routes = draw(st.lists(st.one_of(model_routes(), other_routes), min_size=0, max_size=3))
    routes.insert(draw(st.integers(0, len(routes))), draw(model_routes()))
    for i, route in enumerate(routes):
        if "subset" in json.dumps(route) or draw(st.booleans()):  # managed routes must be named
            route["name"] = f"route-{i}"
    cohort = tuple(draw(st.lists(cohort_matches, max_size=2, unique_by=_canonical)))
    candidate = draw(st.one_of(st.integers(0, 100), st.sampled_from([0, 100])))
    return _vs(routes), _target(cohort), {"churn-v1": 100 - candidate, "churn-v2": candidate}


def _apply(vs: dict[str, Any], target: ports.RouteTarget, weights: dict[str, int]) -> dict[str, Any]:
    """What the routers do on ``set_routes``."""
    return istio_routes.with_weights(istio_routes.ensure_structure(vs, target), target, weights)


def _running(weights: dict[str, int]) -> bool:
    return 0 < weights["churn-v2"] < 100


def _inserted(vs: dict[str, Any]) -> list[str]:
    return [r["name"] for r in vs["spec"]["http"] if r.get("name", "").startswith(PREFIX)]


def _user_routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in vs["spec"]["http"] if not r.get("name", "").startswith(PREFIX)]


# --------------------------------------------------------------------------- properties


@settings(max_examples=300)
@given(scenarios())
def test_inserted_routes_exist_only_while_the_split_runs(scenario: Scenario) -> None:
    vs, target, weights = scenario
    pristine = copy.deepcopy(vs)
    result = _apply(vs, target, weights)
    assert vs == pristine, "the input was mutated"
    managed = [vs["spec"]["http"][i]["name"] for i in istio_routes.managed_route_indices(vs, target)]
    if not _running(weights):
        assert _inserted(result) == []
        return
    expected: list[str] = []
    http = result["spec"]["http"]
    for name in managed:
        at = [r.get("name") for r in http].index(name)
        triple = [f"{PREFIX}{name}-churn-v1", f"{PREFIX}{name}-churn-v2", f"{PREFIX}{name}-assign"]
        assert [r["name"] for r in http[at - 3 : at]] == triple  # right before the route they serve
        expected += triple
        others = {k: v for k, v in http[at].items() if k not in ("name", "match", "route")}
        for route in http[at - 3 : at]:  # all of R's other fields
            assert {k: v for k, v in route.items() if k not in ("name", "match", "route")} == others
    assert _inserted(result) == expected


@settings(max_examples=300)
@given(scenarios())
def test_the_managed_route_is_untouched_while_running(scenario: Scenario) -> None:
    vs, target, weights = scenario
    result = _apply(vs, target, weights)
    if not _running(weights):
        return
    structured = istio_routes.ensure_structure(vs, target)
    held = _apply(vs, target, {"churn-v1": 100, "churn-v2": 0})  # outside the cohort: the baseline
    assert _canonical(_user_routes(result)) == _canonical(_user_routes(held))
    managed = set(istio_routes.managed_route_indices(vs, target))
    for i, (route, out) in enumerate(zip(structured["spec"]["http"], _user_routes(result), strict=True)):
        owned = istio_routes.owned_entries(route, target)
        candidate_weight = (
            istio_routes.effective_weights(route["route"])[owned["churn-v2"]] if i in managed else 0
        )
        if i not in managed:
            assert _canonical(out) == _canonical(vs["spec"]["http"][i])
        elif candidate_weight == 0:  # as the user wrote it, plus the candidate at 0
            assert _canonical(out) == _canonical(route)


@settings(max_examples=300)
@given(scenarios(), st.data())
def test_restore_gives_back_the_exact_original(scenario: Scenario, data: st.DataObject) -> None:
    vs, target, weights = scenario
    later = data.draw(st.integers(0, 100))
    result = _apply(vs, target, weights)
    result = istio_routes.ensure_structure(result, target)  # a restart
    result = _apply(result, target, {"churn-v1": 100 - later, "churn-v2": later})
    assert istio_routes.restore_original(result, target.experiment) == vs


@settings(max_examples=300)
@given(scenarios(), st.integers(0, 100))
def test_applying_twice_is_idempotent_from_any_previous_split(scenario: Scenario, before: int) -> None:
    vs, target, weights = scenario
    previous = _apply(vs, target, {"churn-v1": 100 - before, "churn-v2": before})
    once = _apply(previous, target, weights)
    assert _apply(once, target, weights) == once
    assert istio_routes.ensure_structure(once, target) == once
    assert _apply(vs, target, weights) == once  # the history does not matter


@settings(max_examples=300)
@given(scenarios())
def test_the_split_reads_back(scenario: Scenario) -> None:
    vs, target, weights = scenario
    result = _apply(vs, target, weights)
    split = istio_routes.read_weights(result, target)
    for i, read in zip(istio_routes.managed_route_indices(vs, target), split.routes, strict=True):
        assert read.route == vs["spec"]["http"][i]["name"]
        route = vs["spec"]["http"][i]
        owned = istio_routes.owned_entries(route, target).values()
        if (
            sum(w for j, w in enumerate(istio_routes.effective_weights(route["route"])) if j not in owned)
            == 0
        ):
            assert dict(read.weights) == weights


@settings(max_examples=200)
@given(scenarios())
def test_deleted_or_edited_inserted_routes_are_rebuilt(scenario: Scenario) -> None:
    vs, target, weights = scenario
    result = _apply(vs, target, weights)
    if not _running(weights):
        return
    drifted = copy.deepcopy(result)
    http = drifted["spec"]["http"]
    first = next(i for i, r in enumerate(http) if r.get("name", "").startswith(PREFIX))
    http[first + 1]["route"][0]["weight"] = 3
    del http[first + 2]
    http.append(http.pop(first))
    assert _apply(drifted, target, weights) == result


# --------------------------------------------------------------------------- several candidates

THIRD = ports.Destination(workload="churn-v3", subset="v3")
WORKLOADS = ("churn-v1", "churn-v2", "churn-v3")


@st.composite
def three_variant_scenarios(draw: st.DrawFn) -> Scenario:
    """An A/B test of two candidates: any split, often with one candidate dropped (at 0)."""
    vs, target, _ = draw(scenarios())
    target = dataclasses.replace(target, variants=(BASELINE, CANDIDATE, THIRD))
    percents = draw(splits(100, 3))
    if draw(st.booleans()):  # a dropped candidate: its share went back to the baseline
        dropped = draw(st.sampled_from([1, 2]))
        percents[0] += percents[dropped]
        percents[dropped] = 0
    return vs, target, dict(zip(WORKLOADS, percents, strict=True))


@settings(max_examples=300)
@given(three_variant_scenarios())
def test_each_variant_with_traffic_gets_a_sticky_route_while_the_baseline_shares(scenario: Scenario) -> None:
    vs, target, weights = scenario
    result = _apply(vs, target, weights)
    running = 0 < weights["churn-v1"] < 100
    managed = [vs["spec"]["http"][i]["name"] for i in istio_routes.managed_route_indices(vs, target)]
    expected: list[str] = []
    for name in managed if running else ():
        kept = [f"{PREFIX}{name}-{w}" for w in WORKLOADS if weights[w] > 0]
        http = result["spec"]["http"]
        at = [r.get("name") for r in http].index(name)
        assert [r["name"] for r in http[at - len(kept) - 1 : at]] == [*kept, f"{PREFIX}{name}-assign"]
        expected += [*kept, f"{PREFIX}{name}-assign"]
    assert _inserted(result) == expected
    assert _apply(result, target, weights) == result  # idempotent
    assert istio_routes.restore_original(result, target.experiment) == vs
    for i, read in zip(
        istio_routes.managed_route_indices(vs, target),
        istio_routes.read_weights(result, target).routes,
        strict=True,
    ):
        route = vs["spec"]["http"][i]
        owned = istio_routes.owned_entries(route, target).values()
        weights_there = istio_routes.effective_weights(route["route"])
        if sum(w for j, w in enumerate(weights_there) if j not in owned) == 0:
            assert dict(read.weights) == weights


def test_three_variants_users_stay_until_their_candidate_is_dropped_then_are_assigned_anew() -> None:
    """Evaluated by the mesh simulator's Istio matcher: a dropped candidate's users fall through to assign."""
    target = dataclasses.replace(_target(), variants=(BASELINE, CANDIDATE, THIRD))
    vs = _vs([_primary(match=[{"uri": {"prefix": "/predict"}}])])

    def landed(spec: dict[str, Any], cookie: str | None) -> str | None:
        headers = {} if cookie is None else {"cookie": f"{COOKIE}={cookie}"}
        route = traffic.route_for_request(spec, headers, "/predict")
        return None if route is None else route.get("name")

    racing = _apply(vs, target, {"churn-v1": 50, "churn-v2": 25, "churn-v3": 25})["spec"]
    for workload in WORKLOADS:
        assert landed(racing, workload) == f"{PREFIX}primary-{workload}"
    assert landed(racing, None) == f"{PREFIX}primary-assign"
    assign = next(r for r in racing["http"] if r["name"] == f"{PREFIX}primary-assign")
    assert traffic.destination_weights(assign) == {(HOST, "v1"): 50, (HOST, "v2"): 25, (HOST, "v3"): 25}

    dropped = _apply(vs, target, {"churn-v1": 75, "churn-v2": 25, "churn-v3": 0})["spec"]
    assert landed(dropped, "churn-v3") == f"{PREFIX}primary-assign"  # re-assigned, their cookie replaced
    assert landed(dropped, "churn-v2") == f"{PREFIX}primary-churn-v2"
    assert landed(dropped, "churn-v1") == f"{PREFIX}primary-churn-v1"
    assign = next(r for r in dropped["http"] if r["name"] == f"{PREFIX}primary-assign")
    assert traffic.destination_weights(assign) == {(HOST, "v1"): 75, (HOST, "v2"): 25, (HOST, "v3"): 0}
    cookies = {
        e["destination"]["subset"]: e["headers"]["response"]["add"]["set-cookie"] for e in assign["route"]
    }
    assert cookies["v2"] == f"{COOKIE}=churn-v2; Max-Age=3600; Path=/"

    # The winner promoted (or a rollback): the split stops, every inserted route goes.
    for weights in (
        {"churn-v1": 0, "churn-v2": 100, "churn-v3": 0},
        {"churn-v1": 100, "churn-v2": 0, "churn-v3": 0},
    ):
        done = _apply(vs, target, weights)
        assert _inserted(done) == []
        assert istio_routes.read_weights(done, target).weights() == weights


def test_other_experiments_inserted_routes_are_never_managed() -> None:
    theirs = {
        "name": "mexp-churn-v3-web-churn-v1",
        "match": [{"headers": {"cookie": {"regex": "^(.*?;\\s*)?mexp\\-churn\\-v3=churn\\-v1(;.*)?$"}}}],
        "route": [{"destination": {"host": HOST, "subset": "v1"}, "weight": 100}],
    }
    web = {"name": "web", "route": [{"destination": {"host": HOST, "subset": "v1"}}]}
    vs = _vs([copy.deepcopy(theirs), web])
    target = _target()
    assert istio_routes.managed_route_indices(vs, target) == [1]
    result = _apply(vs, target, {"churn-v1": 50, "churn-v2": 50})
    assert result["spec"]["http"][0] == theirs
    assert istio_routes.restore_original(result, "churn-v2")["spec"]["http"] == vs["spec"]["http"]


def test_unnamed_routes_keep_their_keys_around_inserted_routes() -> None:
    """An unnamed route's key counts only the routes nobody inserted, so it survives an A/B test."""
    legacy = ports.Destination("legacy-v1", host="legacy")
    plain = ports.RouteTarget(
        "legacy-v2", "ml", "churn", None, (legacy, ports.Destination("legacy-v2", subset="v2"))
    )
    unnamed = {"route": [{"destination": {"host": "legacy"}}]}
    vs = _vs([_primary(match=[{"uri": {"prefix": "/predict"}}]), copy.deepcopy(unnamed)])
    vs = _apply(vs, plain, {"legacy-v1": 90, "legacy-v2": 10})
    assert istio_routes.saved_routes(vs)["legacy-v2"] == {"#1": unnamed["route"]}

    running = _apply(vs, _target(), {"churn-v1": 50, "churn-v2": 50})
    assert [r.get("name", "") for r in running["spec"]["http"]][3:] == ["primary", ""]
    assert [r.route for r in istio_routes.read_weights(running, plain).routes] == ["#1"]
    assert istio_routes.read_weights(running, plain).weights() == {"legacy-v1": 90, "legacy-v2": 10}
    restored = istio_routes.restore_original(running, "legacy-v2")
    assert restored["spec"]["http"][-1] == unnamed
    assert len(istio_routes.route_keys(restored["spec"]["http"])) == 5  # the A/B test's routes stay


# --------------------------------------------------------------------------- conflicts


def _primary(**fields: Any) -> dict[str, Any]:
    return {"name": "primary", **fields, "route": [{"destination": {"host": HOST, "subset": "v1"}}]}


@pytest.mark.parametrize(
    ("route_match", "cohort_match", "field"),
    [
        ({"uri": {"prefix": "/predict"}}, {"uri": {"prefix": "/beta"}}, "uri"),
        ({"method": {"exact": "POST"}}, {"method": {"exact": "GET"}}, "method"),
        ({"port": 8080}, {"port": 9090}, "port"),
        ({"gateways": ["mesh"]}, {"gateways": ["public"]}, "gateways"),
        ({"ignoreUriCase": True}, {"ignoreUriCase": False}, "ignoreUriCase"),
        ({"sourceNamespace": "web"}, {"sourceNamespace": "batch"}, "sourceNamespace"),
        ({"headers": {"x-tier": {"exact": "a"}}}, {"headers": {"x-tier": {"exact": "b"}}}, "headers.x-tier"),
        ({"queryParams": {"q": {"exact": "1"}}}, {"queryParams": {"q": {"prefix": "1"}}}, "queryParams.q"),
        ({"sourceLabels": {"app": "a"}}, {"sourceLabels": {"app": "b"}}, "sourceLabels.app"),
        (
            {"withoutHeaders": {"x-bot": {}}},
            {"withoutHeaders": {"x-bot": {"exact": "1"}}},
            "withoutHeaders.x-bot",
        ),
    ],
)
def test_conflicting_matches_name_the_virtual_service_the_route_and_the_field(
    route_match: dict[str, Any], cohort_match: dict[str, Any], field: str
) -> None:
    vs = _vs([_primary(match=[route_match])])
    target = _target(cohort=(cohort_match,))
    structured = istio_routes.ensure_structure(vs, target)
    expected = (
        f"cannot combine the matches of http route primary of VirtualService ml/churn: {re.escape(field)} is"
    )
    with pytest.raises(ports.RouterError, match=expected):
        istio_routes.with_weights(structured, target, {"churn-v1": 50, "churn-v2": 50})
    # Not running, nothing is combined: a rollback or promotion still goes through.
    istio_routes.with_weights(structured, target, {"churn-v1": 100, "churn-v2": 0})


def test_a_match_name_only_labels_it_and_never_conflicts() -> None:
    merged = istio_routes.merge_matches({"name": "predict", "uri": {"exact": "/p"}}, {"name": "beta"}, "here")
    assert merged == {"name": "predict", "uri": {"exact": "/p"}}


@pytest.mark.parametrize("field", ["headers", "withoutHeaders"])
def test_a_route_matching_on_the_cookie_header_is_refused(field: str) -> None:
    vs = _vs([_primary(match=[{field: {"Cookie": {"regex": ".*"}}}])])
    target = _target()
    with pytest.raises(
        ports.RouterError,
        match=rf"http route primary of VirtualService ml/churn \(match 0\) matches on the cookie header "
        rf"\({field}.cookie\): the A/B test owns that header",
    ):
        _apply(vs, target, {"churn-v1": 50, "churn-v2": 50})


def test_a_destination_that_already_handles_set_cookie_is_refused() -> None:
    entry = {
        "destination": {"host": HOST, "subset": "v1"},
        "headers": {"response": {"add": {"Set-Cookie": "x=1"}}},
    }
    vs = _vs([{"name": "primary", "route": [entry]}])
    with pytest.raises(ports.RouterError, match=r"headers.response.add of set-cookie"):
        _apply(vs, _target(), {"churn-v1": 50, "churn-v2": 50})


def test_an_unnamed_managed_route_is_refused_before_any_write() -> None:
    vs = _vs([{"route": [{"destination": {"host": HOST, "subset": "v1"}}]}])
    with pytest.raises(
        ports.RouterError, match="VirtualService ml/churn has no name: A/B tests need named http"
    ):
        istio_routes.ensure_structure(vs, _target())


@pytest.mark.parametrize(
    ("sticky", "message"),
    [
        (ports.Stickiness(cookie="bad cookie", max_age_seconds=60), "must be a token"),
        (ports.Stickiness(cookie="c", max_age_seconds=0), "positive number of seconds"),
    ],
)
def test_bad_stickiness_is_a_value_error(sticky: ports.Stickiness, message: str) -> None:
    target = ports.RouteTarget("churn-v2", "ml", "churn", None, (BASELINE, CANDIDATE), sticky=sticky)
    with pytest.raises(ValueError, match=message):
        istio_routes.ensure_structure(_vs([_primary()]), target)


def test_an_ab_test_needs_a_candidate() -> None:
    target = ports.RouteTarget(
        "churn-v2", "ml", "churn", None, (BASELINE,), sticky=ports.Stickiness(COOKIE, 60)
    )
    with pytest.raises(ValueError, match="at least one candidate"):
        istio_routes.ensure_structure(_vs([_primary()]), target)


# --------------------------------------------------------------------------- where requests land


def test_requests_land_on_the_sticky_assign_or_managed_route() -> None:
    """Evaluated by the mesh simulator's Istio matcher (first match wins, regexes fullmatch)."""
    cohort = ({"headers": {"x-user-tier": {"exact": "beta"}}},)
    target = _target(cohort=cohort)
    vs = _vs(
        [
            _primary(match=[{"uri": {"prefix": "/predict"}}]),
            {"name": "docs", "route": [{"destination": {"host": "docs"}}]},
        ]
    )
    spec = _apply(vs, target, {"churn-v1": 60, "churn-v2": 40})["spec"]
    beta = {"x-user-tier": "beta"}

    def landed(headers: dict[str, str], uri: str = "/predict") -> str | None:
        route = traffic.route_for_request(spec, headers, uri)
        return None if route is None else route.get("name")

    assert landed({**beta, "Cookie": f"{COOKIE}=churn-v2"}) == f"{PREFIX}primary-churn-v2"
    assert (
        landed({**beta, "cookie": f"session=abc; {COOKIE}=churn-v2; theme=dark"})
        == f"{PREFIX}primary-churn-v2"
    )
    assert landed({**beta, "cookie": f"{COOKIE}=churn-v1"}) == f"{PREFIX}primary-churn-v1"
    assert landed({**beta, "cookie": f"a=1;{COOKIE}=churn-v1"}) == f"{PREFIX}primary-churn-v1"
    assert landed(beta) == f"{PREFIX}primary-assign"
    assert landed({**beta, "cookie": "session=abc"}) == f"{PREFIX}primary-assign"
    # Lookalikes are not the cookie: another name ending in it, or a value it only starts.
    assert landed({**beta, "cookie": f"x{COOKIE}=churn-v2"}) == f"{PREFIX}primary-assign"
    assert landed({**beta, "cookie": f"{COOKIE}=churn-v22"}) == f"{PREFIX}primary-assign"
    # Outside the cohort: the user's route, which keeps them on the baseline, cookie or not.
    assert landed({"x-user-tier": "free", "cookie": f"{COOKIE}=churn-v2"}) == "primary"
    assert landed({}) == "primary"
    assert traffic.destination_weights(traffic.route_for_request(spec, {}, "/predict") or {}) == {
        ("churn.ml.svc.cluster.local", "v1"): 100,
        ("churn.ml.svc.cluster.local", "v2"): 0,
    }
    assert (
        landed({**beta, "cookie": f"{COOKIE}=churn-v2"}, uri="/docs") == "docs"
    )  # R's own match still applies

    assign = next(r for r in spec["http"] if r["name"] == f"{PREFIX}primary-assign")
    cookies = {
        e["destination"]["subset"]: e["headers"]["response"]["add"]["set-cookie"] for e in assign["route"]
    }
    assert cookies == {
        "v1": f"{COOKIE}=churn-v1; Max-Age=3600; Path=/",
        "v2": f"{COOKIE}=churn-v2; Max-Age=3600; Path=/",
    }
    assert traffic.destination_weights(assign) == {(HOST, "v1"): 60, (HOST, "v2"): 40}
