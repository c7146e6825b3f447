"""What the running operator is made of, built once at startup and kept in kopf's memo.

Clients are created here and nowhere else (never at import time), so tests
and the demo can point the same code at an emulator.  Each experiment gets
one asyncio task (a kopf daemon) whose sleep is the spec's own interval; the
blocking work of a tick runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from modelrollout import (
    DEFAULT_WORKERS,
    GROUP,
    kube,
    metrics,
    notify,
    planner,
    ports,
    prometheus_auth,
    reconciler,
    spec,
    webhooks,
)
from modelrollout.core import model
from modelrollout.routers import istio

# Seconds to wait after a tick failed for a reason nobody expected (API down...).
ERROR_BACKOFF = 5.0


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``modelrollout run`` was told on its command line."""

    kubeconfig: str | None = None
    prometheus_url: str | None = None
    istio_version: str = "v1"
    metrics_port: int | None = None  # serve /metrics here (None: not at all)
    report_configmaps: bool = False  # write A/B reports into ConfigMaps (needs RBAC on configmaps)
    workers: int = DEFAULT_WORKERS  # threads that run ticks (each mostly waits on the API or Prometheus)
    # Credentials (file paths) for the default Prometheus (prometheus_url) only.
    prometheus_credentials: prometheus_auth.OperatorCredentials = dataclasses.field(
        default_factory=prometheus_auth.OperatorCredentials
    )


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Our own domain for everything kopf stores on objects; quiet kopf's own Events."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our Events say what happened; kopf's add noise


class Runtime:
    def __init__(self, options: Options, configuration: kubernetes.client.Configuration) -> None:
        self.options = options
        self.configuration = configuration
        # One pooled connection per worker: a full pool drops connections and opens new ones.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, options.workers)
        client = kube.api_client(configuration)
        self._client = client
        secrets = kube.KubeSecrets(client)
        self._providers = prometheus_auth.Providers(
            secrets, options.prometheus_credentials, options.prometheus_url
        )
        self._wakeups: dict[str, asyncio.Event] = {}
        self._seen: dict[str, tuple[Any, ...]] = {}
        self.metrics = metrics.OperatorMetrics()
        caller = webhooks.Caller(secrets)
        self.reconciler = reconciler.Reconciler(
            experiments=kube.ExperimentStore(client),
            router=istio.IstioRouter(kubernetes.client.CustomObjectsApi(client), options.istio_version),
            providers=self.provider_for,
            events=lambda body: kube.KubeEvents(client, body),
            caller=caller,
            notifier=notify.Notifier(
                caller, counted=lambda kind, result: self.metrics.notifications.labels(kind, result).inc()
            ),
            metrics=self.metrics,
            reports=kube.KubeReports(client) if options.report_configmaps else None,
            plans=planner.Planner(background=True),  # a Monte Carlo: never inside a tick
        )

    def start(self) -> None:
        """In the operator's event loop, before any experiment is handled."""
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="tick")
        )
        # Everything alive now (imported modules: kubernetes, kopf, scipy...) lives as long as the
        # process: leave it out of the collector's full passes, which would otherwise walk it all
        # again and again while every tick waits.
        gc.collect()
        gc.freeze()
        self.serve_metrics()

    def serve_metrics(self) -> None:
        if self.options.metrics_port is not None:
            self.metrics.serve(self.options.metrics_port)

    def connection_info(self) -> kopf.ConnectionInfo:
        """kopf logs in with exactly what the Kubernetes client uses.

        Resolved afresh at every login: kopf logs in again when a token expires
        (exec plugins on EKS/GKE), and a stale snapshot would fail forever.
        """
        cfg = kube.load_configuration(self.options.kubeconfig)
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        scheme = None
        if token and " " in token:
            scheme, token = token.split(" ", 1)
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme or ("Bearer" if token else None),
            token=token,
            username=cfg.username or None,
            password=cfg.password or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )

    def provider_for(self, settings: spec.PrometheusSpec, namespace: str) -> ports.MetricProvider:
        """The provider for an experiment in ``namespace``, with the credentials its spec (or we) name."""
        address = settings.address or self.options.prometheus_url
        if not address:
            raise spec.SpecError(
                [
                    spec.SpecProblem(
                        path="spec.prometheus.address",
                        message="is required: the operator has no default "
                        "(--prometheus-url / MODELROLLOUT_PROMETHEUS_URL)",
                    )
                ]
            )
        return self._providers.provider(address, settings, namespace)

    # ----------------------------------------------------------------------- daemons

    async def run_experiment(self, namespace: str, name: str, uid: str, logger: Any) -> None:
        wake = self._wakeups.setdefault(uid, asyncio.Event())
        due: float | None = None  # when the tick was meant to run (monotonic), if it was scheduled
        try:
            while True:
                wake.clear()
                try:
                    delay = await asyncio.to_thread(self._tick, namespace, name, due)
                except Exception as e:  # any failure: log, back off, try again
                    logger.exception(f"tick failed: {e}")
                    self.metrics.failed(namespace, name)
                    delay = ERROR_BACKOFF
                if delay is None:
                    return  # deleted: the finalizer takes over
                delay = max(delay, 0.05)
                due = time.monotonic() + delay
                try:
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                    due = None  # woken early by a change: not late for anything
                except TimeoutError:
                    pass
        finally:
            self._wakeups.pop(uid, None)
            self._seen.pop(uid, None)

    def _tick(self, namespace: str, name: str, due: float | None) -> float | None:
        if due is not None:  # how late the tick starts: sleeping, waiting for a worker thread
            self.metrics.tick_lag.observe(max(time.monotonic() - due, 0.0))
        return self.reconciler.tick(namespace, name)

    def notice(self, body: Mapping[str, Any]) -> None:
        """A watch event: wake the experiment's daemon if something a user controls changed."""
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        annotations = meta.get("annotations") or {}
        controls = (
            meta.get("generation"),
            tuple(annotations.get(gate.value) for gate in model.Gate),
            meta.get("deletionTimestamp"),
        )
        if self._seen.get(uid) != controls:
            self._seen[uid] = controls
            wake = self._wakeups.get(uid)
            if wake is not None:
                wake.set()
