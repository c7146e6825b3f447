"""strategy: Bandit end to end: the real operator, the API emulator, the mesh simulator's users, Prometheus.

Two bandits run at once on one operator (examples/03-demo/bandit.yaml, every 2 s): the baseline
and two candidates, churn-v3 converting 8 % of requests and the others 4 %.  In one every model
is healthy; in the other churn-v2 fails 30 % of its requests, so its guardrail drops it at once.
Both must move traffic to churn-v3, promote it, and keep every allocation on the way within the
floor (10 %), summing to 100.  A recorder per experiment keeps every status from the start (both
run while the first test waits).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout.localstack import mesh, stack, traffic
from modelrollout.localstack.traffic import Outcomes

from conftest import BAD_ERRORS, BASELINE, EXAMPLES, FINAL, GOOD, App, load

pytestmark = pytest.mark.integration

V1, V2, V3 = "churn-v1", "churn-v2", "churn-v3"
NAME = "churn-bandit"
CONVERSION = {V1: 0.04, V2: 0.04, V3: 0.08}
FLOOR = 10
SCENARIOS: dict[str, traffic.VariantProfile] = {"healthy": GOOD, "harmful-v2": BAD_ERRORS}


@dataclasses.dataclass
class Recorded:
    """An experiment and every distinct status it had, recorded from its creation until it ended."""

    app: App
    statuses: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    thread: threading.Thread | None = None

    def record(self, timeout: float) -> None:
        for status in self.app.local.watch_status(self.app.namespace, NAME, timeout=timeout, poll=0.2):
            self.statuses.append(status)
            if status.get("phase") in FINAL:
                return

    def start(self, timeout: float = 100) -> None:
        self.thread = threading.Thread(target=self.record, args=(timeout,), daemon=True)
        self.thread.start()

    def until_final(self) -> list[dict[str, Any]]:
        assert self.thread is not None
        self.thread.join()
        if not self.statuses or self.statuses[-1].get("phase") not in FINAL:
            log = self.app.operator.log_text()[-4000:] if self.app.operator else ""
            last = self.statuses[-1] if self.statuses else {}
            pytest.fail(f"no final phase; last status {last}\noperator log:\n{log}")
        return self.statuses


@pytest.fixture(scope="module")
def apps(local: stack.LocalStack) -> Iterator[dict[str, Recorded]]:
    stamp = int(time.time() * 1000) % 10**7
    launched = {name: App(local, f"bandit-{name}-{stamp}") for name in SCENARIOS}
    for seed, (name, app) in enumerate(launched.items()):
        local.create_namespace(app.namespace)
        users = mesh.Users(
            count=2000, outcomes={w: Outcomes(conversion=rate) for w, rate in CONVERSION.items()}, seed=seed
        )
        local.add_ab_app(app.namespace, BASELINE, SCENARIOS[name], users, 400, more={"v3": GOOD})
    watched = [arg for app in launched.values() for arg in ("--namespace", app.namespace)]
    operator = local.start_operator(*watched, "--report-configmaps", name=f"bandit-{stamp}")
    recorded = {name: Recorded(app) for name, app in launched.items()}
    for name, app in launched.items():
        app.operator = operator
        body = copy.deepcopy(load(EXAMPLES / "03-demo" / "bandit.yaml"))
        body["metadata"]["namespace"] = app.namespace
        body["spec"]["bandit"]["interval"] = "2s"
        local.apply(body)
        recorded[name].start()
    try:
        yield recorded
    finally:
        operator.stop()
        for app in launched.values():
            local.mesh.remove_app(app.namespace, "churn")


def main_route(app: App) -> dict[str, int]:
    vs = app.local.virtual_service(app.namespace, "churn")
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "main")
    return {e["destination"]["subset"]: e.get("weight", 0) for e in route["route"]}


def wait_route(app: App, expected: dict[str, int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while main_route(app) != expected:
        assert time.monotonic() < deadline, f"route main holds {main_route(app)}, expected {expected}"
        time.sleep(0.1)


def check_allocations(seen: list[dict[str, Any]], dropped: frozenset[str] = frozenset()) -> None:
    """Every split the bandit made sums to 100 and keeps each arm in play at the floor or above.

    The operator's own allocation history has every interval's split; the statuses polled while
    it ran are a sample (a busy test process may miss some) and add the stage of each.
    """
    running = [s for s in seen if s.get("phase") == "Progressing" and s.get("weights")]
    assert running, seen
    points = seen[-1]["bandit"]["allocation"]
    # The start, and at least one interval's move.  Two can be all: the comparison is checked every
    # interval (always-valid), so a large lift may ship before the stopping rule's three intervals.
    assert len(points) >= 2, points
    splits = [s["weights"] for s in running] + [p["weights"] for p in points]
    for weights in splits:
        assert sum(weights.values()) == 100 and set(weights) == {V1, V2, V3}, weights
        assert weights[V1] >= FLOOR, weights
        assert all(weights[w] >= FLOOR for w in (V2, V3) if weights[w] > 0), weights
    for status in running:
        if (status.get("bandit") or {}).get("stage") == "Exploring":
            weights = status["weights"]
            assert all(weights[w] >= FLOOR for w in (V2, V3) if w not in dropped), weights


def test_the_bandit_moves_traffic_to_the_best_model_and_promotes_it(apps: dict[str, Recorded]) -> None:
    app, seen = apps["healthy"].app, apps["healthy"].until_final()
    final = seen[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert final["outcome"] == "Ship" and final["winner"] == V3 and final["reason"] == "Shipped"
    assert final["weights"] == {V1: 0, V2: 0, V3: 100}
    assert final["interval"] == "2s"  # spec.bandit.interval, for `kubectl get mexp -o wide`
    wait_route(app, {"v1": 0, "v2": 0, "v3": 100})
    check_allocations(seen)
    points = final["bandit"]["allocation"]
    record = final["bandit"]
    comparison = {c["workload"]: c for c in record["comparison"]}
    assert comparison[V3]["better"] and comparison[V3]["interval"][0] > 0
    assert record["stage"] == "Decided" and record["intervals"] >= 2
    # The bandit gave the best model most of the traffic before the decision.  Not the pooled trials: a
    # bandit that decides early counted most of them at the even start, each window straddling a move.
    assert max(p["weights"][V3] for p in points) > 50, points
    app.wait_event("Promoted", name=NAME)  # Events follow the status write
    reasons = app.event_reasons(name=NAME)
    assert reasons[0] == "Started" and "Shipped" in reasons and "Promoted" in reasons
    # The report for people, written into a ConfigMap once the bandit had an outcome.
    assert final["report"] == {"configMap": f"{NAME}-report", "key": "report.md"}
    text = app.local.core.read_namespaced_config_map(f"{NAME}-report", app.namespace).data["report.md"]
    assert text.startswith(f"# Bandit report: {NAME}") and f"Ship: {V3} was promoted" in text
    assert "CandidateDropped" not in reasons and "RolledBack" not in reasons


def test_a_harmful_model_is_dropped_and_the_bandit_carries_on(apps: dict[str, Recorded]) -> None:
    app, seen = apps["harmful-v2"].app, apps["harmful-v2"].until_final()
    final = seen[-1]
    assert final["phase"] == "Succeeded" and final["winner"] == V3, final.get("message")
    dropped = next(i for i, s in enumerate(seen) if s.get("reason") == "CandidateDropped")
    assert all(s["weights"][V2] == 0 for s in seen[dropped:])  # no traffic for it from the drop on
    records = {c["workload"]: c for c in final["candidates"]}
    assert records[V2]["state"] == "Dropped" and records[V2]["reason"] == "GuardrailFailed"
    assert records[V3]["state"] == "Active"
    check_allocations(seen, dropped=frozenset({V2}))
    assert app.event_reasons(name=NAME).count("CandidateDropped") == 1
    wait_route(app, {"v1": 0, "v2": 0, "v3": 100})
