"""The operator's own lifecycle under faults: SIGKILLed in every phase, experiments deleted in
every phase, the routing object gone before the experiment.

What a user sees is checked (phase, step, the step clock, history, Events) together with the
routes: once the operator settles they hold exactly the weights the status names.
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import time
from collections.abc import Callable
from typing import Any

import faultkit
from faultkit import SEQUENTIAL, Apps, conditions, routes_of, steps_of

from modelrollout.localstack import stack
from modelrollout.routers.istio_routes import ORIGINAL_ROUTES_ANNOTATION

from conftest import BAD_ERRORS, EXAMPLES, FINAL, App, load

scenario = faultkit.Registry("lf")
scenarios = scenario.fixture()

# 4 s: a few scrapes (1 s) per window, so each evaluation sees traffic of both variants.
FAST = {"steps": [5, 25, 50, 100], "interval": "4s", "minStepDuration": "4s", "minSamples": 10}
QUIET = {"steps": [5, 25, 50, 100], "interval": "30s"}  # no evaluation while the scenario runs


def wait_all(
    apps: dict[str, App], wanted: dict[str, Callable[[dict[str, Any]], bool]], timeout: float
) -> dict[str, dict[str, Any]]:
    """Poll every app until each one's status satisfies its predicate; return those statuses."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {name: app.status() for name, app in apps.items()}
        missing = [name for name, ok in wanted.items() if not ok(statuses[name])]
        if not missing:
            return statuses
        if time.monotonic() > deadline:
            shown = {name: (statuses[name].get("phase"), statuses[name].get("message")) for name in missing}
            raise AssertionError(f"not in position after {timeout}s: {shown}")
        time.sleep(0.25)


def wait_gone(app: App, timeout: float = 15) -> float:
    """Seconds until the experiment is gone (its finalizer removed); fail if it stays."""
    started = time.monotonic()
    while app.local.experiment(app.namespace, "churn-v2") is not None:
        body = app.local.experiment(app.namespace, "churn-v2") or {}
        assert time.monotonic() - started < timeout, f"still there after {timeout}s: {body.get('metadata')}"
        time.sleep(0.1)
    return time.monotonic() - started


def annotate(app: App, gate: str) -> None:
    value = str(time.time())
    app.local.patch_experiment(app.namespace, "churn-v2", {"metadata": {"annotations": {gate: value}}})


def epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def logged(app: App, words: str) -> bool:
    """Whether the app's operator logged ``words`` about the app's experiment."""
    assert app.operator is not None
    ours = f"[{app.namespace}/churn-v2] "
    return any(ours in line and words in line for line in app.operator.log_text().splitlines())


def later_virtual_service(name: str) -> dict[str, Any]:
    manifest = load(EXAMPLES / "00-mesh" / "virtualservice.yaml")
    manifest["metadata"]["name"] = name
    return manifest


@scenario
def test_operator_sigkilled_in_every_phase_continues_where_it_was(apps: Apps) -> None:
    """One operator serves six experiments, each in another phase; it is SIGKILLed and restarted.

    Pending (waiting for its VirtualService), Progressing at step 1 and at a later step,
    Paused, Succeeded and RolledBack: each continues where it was, on the same step clock,
    without repeating a step, a promotion or an Event of what was already done.  A seventh,
    created while no operator runs, is started once by the new one.
    """
    group = apps.group("k")
    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        made = {
            "pending": pool.submit(group.new, mesh=False),
            "step1": pool.submit(group.new),
            "later": pool.submit(group.new),
            "paused": pool.submit(group.new, mesh=False),
            "succeeded": pool.submit(group.new),
            "rolledback": pool.submit(group.new, candidate=BAD_ERRORS),
            "created": pool.submit(group.new, mesh=False),  # while no operator runs
        }
        app = {name: future.result() for name, future in made.items()}
    app["pending"].apply_experiment(
        virtualService={"name": "churn-later", "routes": ["primary"]}, canary=FAST
    )
    app["step1"].apply_experiment(canary={**FAST, "minStepDuration": "12s"}, metrics=SEQUENTIAL)
    app["later"].apply_experiment(canary={**FAST, "minStepDuration": "4s"}, metrics=SEQUENTIAL)
    app["paused"].apply_experiment(canary=QUIET)
    app["succeeded"].apply_experiment(canary={**FAST, "steps": [50, 100]}, metrics=SEQUENTIAL)
    app["rolledback"].apply_experiment(canary=FAST)
    app["paused"].wait_for(lambda s: s.get("phase") == "Progressing", timeout=30)
    app["paused"].local.patch_experiment(app["paused"].namespace, "churn-v2", {"spec": {"paused": True}})
    positions = {
        "pending": lambda s: s.get("phase") == "Pending" and s.get("reason") == "VirtualServiceNotFound",
        "step1": lambda s: s.get("phase") == "Progressing" and s.get("step") == 1,
        "later": lambda s: s.get("phase") == "Progressing" and s.get("step", 0) >= 2,
        "paused": lambda s: s.get("phase") == "Paused",
        "succeeded": lambda s: s.get("phase") == "Succeeded",
        "rolledback": lambda s: s.get("phase") == "RolledBack",
    }
    wait_all(app, positions, timeout=40)
    app["succeeded"].wait_event("Promoted")  # "just after": done, Events included
    app["rolledback"].wait_event("RolledBack")
    app["paused"].wait_event("Paused")

    group.kill()
    at_kill = {name: a.status() for name, a in app.items()}
    routes_at_kill = {name: a.weights() for name, a in app.items()}
    assert at_kill["later"]["phase"] == "Progressing", "the later-step experiment ended before the kill"
    assert at_kill["step1"]["step"] == 1
    app["created"].apply_experiment(canary=QUIET)
    time.sleep(3)  # down for more than an interval: nothing moves while no operator runs
    assert {name: a.status() for name, a in app.items()} == at_kill
    assert {name: a.weights() for name, a in app.items()} == routes_at_kill

    restarted_at = time.time()
    group.start()

    # Progressing at step 1: the same step clock, so it advances minStepDuration after the step
    # began -- not that long after the restart.
    seen = app["step1"].wait_for(lambda s: s.get("step", 0) >= 2, timeout=40)
    assert {s["stepStartedAt"] for s in seen if s["step"] == 1} == {at_kill["step1"]["stepStartedAt"]}
    began = epoch(at_kill["step1"]["stepStartedAt"])
    advanced = epoch(seen[-1]["stepStartedAt"])
    assert advanced - began >= 12 - 1, "left step 1 before its minStepDuration"
    assert advanced < restarted_at + 12 - 2, "step 1 started over after the restart"
    assert steps_of(seen[-1]) == [1, 2]
    app["step1"].wait_weights(routes_of(seen[-1]))

    # Progressing at a later step: the same step, on the same clock, then on to promotion.
    step = at_kill["later"]["step"]
    seen = app["later"].wait_for(lambda s: s.get("phase") in FINAL, timeout=60)
    assert seen[-1]["phase"] == "Succeeded", seen[-1].get("message")
    assert all(s["step"] >= step for s in seen), "went back to an earlier step"
    assert {s["stepStartedAt"] for s in seen if s["step"] == step} <= {at_kill["later"]["stepStartedAt"]}
    assert steps_of(seen[-1]) == [1, 2, 3, 4]  # every step once
    app["later"].wait_weights({"v1": 0, "v2": 100})
    app["later"].wait_event("Promoted")
    reasons = app["later"].event_reasons()
    assert reasons.count("Started") == 1 and reasons.count("Promoted") == 1
    assert reasons.count("StepAdvanced") <= 2  # Events are at most once: a crash may lose one

    # Final phases stay final, and nothing is told twice: the status is the one at the kill.
    for name, routes, reason in (
        ("succeeded", {"v1": 0, "v2": 100}, "Promoted"),
        ("rolledback", {"v1": 100, "v2": 0}, "RolledBack"),
    ):
        assert app[name].status() == at_kill[name], f"{name}: the restarted operator rewrote a final status"
        assert app[name].weights() == routes == routes_of(at_kill[name])
        assert app[name].event_reasons().count(reason) == 1, app[name].event_reasons()
        assert app[name].event_reasons().count("Started") == 1

    # Paused: still paused at its step, weights held; resuming carries on from that step.
    assert app["paused"].status() == at_kill["paused"]
    assert app["paused"].weights() == routes_of(at_kill["paused"]) == {"v1": 95, "v2": 5}
    app["paused"].local.patch_experiment(app["paused"].namespace, "churn-v2", {"spec": {"paused": False}})
    resumed = app["paused"].wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)[-1]
    assert resumed["step"] == 1 and resumed["reason"] == "Resumed"
    app["paused"].wait_event("Resumed")  # Events follow the status write
    reasons = app["paused"].event_reasons()
    assert reasons.count("Paused") == 1 and reasons.count("Started") == 1 and reasons.count("Resumed") == 1

    # Created while no operator ran: started once by the new one.
    started = app["created"].wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)[-1]
    assert started["step"] == 1 and steps_of(started) == [1]
    app["created"].wait_weights(routes_of(started))
    assert routes_of(started) == {"v1": 95, "v2": 5}
    app["created"].wait_event("Started")
    assert app["created"].event_reasons().count("Started") == 1

    # Pending: still waiting, told once; its VirtualService arriving starts it.
    pending = app["pending"]
    assert pending.status()["phase"] == "Pending"
    assert pending.event_reasons().count("VirtualServiceNotFound") == 1, pending.event_reasons()
    pending.local.apply(later_virtual_service("churn-later"), pending.namespace)
    started = pending.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)[-1]
    assert started["step"] == 1 and started["reason"] == "Started"
    assert conditions(started)["Ready"]["status"] == "True"
    pending.wait_weights({"v1": 95, "v2": 5}, virtual_service="churn-later")  # the routes follow the status
    pending.wait_event("Started")
    assert pending.event_reasons().count("Started") == 1


# --------------------------------------------------------------------------- deletion


def delete_and_check_gone(app: App, timeout: float = 15) -> None:
    app.local.delete_experiment(app.namespace, "churn-v2")
    wait_gone(app, timeout)


@scenario
def test_deleted_while_pending_goes_away_and_touches_nothing(apps: Apps) -> None:
    app = apps.new(mesh=False)
    before = app.local.virtual_service(app.namespace, "churn")
    app.apply_experiment(virtualService={"name": "churn-later"}, canary=FAST)
    app.wait_for(lambda s: s.get("reason") == "VirtualServiceNotFound", timeout=20)
    delete_and_check_gone(app)
    assert app.local.virtual_service(app.namespace, "churn") == before
    assert "TrafficRestored" not in app.event_reasons()


@scenario
def test_deleted_at_a_later_step_restores_the_original_routes(apps: Apps) -> None:
    app = apps.new()
    original = copy.deepcopy(app.primary_route())
    app.apply_experiment(canary={**FAST, "minStepDuration": "6s"}, metrics=SEQUENTIAL)
    at = app.wait_for(lambda s: s.get("step") == 2, timeout=40)[-1]
    app.wait_weights(routes_of(at))
    delete_and_check_gone(app)
    assert app.primary_route() == original
    assert "baseline restored" in app.wait_event("TrafficRestored").message
    vs = app.local.virtual_service(app.namespace, "churn")
    assert ORIGINAL_ROUTES_ANNOTATION not in (vs["metadata"].get("annotations") or {})


@scenario
def test_deleted_while_paused_restores_the_baseline(apps: Apps) -> None:
    app = apps.new(mesh=False)
    original = copy.deepcopy(app.primary_route())
    app.apply_experiment(canary=QUIET)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    app.local.patch_experiment(app.namespace, "churn-v2", {"spec": {"paused": True}})
    app.wait_for(lambda s: s.get("phase") == "Paused", timeout=20)
    app.wait_weights({"v1": 95, "v2": 5})
    delete_and_check_gone(app)
    assert app.primary_route() == original
    assert app.wait_event("TrafficRestored").type == "Normal"


@scenario
def test_deleted_after_rollback_keeps_the_baseline(apps: Apps) -> None:
    app = apps.new(mesh=False)
    original = copy.deepcopy(app.primary_route())
    app.apply_experiment(canary=QUIET)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    annotate(app, "modelrollout.io/abort")
    app.wait_for(lambda s: s.get("phase") == "RolledBack", timeout=20)
    app.wait_weights({"v1": 100, "v2": 0})
    delete_and_check_gone(app)
    assert app.primary_route() == original  # the original routes, not just 100/0
    app.wait_event("TrafficRestored")


@scenario
def test_deleted_after_failing_on_an_invalid_spec_leaves_traffic_alone(apps: Apps) -> None:
    app = apps.group("d").new(mesh=False)  # an operator whose log is about these two alone
    before = app.local.virtual_service(app.namespace, "churn")
    app.apply_experiment(canary={"steps": [5, 50, 25], "interval": "2s"})
    app.wait_for(lambda s: s.get("phase") == "Failed", timeout=20)
    delete_and_check_gone(app)
    assert app.local.virtual_service(app.namespace, "churn") == before
    assert logged(app, "invalid spec: cannot tell which routes to restore; traffic left as it is")


@scenario
def test_deleted_after_success_leaves_the_candidate_serving(apps: Apps) -> None:
    app = apps.new(mesh=False)
    app.apply_experiment(canary=QUIET)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    annotate(app, "modelrollout.io/promote")
    app.wait_for(lambda s: s.get("phase") == "Succeeded", timeout=20)
    app.wait_weights({"v1": 0, "v2": 100})
    delete_and_check_gone(app)  # a restore, were there one, is written before the finalizer goes
    assert app.weights() == {"v1": 0, "v2": 100}
    assert "TrafficRestored" not in app.event_reasons()


@scenario
def test_virtual_service_deleted_first_never_blocks_the_experiment_deletion(apps: Apps) -> None:
    app = apps.group("d").new(mesh=False)
    app.apply_experiment(canary=QUIET)
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)
    app.local.custom.delete_namespaced_custom_object(
        stack.ISTIO_GROUP, "v1", app.namespace, "virtualservices", "churn"
    )
    app.local.delete_experiment(app.namespace, "churn-v2")  # before the operator saw the VS go
    assert wait_gone(app, timeout=10) < 10
    assert logged(app, "routing object or routes gone: nothing to restore")
    assert "TrafficRestored" not in app.event_reasons()
