"""One tick of one experiment: observe, decide (the pure core), act, record.

Order matters for safety.  The new status (the intent) is written *before*
the routes change: if the operator dies in between, the restarted one reads
the intent and finishes moving traffic; written the other way round, a
crash after a rollback could put traffic back on a bad candidate.  Weights
are always read back from the routing object, never trusted from memory.

Ticks and the deletion finalizer of one experiment never overlap (a lock per
experiment), so a tick still running in a worker thread cannot undo what the
finalizer restored.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import logging
import math
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import modelrollout
from modelrollout import (
    durations,
    measure,
    metrics,
    notify,
    planner,
    ports,
    spec,
    spec_hooks,
    status,
    webhooks,
)
from modelrollout.core import approvals, arms, canary, guardrails, model, shadow
from modelrollout.providers import telemetry

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


class Reports(Protocol):
    def write(self, body: Mapping[str, Any], name: str, key: str, text: str) -> None: ...


REPORT_KEY = "report.md"


class Experiments(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class Reconciler:
    experiments: Experiments
    router: ports.TrafficRouter
    # (spec.prometheus, the experiment's namespace: where its credentials' Secrets are) -> provider
    providers: Callable[[spec.PrometheusSpec, str], ports.MetricProvider]
    events: Callable[[Mapping[str, Any]], ports.EventSink]
    clock: Clock = utcnow
    analyses: Sequence[guardrails.Analysis] = canary.DEFAULT_ANALYSES
    # Webhook gates, post-rollout webhooks and notifications; without a caller no gate ever opens.
    caller: webhooks.Caller | None = None
    notifier: notify.Notifier | None = None
    metrics: metrics.OperatorMetrics | None = None
    # Where an A/B test's report goes once it has an outcome (a ConfigMap); None: not written.
    reports: Reports | None = None
    # What a new experiment's plan can detect (status.plan); the operator's computes it off the tick.
    plans: planner.Planner = dataclasses.field(default_factory=planner.Planner)
    _locks: dict[tuple[str, str], threading.Lock] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(threading.Lock)
    )
    # One batching cache per provider: experiments whose windows end together share answers.
    # Weak keys: a provider replaced (rotated credentials) takes its cache with it.
    _telemetries: weakref.WeakKeyDictionary[ports.MetricProvider, telemetry.Telemetry] = dataclasses.field(
        default_factory=weakref.WeakKeyDictionary
    )
    _telemetry_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def tick(self, namespace: str, name: str) -> float | None:
        """Run one tick; return seconds until the next, or None when the experiment is gone."""
        started = time.perf_counter()
        with self._locks[namespace, name]:
            body = self.experiments.get(namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                return None
            decision, experiment, routes, plan = self._decide(body)
            self._act(body, decision, experiment, routes, plan)
        if self.metrics is not None:
            self.metrics.duration.observe(time.perf_counter() - started)
        delay = decision.requeue_after.total_seconds()
        if experiment is None:
            return delay
        return spread(experiment, decision.state, namespace, name, self.clock(), delay)

    def finalize(self, body: Mapping[str, Any]) -> str:
        """On deletion: give the baseline its traffic back unless the experiment succeeded."""
        meta = body.get("metadata", {})
        with self._locks[meta["namespace"], meta["name"]]:
            outcome = self._restore_on_delete(body)
            if outcome.startswith("baseline restored"):
                self._sink(body).emit("Normal", "TrafficRestored", f"experiment deleted: {outcome}")
        if self.metrics is not None:
            self.metrics.forget(meta["namespace"], meta["name"])
        return outcome

    def _restore_on_delete(self, body: Mapping[str, Any]) -> str:
        state = status.parse_state(body.get("status"))
        if state.phase is model.Phase.SUCCEEDED:
            return "succeeded: traffic left on the candidate"
        try:
            experiment = spec.parse_spec(body.get("spec"))
        except spec.SpecError:
            # An invalid spec names no routes we could trust; before any step nothing moved,
            # mid-rollout the traffic stays where it was held.
            return "invalid spec: cannot tell which routes to restore; traffic left as it is"
        target = route_target(experiment, body, model.State())  # deleted: no mirror either
        self.router.finalize(target)  # the routes as they were before the experiment
        try:
            split = self.router.get_routes(target)
        except (ports.VirtualServiceNotFound, ports.RouteNotFound):
            return "routing object or routes gone: nothing to restore"
        weights = split.weights()
        if weights is None or canary.candidate_weight(experiment, weights) != 0:
            # No saved original (annotation removed?): the contract is baseline 100.
            self.router.set_routes(target, canary.split(experiment, 0))
        return "baseline restored to 100%"

    # ----------------------------------------------------------------------- steps

    def _decide(
        self, body: Mapping[str, Any]
    ) -> tuple[model.Decision, spec.ExperimentSpec | None, ports.TrafficSplit | None, str | None]:
        """The decision, the parsed spec (None if invalid), the split the routes hold, and
        -- at the experiment's first evaluation -- what its plan can detect."""
        meta = body.get("metadata", {})
        state = status.parse_state(body.get("status"))
        annotations = meta.get("annotations") or {}
        generation = meta.get("generation", 1)
        try:
            experiment = spec.parse_spec(body.get("spec"))
            self.providers(experiment.prometheus, meta["namespace"])  # no Prometheus: a spec problem
        except spec.SpecError as e:
            obs = model.Observation(None, annotations, generation)
            return canary.reject_spec(state, obs, str(e)), None, None, None

        target = route_target(experiment, body, state)
        try:
            split = self.router.get_routes(target)
        except (ports.VirtualServiceNotFound, ports.RouteNotFound) as e:
            obs = model.Observation(None, annotations, generation)
            return canary.blocked(experiment, state, obs, e.reason, str(e)), experiment, None, None

        now = self.clock()
        metrics: tuple[model.MetricSample, ...] | None = None
        requests: dict[str, ports.QueryResult] | None = None
        plan: str | None = None
        ends = on_grid(now, experiment.interval)  # the latest time a window may end
        if canary.evaluation_due(experiment, state, ends):
            window, now = evaluation_window(state, experiment.interval, ends)
            provider = self.providers(experiment.prometheus, meta["namespace"])
            # Candidates dropped from the race are no longer measured (no traffic, so no data).
            skip = arms.dropped(experiment, state)
            name, namespace, istio = meta["name"], meta["namespace"], self._telemetry(provider)
            metrics, requests = measure.measure(
                experiment, name, namespace, provider, window, now, istio, skip=skip
            )
            assigned = measure.assignments(experiment, name, namespace, provider, window, now, skip=skip)
            has_steps = not (experiment.is_ab_test or experiment.is_bandit)  # a plan is the steps'
            if not (body.get("status") or {}).get("plan") and has_steps:
                key = (meta["namespace"], meta["name"])
                # Built only by the first question: the plan is of the first evaluation's traffic.
                plan = self.plans.summary(
                    key, functools.partial(planner.inputs, experiment, metrics, requests, window)
                )
        else:
            assigned = None
        answers = self._ask_webhooks(experiment, state, body)
        obs = model.Observation(
            split.weights(), annotations, generation, metrics, requests, answers, assignments=assigned
        )
        return canary.decide(experiment, state, obs, now, self.analyses), experiment, split, plan

    def _telemetry(self, provider: ports.MetricProvider) -> telemetry.Telemetry:
        with self._telemetry_lock:
            kept = self._telemetries.get(provider)
            if kept is None:
                kept = self._telemetries[provider] = telemetry.Telemetry(provider)
            return kept

    def _ask_webhooks(
        self, experiment: spec.ExperimentSpec, state: model.State, body: Mapping[str, Any]
    ) -> tuple[model.WebhookOutcome, ...] | None:
        hooks = approvals.due(experiment, state)
        if not hooks or self.caller is None:
            return None
        answers = self.caller.ask(hooks, body, body.get("status") or {})
        if self.metrics is not None:
            gate = state.approval.type if state.approval is not None else ""
            for answer in answers:
                self.metrics.webhook_calls.labels(gate, _result(answer)).inc()
        return answers

    def _act(
        self,
        body: Mapping[str, Any],
        decision: model.Decision,
        experiment: spec.ExperimentSpec | None,
        routes: ports.TrafficSplit | None,
        plan: str | None = None,
    ) -> None:
        meta = body.get("metadata", {})
        namespace, name = meta["namespace"], meta["name"]
        previous = body.get("status") or {}
        candidates = experiment.workloads if experiment is not None else ()
        new_status = status.render(decision, previous, self.clock(), candidates)
        restarted = any(event.reason == "Restarted" for event in decision.events)
        if plan or (previous.get("plan") and not restarted):
            new_status["plan"] = plan or previous["plan"]
        if experiment is not None:  # for `kubectl get -o wide`, whichever strategy sets it
            new_status["interval"] = durations.format_duration(experiment.interval)
        report = self._report_due(experiment, previous, new_status)
        if report:
            new_status["report"] = {"configMap": f"{name}-report", "key": REPORT_KEY}
        if new_status != previous:
            self.experiments.patch_status(namespace, name, _with_removals(previous, new_status))
        if report:
            self._write_report(body, new_status)

        sink = self._sink(body)
        if experiment is not None:
            target = route_target(experiment, body, decision.state)
            try:
                self._route(target, decision, routes)
            except (ports.VirtualServiceNotFound, ports.RouteNotFound) as e:
                # Gone between our read and write: the next tick records it as blocked.
                logger.warning("%s/%s: %s", namespace, name, e)
        for event in decision.events:
            sink.emit(event.type, event.reason, event.message)
        self._tell(body, decision, experiment, previous, new_status, sink)

    def _sink(self, body: Mapping[str, Any]) -> ports.EventSink:
        meta = body.get("metadata", {})
        return LoggedSink(self.events(body), meta.get("namespace", ""), meta.get("name", ""))

    def _report_due(
        self, experiment: spec.ExperimentSpec | None, previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> bool:
        """An A/B test's or a bandit's report is (re)written when its outcome or phase changes once it
        has an outcome."""
        if self.reports is None or experiment is None or not new.get("outcome"):
            return False
        if not (experiment.is_ab_test or experiment.is_bandit):
            return False
        return (previous.get("outcome"), previous.get("phase")) != (new.get("outcome"), new.get("phase"))

    def _write_report(self, body: Mapping[str, Any], new_status: Mapping[str, Any]) -> None:
        assert self.reports is not None
        from modelrollout import report  # needed only once an A/B test or a bandit has an outcome

        meta = body.get("metadata", {})
        try:
            text = report.markdown_summary({**body, "status": dict(new_status)})
            self.reports.write(body, f"{meta['name']}-report", REPORT_KEY, text)
        except Exception as e:  # a report is a courtesy: it never stops the experiment (the Event is logged)
            self._sink(body).emit("Warning", "ReportFailed", f"could not write the report ConfigMap: {e}")

    def _tell(
        self,
        body: Mapping[str, Any],
        decision: model.Decision,
        experiment: spec.ExperimentSpec | None,
        previous: Mapping[str, Any],
        new_status: Mapping[str, Any],
        sink: ports.EventSink,
    ) -> None:
        """After the fact: operator metrics, notifications, post-rollout webhooks (none can block a tick)."""
        meta = body.get("metadata", {})
        if self.metrics is not None:
            decided = bool(decision.events or decision.assessments)
            self.metrics.record(meta["namespace"], meta["name"], new_status, decided)
        before = status.parse_state(previous).phase
        found = notify.kinds(before, decision)
        if self.notifier is not None and experiment is not None and found:
            self.notifier.send(experiment.notifications, found, body, new_status, sink)
        finished = decision.state.phase.is_final and not before.is_final
        if finished and experiment is not None and self.notifier is not None and self.caller is not None:
            hooks = experiment.webhooks_of(spec_hooks.WebhookType.POST_ROLLOUT)
            if hooks:
                self.notifier.submit(self._post_rollout, hooks, body, new_status, sink)

    def _post_rollout(
        self,
        hooks: Sequence[spec_hooks.WebhookSpec],
        body: Mapping[str, Any],
        new_status: Mapping[str, Any],
        sink: ports.EventSink,
    ) -> None:
        assert self.caller is not None
        for answer in self.caller.ask(hooks, body, new_status):
            if self.metrics is not None:
                self.metrics.webhook_calls.labels("post-rollout", _result(answer)).inc()
            if answer.approved:
                sink.emit("Normal", "WebhookCalled", f"post-rollout webhook {answer.name}: {answer.detail}")
            else:
                sink.emit("Warning", "WebhookFailed", f"post-rollout webhook {answer.name}: {answer.detail}")

    def _route(
        self, target: ports.RouteTarget, decision: model.Decision, routes: ports.TrafficSplit | None
    ) -> None:
        """Write the routes when the split or the shadow's mirror they were read with differs."""
        if decision.restore_routes:
            self.router.finalize(target)
        if decision.weights is None:
            return
        held = routes.weights() if routes is not None else None
        mirror = routes.mirror if routes is not None else None
        if held is None or held != dict(decision.weights) or mirror != target.mirror_percent:
            self.router.set_routes(target, decision.weights)


# Evaluation windows end on a grid shared by every experiment with the same interval: whole
# multiples of ``window_grid(interval)`` seconds since the epoch.  Experiments whose windows end
# together share one batched Prometheus answer per query (providers.telemetry): at 1000
# experiments every 10 s, one answer per 10 s instead of one per second.  Their ticks are spread
# over the grid's step by a fixed offset per experiment (``spread``), so that they share the
# answers without all running at once.
GRID_MAX_SECONDS = 10


def window_grid(interval: datetime.timedelta) -> int:
    """The grid's step in seconds: the largest divisor of the interval up to 10 s (10 s for
    10 s, 1 m or 5 m; 5 s for 15 s; 1 s for 13 s), so that windows of one interval tile it."""
    seconds = int(interval.total_seconds())
    if seconds <= 1:
        return 1
    return max(d for d in range(1, min(seconds, GRID_MAX_SECONDS) + 1) if seconds % d == 0)


def on_grid(now: datetime.datetime, interval: datetime.timedelta) -> datetime.datetime:
    """The last grid point at or before ``now``."""
    step = window_grid(interval)
    seconds = math.floor(now.timestamp())
    return datetime.datetime.fromtimestamp(seconds - seconds % step, datetime.UTC)


def offset(namespace: str, name: str, interval: datetime.timedelta) -> float:
    """An experiment's fixed place within the grid's step, in seconds (5 % to 85 % of it)."""
    share = zlib.crc32(f"{namespace}/{name}".encode()) % 1000 / 1000
    return window_grid(interval) * (0.05 + 0.8 * share)


def spread(
    experiment: spec.ExperimentSpec,
    state: model.State,
    namespace: str,
    name: str,
    now: datetime.datetime,
    delay: float,
) -> float:
    """``delay``, or -- when it aims at the next evaluation -- the delay until that
    evaluation's grid point plus the experiment's offset.  Shorter delays (polling a gate,
    finishing a move) are kept as they are."""
    last = state.last_evaluated_at or state.step_started_at
    if state.phase is not model.Phase.PROGRESSING or last is None or delay <= 0:
        return delay
    step = window_grid(experiment.interval)
    earliest = (last + experiment.interval * canary.DUE_TOLERANCE).timestamp()
    due = math.ceil(earliest / step) * step  # the first grid point an evaluation may end at
    if now.timestamp() + delay < due - 0.001:
        return delay
    return max(delay, due + offset(namespace, name, experiment.interval) - now.timestamp())


def evaluation_window(
    state: model.State, interval: datetime.timedelta, now: datetime.datetime
) -> tuple[datetime.timedelta, datetime.datetime]:
    """The window to measure and the time it ends: whole seconds since the last evaluation
    (``now`` is a grid point, see ``on_grid``).

    Windows tile without overlap -- a sequential test must never count the same
    requests twice (a tick may come early or late) -- and a gap, e.g. while the
    operator was down, is measured in full rather than lost.
    """
    last = state.last_evaluated_at or state.step_started_at
    if last is None or last > now:
        return interval, now
    seconds = max(int((now - last).total_seconds()), 1)
    window = datetime.timedelta(seconds=seconds)
    return window, last + window


def route_target(
    experiment: spec.ExperimentSpec, body: Mapping[str, Any], state: model.State
) -> ports.RouteTarget:
    """What the router works on; ``state`` says whether the shadow's mirror is on."""
    meta = body.get("metadata", {})
    vs = experiment.virtual_service
    return ports.RouteTarget(
        experiment=meta["name"],
        namespace=experiment.virtual_service_namespace(meta["namespace"]),
        name=vs.name,
        routes=tuple(vs.routes) if vs.routes is not None else None,
        variants=tuple(
            ports.Destination(workload=v.workload, host=v.host, subset=v.subset)
            for v in measure.variants(experiment)
        ),
        sticky=sticky_routing(experiment, meta["name"]),
        mirror_percent=shadow.mirror_percent(experiment, state),
    )


def sticky_routing(experiment: spec.ExperimentSpec, name: str) -> ports.Stickiness | None:
    """An A/B test's cookie affinity and cohort, as the router writes them; None for other strategies."""
    if not experiment.is_ab_test:
        return None
    ab = experiment.ab
    max_age = ab.stickiness.max_age if ab.stickiness.max_age is not None else ab.max_duration
    return ports.Stickiness(
        cookie=ab.stickiness.cookie or f"mexp-{name}",
        max_age_seconds=max(int(max_age.total_seconds()), 1),
        cohort=tuple(ab.match or ()),
    )


def _result(answer: model.WebhookOutcome) -> str:
    return "approved" if answer.approved else "refused"


def _with_removals(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that also deletes status keys the new status no longer has."""
    patch: dict[str, Any] = dict(new)
    for key in previous:
        if key not in new:
            patch[key] = None
    return patch


class LoggedSink:
    """An ``EventSink`` that also logs each Event about the experiment: the operator's log tells the
    story ``kubectl describe`` does, one line per Event, Warnings as warnings.  The records carry
    kopf's object reference, so its formatters name the experiment (``[ns/name]``, or a JSON field)."""

    def __init__(self, sink: ports.EventSink, namespace: str, name: str) -> None:
        self._sink = sink
        api = f"{modelrollout.GROUP}/{modelrollout.VERSION}"
        self._ref = {"apiVersion": api, "kind": modelrollout.KIND, "namespace": namespace, "name": name}

    def emit(self, type: ports.EventType, reason: str, message: str) -> None:
        level = logging.WARNING if type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", reason, message, extra={"k8s_ref": self._ref})
        self._sink.emit(type, reason, message)
