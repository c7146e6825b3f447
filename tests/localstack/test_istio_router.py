"""The Istio router against the local API server, over HTTP with the real ``kubernetes`` client.

What only a server can show: the JSON patch is accepted as sent, a write
that lost a race is rejected (stale resourceVersion) and retried, a no-op
reconcile sends no write at all, and 404s and other errors come back typed.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest

from modelrollout import ports
from modelrollout.localstack.apiserver import ApiServer
from modelrollout.routers import istio, istio_routes

GROUP, PLURAL, NS = "networking.istio.io", "virtualservices", "ml"
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def api(server: ApiServer) -> Iterator[kubernetes.client.CustomObjectsApi]:
    server.clear_faults()
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))
    yield kubernetes.client.CustomObjectsApi(client)
    client.close()


def _create(api: kubernetes.client.CustomObjectsApi) -> tuple[str, ports.RouteTarget]:
    """A fresh VirtualService (a docs route and the model's route) and a target for it."""
    name = f"churn-{next(_names)}"
    api.create_namespaced_custom_object(
        GROUP,
        "v1",
        NS,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": NS, "annotations": {"owner": "team-ml"}},
            "spec": {
                "hosts": ["churn"],
                "http": [
                    {
                        "name": "docs",
                        "retries": {"attempts": 2},
                        "route": [{"destination": {"host": "docs"}}],
                    },
                    {"name": "primary", "route": [{"destination": {"host": "churn", "subset": "v1"}}]},
                ],
            },
        },
    )
    variants = (ports.Destination("churn-v1", subset="v1"), ports.Destination("churn-v2", subset="v2"))
    return name, ports.RouteTarget("churn-v2", NS, name, None, variants)


def _get(server: ApiServer, name: str) -> dict[str, Any]:
    vs = server.get_object(GROUP, "v1", PLURAL, NS, name)
    assert vs is not None
    return vs


class RecordingApi:
    """Delegates to the real api, records the patches, and can act just before one is sent."""

    def __init__(self, api: kubernetes.client.CustomObjectsApi) -> None:
        self._api = api
        self.patches: list[list[dict[str, Any]]] = []
        self.before_patch: Callable[[], None] = lambda: None

    def get_namespaced_custom_object(self, **kwargs: Any) -> Any:
        return self._api.get_namespaced_custom_object(**kwargs)

    def patch_namespaced_custom_object(self, **kwargs: Any) -> Any:
        self.patches.append(kwargs["body"])
        self.before_patch()
        return self._api.patch_namespaced_custom_object(**kwargs)


def _writes(server: ApiServer) -> list[tuple[str, int | None]]:
    return [(r.method, r.status) for r in server.request_log() if r.method != "GET"]


def test_the_patch_touches_only_the_managed_route_and_the_annotation(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    name, target = _create(api)
    before = _get(server, name)
    recording = RecordingApi(api)
    router = istio.IstioRouter(recording)

    router.reconcile(target)
    split = router.set_routes(target, {"churn-v1": 95, "churn-v2": 5})

    assert split.weights() == {"churn-v1": 95, "churn-v2": 5}
    paths = {op["path"] for patch in recording.patches for op in patch}
    assert paths == {
        "/metadata/resourceVersion",
        "/spec/http/1/name",
        "/spec/http/1/route",
        "/metadata/annotations/modelrollout.io~1original-routes",
    }
    after = _get(server, name)
    assert after["spec"]["http"][0] == before["spec"]["http"][0]
    assert after["spec"]["http"][1]["route"] == [
        {"destination": {"host": "churn", "subset": "v1"}, "weight": 95},
        {"destination": {"host": "churn", "subset": "v2"}, "weight": 5},
    ]
    assert after["metadata"]["annotations"]["owner"] == "team-ml"
    assert istio_routes.saved_routes(after) == {"churn-v2": {"primary": before["spec"]["http"][1]["route"]}}


def test_a_concurrent_edit_between_read_and_write_is_retried(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    name, target = _create(api)
    recording = RecordingApi(api)
    router = istio.IstioRouter(recording)
    router.reconcile(target)

    def user_edits_the_docs_route() -> None:
        recording.before_patch = lambda: None  # once
        edit = [{"op": "add", "path": "/spec/http/0/timeout", "value": "9s"}]
        api.patch_namespaced_custom_object(
            GROUP, "v1", NS, PLURAL, name, edit, _content_type=istio.JSON_PATCH
        )

    recording.before_patch = user_edits_the_docs_route
    server.clear_request_log()
    split = router.set_routes(target, {"churn-v1": 75, "churn-v2": 25})

    assert split.weights() == {"churn-v1": 75, "churn-v2": 25}
    statuses = [status for _, status in _writes(server)]
    assert statuses[0] == 200  # the user's edit
    assert statuses[1] in (409, 422)  # the router's patch, now stale
    assert statuses[2:] == [200]  # read again, patched again
    after = _get(server, name)
    assert after["spec"]["http"][0]["timeout"] == "9s"
    assert istio_routes.read_weights(after, target).weights() == {"churn-v1": 75, "churn-v2": 25}


def test_nothing_is_written_when_nothing_changes(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    _, target = _create(api)
    router = istio.IstioRouter(api)
    router.reconcile(target)
    router.set_routes(target, {"churn-v1": 95, "churn-v2": 5})

    server.clear_request_log()
    router.reconcile(target)
    router.set_routes(target, {"churn-v1": 95, "churn-v2": 5})
    assert router.get_routes(target).weights() == {"churn-v1": 95, "churn-v2": 5}
    assert _writes(server) == []


def test_finalize_restores_the_original(server: ApiServer, api: kubernetes.client.CustomObjectsApi) -> None:
    name, target = _create(api)
    before = _get(server, name)
    router = istio.IstioRouter(api)
    router.set_routes(target, {"churn-v1": 50, "churn-v2": 50})
    router.finalize(target)
    after = _get(server, name)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == {"owner": "team-ml"}


def test_finalize_when_the_virtual_service_was_deleted(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    name, target = _create(api)
    router = istio.IstioRouter(api)
    router.reconcile(target)
    api.delete_namespaced_custom_object(GROUP, "v1", NS, PLURAL, name)

    server.clear_request_log()
    router.finalize(target)
    assert _writes(server) == []
    with pytest.raises(ports.VirtualServiceNotFound, match=f"VirtualService ml/{name} not found"):
        router.get_routes(target)


def test_v1beta1_works_on_the_same_object(server: ApiServer, api: kubernetes.client.CustomObjectsApi) -> None:
    name, target = _create(api)
    router = istio.IstioRouter(api, version="v1beta1")
    assert router.set_routes(target, {"churn-v1": 90, "churn-v2": 10}).weights() == {
        "churn-v1": 90,
        "churn-v2": 10,
    }
    assert all("/v1beta1/" in r.path for r in server.request_log() if name in r.path and r.method == "PATCH")
    assert istio_routes.read_weights(_get(server, name), target).weights() == {"churn-v1": 90, "churn-v2": 10}


def test_conflicts_that_never_end_become_a_router_conflict(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    name, target = _create(api)
    server.inject_fault(f"PATCH /virtualservices/{name}$", status=409, count=None, reason="Conflict")
    with pytest.raises(ports.RouterConflict, match="3 patches in a row were rejected"):
        istio.IstioRouter(api, retries=2).reconcile(target)


def test_other_errors_are_readable(server: ApiServer, api: kubernetes.client.CustomObjectsApi) -> None:
    name, target = _create(api)
    server.inject_fault(f"PATCH /virtualservices/{name}$", status=403, reason="Forbidden", message="no way")
    with pytest.raises(ports.RouterError, match=f"cannot patch VirtualService ml/{name}: HTTP 403 Forbidden"):
        istio.IstioRouter(api).reconcile(target)


def test_a_sticky_ab_test_round_trip(server: ApiServer, api: kubernetes.client.CustomObjectsApi) -> None:
    """Running (three routes inserted before "primary"), promoted (they go), finalized (the original)."""
    name, plain = _create(api)
    cohort = ({"headers": {"x-user-tier": {"exact": "beta"}}},)
    target = dataclasses.replace(
        plain, sticky=ports.Stickiness(cookie="mexp-churn-v2", max_age_seconds=3600, cohort=cohort)
    )
    before = _get(server, name)
    recording = RecordingApi(api)
    router = istio.IstioRouter(recording)
    inserted = [
        "mexp-churn-v2-primary-churn-v1",
        "mexp-churn-v2-primary-churn-v2",
        "mexp-churn-v2-primary-assign",
    ]

    router.reconcile(target)
    structured = _get(server, name)
    assert router.set_routes(target, {"churn-v1": 60, "churn-v2": 40}).weights() == {
        "churn-v1": 60,
        "churn-v2": 40,
    }
    running = _get(server, name)
    assert [route["name"] for route in running["spec"]["http"]] == ["docs", *inserted, "primary"]
    desired = istio_routes.with_weights(structured, target, {"churn-v1": 60, "churn-v2": 40})
    assert running["spec"] == desired["spec"]
    assert running["spec"]["http"][4] == structured["spec"]["http"][1]  # "primary" as reconcile left it
    assert {op["op"] for op in recording.patches[-1]} == {"test", "add"}

    server.clear_request_log()
    router.reconcile(target)
    router.set_routes(target, {"churn-v1": 60, "churn-v2": 40})
    assert router.get_routes(target).weights() == {"churn-v1": 60, "churn-v2": 40}
    assert _writes(server) == []  # applied twice: no write

    # A user deletes the candidate's sticky route; the next write puts it back.
    edit = [
        {"op": "test", "path": "/spec/http/2/name", "value": inserted[1]},
        {"op": "remove", "path": "/spec/http/2"},
    ]
    api.patch_namespaced_custom_object(GROUP, "v1", NS, PLURAL, name, edit, _content_type=istio.JSON_PATCH)
    router.set_routes(target, {"churn-v1": 60, "churn-v2": 40})
    assert _get(server, name)["spec"] == running["spec"]

    assert router.set_routes(target, {"churn-v1": 0, "churn-v2": 100}).weights() == {
        "churn-v1": 0,
        "churn-v2": 100,
    }
    promoted = _get(server, name)
    assert [route["name"] for route in promoted["spec"]["http"]] == ["docs", "primary"]
    assert promoted["spec"]["http"][1]["route"] == [
        {"destination": {"host": "churn", "subset": "v1"}, "weight": 0},
        {"destination": {"host": "churn", "subset": "v2"}, "weight": 100},
    ]

    router.finalize(target)
    after = _get(server, name)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == {"owner": "team-ml"}


def test_a_shadow_phase_round_trip(server: ApiServer, api: kubernetes.client.CustomObjectsApi) -> None:
    """Mirrored (the candidate at weight 0 gets copies), then a canary step (the mirror goes), finalized."""
    name, plain = _create(api)
    shadow = dataclasses.replace(plain, mirror_percent=50.0)
    before = _get(server, name)
    recording = RecordingApi(api)
    router = istio.IstioRouter(recording)

    assert router.reconcile(shadow).weights() == {"churn-v1": 100, "churn-v2": 0}
    mirrored = _get(server, name)
    primary = mirrored["spec"]["http"][1]
    assert primary["mirror"] == {"host": "churn", "subset": "v2"}
    assert primary["mirrorPercentage"] == {"value": 50.0}
    assert mirrored["spec"]["http"][0] == before["spec"]["http"][0]
    assert router.get_mirror(shadow) == 50.0
    assert {op["path"] for op in recording.patches[-1]} == {
        "/metadata/resourceVersion",
        "/spec/http/1/name",
        "/spec/http/1/route",
        "/spec/http/1/mirror",
        "/spec/http/1/mirrorPercentage",
        "/metadata/annotations/modelrollout.io~1original-routes",
    }

    server.clear_request_log()
    router.reconcile(shadow)
    router.set_routes(shadow, {"churn-v1": 100, "churn-v2": 0})
    assert _writes(server) == []  # applied twice: no write

    # A user's edit of the percentage is drift: the next reconcile puts it back.
    edit = [{"op": "replace", "path": "/spec/http/1/mirrorPercentage", "value": {"value": 1.0}}]
    api.patch_namespaced_custom_object(GROUP, "v1", NS, PLURAL, name, edit, _content_type=istio.JSON_PATCH)
    assert router.get_mirror(shadow) == 1.0
    router.reconcile(shadow)
    assert _get(server, name)["spec"] == mirrored["spec"]

    assert router.set_routes(plain, {"churn-v1": 90, "churn-v2": 10}).weights() == {
        "churn-v1": 90,
        "churn-v2": 10,
    }
    canary = _get(server, name)["spec"]["http"][1]
    assert "mirror" not in canary and "mirrorPercentage" not in canary
    assert router.get_mirror(plain) is None

    router.finalize(plain)
    after = _get(server, name)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == {"owner": "team-ml"}


def test_finalize_during_the_shadow_phase_restores_the_original(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi
) -> None:
    name, plain = _create(api)
    before = _get(server, name)
    router = istio.IstioRouter(api)
    router.reconcile(dataclasses.replace(plain, mirror_percent=100.0))
    router.finalize(plain)
    after = _get(server, name)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == {"owner": "team-ml"}
