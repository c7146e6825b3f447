"""Property tests of the pure VirtualService edits over random routes, pools and splits."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import ports
from modelrollout.routers import istio_routes

HOST = "churn.ml.svc.cluster.local"
VARIANTS = (
    ports.Destination(workload="churn-v1", subset="v1"),
    ports.Destination(workload="churn-v2", subset="v2"),
    ports.Destination(workload="churn-v3", subset="v3"),
)


def _target(candidates: int) -> ports.RouteTarget:
    return ports.RouteTarget(
        experiment="churn-v2",
        namespace="ml",
        name="churn",
        routes=None,
        variants=VARIANTS[: 1 + candidates],
    )


@st.composite
def splits(draw: st.DrawFn, total: int, parts: int) -> list[int]:
    """``parts`` non-negative integers summing to ``total`` (no parts for a total of 0)."""
    if parts == 0:
        return []
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=parts - 1, max_size=parts - 1)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


@st.composite
def model_routes(draw: st.DrawFn, candidates: int) -> dict[str, Any]:
    """An http route holding the baseline, maybe candidates and destinations the experiment doesn't own."""
    present = [VARIANTS[0]] + [v for v in VARIANTS[1 : 1 + candidates] if draw(st.booleans())]
    entries: list[dict[str, Any]] = [{"destination": {"host": HOST, "subset": v.subset}} for v in present]
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
    extras = draw(
        st.fixed_dictionaries(
            {}, optional={"timeout": st.just("5s"), "match": st.just([{"uri": {"prefix": "/p"}}])}
        )
    )
    return {**extras, **draw(USER_MIRRORS), "route": route}


# A managed route's own mirror fields: none (mostly), the user's mirror to the candidate, or elsewhere.
CANDIDATE_MIRROR = {"host": HOST, "subset": "v2"}
USER_MIRRORS = st.sampled_from(
    [
        {},
        {},
        {},
        {"mirror": CANDIDATE_MIRROR},
        {"mirror": CANDIDATE_MIRROR, "mirrorPercent": 7},
        {"mirror": {"host": "audit"}, "mirrorPercentage": {"value": 5.0}},
    ]
)
PERCENTS = st.one_of(st.sampled_from([100, 100.0, 50.0, 0.5]), st.floats(0.01, 100.0))


other_routes = st.fixed_dictionaries(
    {"route": st.just([{"destination": {"host": "docs.ml.svc.cluster.local"}, "weight": 100}])},
    optional={"retries": st.just({"attempts": 2}), "mirror": st.just({"host": "audit"})},
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], ports.RouteTarget, dict[str, int]]:
    candidates = draw(st.integers(1, 2))
    target = _target(candidates)
    routes = draw(st.lists(st.one_of(model_routes(candidates), other_routes), min_size=0, max_size=3))
    routes.insert(draw(st.integers(0, len(routes))), draw(model_routes(candidates)))
    for i, route in enumerate(routes):
        if draw(st.booleans()):
            route["name"] = f"route-{i}"
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": "ml", "resourceVersion": "3"},
        "spec": {"hosts": [HOST], "http": routes},
    }
    weights = dict(zip((v.workload for v in target.variants), draw(splits(100, candidates + 1)), strict=True))
    return vs, target, weights


def _pool_is_100(route: dict[str, Any], target: ports.RouteTarget) -> bool:
    owned = istio_routes.owned_entries(route, target).values()
    weights = istio_routes.effective_weights(route["route"])
    return sum(w for j, w in enumerate(weights) if j not in owned) == 0


@settings(max_examples=300)
@given(scenarios())
def test_managed_routes_sum_to_100_and_others_are_untouched(
    scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]],
) -> None:
    vs, target, weights = scenario
    pristine = copy.deepcopy(vs)
    result = istio_routes.with_weights(istio_routes.ensure_structure(vs, target), target, weights)
    assert vs == pristine
    managed = istio_routes.managed_route_indices(vs, target)
    for i, route in enumerate(result["spec"]["http"]):
        if i in managed:
            assert sum(istio_routes.effective_weights(route["route"])) == 100
        else:
            assert json.dumps(route, sort_keys=True) == json.dumps(vs["spec"]["http"][i], sort_keys=True)


@settings(max_examples=300)
@given(scenarios())
def test_weights_read_back_when_the_pool_is_100(
    scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]],
) -> None:
    vs, target, weights = scenario
    result = istio_routes.with_weights(istio_routes.ensure_structure(vs, target), target, weights)
    split = istio_routes.read_weights(result, target)
    for i, read in zip(istio_routes.managed_route_indices(vs, target), split.routes, strict=True):
        if _pool_is_100(vs["spec"]["http"][i], target):
            assert dict(read.weights) == weights
        elif sum(read.weights.values()):
            assert sum(read.weights.values()) == 100


@settings(max_examples=300)
@given(scenarios(), st.data())
def test_restore_gives_back_the_original(
    scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]], data: st.DataObject
) -> None:
    vs, target, weights = scenario
    later = dict(zip(weights, data.draw(splits(100, len(weights))), strict=True))
    result = istio_routes.ensure_structure(vs, target)
    result = istio_routes.with_weights(result, target, weights)
    result = istio_routes.ensure_structure(result, target)  # a restart must not overwrite the original
    result = istio_routes.with_weights(result, target, later)
    assert istio_routes.restore_original(result, target.experiment) == vs


@given(scenarios())
def test_edits_are_idempotent(scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]]) -> None:
    vs, target, weights = scenario
    structured = istio_routes.ensure_structure(vs, target)
    assert istio_routes.ensure_structure(structured, target) == structured
    weighted = istio_routes.with_weights(structured, target, weights)
    assert istio_routes.with_weights(weighted, target, weights) == weighted


@given(st.integers(0, 100), st.lists(st.integers(0, 100), min_size=1, max_size=5))
def test_apportion_is_exact_and_fair(total: int, shares: list[int]) -> None:
    parts = istio_routes.apportion(total, shares)
    if sum(shares) == 0:
        assert parts == [0] * len(shares)
        return
    assert sum(parts) == total
    for part, share in zip(parts, shares, strict=True):
        assert abs(part * sum(shares) - total * share) < sum(shares)  # within one unit of exact


# --------------------------------------------------------------------------- shadow traffic (mirror)


def _mirrors_elsewhere(vs: dict[str, Any], target: ports.RouteTarget) -> bool:
    """Whether a managed route has a mirror of the user's that is not to the candidate."""
    http = vs["spec"]["http"]
    return any(
        http[i].get("mirror") not in (None, CANDIDATE_MIRROR)
        for i in istio_routes.managed_route_indices(vs, target)
    )


def _routes(vs: dict[str, Any]) -> list[Any]:
    return [route.get("route") for route in vs["spec"]["http"]]


@settings(max_examples=300)
@given(scenarios(), PERCENTS)
def test_mirror_set_and_unset_are_idempotent_and_leave_the_weights(
    scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]], percent: float
) -> None:
    vs, plain, weights = scenario
    shadow = dataclasses.replace(plain, mirror_percent=percent)
    if _mirrors_elsewhere(vs, plain):
        with pytest.raises(ports.RouterError, match=r"already mirrors to .* \(field mirror\)"):
            istio_routes.ensure_structure(vs, shadow)
        return
    without = istio_routes.ensure_structure(vs, plain)
    mirrored = istio_routes.ensure_structure(vs, shadow)
    assert istio_routes.ensure_structure(mirrored, shadow) == mirrored
    assert istio_routes.with_mirror(mirrored, shadow) == mirrored
    assert istio_routes.read_mirror(mirrored, shadow) == pytest.approx(float(percent))
    assert _routes(mirrored) == _routes(without)  # the weights are not the mirror's business

    managed = istio_routes.managed_route_indices(vs, plain)
    for i, route in enumerate(mirrored["spec"]["http"]):
        if i in managed:
            assert route["mirror"] == CANDIDATE_MIRROR
            assert route["mirrorPercentage"] == {"value": float(percent)}
            assert "mirrorPercent" not in route
        else:
            assert json.dumps(route, sort_keys=True) == json.dumps(vs["spec"]["http"][i], sort_keys=True)

    # Weights written while mirroring are the weights written without it.
    weighted = istio_routes.with_weights(mirrored, shadow, weights)
    assert _routes(weighted) == _routes(istio_routes.with_weights(without, plain, weights))
    assert (
        istio_routes.read_weights(weighted, shadow).routes
        == istio_routes.read_weights(istio_routes.with_weights(without, plain, weights), plain).routes
    )
    assert istio_routes.read_weights(weighted, shadow).mirror == pytest.approx(float(percent))
    assert istio_routes.read_mirror(weighted, shadow) == pytest.approx(float(percent))

    # Unset: exactly as if the experiment had never mirrored, and idempotent again.
    unset = istio_routes.ensure_structure(mirrored, plain)
    assert unset == without
    assert istio_routes.ensure_structure(unset, plain) == unset
    # What is left is the user's: read as theirs (None without mirrors, 0 where some routes lack one).
    users = [vs["spec"]["http"][i].get("mirror") == CANDIDATE_MIRROR for i in managed]
    read = istio_routes.read_mirror(unset, plain)
    if not any(users):
        assert read is None
    elif not all(users):
        assert read == 0.0


@settings(max_examples=300)
@given(scenarios(), st.lists(st.one_of(st.none(), PERCENTS), min_size=1, max_size=4), st.data())
def test_restore_gives_back_the_original_after_any_mirroring(
    scenario: tuple[dict[str, Any], ports.RouteTarget, dict[str, int]],
    percents: list[float | None],
    data: st.DataObject,
) -> None:
    vs, plain, weights = scenario
    if _mirrors_elsewhere(vs, plain):
        percents = [None] * len(percents)
    result = vs
    for percent in percents:
        target = dataclasses.replace(plain, mirror_percent=percent)
        split = dict(zip(weights, data.draw(splits(100, len(weights))), strict=True))
        result = istio_routes.with_weights(istio_routes.ensure_structure(result, target), target, split)
    assert istio_routes.restore_original(result, plain.experiment) == vs
