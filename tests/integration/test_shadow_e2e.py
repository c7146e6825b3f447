"""Shadow traffic end to end: Istio mirroring in the mesh simulator, judged by the real operator.

Three experiments run at once on one operator (examples/03-demo/shadow.yaml
and a Shadow-only variant): a failing candidate caught in the shadow with no
user-facing traffic on it, a passing Shadow that changes nothing
user-facing, and a shadow phase followed by a canary that promotes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout.localstack import stack

from conftest import BASELINE, EXAMPLES, FINAL, GOOD, App, load

pytestmark = pytest.mark.integration

FAILING = dataclasses.replace(BASELINE, error_rate=0.3)
SCENARIOS: dict[str, tuple[Any, dict[str, Any]]] = {
    "caught": (FAILING, {"strategy": "Shadow"}),
    "passes": (GOOD, {"strategy": "Shadow"}),
    "then-canary": (GOOD, {}),
}


@pytest.fixture(scope="module")
def apps(local: stack.LocalStack) -> Iterator[dict[str, App]]:
    stamp = int(time.time() * 1000) % 10**7
    launched = {name: App(local, f"sh-{name}-{stamp}") for name in SCENARIOS}
    for name, app in launched.items():
        local.create_namespace(app.namespace)
        local.apply(load(EXAMPLES / "00-mesh" / "virtualservice.yaml"), app.namespace)
        local.apply_file(EXAMPLES / "00-mesh" / "destinationrule.yaml", app.namespace)
        local.add_model_app(app.namespace, BASELINE, SCENARIOS[name][0], 200)
    watched = [arg for app in launched.values() for arg in ("--namespace", app.namespace)]
    operator = local.start_operator(*watched, name=f"sh-{stamp}")
    for name, app in launched.items():
        app.operator = operator
        body = copy.deepcopy(load(EXAMPLES / "03-demo" / "shadow.yaml"))
        body["metadata"]["namespace"] = app.namespace
        body["spec"].update(SCENARIOS[name][1])
        local.apply(body)
    try:
        yield launched
    finally:
        operator.stop()
        for app in launched.values():
            local.mesh.remove_app(app.namespace, "churn")


def mirror(app: App) -> dict[str, Any] | None:
    route = app.primary_route()
    if "mirror" not in route:
        return None
    return {"mirror": route["mirror"], "mirrorPercentage": route.get("mirrorPercentage")}


def wait_mirror(app: App, present: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (mirror(app) is not None) != present:
        assert time.monotonic() < deadline, f"mirror {'missing' if present else 'still there'}: {mirror(app)}"
        time.sleep(0.1)


def test_a_failing_candidate_is_caught_with_no_user_facing_traffic(apps: dict[str, App]) -> None:
    app = apps["caught"]
    app.wait_for(lambda s: (s.get("shadow") or {}).get("active") is True)
    wait_mirror(app, True)
    assert mirror(app) == {"mirror": {"host": "churn", "subset": "v2"}, "mirrorPercentage": {"value": 100.0}}
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)[-1]
    assert final["phase"] == "RolledBack" and final["reason"] == "GuardrailFailed", final.get("message")
    assert "shadow phase" in final["message"] and "error-rate" in final["message"]
    assert final["shadow"]["passed"] is False and final["shadow"]["active"] is False
    wait_mirror(app, False)
    assert app.weights() == {"v1": 100, "v2": 0}
    # Every request churn-v2 ever served was a mirror copy: users only got churn-v1's answers.
    served = app.local.mesh.observed(app.namespace, "churn-v2")
    assert served.requests > 0 and served.errors > 0
    assert app.local.mesh.mirrored(app.namespace, "churn-v2") == served.requests
    app.wait_event("RolledBack")  # Events follow the status write
    assert {"ShadowStarted", "RolledBack"} <= set(app.event_reasons())


def test_a_passing_shadow_succeeds_and_changes_nothing_user_facing(apps: dict[str, App]) -> None:
    app = apps["passes"]
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)[-1]
    assert final["phase"] == "Succeeded" and final["reason"] == "ShadowPassed", final.get("message")
    assert final["weights"] == {"churn-v1": 100, "churn-v2": 0}
    wait_mirror(app, False)
    assert app.weights() == {"v1": 100, "v2": 0}
    served = app.local.mesh.observed(app.namespace, "churn-v2")
    assert served.requests > 0 and app.local.mesh.mirrored(app.namespace, "churn-v2") == served.requests


def test_shadow_then_canary_promotes(apps: dict[str, App]) -> None:
    app = apps["then-canary"]
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=150)[-1]
    assert final["phase"] == "Succeeded" and final["reason"] == "Promoted", final.get("message")
    reasons = app.event_reasons()
    assert reasons.index("ShadowStarted") < reasons.index("ShadowPassed") < reasons.index("Started")
    assert final["shadow"]["passed"] is True
    app.wait_weights({"v1": 0, "v2": 100})
    wait_mirror(app, False)
    # After the shadow, the candidate served real users too: more requests than were mirrored.
    assert app.local.mesh.observed(app.namespace, "churn-v2").requests > app.local.mesh.mirrored(
        app.namespace, "churn-v2"
    )
