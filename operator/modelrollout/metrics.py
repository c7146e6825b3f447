"""The operator's own metrics on ``/metrics`` (prometheus-client): where each experiment is and why.

One registry per operator (not the global one), so tests can build several.
Series per experiment are removed when the experiment is deleted, so a
long-running operator does not accumulate dead label sets.  Variants are
labelled by role (``baseline``/``candidate``), not by workload name, so a
dashboard works for every experiment unchanged; with several candidates each
candidate's variant label is its workload.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelrollout.core.model import Action, Phase

EXPERIMENT = ("namespace", "name")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.phase = Gauge(
            "modelrollout_experiment_phase",
            "1 for the phase the experiment is in, 0 for the others.",
            [*EXPERIMENT, "phase"],
            registry=r,
        )
        self.step = Gauge(
            "modelrollout_experiment_step", "1-based step (0 before the first).", EXPERIMENT, registry=r
        )
        self.weight = Gauge(
            "modelrollout_experiment_candidate_weight",
            "Percent of traffic the candidate receives.",
            EXPERIMENT,
            registry=r,
        )
        self.value = Gauge(
            "modelrollout_metric_value",
            "A guardrail's value per variant in the last evaluation.",
            [*EXPERIMENT, "metric", "variant"],
            registry=r,
        )
        self.evidence = Gauge(
            "modelrollout_metric_evidence",
            "Evidence of harm (an e-value) of a sequentially tested guardrail.",
            [*EXPERIMENT, "metric"],
            registry=r,
        )
        self.bound = Gauge(
            "modelrollout_metric_evidence_bound",
            "The evidence at which the guardrail rolls back (M / alpha).",
            [*EXPERIMENT, "metric"],
            registry=r,
        )
        self.decisions = Counter(
            "modelrollout_decisions",
            "Decisions taken at evaluations and transitions, by outcome.",
            [*EXPERIMENT, "decision"],
            registry=r,
        )
        self.duration = Histogram(
            "modelrollout_reconcile_duration_seconds",
            "Time one tick of one experiment took (queries, API calls, webhooks).",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tick_lag = Histogram(
            "modelrollout_tick_lag_seconds",
            "How late a scheduled tick started (timer and worker-thread delays).",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
        )
        self.errors = Counter(
            "modelrollout_reconcile_errors", "Ticks that failed unexpectedly.", EXPERIMENT, registry=r
        )
        self.webhook_calls = Counter(
            "modelrollout_webhook_calls", "Webhook calls by type and result.", ["type", "result"], registry=r
        )
        self.notifications = Counter(
            "modelrollout_notifications", "Notifications by kind and result.", ["kind", "result"], registry=r
        )
        self._metric_names: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)

    def record(self, namespace: str, name: str, status: Mapping[str, Any], decided: bool) -> None:
        """Mirror a freshly written status; count its decision if this tick took one."""
        current = status.get("phase")
        for phase in Phase:
            self.phase.labels(namespace, name, phase.value).set(1 if phase.value == current else 0)
        self.step.labels(namespace, name).set(_number(status.get("step")) or 0)
        self.weight.labels(namespace, name).set(_number(status.get("candidateWeight")) or 0)
        decision = status.get("decision")
        if decided and decision in {action.value for action in Action}:
            self.decisions.labels(namespace, name, decision).inc()
        names: set[tuple[str, str]] = set()
        for entry in status.get("metrics") or []:
            metric = str(entry.get("name"))
            # Several candidates: one entry per metric and candidate, the candidate's workload as
            # its variant label (and in the evidence's metric label); one candidate: its role.
            workload = entry.get("variant")
            candidate = str(workload) if isinstance(workload, str) else "candidate"
            tested = metric if candidate == "candidate" else f"{metric}/{candidate}"
            names.add((tested, candidate))
            for variant, key in (("baseline", "baseline"), (candidate, "candidate")):
                value = _number(entry.get(key))
                if value is not None:
                    self.value.labels(namespace, name, metric, variant).set(value)
            for gauge, key in ((self.evidence, "evidence"), (self.bound, "bound")):
                value = _number(entry.get(key))
                if value is not None:
                    gauge.labels(namespace, name, tested).set(value)
        with self._lock:
            self._metric_names.setdefault((namespace, name), set()).update(names)

    def failed(self, namespace: str, name: str) -> None:
        self.errors.labels(namespace, name).inc()

    def forget(self, namespace: str, name: str) -> None:
        """The experiment is gone: drop its series."""
        with self._lock:
            metric_names = self._metric_names.pop((namespace, name), set())
        for phase in Phase:
            _remove(self.phase, namespace, name, phase.value)
        for gauge in (self.step, self.weight):
            _remove(gauge, namespace, name)
        for action in Action:
            _remove(self.decisions, namespace, name, action.value)
        _remove(self.errors, namespace, name)
        for tested, candidate in metric_names:
            metric = tested.split("/", 1)[0]
            for variant in ("baseline", candidate):
                _remove(self.value, namespace, name, metric, variant)
            _remove(self.evidence, namespace, name, tested)
            _remove(self.bound, namespace, name, tested)


def _remove(collector: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        collector.remove(*labels)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
