"""Canary rollouts end to end: the real operator process, the API emulator, the mesh
simulator turning weights into traffic, and a real Prometheus answering the queries."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import time

import pytest
import yaml

from modelrollout.routers.istio_routes import ORIGINAL_ROUTES_ANNOTATION

from conftest import BAD_ERRORS, BASELINE, EXAMPLES, FINAL, load


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status.get("conditions", [])}


def two_route_virtual_service() -> dict:
    """A route that has nothing to do with the model, before the one that serves it."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn"},
        "spec": {
            "hosts": ["churn"],
            "http": [
                {
                    "name": "legacy",
                    "match": [{"uri": {"prefix": "/v0/"}}],
                    "route": [{"destination": {"host": "churn-legacy", "port": {"number": 8080}}}],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
                    "timeout": "7s",
                    "headers": {"request": {"set": {"x-legacy": "1"}}},
                },
                {"name": "primary", "route": [{"destination": {"host": "churn", "subset": "v1"}}]},
            ],
        },
    }


def test_good_candidate_walks_every_step_and_leaves_other_routes_alone(make_app):
    app = make_app(virtual_service=two_route_virtual_service())
    legacy_before = app.local.virtual_service(app.namespace, "churn")["spec"]["http"][0]
    app.start_operator()
    # No `routes:` in the spec: the operator must pick the route that holds the baseline.
    manifest = app.experiment_manifest()
    del manifest["spec"]["virtualService"]["routes"]
    app.local.apply(manifest)

    seen = app.wait_for(lambda s: s.get("phase") in FINAL)
    final = seen[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    steps = []
    for status in seen:
        point = (status.get("step"), status.get("candidateWeight"))
        if status.get("phase") in ("Progressing", "Succeeded") and point not in steps:
            steps.append(point)
    assert steps == [(1, 5), (2, 25), (3, 50), (4, 100)]
    assert conditions(final)["Succeeded"]["status"] == "True"
    assert final["decision"] == "Promote"
    assert final["interval"] == manifest["spec"]["canary"]["interval"]  # `kubectl get mexp -o wide`
    assert {m["name"]: m["verdict"] for m in final["metrics"]} == {
        "error-rate": "Pass",
        "latency-p95": "Pass",
    }
    app.wait_weights({"v1": 0, "v2": 100})
    # Traffic really moved: the candidate served requests through Prometheus-visible telemetry.
    assert app.local.mesh.observed(app.namespace, "churn-v2").requests > 100

    vs = app.local.virtual_service(app.namespace, "churn")
    assert json.dumps(vs["spec"]["http"][0]) == json.dumps(legacy_before)  # byte for byte
    app.wait_event("Promoted")
    reasons = app.event_reasons()
    assert reasons.count("Started") == 1 and reasons.count("Promoted") == 1
    assert reasons.count("StepAdvanced") == 2
    # The operator's log tells the same story, each line naming the experiment; kopf's line per
    # watch event is debug only.
    ours = f"[{app.namespace}/churn-v2]"
    log = app.operator.log_text().splitlines()
    told = [line.split(ours, 1)[1].split(":")[0].strip() for line in log if f"INFO    ] {ours} " in line]
    assert told == ["Started", "StepAdvanced", "StepAdvanced", "Promoted"], log
    assert not any("Handler 'noticed' succeeded." in line for line in log)


def test_bad_candidate_is_rolled_back_to_baseline(make_app):
    app = make_app(candidate=BAD_ERRORS)
    app.start_operator()
    app.apply_experiment()
    final = app.wait_for(lambda s: s.get("phase") in FINAL)[-1]
    assert final["phase"] == "RolledBack"
    assert final["decision"] == "Rollback"
    assert final["candidateWeight"] == 0
    assert "error-rate" in final["message"] and "> max 5.0%" in final["message"]
    assert conditions(final)["RolledBack"]["status"] == "True"
    assert conditions(final)["RolledBack"]["reason"] == "GuardrailFailed"
    app.wait_weights({"v1": 100, "v2": 0})
    assert app.wait_event("RolledBack").type == "Warning"
    assert any(
        f"[WARNING ] [{app.namespace}/churn-v2] RolledBack: " in line
        for line in app.operator.log_text().splitlines()
    )
    # Rolled back stays rolled back: the candidate gets no more traffic.
    served = app.local.mesh.observed(app.namespace, "churn-v2").requests
    time.sleep(3)
    assert app.local.mesh.observed(app.namespace, "churn-v2").requests == served
    assert app.status()["phase"] == "RolledBack"


def test_sequential_test_alone_rolls_back_a_worse_candidate(make_app):
    """No thresholds at all: the default analysis compares candidate with baseline."""
    app = make_app(candidate=dataclasses.replace(BASELINE, error_rate=0.04))  # 8x the baseline's 0.5 %
    app.start_operator()
    builtins = [
        {"name": "error-rate", "builtin": "error-rate"},
        {"name": "latency-p95", "builtin": "latency-p95"},
    ]
    app.apply_experiment(
        metrics=builtins, canary={"steps": [5, 25, 50, 100], "interval": "3s", "minStepDuration": "10s"}
    )
    final = app.wait_for(lambda s: s.get("phase") in FINAL)[-1]
    assert final["phase"] == "RolledBack", final.get("message")
    assert conditions(final)["RolledBack"]["reason"] == "GuardrailFailed"
    errors = next(m for m in final["metrics"] if m["name"] == "error-rate")
    assert errors["verdict"] == "Fail"
    assert errors["evidence"] >= errors["bound"] == 40
    assert errors["interval"][0] > 1  # the candidate is worse, with confidence
    assert "error rate" in final["message"] and "evidence" in final["message"]
    app.wait_weights({"v1": 100, "v2": 0})


def test_deleting_mid_rollout_restores_the_original_routes(make_app):
    app = make_app()
    original = copy.deepcopy(app.primary_route())
    app.start_operator()
    app.apply_experiment(canary={"steps": [5, 25, 50, 100], "interval": "3s", "minStepDuration": "30s"})
    app.wait_for(lambda s: s.get("step") == 1 and s.get("phase") == "Progressing")
    app.wait_weights({"v1": 95, "v2": 5})
    app.local.delete_experiment(app.namespace, "churn-v2")
    deadline = time.monotonic() + 30
    while app.local.experiment(app.namespace, "churn-v2") is not None:
        assert time.monotonic() < deadline, "the finalizer did not let the experiment go"
        time.sleep(0.2)
    assert app.primary_route() == original
    assert "baseline restored" in app.wait_event("TrafficRestored").message
    vs = app.local.virtual_service(app.namespace, "churn")
    assert ORIGINAL_ROUTES_ANNOTATION not in (vs["metadata"].get("annotations") or {})


def test_operator_killed_mid_step_continues_at_the_same_step(make_app):
    app = make_app()
    app.start_operator()
    app.apply_experiment(canary={"steps": [5, 25, 50, 100], "interval": "3s", "minStepDuration": "15s"})
    at_step_2 = app.wait_for(lambda s: s.get("step") == 2 and s.get("stepChecks", 0) >= 1)[-1]
    step_started = at_step_2["stepStartedAt"]
    app.operator.kill()
    time.sleep(4)  # down for more than an interval: traffic must stay where it was
    assert app.weights() == {"v1": 75, "v2": 25}
    assert app.status()["step"] == 2

    app.start_operator()
    after = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=120)
    assert after[-1]["phase"] == "Succeeded"
    steps_after = [s["step"] for s in after]
    assert min(steps_after) == 2, "the restarted operator went back to an earlier step"
    assert all(s["stepStartedAt"] == step_started for s in after if s["step"] == 2)
    app.wait_event("Promoted")
    reasons = app.event_reasons()
    assert reasons.count("Started") == 1
    assert reasons.count("Promoted") == 1
    assert [h["step"] for h in after[-1]["history"]] == [1, 2, 3, 4]


def test_invalid_spec_is_reported_with_the_field_and_traffic_is_untouched(make_app):
    app = make_app()
    before = app.local.virtual_service(app.namespace, "churn")["spec"]
    app.start_operator()
    app.apply_experiment(canary={"steps": [5, 50, 25], "interval": "3s"})
    final = app.wait_for(lambda s: s.get("phase") == "Failed", timeout=30)[-1]
    ready = conditions(final)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.canary.steps[2]" in ready["message"] and "(got 25)" in ready["message"]
    invalid = app.wait_event("InvalidSpec")
    assert invalid.type == "Warning"
    assert "spec.canary.steps[2]" in invalid.message and "(got 25)" in invalid.message
    assert app.local.virtual_service(app.namespace, "churn")["spec"] == before
    # Fixing the spec starts the rollout.
    app.local.patch_experiment(app.namespace, "churn-v2", {"spec": {"canary": {"steps": [5, 25, 50]}}})
    app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=30)
    app.wait_weights({"v1": 95, "v2": 5})


@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_apply_then_wait_for_succeeded(make_app, tmp_path):
    app = make_app()
    app.start_operator()
    manifest = load(EXAMPLES / "03-demo" / "experiment.yaml")
    manifest["metadata"]["namespace"] = app.namespace
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kubectl = ["kubectl", "--kubeconfig", str(app.local.kubeconfig), "-n", app.namespace]

    applied = subprocess.run(
        [*kubectl, "apply", "--validate=false", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert applied.returncode == 0, applied.stderr
    assert "churn-v2 created" in applied.stdout
    waited = subprocess.run(
        [*kubectl, "wait", "--for=condition=Succeeded", "mexp/churn-v2", "--timeout=120s"],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert waited.returncode == 0, waited.stderr + app.operator.log_text()[-3000:]
    assert "condition met" in waited.stdout
    by_phase = subprocess.run(
        [*kubectl, "wait", "--for=jsonpath={.status.phase}=Succeeded", "mexp/churn-v2", "--timeout=10s"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert by_phase.returncode == 0, by_phase.stderr
    weight = subprocess.run(
        [*kubectl, "get", "mexp", "churn-v2", "-o", "jsonpath={.status.candidateWeight}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert weight.stdout == "100"
