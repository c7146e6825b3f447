"""What the fault-injection suites share: apps made from any thread, scenarios run side by side.

A fault scenario spends nearly all of its time waiting -- for an interval, for a
hold to count up, for a restarted process -- so the scenarios of one module run
at the same time, each in its own namespace (and with its own Prometheus proxy),
served by one operator process per module unless a scenario needs one of its own
(to kill it, or to read its log).  Each stays a test of its own: ``@registry``
turns a scenario into a test that collects that scenario's outcome, and the
module's ``scenarios`` fixture starts every selected scenario of the module at
once on first use.  Faults are scoped by namespace, never global.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelrollout.localstack import stack, traffic
from modelrollout.localstack.promproxy import PromProxy

from conftest import BASELINE, EXAMPLES, GOOD, App, load

# The builtins judged by the sequential tests alone: an absolute ``max`` on a window of a few dozen
# candidate requests fails a good candidate on one unlucky error (1 of 19 is above 5 %).
SEQUENTIAL = [
    {"name": "error-rate", "builtin": "error-rate"},
    {"name": "latency-p95", "builtin": "latency-p95"},
]
RESULT_TIMEOUT = 300.0  # no scenario waits this long: each of its waits has a timeout of its own
_ids = itertools.count(1)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


# History entries of the transitions that move traffic (Started, StepAdvanced, Promoted), told
# apart by their message: a hold or a WeightsRestored is history too, but moves no step.
_TRANSITION = re.compile(r"^(step \d+/\d+: \d+% of traffic|promoted)")


def steps_of(status: dict[str, Any]) -> list[int]:
    """The step of every traffic-moving transition in the status' history, in order."""
    return [h["step"] for h in status.get("history", []) if _TRANSITION.match(h.get("reason", ""))]


def routes_of(status: dict[str, Any]) -> dict[str, int]:
    """The status' weights as the VirtualService spells them (by subset)."""
    weights = status["weights"]
    return {"v1": weights["churn-v1"], "v2": weights["churn-v2"]}


class Apps:
    """Creates apps like the ``make_app`` fixture, from any thread; closes them all at the end.

    One operator process serves the apps of a module (``--namespace <prefix>-*``): starting
    one costs seconds of CPU, and a fault in one experiment must not disturb the others
    anyway.  A scenario that kills or restarts its operator asks for a :meth:`group`.
    """

    def __init__(self, local: stack.LocalStack, prefix: str, operator_args: tuple[str, ...] = ()) -> None:
        self.local = local
        self._prefix = prefix
        self._apps: list[App] = []
        self._proxies: list[PromProxy] = []
        self._lock = threading.Lock()
        self.shared = local.start_operator(
            "--namespace", f"{prefix}-*", *operator_args, name=f"{prefix}-shared"
        )
        self._operators = [self.shared]
        self._groups: dict[str, Group] = {}

    def new(
        self,
        candidate: traffic.VariantProfile = GOOD,
        virtual_service: dict[str, Any] | None = None,
        rps: float = 200.0,
        *,
        mesh: bool = True,
        namespace_prefix: str | None = None,
    ) -> App:
        """An app in a namespace of its own; its operator runs while Prometheus warms up.

        ``mesh=False``: no traffic at all (for scenarios that never evaluate a metric).
        """
        namespace = f"{namespace_prefix or self._prefix + '-'}{next(_ids)}-{int(time.time()) % 100000}"
        self.local.create_namespace(namespace)
        manifest = copy.deepcopy(virtual_service or load(EXAMPLES / "00-mesh" / "virtualservice.yaml"))
        self.local.apply(manifest, namespace)
        self.local.apply_file(EXAMPLES / "00-mesh" / "destinationrule.yaml", namespace)
        app = App(self.local, namespace, operator=self.shared)
        with self._lock:
            self._apps.append(app)
        if mesh:
            self.local.add_model_app(namespace, BASELINE, candidate, rps)
        return app

    def group(self, name: str, *extra: str, env: dict[str, str] | None = None) -> Group:
        """Apps served by an operator of their own (``--namespace <prefix><name>*``): to kill and
        restart it, or to read a log no other app writes to.  The first call makes the group."""
        with self._lock:
            if name not in self._groups:
                self._groups[name] = Group(self, name, extra, env or {})
            return self._groups[name]

    def proxy(self) -> PromProxy:
        """A fault-injecting proxy in front of the stack's Prometheus (stopped at the end)."""
        proxy = PromProxy(self.local.prometheus.url).start()
        with self._lock:
            self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.stop()
        for operator in self._operators:  # all at once: each takes a second or two to stop
            if operator.process.poll() is None:
                operator.process.terminate()
        for operator in self._operators:
            operator.stop()
        for app in self._apps:
            with contextlib.suppress(KeyError):
                self.local.mesh.remove_app(app.namespace, "churn")


class Group:
    """Apps whose operator a scenario may SIGKILL and start again (all at once, as a crash would)."""

    def __init__(self, apps: Apps, name: str, extra: tuple[str, ...], env: dict[str, str]) -> None:
        self._apps = apps
        self._glob = f"{apps._prefix}{name}*"
        self._extra = extra
        self._env = env
        self._members: list[App] = []
        self._runs = 0
        self.operator = self.start()

    def start(self) -> stack.OperatorProcess:
        self._runs += 1
        local = self._apps.local
        args = [
            "--standalone",
            "--kubeconfig",
            str(local.kubeconfig),
            "--prometheus-url",
            local.prometheus.url,
        ]
        log = local.workdir / f"{self._glob[:-1]}-{self._runs}.log"
        self.operator = stack.OperatorProcess(
            [*args, "--namespace", self._glob, *self._extra], log, self._env
        )
        local.operators.append(self.operator)  # stopped with the stack, whatever happens
        self._apps._operators.append(self.operator)
        for app in self._members:
            app.operator = self.operator
        return self.operator

    def kill(self) -> None:
        self.operator.kill()

    def new(self, **options: Any) -> App:
        app = self._apps.new(namespace_prefix=self._glob[:-1], **options)
        app.operator = self.operator
        self._members.append(app)
        return app


Scenario = Callable[[Apps], None]


class Running:
    """The started scenarios of one module; :meth:`result` waits for one and re-raises its failure."""

    def __init__(self, bodies: dict[str, Scenario], apps: Apps) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(bodies), 1))
        self._futures = {name: self._pool.submit(body, apps) for name, body in bodies.items()}

    def result(self, name: str) -> None:
        self._futures[name].result(timeout=RESULT_TIMEOUT)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Registry:
    """``@registry`` on ``def test_x(apps)``: a scenario, run alongside the module's others."""

    def __init__(self, prefix: str, *operator_args: str) -> None:
        self.prefix = prefix
        self.operator_args = operator_args  # of the module's shared operator
        self.bodies: dict[str, Scenario] = {}

    def __call__(self, body: Scenario) -> Callable[[Running], None]:
        name = body.__name__
        self.bodies[name] = body

        def test(scenarios: Running) -> None:
            scenarios.result(name)

        # Not functools.wraps: pytest would then ask for the scenario's arguments as fixtures.
        test.__name__ = test.__qualname__ = name
        test.__doc__ = body.__doc__
        test.__module__ = body.__module__
        return test

    def fixture(self) -> Any:
        registry = self

        @pytest.fixture(scope="module")
        def scenarios(request: pytest.FixtureRequest, local: stack.LocalStack) -> Iterator[Running]:
            selected = {
                item.name for item in request.session.items if getattr(item, "module", None) is request.module
            }
            apps = Apps(local, registry.prefix, registry.operator_args)
            running = Running({n: b for n, b in registry.bodies.items() if n in selected}, apps)
            try:
                yield running
            finally:
                running.close()
                apps.close()

        return scenarios
