"""The Istio router's I/O over a fake CustomObjectsApi: exact patches, retries, errors.

The fake applies RFC 6902 patches to one stored object and bumps its
resourceVersion, which is all the router relies on; the same behaviour
against an HTTP API server is covered in ``tests/localstack``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import ports
from modelrollout.routers import istio, istio_routes

TARGET = ports.RouteTarget(
    experiment="churn-v2",
    namespace="ml",
    name="churn",
    routes=None,
    variants=(
        ports.Destination(workload="churn-v1", subset="v1"),
        ports.Destination(workload="churn-v2", subset="v2"),
    ),
)
ANNOTATION_PATH = "/metadata/annotations/modelrollout.io~1original-routes"


def _vs() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": "ml", "resourceVersion": "1"},
        "spec": {
            "hosts": ["churn"],
            "http": [
                {"name": "docs", "route": [{"destination": {"host": "docs"}}]},
                {"name": "primary", "route": [{"destination": {"host": "churn", "subset": "v1"}}]},
            ],
        },
    }


def _pointer(doc: Any, path: str) -> tuple[Any, str | int]:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    if isinstance(doc, list):
        return doc, len(doc) if last == "-" else int(last)
    return doc, last


def _apply(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902, as the API server applies it: ``add`` into a list inserts, ``remove`` shifts the rest."""
    doc = copy.deepcopy(doc)
    for op in patch:
        parent, key = _pointer(doc, op["path"])
        if op["op"] == "test":
            try:
                ok = parent[key] == op["value"]
            except (KeyError, IndexError):
                ok = False
            if not ok:
                raise kubernetes.client.ApiException(status=422, reason="Unprocessable Entity")
        elif op["op"] == "remove":
            assert isinstance(key, str) or key < len(parent)
            del parent[key]
        elif op["op"] == "add" and isinstance(parent, list):
            assert isinstance(key, int) and key <= len(parent)
            parent.insert(key, copy.deepcopy(op["value"]))
        else:
            assert op["op"] in ("add", "replace")
            if op["op"] == "replace":
                assert key in parent if isinstance(key, str) else key < len(parent)
            parent[key] = copy.deepcopy(op["value"])
    return doc


class FakeApi:
    """One VirtualService behind get/patch, recording the calls."""

    def __init__(self, vs: dict[str, Any] | None) -> None:
        self.vs = vs
        self.patches: list[list[dict[str, Any]]] = []
        self.before_patch: Callable[[], None] = lambda: None
        self.error: kubernetes.client.ApiException | None = None
        self.versions: set[str] = set()

    def get_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        self.versions.add(kwargs.pop("version"))
        assert kwargs == {
            "group": "networking.istio.io",
            "namespace": "ml",
            "plural": "virtualservices",
            "name": "churn",
        }
        if self.vs is None:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.vs)

    def patch_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["_content_type"] == "application/json-patch+json"
        self.versions.add(kwargs["version"])
        self.patches.append(kwargs["body"])
        self.before_patch()
        if self.error is not None:
            raise self.error
        if self.vs is None:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        self.vs = _apply(self.vs, kwargs["body"])
        self.bump()
        return copy.deepcopy(self.vs)

    def bump(self) -> None:
        assert self.vs is not None
        metadata = self.vs["metadata"]
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)


def test_reconcile_patches_only_the_managed_route_and_the_annotation() -> None:
    api = FakeApi(_vs())
    split = istio.IstioRouter(api).reconcile(TARGET)
    assert split.weights() == {"churn-v1": 100, "churn-v2": 0}
    [patch] = api.patches
    expected_route = [
        {"destination": {"host": "churn", "subset": "v1"}, "weight": 100},
        {"destination": {"host": "churn", "subset": "v2"}, "weight": 0},
    ]
    saved = {"churn-v2": {"primary": [{"destination": {"host": "churn", "subset": "v1"}}]}}
    assert patch[:3] == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "test", "path": "/spec/http/1/name", "value": "primary"},
        {"op": "replace", "path": "/spec/http/1/route", "value": expected_route},
    ]
    assert patch[3]["op"] == "add" and patch[3]["path"] == "/metadata/annotations"
    assert istio_routes.saved_routes({"metadata": {"annotations": patch[3]["value"]}}) == saved
    assert len(patch) == 4


def test_annotation_is_added_next_to_existing_ones_then_replaced_then_removed() -> None:
    vs = _vs()
    vs["metadata"]["annotations"] = {"owner": "team-ml"}
    api = FakeApi(vs)
    router = istio.IstioRouter(api)
    router.reconcile(TARGET)
    assert api.patches[-1][-1]["op"] == "add" and api.patches[-1][-1]["path"] == ANNOTATION_PATH
    other = ports.RouteTarget(
        "churn-v3", "ml", "churn", None, (TARGET.baseline, ports.Destination("churn-v3", subset="v3"))
    )
    router.reconcile(other)
    assert api.patches[-1][-1]["op"] == "replace" and api.patches[-1][-1]["path"] == ANNOTATION_PATH
    router.finalize(other)
    router.finalize(TARGET)
    assert api.patches[-1][-1] == {"op": "remove", "path": ANNOTATION_PATH}
    assert api.vs is not None
    assert api.vs["metadata"]["annotations"] == {"owner": "team-ml"}
    assert api.vs["spec"] == _vs()["spec"]


def test_nothing_is_written_when_nothing_changes() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.set_routes(TARGET, {"churn-v1": 95, "churn-v2": 5})
    writes = len(api.patches)
    assert router.reconcile(TARGET).weights() == {"churn-v1": 95, "churn-v2": 5}
    router.set_routes(TARGET, {"churn-v1": 95, "churn-v2": 5})
    router.get_routes(TARGET)
    assert len(api.patches) == writes


def test_a_concurrent_edit_makes_the_router_read_again_and_retry() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.reconcile(TARGET)

    def user_edits_docs_route() -> None:
        assert api.vs is not None
        api.vs["spec"]["http"][0]["timeout"] = "9s"
        api.bump()
        api.before_patch = lambda: None  # only once

    api.before_patch = user_edits_docs_route
    split = router.set_routes(TARGET, {"churn-v1": 75, "churn-v2": 25})
    assert split.weights() == {"churn-v1": 75, "churn-v2": 25}
    assert len(api.patches) == 3  # reconcile, the lost race, the retry
    assert api.vs is not None
    assert api.vs["spec"]["http"][0]["timeout"] == "9s"  # the user's edit survived


def test_routes_reordered_under_the_router_fail_the_name_test() -> None:
    api = FakeApi(_vs())
    patch = istio.json_patch(api.vs or {}, istio_routes.ensure_structure(_vs(), TARGET))
    assert api.vs is not None
    api.vs["spec"]["http"].reverse()
    with pytest.raises(kubernetes.client.ApiException):
        _apply(api.vs, [op for op in patch if op["path"] != "/metadata/resourceVersion"])


def test_endless_conflicts_become_a_router_conflict() -> None:
    api = FakeApi(_vs())
    api.error = kubernetes.client.ApiException(status=409, reason="Conflict")
    with pytest.raises(
        ports.RouterConflict, match=r"3 patches in a row were rejected \(last: HTTP 409 Conflict\)"
    ):
        istio.IstioRouter(api, retries=2).reconcile(TARGET)
    assert len(api.patches) == 3


def test_other_api_errors_are_readable_router_errors() -> None:
    api = FakeApi(_vs())
    api.error = kubernetes.client.ApiException(status=403, reason="Forbidden")
    api.error.body = json.dumps({"message": 'virtualservices "churn" is forbidden'})
    with pytest.raises(
        ports.RouterError,
        match='cannot patch VirtualService ml/churn: HTTP 403 Forbidden: virtualservices "churn" is forb',
    ):
        istio.IstioRouter(api).reconcile(TARGET)
    assert len(api.patches) == 1


def test_a_missing_virtual_service() -> None:
    router = istio.IstioRouter(FakeApi(None))
    with pytest.raises(ports.VirtualServiceNotFound, match="VirtualService ml/churn not found"):
        router.get_routes(TARGET)
    router.finalize(TARGET)  # nothing to restore


def test_finalize_restores_and_a_second_finalize_writes_nothing() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api, version="v1beta1")
    router.set_routes(TARGET, {"churn-v1": 50, "churn-v2": 50})
    router.finalize(TARGET)
    writes = len(api.patches)
    router.finalize(TARGET)
    assert len(api.patches) == writes
    assert api.versions == {"v1beta1"}
    assert api.vs is not None
    assert {k: v for k, v in api.vs.items() if k != "metadata"} == {
        k: v for k, v in _vs().items() if k != "metadata"
    }


def test_bad_weights_fail_before_any_request() -> None:
    api = FakeApi(_vs())
    with pytest.raises(ValueError, match="sum to 100"):
        istio.IstioRouter(api).set_routes(TARGET, {"churn-v1": 50})
    assert api.patches == []


# --------------------------------------------------------------------------- sticky A/B tests

STICKY = dataclasses.replace(
    TARGET,
    sticky=ports.Stickiness(
        cookie="mexp-churn-v2", max_age_seconds=600, cohort=({"headers": {"x-beta": {}}},)
    ),
)
INSERTED = [
    "mexp-churn-v2-primary-churn-v1",
    "mexp-churn-v2-primary-churn-v2",
    "mexp-churn-v2-primary-assign",
]


def _spec_and_annotations(vs: dict[str, Any] | None) -> Any:
    """What a patch must get right; an empty annotations map is as good as none (Kubernetes drops it)."""
    assert vs is not None
    return vs["spec"], vs["metadata"].get("annotations") or None


def _names(vs: dict[str, Any] | None) -> list[str]:
    assert vs is not None
    return [route.get("name", "") for route in vs["spec"]["http"]]


def test_a_sticky_round_trip_inserts_then_removes_routes_with_guarded_patches() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.reconcile(STICKY)

    split = router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    assert split.weights() == {"churn-v1": 50, "churn-v2": 50}
    assert _names(api.vs) == ["docs", *INSERTED, "primary"]
    [guard_version, guard_anchor, *adds] = api.patches[-1]
    assert guard_version == {"op": "test", "path": "/metadata/resourceVersion", "value": "2"}
    assert guard_anchor == {"op": "test", "path": "/spec/http/1/name", "value": "primary"}
    assert [(op["op"], op["path"], op["value"]["name"]) for op in adds] == [
        ("add", "/spec/http/1", INSERTED[0]),
        ("add", "/spec/http/2", INSERTED[1]),
        ("add", "/spec/http/3", INSERTED[2]),
    ]
    desired = istio_routes.with_weights(
        istio_routes.ensure_structure(_vs(), STICKY), STICKY, {"churn-v1": 50, "churn-v2": 50}
    )
    assert _spec_and_annotations(api.vs) == _spec_and_annotations(desired)

    writes = len(api.patches)
    router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    router.reconcile(STICKY)
    assert len(api.patches) == writes  # idempotent: no write at all

    assert router.set_routes(STICKY, {"churn-v1": 0, "churn-v2": 100}).weights() == {
        "churn-v1": 0,
        "churn-v2": 100,
    }
    assert _names(api.vs) == ["docs", "primary"]
    ops = [(op["op"], op["path"]) for op in api.patches[-1]]
    assert ops == [
        ("test", "/metadata/resourceVersion"),
        *[("test", f"/spec/http/{i}/name") for i in (1, 2, 3, 4)],
        ("remove", "/spec/http/1"),
        ("remove", "/spec/http/1"),
        ("remove", "/spec/http/1"),
        ("replace", "/spec/http/1/route"),
    ]

    router.finalize(STICKY)
    assert _spec_and_annotations(api.vs) == (_vs()["spec"], None)


def test_finalize_while_the_ab_test_runs_removes_the_inserted_routes() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.set_routes(STICKY, {"churn-v1": 80, "churn-v2": 20})
    router.finalize(STICKY)
    assert _spec_and_annotations(api.vs) == (_vs()["spec"], None)
    assert [op["op"] for op in api.patches[-1]].count("remove") == 4  # three routes and the annotation


def test_a_deleted_inserted_route_comes_back_as_one_add() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    assert api.vs is not None
    expected = copy.deepcopy(api.vs["spec"])
    deleted = api.vs["spec"]["http"].pop(2)  # a user deletes the candidate's sticky route
    api.bump()

    router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    assert api.patches[-1][-1] == {"op": "add", "path": "/spec/http/2", "value": deleted}
    assert [op["op"] for op in api.patches[-1]] == ["test", "test", "add"]
    assert api.vs["spec"] == expected


def test_an_edited_inserted_route_is_replaced_whole() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    assert api.vs is not None
    expected = copy.deepcopy(api.vs["spec"])
    api.vs["spec"]["http"][3]["match"] = [{"uri": {"prefix": "/"}}]
    api.bump()
    router.set_routes(STICKY, {"churn-v1": 50, "churn-v2": 50})
    assert api.patches[-1][1:] == [
        {"op": "test", "path": "/spec/http/3/name", "value": INSERTED[2]},
        {"op": "replace", "path": "/spec/http/3", "value": expected["http"][3]},
    ]
    assert api.vs["spec"] == expected


def test_inserting_before_a_route_that_moved_fails_the_guard() -> None:
    running = istio_routes.with_weights(
        istio_routes.ensure_structure(_vs(), STICKY), STICKY, {"churn-v1": 1, "churn-v2": 99}
    )
    structured = istio_routes.ensure_structure(_vs(), STICKY)
    patch = istio.json_patch(structured, running)
    moved = copy.deepcopy(structured)
    moved["spec"]["http"].reverse()
    with pytest.raises(kubernetes.client.ApiException):
        _apply(moved, patch)


SPLITS = st.one_of(st.sampled_from([0, 100]), st.integers(0, 100))


@st.composite
def _drift(draw: st.DrawFn, vs: dict[str, Any]) -> dict[str, Any]:
    """``vs`` after an unrelated edit: an inserted route deleted, edited or moved, or a route added."""
    vs = copy.deepcopy(vs)
    http = vs["spec"]["http"]
    kind = draw(st.sampled_from(["none", "delete", "edit", "move", "add-user-route"]))
    inserted = [i for i, route in enumerate(http) if istio_routes.is_inserted(route)]
    if kind == "add-user-route":
        http.insert(draw(st.integers(0, len(http))), {"route": [{"destination": {"host": "extra"}}]})
    elif inserted and kind != "none":
        i = draw(st.sampled_from(inserted))
        if kind == "delete":
            del http[i]
        elif kind == "edit":
            http[i]["timeout"] = "1s"
        else:
            http.insert(draw(st.integers(0, len(http) - 1)), http.pop(i))
    return vs


@settings(max_examples=200)
@given(st.lists(SPLITS, min_size=1, max_size=5), st.data())
def test_the_patch_always_turns_the_object_read_into_the_desired_one(
    splits: list[int], data: st.DataObject
) -> None:
    cohorts: list[tuple[dict[str, Any], ...]] = [
        (),
        ({"headers": {"x-beta": {}}}, {"queryParams": {"b": {"exact": "1"}}}),
    ]
    sticky = ports.Stickiness(
        cookie="mexp-churn-v2", max_age_seconds=600, cohort=data.draw(st.sampled_from(cohorts))
    )
    target = dataclasses.replace(STICKY, sticky=sticky, routes=None)
    vs = _vs()
    vs["spec"]["http"].append(
        {
            "name": "secondary",
            "match": [{"uri": {"prefix": "/b"}}],
            "route": [{"destination": {"host": "churn", "subset": "v1"}}],
        }
    )
    vs["spec"]["http"].insert(1, {"route": [{"destination": {"host": "unnamed-other"}}]})
    for candidate in splits:
        vs = data.draw(_drift(vs))
        desired = istio_routes.with_weights(
            istio_routes.ensure_structure(vs, target),
            target,
            {"churn-v1": 100 - candidate, "churn-v2": candidate},
        )
        patch = istio.json_patch(vs, desired)
        assert _spec_and_annotations(_apply(vs, patch)) == _spec_and_annotations(desired)
        assert istio.json_patch(desired, desired) == []
        vs = desired
    restored = istio_routes.restore_original(vs, target.experiment)
    assert _spec_and_annotations(_apply(vs, istio.json_patch(vs, restored))) == _spec_and_annotations(
        restored
    )


# --------------------------------------------------------------------------- shadow traffic (mirror)

SHADOW = dataclasses.replace(TARGET, mirror_percent=100.0)
MIRROR = {"host": "churn", "subset": "v2"}


def test_a_shadow_round_trip_patches_the_mirror_fields_one_by_one() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    assert router.reconcile(SHADOW).weights() == {"churn-v1": 100, "churn-v2": 0}
    [patch] = api.patches
    assert patch[:6] == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "test", "path": "/spec/http/1/name", "value": "primary"},
        {
            "op": "replace",
            "path": "/spec/http/1/route",
            "value": [
                {"destination": {"host": "churn", "subset": "v1"}, "weight": 100},
                {"destination": {"host": "churn", "subset": "v2"}, "weight": 0},
            ],
        },
        {"op": "add", "path": "/spec/http/1/mirror", "value": MIRROR},
        {"op": "add", "path": "/spec/http/1/mirrorPercentage", "value": {"value": 100.0}},
        {"op": "add", "path": "/metadata/annotations", "value": patch[5]["value"]},
    ]
    assert len(patch) == 6
    assert router.get_mirror(SHADOW) == 100.0
    assert api.vs is not None and api.vs["spec"]["http"][0] == _vs()["spec"]["http"][0]

    writes = len(api.patches)
    router.set_routes(SHADOW, {"churn-v1": 100, "churn-v2": 0})
    router.reconcile(SHADOW)
    assert len(api.patches) == writes  # idempotent: no write

    quarter = dataclasses.replace(TARGET, mirror_percent=25)
    router.reconcile(quarter)
    assert api.patches[-1] == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "2"},
        {"op": "test", "path": "/spec/http/1/name", "value": "primary"},
        {"op": "replace", "path": "/spec/http/1/mirrorPercentage", "value": {"value": 25.0}},
    ]
    assert router.get_mirror(TARGET) == 25.0

    # The canary starts: the mirror goes, the split is written, in one patch.
    assert router.set_routes(TARGET, {"churn-v1": 90, "churn-v2": 10}).weights() == {
        "churn-v1": 90,
        "churn-v2": 10,
    }
    ops = [(op["op"], op["path"]) for op in api.patches[-1]]
    assert ops == [
        ("test", "/metadata/resourceVersion"),
        ("test", "/spec/http/1/name"),
        ("replace", "/spec/http/1/route"),
        ("remove", "/spec/http/1/mirror"),
        ("remove", "/spec/http/1/mirrorPercentage"),
        ("replace", ANNOTATION_PATH),
    ]
    assert router.get_mirror(TARGET) is None
    assert api.vs is not None and "mirror" not in api.vs["spec"]["http"][1]

    router.finalize(TARGET)
    assert _spec_and_annotations(api.vs) == (_vs()["spec"], None)


def test_finalize_while_shadowing_removes_the_mirror() -> None:
    api = FakeApi(_vs())
    router = istio.IstioRouter(api)
    router.reconcile(dataclasses.replace(TARGET, mirror_percent=50))
    router.finalize(TARGET)
    assert _spec_and_annotations(api.vs) == (_vs()["spec"], None)
    ops = {(op["op"], op["path"]) for op in api.patches[-1]}
    assert {("remove", "/spec/http/1/mirror"), ("remove", "/spec/http/1/mirrorPercentage")} <= ops


def test_an_unnamed_route_gets_its_mirror_as_field_ops_not_a_new_route() -> None:
    vs = _vs()
    del vs["spec"]["http"][1]["name"]
    api = FakeApi(vs)
    router = istio.IstioRouter(api)
    router.reconcile(TARGET)
    router.reconcile(SHADOW)
    assert [(op["op"], op["path"]) for op in api.patches[-1]] == [
        ("test", "/metadata/resourceVersion"),
        ("add", "/spec/http/1/mirror"),
        ("add", "/spec/http/1/mirrorPercentage"),
        ("replace", ANNOTATION_PATH),
    ]
    router.reconcile(TARGET)
    assert [(op["op"], op["path"]) for op in api.patches[-1]] == [
        ("test", "/metadata/resourceVersion"),
        ("remove", "/spec/http/1/mirror"),
        ("remove", "/spec/http/1/mirrorPercentage"),
        ("replace", ANNOTATION_PATH),
    ]
    router.finalize(TARGET)
    assert _spec_and_annotations(api.vs) == (vs["spec"], None)


def test_a_users_mirror_is_refused_before_any_write() -> None:
    vs = _vs()
    vs["spec"]["http"][1]["mirror"] = {"host": "audit"}
    api = FakeApi(vs)
    with pytest.raises(
        ports.RouterError,
        match=r"http route primary of VirtualService ml/churn already mirrors to .*audit.* \(field mirror\)",
    ):
        istio.IstioRouter(api).reconcile(SHADOW)
    assert api.patches == []


@settings(max_examples=200)
@given(
    st.lists(st.tuples(SPLITS, st.sampled_from([None, 100.0, 30.0, 0.5])), min_size=1, max_size=5), st.data()
)
def test_the_patch_is_right_whatever_the_mirror_does(
    steps: list[tuple[int, float | None]], data: st.DataObject
) -> None:
    vs = _vs()
    vs["spec"]["http"].append(
        {"match": [{"uri": {"prefix": "/b"}}], "route": [{"destination": {"host": "churn", "subset": "v1"}}]}
    )
    vs["spec"]["http"].insert(0, {"mirror": {"host": "audit"}, "route": [{"destination": {"host": "other"}}]})
    for candidate, percent in steps:
        vs = data.draw(_drift(vs))
        target = dataclasses.replace(TARGET, mirror_percent=percent)
        desired = istio_routes.with_weights(
            istio_routes.ensure_structure(vs, target),
            target,
            {"churn-v1": 100 - candidate, "churn-v2": candidate},
        )
        patch = istio.json_patch(vs, desired)
        assert _spec_and_annotations(_apply(vs, patch)) == _spec_and_annotations(desired)
        whole = [op for op in patch if re.fullmatch(r"/spec/http/[0-9]+", op["path"]) and op["op"] != "test"]
        assert whole == []  # a mirror added or removed is patched field by field
        assert istio.json_patch(desired, desired) == []
        vs = desired
    restored = istio_routes.restore_original(vs, TARGET.experiment)
    assert _spec_and_annotations(_apply(vs, istio.json_patch(vs, restored))) == _spec_and_annotations(
        restored
    )


def test_a_users_mirror_to_the_candidate_is_taken_over_and_given_back() -> None:
    vs = _vs()
    vs["spec"]["http"][1]["mirror"] = dict(MIRROR)
    vs["spec"]["http"][1]["mirrorPercent"] = 10  # the deprecated integer form
    api = FakeApi(vs)
    router = istio.IstioRouter(api)
    router.reconcile(SHADOW)
    changes = [(op["op"], op["path"]) for op in api.patches[-1] if op["op"] != "test"]
    assert changes == [
        ("replace", "/spec/http/1/route"),
        ("add", "/spec/http/1/mirrorPercentage"),
        ("remove", "/spec/http/1/mirrorPercent"),
        ("add", "/metadata/annotations"),
    ]
    assert router.get_mirror(SHADOW) == 100.0
    router.finalize(TARGET)
    assert _spec_and_annotations(api.vs) == (vs["spec"], None)
