"""API-server faults end to end: conflicts, errors and hangs injected into the emulator
(``inject_fault``), routing objects deleted or edited by someone else mid-rollout.

Faults are injected for the operator's requests only (it authenticates with the
kubeconfig's token; the test's own client and the mesh simulator do not), so what the
test reads and the traffic it drives stay unaffected.  Every test checks what a user
sees, the routes against the status, and the operator's own error counter.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import faultkit
from faultkit import SEQUENTIAL, Apps, conditions, routes_of, steps_of
from prometheus_client.parser import text_string_to_metric_families

from modelrollout.localstack import stack
from modelrollout.localstack.prometheus import free_port
from modelrollout.routers.istio_routes import ORIGINAL_ROUTES_ANNOTATION

from conftest import FINAL, App

METRICS_PORT = free_port()
scenario = faultkit.Registry("af", "--metrics-port", str(METRICS_PORT))
scenarios = scenario.fixture()

# 4 s: a few scrapes (1 s) per window, so each evaluation sees traffic of both variants.
FAST = {"steps": [5, 25, 50, 100], "interval": "4s", "minStepDuration": "4s", "minSamples": 10}
QUIET = {"steps": [5, 25, 50, 100], "interval": "30s"}  # no evaluation while the scenario runs
# Ticks every 2 s without ever advancing (no traffic: each evaluation holds for want of data).
WATCHFUL = {"canary": {**FAST, "minStepDuration": "60s"}, "analysis": {"noDataLimit": 100}}


def by_operator(method: str, path: str) -> Callable[[Any], bool]:
    """A fault predicate: the operator's ``method`` requests whose path matches ``path``."""

    def matches(request: Any) -> bool:
        authorized = any(name.lower() == "authorization" for name in request.headers)
        return authorized and request.method.value == method and re.search(path, request.url.path) is not None

    return matches


def reconcile_errors(app: App, port: int = METRICS_PORT) -> float:
    """The operator's ``modelrollout_reconcile_errors`` for the app's experiment."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelrollout_reconcile_errors_total" and sample.labels == {
                "namespace": app.namespace,
                "name": "churn-v2",
            }:
                return float(sample.value)
    return 0.0


def requests_to(app: App, since: int = 0, suffix: str = "") -> list[Any]:
    """Logged API requests about the app's namespace (from index ``since`` of the log)."""
    where = f"/namespaces/{app.namespace}/"
    return [
        r for r in app.local.apiserver.request_log()[since:] if where in r.path and r.path.endswith(suffix)
    ]


def vs_path(app: App) -> str:
    return f"/namespaces/{app.namespace}/virtualservices/churn$"


def experiment_path(app: App, subresource: str = "") -> str:
    return f"/namespaces/{app.namespace}/modelexperiments/churn-v2{subresource}$"


def edit_virtual_service(app: App, edit: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
    """Edit the http routes as a user would (a merge patch replaces the list); return the new spec."""
    vs = app.local.virtual_service(app.namespace, "churn")
    http = copy.deepcopy(vs["spec"]["http"])
    edit(http)
    app.local.custom.patch_namespaced_custom_object(
        stack.ISTIO_GROUP, "v1", app.namespace, "virtualservices", "churn", {"spec": {"http": http}}
    )
    spec: dict[str, Any] = app.local.virtual_service(app.namespace, "churn")["spec"]
    return spec


def with_primary_weights(spec: dict[str, Any], v1: int, v2: int) -> dict[str, Any]:
    expected = copy.deepcopy(spec)
    primary = next(r for r in expected["http"] if r.get("name") == "primary")
    for entry in primary["route"]:
        entry["weight"] = {"v1": v1, "v2": v2}[entry["destination"]["subset"]]
    return expected


# --------------------------------------------------------------------------- errors and conflicts


@scenario
def test_conflicting_virtual_service_patches_are_read_again_and_retried(apps: Apps) -> None:
    app = apps.new(mesh=False)
    fault = app.local.apiserver.inject_fault(
        by_operator("PATCH", vs_path(app)),
        status=409,
        count=2,
        reason="Conflict",
        message="the object has been modified; please apply your changes to the latest version and try again",
    )
    app.apply_experiment(canary=QUIET)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    # Only the operator reads the VirtualService until the test does: no mesh, no waiting on it yet.
    deadline = time.monotonic() + 3  # in the same tick: no back-off, no second tick
    while True:
        calls = [(r.method, r.status) for r in requests_to(app, suffix="/virtualservices/churn")]
        patches = [status for method, status in calls if method == "PATCH"]
        if patches[-1:] == [200] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert patches == [409, 409, 200], calls
    assert fault.hits == 2
    for i, (method, _) in enumerate(calls):
        if method == "PATCH":
            assert calls[i - 1][0] == "GET", f"patched without reading the object again: {calls}"
    app.wait_weights({"v1": 95, "v2": 5}, timeout=1)
    assert reconcile_errors(app) == 0
    assert "WeightsRestored" not in app.event_reasons()
    assert app.event_reasons().count("Started") == 1


@scenario
def test_api_errors_on_reads_fail_the_tick_which_backs_off_and_carries_on(apps: Apps) -> None:
    app = apps.new()
    app.apply_experiment(canary=FAST, metrics=SEQUENTIAL)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    api = app.local.apiserver
    reads = [
        api.inject_fault(by_operator("GET", experiment_path(app)), status=500),
        api.inject_fault(by_operator("GET", vs_path(app)), status=503),
    ]
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)
    final = seen[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert [fault.hits for fault in reads] == [1, 1]
    assert reconcile_errors(app) == 2  # one failed tick per error, each retried
    assert steps_of(final) == [1, 2, 3, 4]
    app.wait_weights({"v1": 0, "v2": 100})
    app.wait_event("Promoted")
    assert app.event_reasons().count("Promoted") == 1
    assert app.operator is not None and app.operator.process.poll() is None  # no crash
    assert "tick failed" in app.operator.log_text()


@scenario
def test_api_errors_on_writes_fail_the_tick_which_backs_off_and_finishes_the_move(apps: Apps) -> None:
    app = apps.new()
    app.apply_experiment(canary=FAST, metrics=SEQUENTIAL)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    api = app.local.apiserver
    writes = [
        api.inject_fault(by_operator("PATCH", experiment_path(app, "/status")), status=503),
        api.inject_fault(by_operator("PATCH", vs_path(app)), status=500),
    ]
    seen = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)
    final = seen[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert [fault.hits for fault in writes] == [1, 1]
    assert reconcile_errors(app) == 2
    assert steps_of(final) == [1, 2, 3, 4]  # the lost status write was made again, once
    # The failed route write came after its status write: the routes end where the status says.
    app.wait_weights({"v1": 0, "v2": 100})
    app.wait_event("Promoted")
    assert app.event_reasons().count("Promoted") == 1


@scenario
def test_api_calls_that_hang_time_out_and_the_rollout_carries_on(apps: Apps) -> None:
    """A request the API server never answers must not hang the experiment (nor its deletion,
    which waits for the experiment's tick): the operator gives up after its API timeout."""
    port = free_port()
    app = apps.group("h", "--metrics-port", str(port), env={"MODELROLLOUT_API_TIMEOUT": "2"}).new()
    original = copy.deepcopy(app.primary_route())
    app.apply_experiment(canary={**FAST, "minStepDuration": "30s"}, metrics=SEQUENTIAL)
    before = app.wait_for(lambda s: s.get("phase") == "Progressing" and bool(s.get("metrics")), timeout=30)[
        -1
    ]
    api = app.local.apiserver
    hung = api.inject_fault(by_operator("PATCH", experiment_path(app, "/status")), status=None, delay=60)
    stalled_at = time.monotonic()
    after = app.wait_for(lambda s: s.get("lastEvaluatedAt") != before.get("lastEvaluatedAt"), timeout=20)[-1]
    hung_for = time.monotonic() - stalled_at
    assert hung.hits == 1
    assert hung_for < 15, f"the tick hung for {hung_for:.0f}s on one request"
    assert reconcile_errors(app, port) == 1
    assert after["phase"] == "Progressing" and after["step"] == before["step"]

    # Deleted while a tick hangs on its first read: the finalizer gets its turn within the timeout.
    hung = api.inject_fault(by_operator("GET", experiment_path(app)), status=None, delay=60)
    deadline = time.monotonic() + 10
    while not hung.hits:
        assert time.monotonic() < deadline, "no tick read the experiment"
        time.sleep(0.05)
    app.local.delete_experiment(app.namespace, "churn-v2")
    deadline = time.monotonic() + 10
    while app.local.experiment(app.namespace, "churn-v2") is not None:
        assert time.monotonic() < deadline, "the deletion waited for the hung tick"
        time.sleep(0.1)
    assert app.primary_route() == original
    assert "baseline restored" in app.wait_event("TrafficRestored").message


# --------------------------------------------------------------------------- the routing object


@scenario
def test_virtual_service_deleted_mid_rollout_fails_once_without_a_retry_storm(apps: Apps) -> None:
    app = apps.new(mesh=False)
    app.apply_experiment(canary=FAST, metrics=SEQUENTIAL)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    app.local.custom.delete_namespaced_custom_object(
        stack.ISTIO_GROUP, "v1", app.namespace, "virtualservices", "churn"
    )
    failed = app.wait_for(lambda s: s.get("phase") == "Failed", timeout=20)[-1]
    assert failed["reason"] == "VirtualServiceNotFound"
    assert f"VirtualService {app.namespace}/churn not found" in failed["message"]
    assert conditions(failed)["Failed"]["reason"] == "VirtualServiceNotFound"
    assert conditions(failed)["Ready"]["status"] == "False"
    event = app.wait_event("VirtualServiceNotFound")
    assert event.type == "Warning" and "not found" in event.message

    time.sleep(1)  # let the failing tick finish its writes
    mark, settled = len(app.local.apiserver.request_log()), app.status()
    time.sleep(6)  # three intervals
    after = requests_to(app, since=mark)
    assert [r for r in after if r.method != "GET"] == [], "writes after the experiment failed"
    assert len(after) <= 10, f"{len(after)} requests in 6 s: {after}"  # a read or two per interval
    assert app.status() == settled
    assert app.event_reasons().count("VirtualServiceNotFound") == 1
    assert reconcile_errors(app) == 0


@scenario
def test_managed_route_renamed_mid_rollout_fails_and_leaves_the_routes_as_edited(apps: Apps) -> None:
    app = apps.new(mesh=False)
    app.apply_experiment(**WATCHFUL)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    app.wait_weights({"v1": 95, "v2": 5})  # the status is written first: edit after the routes moved

    def rename(http: list[dict[str, Any]]) -> None:
        next(r for r in http if r["name"] == "primary")["name"] = "main"

    edited = edit_virtual_service(app, rename)
    failed = app.wait_for(lambda s: s.get("phase") == "Failed", timeout=20)[-1]
    assert failed["reason"] == "RouteNotFound" and "has no http route named primary" in failed["message"]
    assert app.wait_event("RouteNotFound").type == "Warning"
    time.sleep(1)
    vs = app.local.virtual_service(app.namespace, "churn")
    assert json.dumps(vs["spec"]) == json.dumps(edited)  # every route as the user left it
    assert ORIGINAL_ROUTES_ANNOTATION not in (vs["metadata"].get("annotations") or {})
    main = next(r for r in vs["spec"]["http"] if r["name"] == "main")
    assert {e["destination"]["subset"]: e["weight"] for e in main["route"]} == routes_of(failed)


@scenario
def test_managed_route_removed_mid_rollout_fails_and_leaves_the_other_routes_alone(apps: Apps) -> None:
    app = apps.new(mesh=False)
    health = copy.deepcopy(app.local.virtual_service(app.namespace, "churn")["spec"]["http"][0])
    app.apply_experiment(**WATCHFUL)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    app.wait_weights({"v1": 95, "v2": 5})  # the status is written first: edit after the routes moved

    def remove(http: list[dict[str, Any]]) -> None:
        http[:] = [r for r in http if r["name"] != "primary"]

    edited = edit_virtual_service(app, remove)
    failed = app.wait_for(lambda s: s.get("phase") == "Failed", timeout=20)[-1]
    assert failed["reason"] == "RouteNotFound" and "primary" in failed["message"]
    assert conditions(failed)["Ready"]["reason"] == "RouteNotFound"
    app.wait_event("RouteNotFound")
    time.sleep(1)
    vs = app.local.virtual_service(app.namespace, "churn")
    assert json.dumps(vs["spec"]) == json.dumps(edited)
    assert json.dumps(vs["spec"]["http"]) == json.dumps([health])  # byte for byte


# --------------------------------------------------------------------------- edits by someone else


@scenario
def test_weights_edited_by_someone_else_are_restored_and_their_other_edits_kept(apps: Apps) -> None:
    app = apps.new()
    app.apply_experiment(canary={**FAST, "minStepDuration": "4s"}, metrics=SEQUENTIAL)
    app.wait_for(lambda s: s.get("phase") == "Progressing" and s.get("step") == 1, timeout=20)
    app.wait_weights({"v1": 95, "v2": 5})  # the status is written first: edit after the routes moved

    def restructure(http: list[dict[str, Any]]) -> None:
        """What a user adds next to the operator's weights: none of it is the operator's."""
        debug = {
            "name": "debug",
            "match": [{"headers": {"x-debug": {"exact": "1"}}}],
            "route": [{"destination": {"host": "churn", "subset": "v2"}}],
        }
        http.insert(0, debug)
        primary = next(r for r in http if r["name"] == "primary")
        primary["retries"] = {"attempts": 2, "perTryTimeout": "1s", "retryOn": "5xx,reset"}
        primary["timeout"] = "3s"
        primary["headers"] = {"request": {"set": {"x-model": "churn"}}}
        primary["route"][0]["headers"] = {"response": {"add": {"x-served-by": "v1"}}}

    edited = edit_virtual_service(app, restructure)
    # The next step's weight write keeps all of it.
    at2 = app.wait_for(lambda s: s.get("step") == 2, timeout=30)[-1]
    slow = {"spec": {"canary": {"minStepDuration": "60s"}}}  # and step 2 lasts while the test looks
    app.local.patch_experiment(app.namespace, "churn-v2", slow)
    app.wait_weights(routes_of(at2))
    assert json.dumps(app.local.virtual_service(app.namespace, "churn")["spec"]) == json.dumps(
        with_primary_weights(edited, 75, 25)
    )

    def shift(http: list[dict[str, Any]]) -> None:
        for entry in next(r for r in http if r["name"] == "primary")["route"]:
            entry["weight"] = 50

    edit_virtual_service(app, shift)
    restored = app.wait_event("WeightsRestored", timeout=10)
    assert restored.type == "Warning"
    assert "churn-v1 50%, churn-v2 50%" in restored.message and "restored churn-v1 75%, churn-v2 25%" in (
        restored.message
    )
    app.wait_weights({"v1": 75, "v2": 25})
    assert json.dumps(app.local.virtual_service(app.namespace, "churn")["spec"]) == json.dumps(
        with_primary_weights(edited, 75, 25)
    )
    status = app.status()
    assert status["step"] == 2 and routes_of(status) == {"v1": 75, "v2": 25}
    assert reconcile_errors(app) == 0
