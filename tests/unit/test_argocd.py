"""Argo CD integration (examples/05-argocd): the Lua health check and actions, and the manifests.

The Lua runs in a real Lua 5.1 (lupa), the semantics of the gopher-lua Argo CD
embeds, inside a sandbox shaped like Argo CD's: only the base, table and
package libraries plus an ``os`` with ``time``/``date`` that ``require("os")``
reaches.  No ``string`` or ``math`` library and no string methods, so a script
that would fail in Argo CD fails here too.  The object is passed as Argo CD
passes it: nested tables, arrays 1-based.  Statuses are rendered by the
operator's own ``status.render``, so a renamed status field breaks these tests.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout import status as status_mod
from modelrollout.core import model
from modelrollout.core.model import Gate, Phase

try:
    from lupa import lua51 as lupa_runtime
except ImportError:  # a lupa built without the bundled 5.1: its default Lua will do
    lupa_runtime = pytest.importorskip("lupa")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "05-argocd"
SCRIPTS = EXAMPLE / "resource_customizations" / "modelrollout.io" / "ModelExperiment"
HEALTH = (SCRIPTS / "health.lua").read_text()
DISCOVERY = (SCRIPTS / "actions" / "discovery.lua").read_text()
ACTION_NAMES = sorted(p.parent.name for p in (SCRIPTS / "actions").glob("*/action.lua"))
ARGOCD_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
CONFIG_KEY = "modelrollout.io_ModelExperiment"

# The decision this integration makes for each phase (README.md says why).  A phase
# added to the operator fails test_every_phase_is_mapped until it is decided here.
EXPECTED_HEALTH = {
    Phase.PENDING: "Progressing",
    Phase.PROGRESSING: "Progressing",
    Phase.PAUSED: "Healthy",
    Phase.SUCCEEDED: "Healthy",
    Phase.ROLLED_BACK: "Degraded",
    Phase.FAILED: "Degraded",
}
FINAL = {p for p in Phase if p.is_final}
NOW = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)

# Argo CD's sandbox: what its runLua loads (base, table, package, a safe os via require).
SANDBOX = """
local safe_os = { time = os.time, date = os.date }
package.loaded.os = nil
package.preload.os = function() return safe_os end
debug.setmetatable("", nil)  -- gopher-lua without its string library: no ("x"):upper()
string, math, io, os, debug = nil, nil, nil, nil, nil
package.loaded.string, package.loaded.math, package.loaded.io, package.loaded.debug = nil, nil, nil, nil
return safe_os
"""


# --------------------------------------------------------------------------------- running Lua


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:  # Argo CD maps JSON null to nil: the key is absent
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list | tuple):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    return value


def _from_lua(value: Any) -> Any:
    """A returned table as Argo CD's JSON encoder reads it: 1..n keys (or none) make an array."""
    if lupa_runtime.lua_type(value) != "table":
        return value
    items = {key: _from_lua(item) for key, item in value.items()}
    keys = list(items)
    if all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
        return [items[k] for k in sorted(keys)]
    return {str(k): v for k, v in items.items()}


def _clean(new: Any, old: Any) -> Any:
    """Argo CD's cleanReturnedObj: an empty table that was an object before stays an object."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: _clean(v, old[k]) if k in old else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, dict) and not new:
        return old
    if isinstance(new, list) and isinstance(old, list):
        return [_clean(v, old[i]) if i < len(old) else v for i, v in enumerate(new)]
    return new


def run(script: str, obj: dict[str, Any], frozen: datetime.datetime | None = None) -> Any:
    """Run ``script`` as Argo CD does, with ``obj`` as the global ``obj``; return what it returns."""
    lua = lupa_runtime.LuaRuntime(register_eval=False, register_builtins=False)
    safe_os = lua.execute(SANDBOX)
    if frozen is not None:  # the real os.date formatting, at a fixed instant
        real_date = safe_os.date
        instant = int(frozen.timestamp())
        safe_os.date = lambda fmt: real_date(fmt, instant)
    lua.globals().obj = _to_lua(lua, obj)
    return _clean(_from_lua(lua.execute(script)), obj)


def test_the_sandbox_is_as_poor_as_argo_cds() -> None:
    """The harness itself: what Argo CD does not load is missing here too."""
    assert run("return {type(string), type(math), type(io), type(os)}", {}) == ["nil"] * 4
    with pytest.raises(lupa_runtime.LuaError):
        run('return ("x"):upper()', {})
    stamp = run('return require("os").date("!%Y-%m-%dT%H:%M:%SZ")', {}, frozen=NOW)
    assert stamp == "2026-11-23T10:00:00Z"


# ------------------------------------------------------------------------------------ fixtures


def manifest() -> dict[str, Any]:
    with (ROOT / "examples" / "01-minimal" / "experiment.yaml").open() as f:
        body: dict[str, Any] = yaml.safe_load(f)
    body["metadata"]["generation"] = 3
    return body


def rendered_status(
    phase: Phase, *, step: int = 2, candidate: int = 25, reason: str = "Checking", message: str = ""
) -> dict[str, Any]:
    """``status`` as the operator writes it (its own renderer) for a state in ``phase``."""
    state = model.State(
        phase=phase,
        step=step,
        weights={"churn-v1": 100 - candidate, "churn-v2": candidate},
        step_started_at=NOW,
        reason=reason,
        message=message or f"{reason.lower()} at step {step}",
        observed_generation=3,
    )
    decision = model.Decision(state, dict(state.weights))
    return status_mod.render(decision, None, NOW, "churn-v2")


def experiment(phase: Phase | str | None, **status_fields: Any) -> dict[str, Any]:
    body = manifest()
    if phase is None:
        return body
    if isinstance(phase, Phase):
        body["status"] = rendered_status(phase, **status_fields)
    else:  # a phase the operator does not have
        body["status"] = {**rendered_status(Phase.PROGRESSING, **status_fields), "phase": phase}
    return body


def health(obj: dict[str, Any]) -> dict[str, str]:
    result = run(HEALTH, obj)
    assert set(result) == {"status", "message"}, result
    assert result["status"] in ARGOCD_HEALTH  # else Argo CD shows "invalid health status"
    return result


# -------------------------------------------------------------------------------------- health


def test_every_phase_is_mapped() -> None:
    assert set(EXPECTED_HEALTH) == set(Phase), "decide (and document) the Argo CD health of a new phase"
    for phase in Phase:
        got = health(experiment(phase))
        assert got["status"] != "Unknown", f"{phase.value} fell through to Unknown: {got}"


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_phase_health_and_message(phase: Phase) -> None:
    got = health(experiment(phase, step=2, candidate=25, reason="Checking", message="error-rate ok"))
    assert got["status"] == EXPECTED_HEALTH[phase]
    assert got["message"] == f"{phase.value}: step 2/4, candidate 25%. Checking: error-rate ok"


def test_failure_says_why() -> None:
    body = experiment(
        Phase.ROLLED_BACK,
        step=1,
        candidate=0,
        reason="GuardrailFailed",
        message="rolled back at step 1/4 (5%): latency-p95 668ms > max 250ms",
    )
    got = health(body)
    assert got["status"] == "Degraded"
    assert "step 1/4, candidate 0%" in got["message"]
    assert "GuardrailFailed: rolled back at step 1/4 (5%): latency-p95 668ms > max 250ms" in got["message"]


def test_steps_count_comes_from_the_spec() -> None:
    body = experiment(Phase.PROGRESSING, step=3, candidate=100)
    body["spec"]["canary"] = {"steps": [10, 50, 100]}
    assert "step 3/3, candidate 100%" in health(body)["message"]


def test_other_strategies_show_the_weight_but_no_canary_step() -> None:
    body = experiment(Phase.PROGRESSING, step=1, candidate=50)
    body["spec"]["strategy"] = "ABTest"
    message = health(body)["message"]
    assert message.startswith("Progressing: candidate 50%.")
    assert "step" not in message.split(".")[0]


def test_paused_is_healthy_and_says_so() -> None:
    got = health(experiment(Phase.PAUSED, reason="Paused", message="paused at step 2 (25%) by spec.paused"))
    assert got == {
        "status": "Healthy",
        "message": "Paused: step 2/4, candidate 25%. paused at step 2 (25%) by spec.paused",
    }
    waiting = health(experiment(Phase.PAUSED, reason="AwaitingPromotion", message="ship: set the annotation"))
    assert waiting["status"] == "Healthy"
    assert waiting["message"].startswith("Paused: ")
    assert "AwaitingPromotion: ship: set the annotation" in waiting["message"]


@pytest.mark.parametrize(
    "status",
    [None, {}, {"step": 0, "observedGeneration": 3}],
    ids=["no status", "empty status", "no phase"],
)
def test_before_the_operator_writes_a_phase(status: dict[str, Any] | None) -> None:
    body = manifest()
    if status is not None:
        body["status"] = status
    assert health(body) == {"status": "Progressing", "message": "waiting for the operator"}


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_an_unobserved_generation_is_progressing_whatever_the_phase(phase: Phase) -> None:
    body = experiment(phase)
    body["metadata"]["generation"] = 4  # spec edited; status still from generation 3
    assert health(body) == {
        "status": "Progressing",
        "message": "waiting for the operator to observe generation 4 (last observed 3)",
    }


def test_an_observed_generation_defers_to_the_phase() -> None:
    body = experiment(Phase.SUCCEEDED)
    body["metadata"]["generation"] = 3
    assert health(body)["status"] == "Healthy"
    del body["status"]["observedGeneration"]  # nothing to compare: the phase decides
    body["metadata"]["generation"] = 9
    assert health(body)["status"] == "Healthy"


@pytest.mark.parametrize("phase", ["Exploding", "", "progressing"])
def test_a_phase_it_does_not_know_is_unknown_not_degraded(phase: str) -> None:
    got = health(experiment(phase, reason="Whatever", message="something new"))
    assert got["status"] == "Unknown"
    assert got["message"].startswith(f"{phase}: step 2/4, candidate 25%. Whatever: something new")
    assert "unknown to this health check" in got["message"]


# ------------------------------------------------------------------------------------- actions


def action(name: str) -> str:
    return (SCRIPTS / "actions" / name / "action.lua").read_text()


def discovery(obj: dict[str, Any]) -> dict[str, bool]:
    result = run(DISCOVERY, obj)
    assert all(isinstance(v.get("disabled"), bool) for v in result.values()), result
    return {name: entry["disabled"] for name, entry in result.items()}


ISO_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_discovery_lists_exactly_the_defined_actions() -> None:
    assert set(discovery(experiment(Phase.PROGRESSING))) == set(ACTION_NAMES)
    assert set(ACTION_NAMES) == {"promote", "abort", "pause", "resume", "restart"}


@pytest.mark.parametrize("gate", list(Gate), ids=lambda g: g.short)
def test_gate_action_sets_its_annotation_to_a_fresh_value(gate: Gate) -> None:
    body = experiment(Phase.PROGRESSING)
    body["metadata"]["annotations"] = {"team": "ml", gate.value: "2026-11-22T09:00:00Z"}
    out = run(action(gate.short), body, frozen=NOW)

    annotations = out["metadata"]["annotations"]
    assert annotations == {"team": "ml", gate.value: "2026-11-23T10:00:00Z"}  # only its own gate moved
    rest = {k: v for k, v in out.items() if k != "metadata"}
    assert rest == {k: v for k, v in body.items() if k != "metadata"}

    # Twice in the same second: the operator acts once per value, so the second must differ.
    again = run(action(gate.short), out, frozen=NOW)["metadata"]["annotations"][gate.value]
    third = run(action(gate.short), run(action(gate.short), out, frozen=NOW), frozen=NOW)
    values = {annotations[gate.value], again, third["metadata"]["annotations"][gate.value]}
    assert len(values) == 3, values


@pytest.mark.parametrize("gate", list(Gate), ids=lambda g: g.short)
def test_gate_action_on_an_object_without_annotations(gate: Gate) -> None:
    body = experiment(Phase.SUCCEEDED)
    assert "annotations" not in body["metadata"]
    value = run(action(gate.short), body)["metadata"]["annotations"][gate.value]  # the real clock
    assert ISO_SECOND.match(value), value
    stamped = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert abs(datetime.datetime.now(datetime.UTC) - stamped) < datetime.timedelta(seconds=5)


@pytest.mark.parametrize(("name", "paused"), [("pause", True), ("resume", False)])
def test_pause_and_resume_set_spec_paused_only(name: str, paused: bool) -> None:
    body = experiment(Phase.PROGRESSING)
    body["spec"]["paused"] = not paused
    out = run(action(name), body)
    assert out["spec"]["paused"] is paused
    out["spec"]["paused"] = not paused
    assert out == body


# Which actions are disabled: the gates act on a running experiment (as the operator and
# `kubectl mexp` do); restart once it has finished; resume only when spec.paused is set.
@pytest.mark.parametrize("phase", [None, *Phase], ids=lambda p: p.value if p else "no status")
@pytest.mark.parametrize("paused", [False, True], ids=["running", "spec.paused"])
def test_discovery_disables_what_does_not_apply(phase: Phase | None, paused: bool) -> None:
    body = experiment(phase)
    if paused:
        body["spec"]["paused"] = True
    finished = phase in FINAL
    assert discovery(body) == {
        "promote": finished,
        "abort": finished,
        "pause": finished or paused,
        "resume": not paused,
        "restart": not finished,
    }


def test_discovery_offers_the_gates_for_a_phase_it_does_not_know() -> None:
    """Unsure whether it finished: abort (the safe way out) stays available."""
    disabled = discovery(experiment("Exploding"))
    assert disabled["abort"] is False and disabled["promote"] is False and disabled["restart"] is True


# ----------------------------------------------------------------------------------- manifests


def load(name: str) -> list[dict[str, Any]]:
    with (EXAMPLE / name).open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


@pytest.fixture(scope="module")
def argocd_cm() -> dict[str, Any]:
    (config_map,) = load("argocd-cm.yaml")
    return config_map


def test_argocd_cm_is_a_patch_of_argo_cds_configmap(argocd_cm: dict[str, Any]) -> None:
    assert argocd_cm["apiVersion"] == "v1" and argocd_cm["kind"] == "ConfigMap"
    assert (argocd_cm["metadata"]["name"], argocd_cm["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    assert set(argocd_cm["data"]) == {
        f"resource.customizations.health.{CONFIG_KEY}",
        f"resource.customizations.actions.{CONFIG_KEY}",
    }


def test_argocd_cm_embeds_the_lua_files_byte_for_byte(argocd_cm: dict[str, Any]) -> None:
    hint = "regenerate it: python examples/05-argocd/render_argocd_cm.py"
    data = argocd_cm["data"]
    assert data[f"resource.customizations.health.{CONFIG_KEY}"] == HEALTH, hint
    actions = yaml.safe_load(data[f"resource.customizations.actions.{CONFIG_KEY}"])
    assert set(actions) == {"discovery.lua", "definitions"}
    assert actions["discovery.lua"] == DISCOVERY, hint
    defined = {d["name"]: d["action.lua"] for d in actions["definitions"]}
    assert sorted(defined) == ACTION_NAMES
    for name, script in defined.items():
        assert script == action(name), f"{name}: {hint}"


def test_render_script_reproduces_the_committed_configmap() -> None:
    spec = importlib.util.spec_from_file_location("render_argocd_cm", EXAMPLE / "render_argocd_cm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (EXAMPLE / "argocd-cm.yaml").read_text()


@pytest.fixture(scope="module")
def application() -> dict[str, Any]:
    (app,) = load("application.yaml")
    return app


def synced_objects(app: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifests the Application's source path holds in this repository, by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / app["spec"]["source"]["path"]).glob("*.yaml")):
        with path.open() as f:
            for doc in yaml.safe_load_all(f):
                assert doc["kind"] not in objects, f"one {doc['kind']} per example"
                objects[doc["kind"]] = doc
    return objects


def mesh_example(name: str) -> dict[str, Any]:
    with (ROOT / "examples" / name).open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def test_application_syncs_the_experiment_and_its_mesh(application: dict[str, Any]) -> None:
    assert application["apiVersion"] == "argoproj.io/v1alpha1" and application["kind"] == "Application"
    objects = synced_objects(application)
    assert {(o["apiVersion"], kind) for kind, o in objects.items()} == {
        ("modelrollout.io/v1alpha1", "ModelExperiment"),
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
    }
    namespace = application["spec"]["destination"]["namespace"]
    assert {o["metadata"]["namespace"] for o in objects.values()} == {namespace}


def test_synced_objects_are_the_other_examples_with_the_candidate_listed(application: dict[str, Any]) -> None:
    """app/ repeats examples 00-mesh and 01-minimal; only the candidate's 0% entry is new."""
    objects = synced_objects(application)
    assert objects["ModelExperiment"] == mesh_example("01-minimal/experiment.yaml")
    assert objects["DestinationRule"] == mesh_example("00-mesh/destinationrule.yaml")
    expected = mesh_example("00-mesh/virtualservice.yaml")
    primary = next(r for r in expected["spec"]["http"] if r["name"] == "primary")
    primary["route"].append({"destination": {"host": "churn", "subset": "v2"}, "weight": 0})
    assert objects["VirtualService"] == expected


def test_application_self_heals_around_the_operators_weights(application: dict[str, Any]) -> None:
    spec = application["spec"]
    assert spec["syncPolicy"]["automated"]["selfHeal"] is True
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    (ignored,) = spec["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"]) == ("networking.istio.io", "VirtualService")
    assert ignored["jqPathExpressions"] == [".spec.http[].route[].weight"]
    # ...and it names the VirtualService the synced experiment steers.
    objects = synced_objects(application)
    assert ignored["name"] == objects["ModelExperiment"]["spec"]["virtualService"]["name"]
    assert ignored["name"] == objects["VirtualService"]["metadata"]["name"]
    assert ignored["namespace"] == objects["VirtualService"]["metadata"]["namespace"]


# How Argo CD evaluates the expression: older releases wrap it in del(); newer ones rewrite
# `.a[].b[].c` into `.a |= map(.b |= map(del(.c)))` (util/argo/normalizers).  Both are run.
JQ_FORMS: dict[str, Callable[[str], str]] = {
    "del": lambda expr: f"del({expr})",
    "map": lambda expr: ".spec.http |= map(.route |= map(del(.weight)))",
}


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs the jq binary")
@pytest.mark.parametrize("form", list(JQ_FORMS))
def test_ignored_expression_hides_the_weights_and_nothing_else(
    application: dict[str, Any], form: str
) -> None:
    (expr,) = application["spec"]["ignoreDifferences"][0]["jqPathExpressions"]
    query = JQ_FORMS[form](expr)
    git = synced_objects(application)["VirtualService"]

    def normalized(obj: dict[str, Any]) -> Any:
        done = subprocess.run(["jq", "-c", query], input=json.dumps(obj), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def live(*weights: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Git's VirtualService as the operator leaves it: primary's weights set to ``weights``."""
        copy = json.loads(json.dumps(git))
        primary = next(r for r in copy["spec"]["http"] if r["name"] == "primary")
        for destination, weight in zip(primary["route"], weights, strict=True):
            destination["weight"] = weight
        if extra is not None:
            primary["route"].append(extra)
        return copy

    assert normalized(live(100, 0)) == normalized(git)
    for split in [(95, 5), (75, 25), (0, 100)]:
        assert live(*split) != git and normalized(live(*split)) == normalized(git), split
    # Anything but a weight is still drift: a destination added, a host changed.
    added = live(50, 50, extra={"destination": {"host": "churn", "subset": "v3"}, "weight": 0})
    assert normalized(added) != normalized(git)
    moved = live(75, 25)
    moved["spec"]["hosts"] = ["churn.other"]
    assert normalized(moved) != normalized(git)
