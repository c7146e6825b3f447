"""Golden tests of the pure VirtualService edits: one YAML file per case.

Each file in ``golden/`` holds a ``target`` (with ``sticky`` for an A/B test
with cookie affinity, ``mirror_percent`` for shadow traffic), an ``operation``
(a name or a list applied in order; ``weights`` for ``with_weights``, or
``{with_weights: {...}}`` for a split of its own; ``{mirror_percent: p}``
changes the target's mirror for the operations after it), an ``input``
VirtualService and the ``expected`` VirtualService, split, ``{read_mirror:
percent}`` or error.  For
readability the original-routes annotation is written as YAML in the files
and encoded/decoded here; the real functions only ever see the JSON string.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any

import pytest
import yaml

from modelrollout import ports
from modelrollout.routers import istio_routes

GOLDEN = pathlib.Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.yaml"))
KEY = istio_routes.ORIGINAL_ROUTES_ANNOTATION


def _target(raw: dict[str, Any], vs: dict[str, Any]) -> ports.RouteTarget:
    routes = raw.get("routes")
    sticky = raw.get("sticky")
    return ports.RouteTarget(
        experiment=raw["experiment"],
        namespace=vs["metadata"]["namespace"],
        name=vs["metadata"]["name"],
        routes=None if routes is None else tuple(routes),
        variants=tuple(ports.Destination(**variant) for variant in raw["variants"]),
        mirror_percent=raw.get("mirror_percent"),
        sticky=None
        if sticky is None
        else ports.Stickiness(
            cookie=sticky["cookie"],
            max_age_seconds=sticky["max_age_seconds"],
            cohort=tuple(sticky.get("cohort") or ()),
        ),
    )


def _encode(vs: dict[str, Any]) -> dict[str, Any]:
    vs = copy.deepcopy(vs)
    annotations = vs["metadata"].get("annotations") or {}
    if isinstance(annotations.get(KEY), dict):
        annotations[KEY] = json.dumps(annotations[KEY])
    return vs


def _decode(vs: dict[str, Any]) -> dict[str, Any]:
    vs = copy.deepcopy(vs)
    annotations = vs["metadata"].get("annotations") or {}
    if isinstance(annotations.get(KEY), str):
        annotations[KEY] = json.loads(annotations[KEY])
    return vs


def _run(case: dict[str, Any], vs: dict[str, Any], target: ports.RouteTarget) -> Any:
    operations = case["operation"] if isinstance(case["operation"], list) else [case["operation"]]
    result: Any = vs
    for operation in operations:
        if isinstance(operation, dict):
            [(name, argument)] = operation.items()
            if name == "mirror_percent":
                target = dataclasses.replace(target, mirror_percent=argument)
                continue
            assert name == "with_weights", name
            result = istio_routes.with_weights(result, target, argument)
        elif operation == "ensure_structure":
            result = istio_routes.ensure_structure(result, target)
        elif operation == "with_weights":
            result = istio_routes.with_weights(result, target, case["weights"])
        elif operation == "restore_original":
            result = istio_routes.restore_original(result, target.experiment)
        elif operation == "read_weights":
            result = istio_routes.read_weights(result, target)
        elif operation == "with_mirror":
            result = istio_routes.with_mirror(result, target)
        elif operation == "read_mirror":
            result = {"read_mirror": istio_routes.read_mirror(result, target)}
        else:
            raise AssertionError(f"unknown operation {operation}")
    return result


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_golden(path: pathlib.Path) -> None:
    case = yaml.safe_load(path.read_text())
    vs = _encode(case["input"])
    pristine = copy.deepcopy(vs)
    target = _target(case["target"], vs)
    expected = case["expected"]

    if isinstance(expected, dict) and "error" in expected:
        with pytest.raises(getattr(ports, expected["error"]), match=expected["match"]):
            _run(case, vs, target)
        return

    result = _run(case, vs, target)
    assert vs == pristine, "the input was mutated"

    if isinstance(result, dict) and "read_mirror" in result:
        assert result == expected
        return

    if isinstance(result, ports.TrafficSplit):
        assert [{"route": r.route, "weights": dict(r.weights)} for r in result.routes] == expected
        return

    annotation = (result["metadata"].get("annotations") or {}).get(KEY)
    assert annotation is None or isinstance(annotation, str)
    assert _decode(result) == expected

    # Routes the experiment does not manage come out byte-for-byte identical (in the same order,
    # around the routes an A/B test inserts).
    if "restore_original" not in case["operation"]:
        managed = set(istio_routes.managed_route_indices(vs, target))
        before = [
            (i, route)
            for i, route in enumerate(vs["spec"].get("http") or [])
            if not istio_routes.inserted_by(route, target.experiment)
        ]
        after = [
            route
            for route in result["spec"].get("http") or []
            if not istio_routes.inserted_by(route, target.experiment)
        ]
        for (i, route), out in zip(before, after, strict=True):
            if i not in managed:
                assert _canonical(out) == _canonical(route)


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 13
