"""The Istio router's I/O over a fake CustomObjectsApi: exact patches, retries, errors.

The fake applies RFC 6902 patches to one stored object and bumps its
resourceVersion, which is all the router relies on; the same behaviour
against an HTTP API server is covered in ``tests/localstack``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest

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
    return doc, int(last) if isinstance(doc, list) else last


def _apply(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
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
            del parent[key]
        else:
            assert op["op"] in ("add", "replace")
            if op["op"] == "replace":
                assert key in parent
            parent[key] = op["value"]
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
