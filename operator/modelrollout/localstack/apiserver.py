"""An in-memory Kubernetes API server for the tests and the local demo.

The operator, the ``kubernetes`` client and kubectl must all be able to talk to
it as to a real cluster, without a cluster: the semantics live in
:mod:`modelrollout.localstack.kubeemulator` (a kmock emulator subclass); this
module declares the resources the project touches, serves the emulator on a
port in a thread of its own (kopf and kmock sharing one event loop shut down
slowly and can hang), writes kubeconfigs, and offers thread-safe helpers to
tests: object reads, a request log and fault injection.

Run it standalone with::

    python -m modelrollout.localstack.apiserver --port 8001 --kubeconfig /tmp/kubeconfig
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import yaml

from modelrollout.localstack.kubeemulator import ApiEmulator, Fault, LoggedRequest, Object

__all__ = ["ApiEmulator", "ApiServer", "Fault", "LoggedRequest", "declare_default_resources", "main"]

T = TypeVar("T")
ISTIO_CATEGORIES = ("istio-io", "networking-istio-io")


def declare_default_resources(emulator: ApiEmulator) -> None:
    """Declare what the operator, kopf, kubectl and the demo touch: one set for tests and the demo."""
    declare = emulator.declare
    # kopf silently never watches anything unless v1/namespaces is discoverable.
    declare(
        "",
        "v1",
        "namespaces",
        kind="Namespace",
        namespaced=False,
        shortnames=["ns"],
        subresources=["status", "finalize"],
        verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
    )
    declare("", "v1", "events", kind="Event", shortnames=["ev"])
    declare("", "v1", "secrets", kind="Secret")
    declare("", "v1", "configmaps", kind="ConfigMap", shortnames=["cm"])
    declare("events.k8s.io", "v1", "events", kind="Event", shortnames=["ev"])
    declare("coordination.k8s.io", "v1", "leases", kind="Lease")
    # kopf's peering (``modelrollout run --peering``), as its CRDs define them: replicas write their
    # heartbeats into the peering object's status (no status subresource).
    declare("kopf.dev", "v1", "kopfpeerings", kind="KopfPeering")
    declare("kopf.dev", "v1", "clusterkopfpeerings", kind="ClusterKopfPeering", namespaced=False)
    declare(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        kind="CustomResourceDefinition",
        namespaced=False,
        shortnames=["crd", "crds"],
        categories=["api-extensions"],
        subresources=["status"],
    )
    declare(
        "modelrollout.io",
        "v1alpha1",
        "modelexperiments",
        kind="ModelExperiment",
        shortnames=["mexp"],
        categories=["modelrollout"],
        subresources=["status"],
    )
    for version in ("v1", "v1beta1"):  # v1 first: it is the stored & preferred version
        declare(
            "networking.istio.io",
            version,
            "virtualservices",
            kind="VirtualService",
            shortnames=["vs"],
            categories=ISTIO_CATEGORIES,
        )
        declare(
            "networking.istio.io",
            version,
            "destinationrules",
            kind="DestinationRule",
            shortnames=["dr"],
            categories=ISTIO_CATEGORIES,
        )


class ApiServer:
    """The emulator on ``host:port`` (0: a free port) in its own thread and event loop.

    Use as a context manager, or ``start()``/``stop()``. All methods are safe to
    call from any thread; ``call()`` runs a function on the emulator in its loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        declare: Callable[[ApiEmulator], None] | None = declare_default_resources,
        startup_timeout: float = 10.0,
    ) -> None:
        self._host, self._port, self._declare = host, port, declare
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._emulator: ApiEmulator | None = None
        self._error: BaseException | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """E.g. ``http://127.0.0.1:34567``, with no trailing slash (``//apis/...`` otherwise)."""
        if self._url is None:
            raise RuntimeError("The API server is not running.")
        return self._url

    @property
    def emulator(self) -> ApiEmulator:
        """The emulator itself: touch its state only in its loop, e.g. via :meth:`call`."""
        if self._emulator is None:
            raise RuntimeError("The API server is not running.")
        return self._emulator

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("The API server can be started only once.")
        self._thread = threading.Thread(target=self._run, name="modelrollout-apiserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError(f"The API server did not start in {self._startup_timeout}s.")
        if self._error is not None:
            raise RuntimeError("The API server failed to start.") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"The API server did not stop in {timeout}s.")
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start(); after startup, the thread just ends
            self._error = e
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        emulator = ApiEmulator()
        if self._declare is not None:
            self._declare(emulator)
        self._stopping = asyncio.Event()
        async with emulator:
            # Cancel a handler when its client goes away, so abandoned watches do not pile up.
            server = aiohttp.web.Server(emulator, handler_cancellation=True)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            try:
                await aiohttp.web.TCPSite(runner, self._host, self._port).start()
                port = runner.addresses[0][1]
                self._url = f"http://{self._host}:{port}"
                self._loop, self._emulator = asyncio.get_running_loop(), emulator
                self._ready.set()
                await self._stopping.wait()
            finally:
                emulator.close_watches()
                await runner.cleanup()

    # -------------------------------------------------------------------------------- test helpers
    def call(self, fn: Callable[[ApiEmulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(emulator)`` in the server's loop, where the state is consistent, and return its result."""
        if self._loop is None or self._emulator is None:
            raise RuntimeError("The API server is not running.")
        emulator = self._emulator
        if threading.current_thread() is self._thread:
            return fn(emulator)

        async def run() -> T:
            return fn(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def get_object(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> Object | None:
        """A copy of the stored object (as ``group/version``), or None if absent."""
        return self.call(lambda e: e.get_object(group, version, plural, namespace, name))

    def list_objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[Object]:
        return self.call(lambda e: e.list_objects(group, version, plural, namespace))

    def request_log(self) -> list[LoggedRequest]:
        """Every request so far: ``(method, path, status, query, user)``, e.g. to count API calls."""
        return self.emulator.request_log()

    def clear_request_log(self) -> None:
        self.emulator.clear_request_log()

    def inject_fault(
        self,
        match: str | Callable[[Any], bool],
        status: int | None = 500,
        count: int | None = 1,
        *,
        delay: float = 0.0,
        reason: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Make the next ``count`` requests matching ``match`` fail with ``status`` after ``delay`` s.

        ``match``: ``"[METHOD] [path-regex]"`` or a predicate on :class:`kmock.Request`.
        ``count=None`` keeps failing until :meth:`clear_faults`; ``status=None`` only delays
        (a timeout, as the client sees it). The returned :class:`Fault` counts its ``hits``.
        """
        fault = Fault(match, status, count, delay, reason, message)
        return self.emulator.inject_fault(fault)

    def clear_faults(self) -> None:
        self.emulator.clear_faults()

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str = "modelrollout-local"
    ) -> Path:
        """Write a kubeconfig for kubectl, kopf and the kubernetes client pointing here.

        The request log names each request's ``user`` by the token: give each client its own.
        """
        name = "modelrollout-local"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": name,
            "preferences": {},
            "clusters": [{"name": name, "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelrollout.localstack.apiserver",
        description="Serve an in-memory Kubernetes API (modelrollout's local stack) until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port (default: 8001)")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with ApiServer(host=args.host, port=args.port) as server:
        if args.kubeconfig is not None:  # before the first line: scripts wait for that one
            path = server.write_kubeconfig(args.kubeconfig, namespace=args.namespace)
            print(f"Kubeconfig: {path}  (export KUBECONFIG={path})", file=sys.stderr, flush=True)
        print(f"Serving the Kubernetes API at {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
