"""The reconciler with in-memory adapters: real core, real routing rules, scripted metrics."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools

import pytest

from modelrollout import planner, ports, reconciler, spec
from modelrollout.core import model
from modelrollout.providers.scripted import ScriptedProvider
from modelrollout.routers.memory import InMemoryRouter

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
NS = "ml"


def virtual_service() -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "churn", "namespace": NS},
        "spec": {
            "hosts": ["churn"],
            "http": [
                {
                    "name": "health",
                    "match": [{"uri": {"prefix": "/healthz"}}],
                    "route": [{"destination": {"host": "churn", "subset": "v1"}}],
                },
                {
                    "name": "primary",
                    "route": [{"destination": {"host": "churn", "subset": "v1"}}],
                    "timeout": "5s",
                },
            ],
        },
    }


def experiment(**spec_changes) -> dict:
    spec = {
        "virtualService": {"name": "churn", "routes": ["primary"]},
        "baseline": {"subset": "v1", "workload": "churn-v1"},
        "candidate": {"subset": "v2", "workload": "churn-v2"},
        "prometheus": {"address": "http://prometheus.test:9090"},
        "canary": {"interval": "10s", "minSamples": 50},
        "metrics": [{"name": "error-rate", "builtin": "error-rate", "max": 0.05}],
    }
    spec.update(spec_changes)
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "churn-v2", "namespace": NS, "uid": "u-1", "generation": 1, "annotations": {}},
        "spec": spec,
    }


class Store:
    """The experiments' API as the reconciler uses it, holding one object."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.status_writes = 0

    def get(self, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.body) if self.body is not None else None

    def patch_status(self, namespace: str, name: str, status) -> None:
        self.status_writes += 1
        merged = {**self.body.get("status", {}), **status}
        self.body["status"] = {k: v for k, v in merged.items() if v is not None}


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, type, reason, message) -> None:
        self.seen.append((type, reason, message))


def metrics(error_rates: dict[str, float], weights, per_interval: float = 2000.0):
    """A Prometheus whose traffic follows the routes' weights, as the mesh makes it.

    It answers the batched Istio telemetry the operator asks (one query for every workload,
    ``sum by (destination_workload, destination_workload_namespace)``) with one series per
    workload, as Prometheus would.
    """

    def answer(promql: str) -> ports.SeriesResult:
        if "istio_requests_total" not in promql or "sum by (destination_workload" not in promql:
            return ports.SeriesResult(ports.QueryOutcome.EMPTY, detail="not scripted")
        series = []
        for workload, rate in error_rates.items():
            requests = per_interval * weights().get(workload.replace("churn-", ""), 0) / 100
            value = requests * rate if '"5.."' in promql else requests
            labels = {"destination_workload": workload, "destination_workload_namespace": NS}
            series.append((labels, value))
        return ports.SeriesResult(ports.QueryOutcome.OK, tuple(series))

    return answer


class Harness:
    def __init__(self, body: dict, error_rates: dict[str, float] | None = None) -> None:
        self.now = T0
        self.store = Store(body)
        self.router = InMemoryRouter([virtual_service()])
        self.provider = ScriptedProvider(
            {}, series=metrics(error_rates or {"churn-v1": 0.01, "churn-v2": 0.01}, self.primary_weights)
        )
        self.events = Events()
        self.reconciler = reconciler.Reconciler(
            experiments=self.store,
            router=self.router,
            providers=lambda settings, namespace: self.provider,
            events=lambda body: self.events,
            clock=lambda: self.now,
        )

    def tick(self) -> float | None:
        delay = self.reconciler.tick(NS, "churn-v2")
        self.now += datetime.timedelta(seconds=delay or 10)
        return delay

    @property
    def status(self) -> dict:
        return self.store.body.get("status", {})

    def primary_weights(self) -> dict[str, int]:
        route = self.router.get(NS, "churn")["spec"]["http"][1]["route"]
        return {d["destination"]["subset"]: d.get("weight", 100) for d in route}


def test_good_candidate_is_promoted_step_by_step():
    h = Harness(experiment())
    seen = []
    for _ in range(10):
        h.tick()
        seen.append((h.status["step"], h.primary_weights().get("v2", 0)))
        if h.status["phase"] == "Succeeded":
            break
    assert seen == [(1, 5), (2, 25), (3, 50), (4, 100)]
    assert h.status["decision"] == "Promote"
    conditions = {c["type"]: c["status"] for c in h.status["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["Progressing"] == "False"
    assert [e[1] for e in h.events.seen] == ["Started", "StepAdvanced", "StepAdvanced", "Promoted"]
    # The other http route never changed.
    assert h.router.get(NS, "churn")["spec"]["http"][0] == virtual_service()["spec"]["http"][0]
    assert [h["step"] for h in h.status["history"]] == [1, 2, 3, 4]


def test_bad_candidate_is_rolled_back_with_the_reason_in_status():
    h = Harness(experiment(), {"churn-v1": 0.01, "churn-v2": 0.2})
    h.tick()
    h.tick()
    assert h.status["phase"] == "RolledBack"
    assert h.primary_weights() == {"v1": 100, "v2": 0}
    assert "error-rate 20.0% > max 5.0%" in h.status["message"]
    assert h.status["metrics"][0]["candidate"] == 0.2
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in h.events.seen]


def test_invalid_spec_names_the_field_and_touches_no_traffic():
    h = Harness(experiment(canary={"steps": [5, 50, 25]}))
    h.tick()
    assert h.status["phase"] == "Failed"
    ready = next(c for c in h.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.canary.steps[2]" in ready["message"] and "(got 25)" in ready["message"]
    assert h.events.seen[0][:2] == ("Warning", "InvalidSpec")
    assert h.router.writes == []
    assert h.provider.queries == []


def test_missing_prometheus_address_is_a_spec_problem():
    body = experiment()
    del body["spec"]["prometheus"]
    h = Harness(body)

    def no_default(settings: spec.PrometheusSpec, namespace: str) -> ports.MetricProvider:
        assert settings.address is None and namespace == NS
        raise spec.SpecError([spec.SpecProblem(path="spec.prometheus.address", message="is required")])

    h.reconciler.providers = no_default
    h.tick()
    assert h.status["phase"] == "Failed"
    assert "spec.prometheus.address: is required" in h.status["message"]
    assert h.router.writes == []


def test_status_is_written_before_the_routes_move():
    h = Harness(experiment())
    h.router.fail_next(ports.RouterError("api server unavailable"))  # the read of the first tick
    with pytest.raises(ports.RouterError):
        h.tick()
    assert h.status == {}
    h.tick()
    assert h.status["step"] == 1 and h.primary_weights() == {"v1": 95, "v2": 5}
    # The write of the next step fails after the status recorded the intent ...
    original = h.router.set_routes

    def failing(target, weights):
        raise ports.RouterError("boom")

    h.router.set_routes = failing
    with pytest.raises(ports.RouterError):
        h.tick()
    assert h.status["step"] == 2
    assert h.primary_weights() == {"v1": 95, "v2": 5}
    # ... and the next tick finishes the move without repeating or skipping the step.
    h.router.set_routes = original
    h.tick()
    assert h.status["step"] == 2
    assert h.primary_weights() == {"v1": 75, "v2": 25}


def test_missing_virtual_service_waits_then_starts_when_it_appears():
    h = Harness(experiment())
    h.router.delete(NS, "churn")
    h.tick()
    assert h.status["phase"] == "Pending"
    assert h.status["reason"] == "VirtualServiceNotFound"
    h.router.put(virtual_service())
    h.tick()
    assert h.status["phase"] == "Progressing"
    assert h.primary_weights() == {"v1": 95, "v2": 5}


def test_deletion_restores_the_original_routes_unless_succeeded():
    h = Harness(experiment())
    h.tick()
    h.tick()
    assert h.primary_weights() == {"v1": 75, "v2": 25}
    message = h.reconciler.finalize(h.store.body)
    assert message == "baseline restored to 100%"
    assert h.router.get(NS, "churn")["spec"] == virtual_service()["spec"]
    assert h.events.seen[-1] == ("Normal", "TrafficRestored", "experiment deleted: baseline restored to 100%")

    done = Harness(experiment())
    for _ in range(6):
        done.tick()
    assert done.status["phase"] == "Succeeded"
    assert done.reconciler.finalize(done.store.body).startswith("succeeded")
    assert done.primary_weights() == {"v1": 0, "v2": 100}
    assert done.events.seen[-1][1] == "Promoted"  # nothing moved, nothing to announce


def test_ticks_without_changes_write_nothing():
    h = Harness(experiment(canary={"interval": "1m", "minSamples": 50}))
    h.tick()
    writes = (h.store.status_writes, len(h.router.writes))
    h.now = T0 + datetime.timedelta(seconds=5)  # woken early: nothing is due
    h.reconciler.tick(NS, "churn-v2")
    assert (h.store.status_writes, len(h.router.writes)) == writes


def test_evaluation_windows_tile_without_overlap():
    state = model.State(last_evaluated_at=T0, step_started_at=T0)
    window, end = reconciler.evaluation_window(
        state, datetime.timedelta(seconds=10), T0 + datetime.timedelta(seconds=14.7)
    )
    assert window == datetime.timedelta(seconds=14) and end == T0 + window  # the gap is measured, in full
    nxt, _ = reconciler.evaluation_window(
        dataclasses.replace(state, last_evaluated_at=end),
        datetime.timedelta(seconds=10),
        end + datetime.timedelta(seconds=9.2),
    )
    assert nxt == datetime.timedelta(seconds=9)  # an early tick measures only what is new
    first, at = reconciler.evaluation_window(model.State(), datetime.timedelta(seconds=10), T0)
    assert (first, at) == (datetime.timedelta(seconds=10), T0)


def test_queries_measure_the_time_since_the_last_evaluation():
    h = Harness(experiment())
    h.tick()  # starts: step 1 at T0
    h.now = T0 + datetime.timedelta(seconds=22.5)  # the tick comes late: the gap is measured in full
    h.provider.queries.clear()
    h.tick()
    assert h.provider.queries and all("[20s]" in q for q in h.provider.queries if "[" in q)
    assert h.status["lastEvaluatedAt"] == "2026-11-23T10:00:20Z"  # up to the grid point before the tick


def test_the_first_evaluation_states_what_the_plan_can_detect():
    h = Harness(experiment(metrics=[{"name": "error-rate", "builtin": "error-rate"}]))
    h.tick()
    assert "plan" not in h.status  # nothing measured yet
    h.tick()
    plan = h.status["plan"]
    assert plan.startswith("this plan detects >= +") and plan.endswith("error rate (80% power)")
    h.tick()
    assert h.status["plan"] == plan  # computed once, kept


def test_the_operators_planner_computes_the_plan_off_the_tick_and_a_later_evaluation_writes_it():
    h = Harness(experiment(metrics=[{"name": "error-rate", "builtin": "error-rate"}]))
    h.reconciler.plans = planner.Planner(background=True)
    try:
        h.tick()  # starts: step 1
        h.tick()  # first evaluation: the plan is asked for, the tick does not wait for it
        assert "plan" not in h.status and h.status["metrics"]
        assert h.reconciler.plans.wait_idle(timeout=60)
        h.tick()
        assert h.status["plan"].startswith("this plan detects >= +")
        assert h.status["plan"].endswith("error rate (80% power)")
    finally:
        h.reconciler.plans.close()


@pytest.mark.parametrize(
    ("interval", "step"), [(1, 1), (2, 2), (10, 10), (15, 5), (13, 1), (45, 9), (60, 10), (300, 10)]
)
def test_the_window_grid_is_the_largest_divisor_of_the_interval_up_to_ten_seconds(interval, step):
    assert reconciler.window_grid(datetime.timedelta(seconds=interval)) == step


def test_windows_end_on_the_grid_and_ticks_keep_their_own_place_within_it():
    ten = datetime.timedelta(seconds=10)
    assert reconciler.on_grid(T0 + datetime.timedelta(seconds=19.99), ten) == T0 + ten
    assert reconciler.on_grid(T0 + ten, ten) == T0 + ten
    evaluated = model.State(phase=model.Phase.PROGRESSING, step=1, step_started_at=T0, last_evaluated_at=T0)
    spec_ = spec.parse_spec(experiment()["spec"])
    now = T0 + datetime.timedelta(seconds=0.4)  # an evaluation just ended at T0; it asks for 10 s
    offsets = {reconciler.offset(NS, f"m{i}", ten) for i in range(50)}
    assert min(offsets) >= 0.5 and max(offsets) <= 8.5 and len(offsets) > 40  # spread, not bunched
    for name in ("m1", "m2"):
        delay = reconciler.spread(spec_, evaluated, NS, name, now, 9.6)
        assert now + datetime.timedelta(seconds=delay) == T0 + ten + datetime.timedelta(
            seconds=reconciler.offset(NS, name, ten)
        )
    # Shorter delays (a gate polled, a move finished) and other phases are left alone.
    assert reconciler.spread(spec_, evaluated, NS, "m1", now, 2.0) == 2.0
    paused = dataclasses.replace(evaluated, phase=model.Phase.PAUSED)
    assert reconciler.spread(spec_, paused, NS, "m1", now, 9.6) == 9.6


def test_scheduled_ticks_evaluate_one_interval_after_another_each_ending_on_the_grid():
    h = Harness(experiment(canary={"interval": "10s", "minSamples": 50, "minStepDuration": "1h"}))
    h.tick()  # starts at T0
    ends = []
    for _ in range(8):
        h.tick()  # each tick comes when the last asked (spread included)
        ends.append(h.status["lastEvaluatedAt"])
    times = [datetime.datetime.fromisoformat(e) for e in ends]
    assert all(t.timestamp() % 10 == 0 for t in times), ends
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {10.0}, ends
