"""``kubectl-mexp`` against the local API server: what it prints, and what it writes.

Experiments with realistic statuses (shaped as the operator writes them, see
modelrollout.status) are stored in the emulator; the plugin runs in-process
through ``main([...])`` and, once, as the installed console script (and as
``kubectl mexp`` when kubectl is installed).  Writes are checked on the stored
objects and in the emulator's request log: each command is one GET and one PATCH.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from modelrollout import GROUP, PLURAL, VERSION, plugin
from modelrollout.localstack.apiserver import ApiServer
from modelrollout.plugin import render

KUBECTL = shutil.which("kubectl")
SCRIPT = Path(sys.executable).parent / "kubectl-mexp"
_ids = itertools.count()


def ago(**delta: float) -> str:
    """A timestamp this long before now (ages are asserted to the minute: each is >= 30 s from a turn)."""
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ experiments
SPEC: dict[str, Any] = {
    "virtualService": {"name": "churn", "routes": ["primary"]},
    "baseline": {"subset": "v1", "workload": "churn-v1"},
    "candidate": {"subset": "v2", "workload": "churn-v2"},
    "canary": {"steps": [5, 25, 50, 100], "interval": "1m", "minStepDuration": "5m", "minSamples": 200},
    "metrics": [
        {"name": "error-rate", "builtin": "error-rate", "maxRelativeIncrease": 0.5},
        {"name": "latency-p95", "builtin": "latency-p95", "max": 250},
        {"name": "fraud-caught", "query": "sum(rate(fraud_caught_total[1m]))", "min": 0.1},
    ],
    "prometheus": {"address": "http://prometheus.istio-system:9090"},
}


def conditions(phase: str, reason: str, message: str, since: str) -> list[dict[str, Any]]:
    running = phase in ("Pending", "Progressing")
    table = {
        "Ready": ("True", "Ready", "the spec is valid and its routes were found"),
        "Progressing": ("True" if running else "False", reason if running else phase, message),
        "Succeeded": ("True", reason, message) if phase == "Succeeded" else ("False", phase, ""),
        "RolledBack": ("True", reason, message) if phase == "RolledBack" else ("False", phase, ""),
        "Failed": ("False", phase, ""),
        "MetricsAvailable": ("True", "MetricsAvailable", "every metric had data in the last evaluation"),
        "SampleRatioMismatch": ("False", "SharesMatchWeights", ""),
    }
    return [
        {
            "type": type_,
            "status": status,
            "reason": why,
            "message": text,
            "lastTransitionTime": since if type_ in ("Progressing", phase) else ago(minutes=40),
            "observedGeneration": 1,
        }
        for type_, (status, why, text) in table.items()
    ]


def progressing_status() -> dict[str, Any]:
    """Step 2 of 4 after twelve decisions, the last evaluation passing."""
    message = (
        "step 2/4 (25%): error rate 0.61% vs 0.52%, ratio 1.2 [0.71, 2], evidence 0.46 < 40 (ok); "
        "latency-p95: requests over 100ms 9.5% vs 11%, ratio 0.89 [0.45, 1.6], evidence 0.134 < 40 (ok)"
    )
    history = [
        {
            "time": ago(minutes=60 - 3 * i, seconds=30),
            "phase": "Progressing",
            "step": 1 if i < 8 else 2,
            "weight": 5 if i < 8 else 25,
            "decision": "Continue",
            "reason": f"evaluation {i + 1}: all guardrails pass",
        }
        for i in range(12)
    ]
    return {
        "phase": "Progressing",
        "step": 2,
        "candidateWeight": 25,
        "weights": {"churn-v1": 75, "churn-v2": 25},
        "observedGeneration": 1,
        "stepStartedAt": ago(minutes=12, seconds=30),
        "lastEvaluatedAt": ago(seconds=20),
        "decision": "Continue",
        "reason": "StepAdvanced",
        "message": message,
        "samples": {"churn-v1": 10234, "churn-v2": 3411},
        "stepChecks": 3,
        "failedChecks": 0,
        "noDataChecks": 0,
        "gates": {},
        "metrics": [
            {
                "name": "error-rate",
                "verdict": "Pass",
                "reason": "error rate 0.61% vs 0.52%, ratio 1.2 [0.71, 2], evidence 0.46 < 40 (ok)",
                "baseline": 0.0052,
                "candidate": 0.0061,
                "effect": 1.1731,
                "interval": [0.7113, 2.0391],
                "evidence": 0.4601,
                "bound": 40.0,
                "pValue": 1.0,
            },
            {
                "name": "latency-p95",
                "verdict": "Pass",
                "reason": "latency-p95: requests over 100ms 9.5% vs 11%, ratio 0.89 [0.45, 1.6], "
                "evidence 0.134 < 40 (ok)",
                "baseline": 182.4,
                "candidate": 176.9,
                "effect": 0.8912,
                "interval": [0.4511, 1.6032],
                "evidence": 0.134,
                "bound": 40.0,
                "pValue": 1.0,
                "edge": 100.0,
            },
            {
                "name": "fraud-caught",
                "verdict": "Pass",
                "reason": "fraud-caught 0.1437 >= min 0.1",
                "baseline": 0.1512,
                "candidate": 0.1437,
            },
        ],
        "conditions": conditions("Progressing", "StepAdvanced", message, ago(minutes=40)),
        "history": history,
        "plan": "this plan detects >= +197 % error rate, +60 % slow requests (80% power)",
    }


def rolled_back_status() -> dict[str, Any]:
    message = "rolled back at step 1/4 (5%): error rate 4.2% vs 0.64%, ratio 6.3 [1.3, 20], evidence 110 > 40"
    return {
        "phase": "RolledBack",
        "step": 1,
        "candidateWeight": 0,
        "weights": {"churn-v1": 100, "churn-v2": 0},
        "observedGeneration": 1,
        "stepStartedAt": ago(hours=3),
        "lastEvaluatedAt": ago(hours=2, minutes=50),
        "decision": "Rollback",
        "reason": "GuardrailFailed",
        "message": message,
        "samples": {"churn-v1": 5120, "churn-v2": 270},
        "metrics": [
            {
                "name": "error-rate",
                "verdict": "Fail",
                "reason": "error rate 4.2% vs 0.64%, ratio 6.3 [1.3, 20], evidence 110 > 40",
                "baseline": 0.0064,
                "candidate": 0.042,
                "effect": 6.31,
                "interval": [1.3, 20.1],
                "evidence": 110.2,
                "bound": 40.0,
            }
        ],
        "conditions": conditions("RolledBack", "GuardrailFailed", message, ago(hours=2, minutes=50)),
        "history": [
            {
                "time": ago(hours=3),
                "phase": "Progressing",
                "step": 1,
                "weight": 5,
                "decision": "Continue",
                "reason": "step 1/4: 5% of traffic to churn-v2",
            },
            {
                "time": ago(hours=2, minutes=50),
                "phase": "RolledBack",
                "step": 1,
                "weight": 0,
                "decision": "Rollback",
                "reason": message,
            },
        ],
    }


def succeeded_status() -> dict[str, Any]:
    message = "promoted after step 4/4: every guardrail passed"
    return {
        "phase": "Succeeded",
        "step": 4,
        "candidateWeight": 100,
        "weights": {"churn-v1": 0, "churn-v2": 100},
        "decision": "Promote",
        "reason": "Promoted",
        "message": message,
        "conditions": conditions("Succeeded", "Promoted", message, ago(days=2)),
    }


def awaiting_promotion_status() -> dict[str, Any]:
    """An A/B test that found a winner and waits for the promote annotation (API.md)."""
    return {
        "phase": "Paused",
        "step": 1,
        "candidateWeight": 50,
        "weights": {"churn-v1": 50, "churn-v2": 50},
        "decision": "Hold",
        "reason": "AwaitingPromotion",
        "message": "Ship: conversion +3.4% [+1.2%, +5.7%]; waiting for modelrollout.io/promote",
        "outcome": "Ship",
        "objective": {"metric": "conversion", "lift": 0.034, "interval": [0.012, 0.057]},
    }


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def api(server: ApiServer) -> Iterator[kubernetes.client.CustomObjectsApi]:
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url)) as client:
        yield kubernetes.client.CustomObjectsApi(client)


@pytest.fixture
def namespaces(server: ApiServer) -> tuple[str, str]:
    """Two fresh namespaces: the kubeconfig's (first) and another one."""
    names = f"plugin-{next(_ids)}-a", f"plugin-{next(_ids)}-b"
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url)) as client:
        for name in names:
            kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    return names


@pytest.fixture
def kubeconfig(server: ApiServer, tmp_path: Path, namespaces: tuple[str, str]) -> Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespaces[0])


def store(
    api: kubernetes.client.CustomObjectsApi,
    namespace: str,
    name: str,
    status: dict[str, Any] | None,
    *,
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": copy.deepcopy(spec or SPEC),
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    if status is not None:
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})


@dataclasses.dataclass(frozen=True)
class Fleet:
    a: str  # the kubeconfig context's namespace
    b: str
    progressing: dict[str, Any]  # the status stored on a/churn-v2

    def __contains__(self, namespace: str) -> bool:
        return namespace in (self.a, self.b)


@pytest.fixture
def fleet(api: kubernetes.client.CustomObjectsApi, namespaces: tuple[str, str]) -> Fleet:
    """Experiments in every phase the plugin distinguishes, across the two namespaces."""
    a, b = namespaces
    progressing = progressing_status()
    store(api, a, "churn-v2", progressing, annotations={"argocd.argoproj.io/tracking-id": "ml:x"})
    store(api, a, "search-v4", None)
    store(api, b, "fraud-v3", rolled_back_status())
    store(api, b, "ranker-v2", {**succeeded_status(), "interval": "30s"})
    ab_spec = {**SPEC, "strategy": "ABTest", "abTest": {"split": 50, "interval": "5m"}}
    store(api, b, "recs-ab", awaiting_promotion_status(), spec=ab_spec)
    return Fleet(a, b, progressing)


Result = tuple[int, str, str]
Run = Callable[..., Result]


@pytest.fixture
def mexp(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """``kubectl mexp ARGS --kubeconfig ...`` in-process: (exit code, stdout, stderr)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = plugin.main([*args, "--kubeconfig", str(kubeconfig)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def rows(table: str) -> list[list[str]]:
    """A table's lines split into cells (columns are three or more spaces apart)."""
    return [re.split(r" {3,}", line.strip()) for line in table.strip().splitlines()]


def section(text: str, title: str) -> list[list[str]]:
    """The rows of the table under ``title`` in a status report."""
    block = text.split(title, 1)[1].split("\n\n", 1)[0]
    return rows(block.split("\n", 1)[1])


def field(text: str, name: str) -> str:
    found = re.search(rf"^{name}:\s+(.*)$", text, re.MULTILINE)
    assert found, f"no {name}: line in\n{text}"
    return found.group(1)


def stored(server: ApiServer, namespace: str, name: str) -> dict[str, Any]:
    obj = server.get_object(GROUP, VERSION, PLURAL, namespace, name)
    assert obj is not None
    return obj


def path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def calls(server: ApiServer) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in server.request_log()]


# --------------------------------------------------------------------------------------------- get
def test_get_all_namespaces_lists_every_experiment_with_its_columns(fleet: Fleet, mexp: Run) -> None:
    a, b = fleet.a, fleet.b
    code, out, err = mexp("get", "-A")
    assert code == 0, err
    header, *body = rows(out)
    assert header == [
        "NAMESPACE", "NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "DECISION", "AGE", "REASON",
    ]  # fmt: skip
    ours = {(r[0], r[1]): r[2:] for r in body if r[0] in fleet}
    assert {key: row[:5] + row[6:] for key, row in ours.items()} == {
        (a, "churn-v2"): ["Canary", "Progressing", "2/4", "25%", "Continue", "StepAdvanced"],
        (a, "search-v4"): ["Canary", "-", "-", "-", "-", "-"],
        (b, "fraud-v3"): ["Canary", "RolledBack", "1/4", "0%", "Rollback", "GuardrailFailed"],
        (b, "ranker-v2"): ["Canary", "Succeeded", "4/4", "100%", "Promote", "Promoted"],
        (b, "recs-ab"): ["ABTest", "Paused", "1/4", "50%", "Hold", "AwaitingPromotion"],
    }
    assert all(re.fullmatch(r"\d+s", row[5]) for row in ours.values())  # AGE: created just now


def test_get_defaults_to_the_context_namespace_and_takes_n_name_and_output(fleet: Fleet, mexp: Run) -> None:
    b = fleet.b
    code, out, _ = mexp("get")
    assert code == 0
    assert [r[0] for r in rows(out)] == ["NAME", "churn-v2", "search-v4"]  # no NAMESPACE column

    code, out, _ = mexp("get", "-n", b, "fraud-v3")
    assert code == 0 and [r[:3] for r in rows(out)] == [
        ["NAME", "STRATEGY", "PHASE"],
        ["fraud-v3", "Canary", "RolledBack"],
    ]

    code, out, _ = mexp("get", "-n", b, "-o", "wide")
    wide = rows(out)
    assert wide[0][-3:] == ["INTERVAL", "FAILED", "MESSAGE"]
    assert wide[1][0] == "fraud-v3" and wide[1][-1].startswith("rolled back at step 1/4 (5%)")
    # INTERVAL: the operator's status.interval, else the strategy's interval in the spec.
    assert {row[0]: row[-3] for row in wide[1:]} == {"fraud-v3": "1m", "ranker-v2": "30s", "recs-ab": "5m"}

    code, out, _ = mexp("get", "-n", b, "-o", "json")
    listing = json.loads(out)
    assert code == 0 and listing["kind"] == "List"
    assert [i["metadata"]["name"] for i in listing["items"]] == ["fraud-v3", "ranker-v2", "recs-ab"]

    code, out, _ = mexp("get", "churn-v2", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["status"]["weights"] == {"churn-v1": 75, "churn-v2": 25}

    # Flags before the command work too, as with kubectl.
    code, out, _ = mexp("-n", b, "get")
    assert code == 0 and [r[0] for r in rows(out)][1:] == ["fraud-v3", "ranker-v2", "recs-ab"]


def test_get_in_an_empty_namespace_says_so(namespaces: tuple[str, str], mexp: Run) -> None:
    code, out, err = mexp("get", "-n", namespaces[1])
    assert (code, out) == (0, "") and err.strip() == f"No resources found in {namespaces[1]} namespace."


# ------------------------------------------------------------------------------------------ status
def test_status_shows_weights_metrics_evidence_samples_conditions_history_and_plan(
    fleet: Fleet, mexp: Run
) -> None:
    a = fleet.a
    code, out, err = mexp("status", "churn-v2", "--history", "3")
    assert code == 0, err
    assert field(out, "Experiment") == f"{a}/churn-v2  (Canary)"
    assert field(out, "Phase") == "Progressing"
    assert field(out, "Since").endswith("(40m ago)")
    assert field(out, "Step") == "2/4  (steps 5%, 25%, 50%, 100%), step started 12m ago"
    assert field(out, "Weights") == "baseline churn-v1 75%  /  candidate churn-v2 25%"
    assert field(out, "Decision") == "Continue"
    assert field(out, "Reason") == "StepAdvanced"
    assert field(out, "Message").startswith("step 2/4 (25%): error rate 0.61% vs 0.52%")
    assert field(out, "Samples") == "churn-v1 (baseline) 10234, churn-v2 (candidate) 3411"
    assert field(out, "Plan") == "this plan detects >= +197 % error rate, +60 % slow requests (80% power)"

    header, *metrics = section(out, "Metrics (last evaluation):")
    assert header == ["METRIC", "BASELINE", "CANDIDATE", "VERDICT", "EVIDENCE/BOUND", "RATIO [CI]", "REASON"]
    assert [m[:6] for m in metrics] == [
        ["error-rate", "0.52%", "0.61%", "Pass", "0.46 < 40", "1.2 [0.71, 2]"],
        ["latency-p95", "182ms", "177ms", "Pass", "0.134 < 40", "0.89 [0.45, 1.6]"],
        ["fraud-caught", "0.1512", "0.1437", "Pass", "-", "-"],  # a query metric: no unit, no evidence
    ]
    assert metrics[2][6] == "fraud-caught 0.1437 >= min 0.1"

    conditions = {c[0]: c[1:] for c in section(out, "Conditions:")[1:]}
    assert conditions["Progressing"][:3] == ["True", "StepAdvanced", "40m"]
    assert conditions["Succeeded"] == ["False", "Progressing", "40m"]
    assert conditions["MetricsAvailable"][:2] == ["True", "MetricsAvailable"]

    header, *history = section(out, "History (last 3 of 12):")
    assert header == ["TIME", "AGE", "PHASE", "STEP", "WEIGHT", "DECISION", "REASON"]
    assert [h[1:] for h in history] == [
        [f"{age}m", "Progressing", "2", "25%", "Continue", f"evaluation {i}: all guardrails pass"]
        for age, i in ((33, 10), (30, 11), (27, 12))
    ]
    assert history[-1][0] == fleet.progressing["history"][-1]["time"]


def test_status_of_a_rollback_shows_the_failing_evidence(fleet: Fleet, mexp: Run) -> None:
    b = fleet.b
    code, out, _ = mexp("status", "fraud-v3", "-n", b)
    assert code == 0
    assert field(out, "Phase") == "RolledBack"
    assert field(out, "Since").endswith("(170m ago)")
    assert field(out, "Weights") == "baseline churn-v1 100%  /  candidate churn-v2 0%"
    [metric] = section(out, "Metrics (last evaluation):")[1:]
    assert metric[:6] == ["error-rate", "0.64%", "4.2%", "Fail", "110 >= 40", "6.3 [1.3, 20]"]
    assert [h[2] for h in section(out, "History:")[1:]] == ["Progressing", "RolledBack"]


def test_status_of_an_ab_test_shows_outcome_and_objective(fleet: Fleet, mexp: Run) -> None:
    code, out, _ = mexp("status", "recs-ab", "-n", fleet.b)
    assert code == 0
    assert field(out, "Experiment").endswith("(ABTest)")
    assert field(out, "Outcome") == "Ship"
    assert field(out, "Objective") == "conversion lift +3.4% [+1.2%, +5.7%]"
    assert field(out, "Metrics") == "none evaluated yet"


def test_status_before_the_operator_saw_it(fleet: Fleet, mexp: Run) -> None:
    code, out, _ = mexp("status", "search-v4")
    assert code == 0
    assert field(out, "Status") == "not yet observed by the operator"
    assert "Phase:" not in out and "Metrics" not in out


# ------------------------------------------------------------------------------------------- gates
@pytest.mark.parametrize("command", ["promote", "abort", "restart"])
def test_each_gate_is_one_merge_patch_with_a_fresh_value(
    server: ApiServer, fleet: Fleet, mexp: Run, command: str
) -> None:
    a = fleet.a
    annotation = f"modelrollout.io/{command}"
    values = []
    for _ in range(2):
        server.clear_request_log()
        code, out, err = mexp(command, "churn-v2")
        assert code == 0, err
        assert calls(server) == [("GET", path(a, "churn-v2"), 200), ("PATCH", path(a, "churn-v2"), 200)]
        annotations = stored(server, a, "churn-v2")["metadata"]["annotations"]
        values.append(annotations[annotation])
        assert f"{a}/churn-v2 annotated {annotation}={values[-1]}:" in out
        assert annotations["argocd.argoproj.io/tracking-id"] == "ml:x"  # others untouched
    assert values[0] != values[1]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", v) for v in values)
    obj = stored(server, a, "churn-v2")
    assert obj["spec"] == SPEC and obj["status"] == fleet.progressing  # only the annotation moved


def test_status_shows_a_gate_the_operator_has_not_acted_on(
    server: ApiServer, fleet: Fleet, mexp: Run
) -> None:
    assert mexp("promote", "churn-v2")[0] == 0
    value = stored(server, fleet.a, "churn-v2")["metadata"]["annotations"]["modelrollout.io/promote"]
    assert field(mexp("status", "churn-v2")[1], "Gates") == f"promote={value} (pending)"


def test_promote_and_abort_refuse_a_finished_experiment_but_restart_does_not(
    server: ApiServer, fleet: Fleet, mexp: Run
) -> None:
    b = fleet.b
    for name, phase in (("fraud-v3", "RolledBack"), ("ranker-v2", "Succeeded")):
        for command in ("promote", "abort", "pause"):
            server.clear_request_log()
            code, out, err = mexp(command, name, "-n", b)
            assert (code, out) == (1, "")
            assert err.startswith(f'error: modelexperiment "{name}" in namespace "{b}" has already finished')
            assert f"(phase {phase})" in err and f"kubectl mexp restart {name} -n {b}" in err
            assert [c[0] for c in calls(server)] == ["GET"]  # nothing written
    code, _, err = mexp("restart", "fraud-v3", "-n", b)
    assert code == 0, err
    assert "modelrollout.io/restart" in stored(server, b, "fraud-v3")["metadata"]["annotations"]
    # A/B test awaiting its promote annotation: promote is what it waits for.
    assert mexp("promote", "recs-ab", "-n", b)[0] == 0


# ------------------------------------------------------------------------------------ pause/resume
def test_pause_and_resume_flip_spec_paused_with_one_patch_and_warn_about_gitops(
    server: ApiServer, fleet: Fleet, mexp: Run
) -> None:
    a = fleet.a
    for command, paused in (("pause", True), ("resume", False)):
        server.clear_request_log()
        code, out, err = mexp(command, "churn-v2")
        assert code == 0, err
        assert calls(server) == [("GET", path(a, "churn-v2"), 200), ("PATCH", path(a, "churn-v2"), 200)]
        assert out.strip() == f"modelexperiment {a}/churn-v2 {command}d (spec.paused={str(paused).lower()})"
        assert "GitOps" in err and "Git wins" in err
        obj = stored(server, a, "churn-v2")
        assert obj["spec"] == {**SPEC, "paused": paused}  # every other field as it was
        assert obj["status"] == fleet.progressing

    server.clear_request_log()
    code, out, _ = mexp("resume", "churn-v2")
    assert code == 0 and "already resumed" in out
    assert [c[0] for c in calls(server)] == ["GET"]

    assert mexp("pause", "churn-v2")[0] == 0
    assert field(mexp("status", "churn-v2")[1], "Paused").startswith("spec.paused is true")


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("command", ["get", "status", "promote", "abort", "restart", "pause", "resume"])
def test_a_missing_experiment_is_named_with_its_namespace(
    namespaces: tuple[str, str], mexp: Run, command: str
) -> None:
    code, out, err = mexp(command, "nope", "-n", namespaces[1])
    assert (code, out) == (1, "")
    assert err.strip() == f'error: modelexperiment "nope" not found in namespace "{namespaces[1]}"'


def test_usage_errors_exit_2(namespaces: tuple[str, str], mexp: Run) -> None:
    assert mexp("frobnicate")[0] == 2
    assert mexp("promote")[0] == 2  # no name
    code, _, err = mexp("get", "churn-v2", "-A")
    assert code == 2 and "a name cannot be combined with -A/--all-namespaces" in err
    assert mexp("status", "x", "--history", "-1")[0] == 2


def test_an_unreachable_server_or_a_missing_kubeconfig_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = ApiServer().start()
    kubeconfig = dead.write_kubeconfig(tmp_path / "kubeconfig")
    url = dead.url
    dead.stop()
    assert plugin.main(["get", "--kubeconfig", str(kubeconfig)]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot reach the Kubernetes API at {url}:")
    assert plugin.main(["get", "--kubeconfig", str(tmp_path / "absent")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: no kubeconfig at {tmp_path / 'absent'} (set --kubeconfig or $KUBECONFIG)"
    )


def test_context_selects_the_kubeconfig_context_and_its_namespace(
    fleet: Fleet, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    other = copy.deepcopy(config["contexts"][0])
    other["name"], other["context"]["namespace"] = "second", fleet.b
    config["contexts"].append(other)
    kubeconfig.write_text(yaml.safe_dump(config))

    assert plugin.main(["get", "--kubeconfig", str(kubeconfig), "--context", "second"]) == 0
    assert [r[0] for r in rows(capsys.readouterr().out)] == ["NAME", "fraud-v3", "ranker-v2", "recs-ab"]
    assert plugin.main(["get", "--kubeconfig", str(kubeconfig), "--context", "third"]) == 1
    assert "third" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the installed script
def test_the_console_script_runs_with_kubeconfig_from_the_environment(
    server: ApiServer, fleet: Fleet, kubeconfig: Path
) -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install the package (pip install -e .)"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)

    listed = script("get", "-A")
    assert listed.returncode == 0, listed.stderr
    assert {(r[0], r[1]) for r in rows(listed.stdout)} >= {(fleet.a, "churn-v2"), (fleet.b, "fraud-v3")}
    shown = script("status", "churn-v2")
    assert shown.returncode == 0 and field(shown.stdout, "Weights").endswith("candidate churn-v2 25%")
    promoted = script("promote", "churn-v2")
    assert promoted.returncode == 0, promoted.stderr
    assert "modelrollout.io/promote" in stored(server, fleet.a, "churn-v2")["metadata"]["annotations"]
    missing = script("abort", "nope")
    assert missing.returncode == 1 and f'not found in namespace "{fleet.a}"' in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.kubectl
def test_kubectl_finds_the_plugin_on_path(fleet: Fleet, kubeconfig: Path) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    env = {**os.environ, "PATH": f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    listed = subprocess.run(
        [KUBECTL, "mexp", "get", "-n", fleet.b, "--kubeconfig", str(kubeconfig)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [r[0] for r in rows(listed.stdout)] == ["NAME", "fraud-v3", "ranker-v2", "recs-ab"]


# ------------------------------------------------------------------------------ pure formatting
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119, "119s"), (120, "2m"), (192, "3m12s"), (42 * 60, "42m"), (5 * 3600 + 180, "5h3m"),
     (20 * 3600, "20h"), (3 * 86400 + 4 * 3600, "3d4h"), (120 * 86400, "120d"), (-5, "<invalid>")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: float, text: str) -> None:
    assert render.human_duration(seconds) == text


def test_values_carry_units_where_the_metric_has_one() -> None:
    assert render.show_value(0.0052, "rate") == "0.52%"
    assert render.show_value(0.042, "rate") == "4.2%"
    assert render.show_value(182.4, "ms") == "182ms"
    assert render.show_value(4.25, "ms") == "4.2ms"
    assert render.show_value(0.1437, "value") == "0.1437"
    assert render.show_value(None, "rate") == render.show_value(float("nan"), "ms") == "-"
    ratio_spec = {"spec": {"metrics": [{"name": "conversion", "ratio": {"success": "a", "total": "b"}}]}}
    assert render.metric_kind(ratio_spec, "conversion") == "rate"
    assert render.metric_kind({"spec": {}}, "latency-p99") == "ms"  # defaulted metrics: named by builtin


def test_a_pending_webhook_approval_is_shown() -> None:
    now = datetime.datetime(2026, 11, 23, 10, 5, 0, tzinfo=datetime.UTC)
    approval = {
        "type": "pre-promotion",
        "waitingSince": "2026-11-23T10:00:00Z",
        "attempts": 3,
        "lastAnswer": "HTTP 403: change freeze",
        "deadlineExceeded": False,
    }
    body = {"metadata": {"namespace": "ml", "name": "x"}, "status": {"phase": "Paused", "approval": approval}}
    assert field(render.status_report(body, now), "Approval") == (
        "waiting for the pre-promotion webhooks since 2026-11-23T10:00:00Z (5m ago), 3 not approved, "
        "last answer: HTTP 403: change freeze"
    )


def test_a_gate_value_never_repeats_the_current_one() -> None:
    moment = datetime.datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=datetime.UTC)
    first = render.gate_value(moment)
    assert first == "2026-11-23T10:00:00.123456Z"
    second = render.gate_value(moment, current=first)
    assert second != first and second.startswith(first)
