"""The chart's RBAC is exactly what the operator uses: nothing it needs is missing, nothing it
grants goes unused.

For each RBAC mode (all namespaces or a list of them) and each replica mode (one standalone
replica, or kopf peering), the chart is rendered and the real operator runs with the very
arguments of the rendered Deployment, behind a proxy that enforces the rendered RBAC exactly as
the API server would (403 for anything not granted). It drives one experiment from apply to a
final phase and deletion, including a notification whose URL comes from a Secret. Then:

- no request was refused, and the rollout and the notification went through under the RBAC;
- every verb of every rule the chart grants was used by that run.

Only the two ports change: the chart's fixed 8080/8081 become free ports here. Discovery
(/api, /apis, /version) is not resource access; every authenticated client may read it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from modelrollout.localstack import prometheus, stack, traffic

from conftest import (
    CHART,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    ProxiedRequest,
    RbacProxy,
    Triple,
    container,
    dashboard,
    dashboard_queries,
    fill_variables,
    grants,
    of_kind,
    query_prometheus,
    render,
    rule_triples,
)

pytestmark = pytest.mark.integration

PROFILE = traffic.VariantProfile(error_rate=0.002, latency_median_ms=40, latency_sigma=0.3)
FINAL = ("Succeeded", "RolledBack", "Failed")
MODES = {
    # name: (watch only the experiment's namespace?, replicas)
    "namespaced": (True, 1),
    "namespaced-peering": (True, 2),
    "cluster-wide": (False, 1),
    "cluster-wide-peering": (False, 2),
}
_ids = itertools.count(1)


# ------------------------------------------------------------------------------------ helpers


class Receiver:
    """Notification and webhook endpoints on loopback that record what they are sent."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notifications(self) -> list[str]:
        return [str(body.get("kind")) for path, body in list(self.received) if path == "/notify"]

    def webhook_calls(self) -> int:
        return sum(1 for path, _ in list(self.received) if path == "/post-rollout")


def operator_args(objects: list[dict[str, Any]], liveness_port: int, metrics_port: int) -> list[str]:
    """The rendered container's arguments after `run`, with free ports for the fixed ones."""
    args = container(objects)["args"]
    assert container(objects)["command"] == ["modelrollout"] and args[0] == "run"
    swapped = {
        "--liveness=http://0.0.0.0:8081/healthz": f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
        "--metrics-port=8080": f"--metrics-port={metrics_port}",
    }
    assert set(swapped) <= set(args), args
    return [swapped.get(a, a) for a in args[1:]]


def experiment(namespace: str, receiver_url: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "03-demo" / "experiment.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["canary"] = {
        "steps": [50, 100],
        "interval": "2s",
        "minStepDuration": "2s",
        "minSamples": 20,
    }
    manifest["spec"].pop("prometheus", None)  # the chart's --prometheus-url is the one to use
    # Both read Secrets: the notification's URL, the webhook's bearer token.
    manifest["spec"]["notifications"] = [
        {"name": "chat", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "notify-url"}}}
    ]
    manifest["spec"]["webhooks"] = [
        {
            "name": "audit",
            "type": "post-rollout",
            "url": f"{receiver_url}/post-rollout",
            "tokenFrom": {"secretKeyRef": {"name": "hooks", "key": "token"}},
        }
    ]
    return manifest


def install_peering(local: stack.LocalStack, objects: list[dict[str, Any]]) -> None:
    """Apply the chart's crds/kopf-peering.yaml and its rendered peering object(s), as Helm would."""
    extensions = kubernetes.client.ApiextensionsV1Api(local.client)
    for crd in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()):
        if crd:
            with contextlib.suppress(kubernetes.client.ApiException):  # already there (an earlier run)
                extensions.create_custom_resource_definition(crd)
    for peering in [*of_kind(objects, "KopfPeering"), *of_kind(objects, "ClusterKopfPeering")]:
        namespace = peering["metadata"].get("namespace")
        if namespace:
            local.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
        else:
            local.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)


def wait(predicate: Any, timeout: float, what: str, log: Any = None, proxy: RbacProxy | None = None) -> Any:
    """Poll ``predicate`` until it holds; fail at once if the proxy refused the operator anything."""
    deadline = time.monotonic() + timeout
    while True:
        refused = [f"{r.method} {r.path}?{r.query}" for r in proxy.log() if not r.allowed] if proxy else []
        if refused:
            pytest.fail(f"{what}: the chart's RBAC refused the operator {refused}")
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\noperator log:\n{log()[-6000:]}" if log else ""
            pytest.fail(f"{what}: not within {timeout}s{detail}")
        time.sleep(0.2)


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            status: int = answer.status
            return status
    except OSError:
        return None


# ------------------------------------------------------------------------------------ one run

DASHBOARD_MODE = "namespaced"  # the run whose operator metrics the dashboard's queries are tried on


@dataclasses.dataclass
class Run:
    namespace: str
    objects: list[dict[str, Any]]
    requests: list[ProxiedRequest]
    final: dict[str, Any]
    weights_after: dict[str, int]
    notifications: list[str]
    webhook_calls: int
    healthz: int | None
    dashboard: dict[str, dict[str, Any]]  # PromQL -> Prometheus' answer, while the experiment existed

    def used(self) -> set[Triple]:
        return {r.access.triple for r in self.requests if r.access is not None}


def primary_weights(local: stack.LocalStack, namespace: str) -> dict[str, int]:
    vs = local.virtual_service(namespace, "churn")
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return {d["destination"]["subset"]: d.get("weight", 0) for d in route["route"]}


def drive(local: stack.LocalStack, workdir: Path, mode: str) -> Run:
    namespaced, replicas = MODES[mode]
    namespace = f"rbac-{next(_ids)}-{mode}"
    local.create_namespace(namespace)
    local.apply_file(ROOT / "examples" / "00-mesh" / "virtualservice.yaml", namespace)
    local.apply_file(ROOT / "examples" / "00-mesh" / "destinationrule.yaml", namespace)
    local.add_model_app(namespace, PROFILE, PROFILE, rps=300)

    values = {
        "watchNamespaces": [namespace] if namespaced else [],
        "replicas": replicas,
        "prometheus": {"address": local.prometheus.url},
    }
    objects = render(values)
    if replicas > 1:
        install_peering(local, objects)
    liveness_port, metrics_port = prometheus.free_port(), prometheus.free_port()
    args = operator_args(objects, liveness_port, metrics_port)
    rbac = grants(objects, (RELEASE_NAMESPACE, RELEASE))
    with Receiver() as receiver, RbacProxy(local.apiserver.url, rbac) as proxy:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hooks", "namespace": namespace},
            "data": {
                "notify-url": base64.b64encode(f"{receiver.url}/notify".encode()).decode(),
                "token": base64.b64encode(b"s3cret").decode(),
            },
        }
        local.core.create_namespaced_secret(namespace, secret)
        kubeconfig = proxy.write_kubeconfig(workdir / "kubeconfig")
        operator = stack.OperatorProcess([*args, "--kubeconfig", str(kubeconfig)], workdir / "operator.log")

        log = operator.log_text
        try:
            if mode == DASHBOARD_MODE:
                local.prometheus.add_target(f"127.0.0.1:{metrics_port}")
            local.apply(experiment(namespace, receiver.url))

            def final() -> dict[str, Any] | None:
                status = (local.experiment(namespace, "churn-v2") or {}).get("status") or {}
                return status if status.get("phase") in FINAL else None

            status = wait(final, 90, f"{mode}: the experiment reaching a final phase", log, proxy)
            wait(lambda: "Promoted" in receiver.notifications(), 15, f"{mode}: the notification", log, proxy)
            wait(receiver.webhook_calls, 15, f"{mode}: the post-rollout webhook", log, proxy)
            weights = primary_weights(local, namespace)
            answers = dashboard_answers(local, namespace) if mode == DASHBOARD_MODE else {}
            local.delete_experiment(namespace, "churn-v2")
            wait(lambda: local.experiment(namespace, "churn-v2") is None, 30, f"{mode}: deletion", log, proxy)
            health = healthz(liveness_port)
        finally:
            operator.stop()
    return Run(
        namespace,
        objects,
        proxy.log(),
        status,
        weights,
        receiver.notifications(),
        receiver.webhook_calls(),
        health,
        answers,
    )


# Series that a healthy rollout never creates: no tick failed.
NO_SERIES_WHEN_HEALTHY = ("modelrollout_reconcile_errors_total",)


def dashboard_answers(local: stack.LocalStack, namespace: str) -> dict[str, dict[str, Any]]:
    """Each dashboard query (variables filled in for this experiment), once it has data or has
    had 30 s to get some; the operator's series are removed when the experiment is deleted."""
    variables = {"namespace": namespace, "experiment": "churn-v2", "__rate_interval": "30s"}
    answers: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    for _, expr in dashboard_queries(dashboard()):
        filled = fill_variables(expr, variables)
        while True:
            answers[filled] = query_prometheus(local.prometheus.url, filled)
            expect_data = not any(name in expr for name in NO_SERIES_WHEN_HEALTHY)
            if (
                not expect_data
                or answers[filled].get("data", {}).get("result")
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
    return answers


_runs: dict[str, Run] = {}


@pytest.fixture
def run_mode(local: stack.LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One operator run per mode, shared by the tests that look at it."""

    def get(mode: str) -> Run:
        if mode not in _runs:
            _runs[mode] = drive(local, tmp_path_factory.mktemp(f"rbac-{mode}"), mode)
        return _runs[mode]

    yield get


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", list(MODES))
def test_operator_needs_every_granted_verb_and_nothing_more(run_mode: Any, mode: str) -> None:
    run = run_mode(mode)
    refused = [f"{r.method} {r.path}?{r.query}" for r in run.requests if not r.allowed]
    assert not refused, f"the chart's RBAC refused requests the operator made: {refused}"
    # The operator did its job under that RBAC: traffic moved, Secrets were read, hooks were called.
    assert run.final["phase"] == "Succeeded", run.final.get("message")
    assert run.weights_after == {"v1": 0, "v2": 100}
    assert run.notifications[0] == "Started" and run.notifications[-1] == "Promoted"
    assert run.webhook_calls == 1
    assert run.healthz == 200, "kopf's health endpoint (the probes' target) did not answer"

    granted: set[Triple] = set()
    for grant in grants(run.objects, (RELEASE_NAMESPACE, RELEASE)):
        for rule in grant.rules:
            granted |= rule_triples(rule)
    unused = granted - run.used()
    assert not unused, f"granted but never used: {sorted(unused)}; used: {sorted(run.used())}"


def test_each_mode_uses_exactly_these_permissions(run_mode: Any) -> None:
    """The observed usage, spelled out: what docs/helm.md's RBAC table says."""
    common = {
        ("modelrollout.io", "modelexperiments", "get"),
        ("modelrollout.io", "modelexperiments", "list"),
        ("modelrollout.io", "modelexperiments", "watch"),
        ("modelrollout.io", "modelexperiments", "patch"),
        ("modelrollout.io", "modelexperiments/status", "patch"),
        ("networking.istio.io", "virtualservices", "get"),
        ("networking.istio.io", "virtualservices", "patch"),
        ("", "events", "create"),
        ("", "secrets", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    namespaces = {("", "namespaces", "list"), ("", "namespaces", "watch")}
    peering = {("kopf.dev", "kopfpeerings", verb) for verb in ("list", "watch", "patch")}
    cluster_peering = {("kopf.dev", "clusterkopfpeerings", verb) for verb in ("list", "watch", "patch")}
    assert run_mode("namespaced").used() == common | namespaces
    assert run_mode("namespaced-peering").used() == common | namespaces | peering
    assert run_mode("cluster-wide").used() == common
    assert run_mode("cluster-wide-peering").used() == common | cluster_peering


def test_namespaced_operator_touches_namespaced_resources_only_in_its_namespace(run_mode: Any) -> None:
    run = run_mode("namespaced")
    elsewhere = [
        f"{r.method} {r.path}"
        for r in run.requests
        if r.access is not None
        and r.access.group not in ("", "apiextensions.k8s.io")
        and r.access.namespace != run.namespace
    ]
    assert not elsewhere


def test_dashboard_queries_find_the_operators_series(run_mode: Any) -> None:
    """Every dashboard query, run by real Prometheus on the real operator's metrics, answers."""
    run = run_mode(DASHBOARD_MODE)
    assert run.dashboard, "no dashboard query was tried"
    for expr, answer in run.dashboard.items():
        assert answer.get("status") == "success", (expr, answer)
        if any(name in expr for name in NO_SERIES_WHEN_HEALTHY):
            continue
        result = answer["data"]["result"]
        assert result, f"no series for {expr}"
        for series in result:  # a query filtered by experiment finds only that experiment's series
            if "namespace=~" in expr:
                assert series["metric"].get("namespace") == run.namespace, (expr, series)
