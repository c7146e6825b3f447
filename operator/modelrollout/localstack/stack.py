"""The whole loop on one machine: API emulator, mesh simulator, real Prometheus, the operator.

The demo and the integration tests use this one stack, so what the demo
shows is what the tests prove.  The operator runs as a real subprocess
(``python -m modelrollout run``) against a kubeconfig, exactly as it would
against a cluster -- which is also what lets a test SIGKILL it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes
import yaml

from modelrollout import GROUP, PLURAL, VERSION
from modelrollout.localstack import apiserver, mesh, prometheus, traffic

ISTIO_GROUP = "networking.istio.io"


class OperatorProcess:
    """``modelrollout run`` as a child process, its output in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - open while the process runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelrollout", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no goodbyes -- as an OOM kill or node loss would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class LocalStack:
    def __init__(
        self, workdir: Path | None = None, *, mesh_tick: float = 0.25, seed: int | None = None
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="modelrollout-stack-"))
        self._mesh_tick = mesh_tick
        self._seed = seed
        self._stack = contextlib.ExitStack()
        self.operators: list[OperatorProcess] = []

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        self.apiserver = self._stack.enter_context(apiserver.ApiServer())
        self.kubeconfig = self.apiserver.write_kubeconfig(self.workdir / "kubeconfig")
        self.client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=self.apiserver.url))
        self._stack.callback(self.client.close)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.mesh = mesh.MeshSimulator(
            mesh.fetch_from_kubernetes(self.custom), tick_seconds=self._mesh_tick, seed=self._seed
        )
        self._stack.enter_context(self.mesh.start())
        self.prometheus = prometheus.PrometheusServer(targets=[f"127.0.0.1:{self.mesh.port}"])
        self._stack.callback(self.prometheus.stop)
        self.prometheus.start()
        self.prometheus.wait_ready(timeout=30)
        self._stack.callback(self._stop_operators)
        return self

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    def start_operator(
        self,
        *extra: str,
        name: str = "operator",
        standalone: bool = True,
        kubeconfig: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        """``standalone=False`` leaves peering to ``extra`` (``--peering``): for several replicas."""
        args = [
            *(["--standalone"] if standalone else []),
            "--kubeconfig",
            str(kubeconfig or self.kubeconfig),
            "--prometheus-url",
            self.prometheus.url,
            *extra,
        ]
        operator = OperatorProcess(args, self.workdir / f"{name}.log", env=env)
        self.operators.append(operator)
        return operator

    def _stop_operators(self) -> None:
        for operator in self.operators:
            operator.stop()

    # ----------------------------------------------------------------------- objects

    def create_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        with contextlib.suppress(kubernetes.client.ApiException):  # already there
            self.core.create_namespace(body)

    def add_model_app(
        self,
        namespace: str,
        baseline: traffic.VariantProfile,
        candidate: traffic.VariantProfile,
        rps: float,
        timeout: float = 60,
        *,
        more: Mapping[str, traffic.VariantProfile] | None = None,
    ) -> None:
        """Serve service ``churn`` (churn-v1 on subset v1, churn-v2 on v2, and ``more`` candidates:
        subset -> profile, served by workload ``churn-<subset>``) and wait until Prometheus has the
        baseline's traffic, so the first evaluation finds data."""
        self.mesh.add_app(
            mesh.MeshApp(
                namespace=namespace,
                virtual_service="churn",
                host="churn",
                rps=rps,
                variants=_variants(baseline, candidate, more),
            )
        )
        self.prometheus.wait_for(
            f'sum(rate(istio_requests_total{{destination_workload="churn-v1",'
            f'destination_workload_namespace="{namespace}"}}[5s]))',
            lambda r: r.ok and (r.value or 0) > 0,
            timeout=timeout,
        )

    def add_ab_app(
        self,
        namespace: str,
        baseline_profile: traffic.VariantProfile,
        candidate_profile: traffic.VariantProfile,
        users: mesh.Users,
        rps: float,
        route_name: str = "main",
        *,
        create_routing: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
        more: Mapping[str, traffic.VariantProfile] | None = None,
    ) -> None:
        """Serve service ``churn`` (churn-v1 on subset v1, churn-v2 on v2) to a population of users.

        Each request comes from one of ``users`` and is routed on its own (cookies and
        cohort headers work as in Istio); the business counters of ``users.outcomes``
        are exported per variant and segment.  With ``create_routing`` the app's
        VirtualService (``ab_virtual_service(route_name)``: an A/B test needs a named
        http route) and DestinationRule are created first; existing ones make it fail.
        Returns once Prometheus has the baseline's business series.
        """
        if create_routing:
            self.apply(ab_virtual_service(route_name), namespace)
            self.apply(destination_rule(("v1", "v2", *(more or {}))), namespace)
        self.mesh.add_app(
            mesh.MeshApp(
                namespace=namespace,
                virtual_service="churn",
                host="churn",
                rps=rps,
                variants=_variants(baseline_profile, candidate_profile, more),
                headers=dict(headers or {}),
                users=users,
            )
        )
        self.prometheus.wait_for(
            f'sum(rate(model_requests_total{{destination_workload="churn-v1",'
            f'destination_workload_namespace="{namespace}"}}[5s]))',
            lambda r: r.ok and (r.value or 0) > 0,
            timeout=timeout,
        )

    def apply(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create a custom object (Istio or ModelExperiment) from a manifest dict."""
        group, version = obj["apiVersion"].split("/")
        namespace = namespace or obj["metadata"].get("namespace", "default")
        body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            group, version, namespace, _plural(obj["kind"]), body
        )
        return result

    def apply_file(self, path: Path, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self.apply(doc, namespace) for doc in yaml.safe_load_all(path.read_text()) if doc]

    def experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return body

    def virtual_service(self, namespace: str, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            ISTIO_GROUP, "v1", namespace, "virtualservices", name
        )
        return body

    def patch_experiment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, dict(patch))

    def delete_experiment(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def events(self, namespace: str, name: str | None = None) -> list[Any]:
        items = self.core.list_namespaced_event(namespace).items
        return [e for e in items if name is None or e.involved_object.name == name]

    def watch_status(
        self, namespace: str, name: str, timeout: float, poll: float = 0.5
    ) -> Iterator[dict[str, Any]]:
        """Each distinct status of an experiment until ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            body = self.experiment(namespace, name)
            status = (body or {}).get("status") or {}
            if status != last:
                last = status
                yield status
            time.sleep(poll)


def ab_virtual_service(route_name: str = "main") -> dict[str, Any]:
    """VirtualService ``churn`` before an A/B test: one named http route, everything on subset v1.

    The operator adds the candidate to ``route_name`` and puts its sticky routes
    before it.  Like ``examples/00-mesh/virtualservice.yaml`` without its health route.
    """
    return {
        "apiVersion": f"{ISTIO_GROUP}/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn"},
        "spec": {
            "hosts": ["churn"],
            "http": [
                {
                    "name": route_name,
                    "route": [{"destination": {"host": "churn", "subset": "v1"}, "weight": 100}],
                }
            ],
        },
    }


def _variants(
    baseline: traffic.VariantProfile,
    candidate: traffic.VariantProfile,
    more: Mapping[str, traffic.VariantProfile] | None,
) -> dict[str, tuple[str, traffic.VariantProfile]]:
    """Subset -> (workload, profile): churn-v1 on v1, churn-v2 on v2, ``churn-<subset>`` for ``more``."""
    variants = {"v1": ("churn-v1", baseline), "v2": ("churn-v2", candidate)}
    variants.update({subset: (f"churn-{subset}", profile) for subset, profile in (more or {}).items()})
    return variants


def destination_rule(subsets: Sequence[str] = ("v1", "v2")) -> dict[str, Any]:
    """DestinationRule ``churn``: the subsets (v1 and v2 by default) by the pods' version label
    (examples/00-mesh)."""
    return {
        "apiVersion": f"{ISTIO_GROUP}/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "churn"},
        "spec": {
            "host": "churn",
            "subsets": [{"name": v, "labels": {"version": v}} for v in subsets],
        },
    }


def _plural(kind: str) -> str:
    return {
        "ModelExperiment": PLURAL,
        "VirtualService": "virtualservices",
        "DestinationRule": "destinationrules",
    }[kind]
