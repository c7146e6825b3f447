"""Several operator replicas at once: kopf peering lets exactly one act.

Each replica is a real ``modelrollout run --peering`` process with its own kubeconfig token, so
the emulator's request log names the replica behind every request (as an API server's audit log
names the service account), and its own HOSTNAME, which its Events report as reportingInstance.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelrollout import handlers
from modelrollout.localstack import stack

from conftest import FINAL, App

PEERING = "modelrollout"
LIFETIME = 5  # seconds a silent replica counts as alive: the failover time
# Windows shorter than ~3 s are mostly telemetry lag (1 s scrapes): the split would look wrong.
CANARY = {"steps": [10, 50, 100], "interval": "3s", "minStepDuration": "3s"}
# A threshold on a plain query: these tests are about who acts, not about the statistics (the
# builtins' sequential tests on short windows could hold an equal candidate by chance).
_SERVED = (
    'istio_requests_total{destination_workload="{{ workload }}",'
    'destination_workload_namespace="{{ namespace }}"'
)
METRICS = [
    {
        "name": "success-share",
        "query": "sum(rate(" + _SERVED + ',response_code!~"5.."}[{{ interval }}]))'
        " / sum(rate(" + _SERVED + "}[{{ interval }}]))",
        "min": 0.9,
    }
]
WRITES = ("POST", "PATCH", "PUT", "DELETE")


class Replica:
    def __init__(self, local: stack.LocalStack, namespace: str, name: str, *extra: str) -> None:
        self.name = f"{namespace}-{name}"  # token, HOSTNAME and kopf identity: unique in the session
        kubeconfig = local.apiserver.write_kubeconfig(
            local.workdir / f"kubeconfig-{self.name}", token=self.name
        )
        self.process = local.start_operator(
            *("--namespace", namespace, "--peering", PEERING, "--peering-lifetime", str(LIFETIME), *extra),
            name=self.name,
            standalone=False,
            kubeconfig=kubeconfig,
            env={"HOSTNAME": self.name, "POD_ID": self.name},
        )

    def log(self) -> str:
        return self.process.log_text()

    def resumed(self) -> int:
        """How many times kopf un-paused this replica (it starts paused when peering is mandatory)."""
        return self.log().count("Resuming operations after the pause")

    def paused(self) -> bool:
        log = self.log()
        return log.rfind("Pausing operations in favour of") >= log.rfind("Resuming operations")


@pytest.fixture
def start_replica(local: stack.LocalStack) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(app: App, name: str, *extra: str) -> Replica:
        replica = Replica(local, app.namespace, name, *extra)
        started.append(replica)
        return replica

    yield start
    for replica in started:  # all at once: each takes a moment to shut down
        replica.process.process.terminate()
    for replica in started:
        replica.process.stop()


def create_peering(app: App) -> None:
    """The namespace's KopfPeering, as the Helm chart creates it next to a Deployment of replicas."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}
    app.local.custom.create_namespaced_custom_object("kopf.dev", "v1", app.namespace, "kopfpeerings", body)


def peers(app: App) -> dict[str, int]:
    """Replica identity -> priority, from the heartbeats in the peering object's status."""
    body = app.local.custom.get_namespaced_custom_object(
        "kopf.dev", "v1", app.namespace, "kopfpeerings", PEERING
    )
    return {identity: peer["priority"] for identity, peer in (body.get("status") or {}).items()}


def wait(predicate: Callable[[], Any], timeout: float, what: str, *replicas: Replica) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.name}:\n{r.log()[-3000:]}" for r in replicas)
            pytest.fail(f"{what}: not within {timeout}s\n{logs}")
        time.sleep(0.1)
    return value


def writes(app: App, *replicas: Replica, since: int = 0) -> list[tuple[int, str, str]]:
    """(position in the request log, user, path) of the replicas' writes but their heartbeats."""
    users = {r.name for r in replicas}
    return [
        (i, r.user, r.path)
        for i, r in enumerate(app.local.apiserver.request_log())
        if i >= since and r.user in users and r.method in WRITES and "/kopfpeerings" not in r.path
    ]


def assert_every_step_once(app: App, final: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    """Started, one StepAdvanced (10 -> 50) and Promoted (-> 100), each once; no step started twice."""
    assert final["phase"] == "Succeeded", final.get("message")
    steps = [h["step"] for h in final["history"]]  # holds (NoData...) add entries within a step
    assert steps == sorted(steps) and set(steps) == {1, 2, 3}, final["history"]
    started_at: dict[int, str] = {}
    for status in seen:  # a step that was started again would show a second start time
        if status.get("step") and status.get("stepStartedAt"):
            assert started_at.setdefault(status["step"], status["stepStartedAt"]) == status["stepStartedAt"]
    app.wait_event("Promoted")
    reasons = app.event_reasons()
    assert [r for r in reasons if r in ("Started", "StepAdvanced", "Promoted")] == [
        "Started",
        "StepAdvanced",
        "Promoted",
    ], reasons


def test_of_two_replicas_one_acts_and_the_other_takes_over_when_it_dies(make_app, start_replica):
    app = make_app()
    create_peering(app)
    a, b = start_replica(app, "a"), start_replica(app, "b")  # together, each with a random priority
    priorities = wait(lambda: len(p := peers(app)) == 2 and p, 20, "both replicas' heartbeats", a, b)
    active, standby = sorted([a, b], key=lambda r: priorities[r.name], reverse=True)
    wait(lambda: active.resumed() and standby.paused(), 10, "only the higher priority acting", a, b)

    mark = len(app.local.apiserver.request_log())
    app.apply_experiment(canary=CANARY, metrics=METRICS)
    seen = app.wait_for(lambda s: s.get("step") == 2, timeout=30)
    app.wait_event("StepAdvanced")  # posted after the status and the routes: step 2 is complete
    # The active replica dies without a word (SIGKILL), before its next evaluation could promote.
    resumed, killed_at = standby.resumed(), time.monotonic()
    active.process.kill()  # and reaped: whatever it sent is in the log before kill_mark
    kill_mark = len(app.local.apiserver.request_log())

    # Until then only one acted: the standby kept its heartbeat and never even read an experiment.
    peering = f"/apis/kopf.dev/v1/namespaces/{app.namespace}/kopfpeerings"
    by_standby = [r for r in app.local.apiserver.request_log()[mark:kill_mark] if r.user == standby.name]
    assert by_standby and all(r.path in (peering, f"{peering}/{PEERING}") for r in by_standby), by_standby
    assert {r.method for r in by_standby if r.method in WRITES} == {"PATCH"}
    written = [w for w in writes(app, a, b, since=mark) if w[0] < kill_mark]
    assert {user for _, user, _ in written} == {active.name}
    assert {path.split(f"/{app.namespace}/")[-1] for _, _, path in written} >= {
        "modelexperiments/churn-v2/status",
        "virtualservices/churn",
        "events",
    }

    # Its heartbeat goes stale after LIFETIME, and the standby resumes and carries the rollout on.
    limit = LIFETIME + handlers.PEERING_SETTLE + 3  # + a tick and kopf's re-listing
    wait(lambda: writes(app, standby, since=kill_mark), limit + 5, "failover", standby)
    takeover = time.monotonic() - killed_at
    assert takeover <= limit, f"took {takeover:.1f}s"
    assert standby.resumed() == resumed + 1

    seen += app.wait_for(lambda s: s.get("phase") in FINAL, timeout=30)
    assert_every_step_once(app, seen[-1], seen)
    written = writes(app, a, b)
    assert [user for user, _ in itertools.groupby(u for _, u, _ in written)] == [active.name, standby.name]
    assert all(i < kill_mark for i, u, _ in written if u == active.name)
    instances = {e.reason: e.reporting_instance for e in app.local.events(app.namespace, "churn-v2")}
    assert (instances["Started"], instances["Promoted"]) == (active.name, standby.name), instances


def test_a_replica_that_outranks_the_active_one_takes_over_without_repeating_a_step(make_app, start_replica):
    """A rolling update: the new pod (here with the higher priority) joins mid-rollout."""
    app = make_app()
    create_peering(app)
    low = start_replica(app, "low", "--priority", "1")
    wait(low.resumed, 15, "the only replica acting", low)
    app.apply_experiment(canary={**CANARY, "minStepDuration": "6s"}, metrics=METRICS)  # time to join
    seen = app.wait_for(lambda s: s.get("phase") == "Progressing", timeout=20)

    high = start_replica(app, "high", "--priority", "2")
    wait(low.paused, 15, "the lower priority pausing", low, high)
    seen += app.wait_for(lambda s: s.get("phase") in FINAL, timeout=40)
    assert_every_step_once(app, seen[-1], seen)
    # One writer at a time: low until high came, then only high (low paused for good).
    written = writes(app, low, high)
    assert [user for user, _ in itertools.groupby(u for _, u, _ in written)] == [low.name, high.name]
    assert low.resumed() == 1 and low.paused()
    instances = {e.reason: e.reporting_instance for e in app.local.events(app.namespace, "churn-v2")}
    assert (instances["Started"], instances["Promoted"]) == (low.name, high.name), instances


def test_a_replica_without_its_peering_object_waits_and_says_why(local, start_replica):
    namespace = f"ha-{int(time.time() * 1000) % 10**8}"
    local.create_namespace(namespace)
    app = App(local, namespace)
    lonely = start_replica(app, "lonely")
    wait(lambda: "stays paused until the peering object exists" in lonely.log(), 15, "a warning", lonely)
    assert lonely.resumed() == 0
    assert not [
        r for r in local.apiserver.request_log() if r.user == lonely.name and "/modelexperiments" in r.path
    ]
    create_peering(app)
    wait(lonely.resumed, 10, "resuming once the peering object exists", lonely)
