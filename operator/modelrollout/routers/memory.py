"""A traffic router over VirtualServices held in memory, for tests and simulation.

It runs the same pure ``istio_routes`` functions as the Istio router, so the
reconciler and the simulator exercise the real routing rules without an API
server.  Every write is recorded, and like the real router it writes nothing
when nothing changes, so tests can assert on exactly what was written.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from modelrollout import ports
from modelrollout.routers import istio_routes


@dataclasses.dataclass(frozen=True)
class Write:
    """One write of a VirtualService: which call made it and the object it left."""

    operation: str  # "reconcile" | "set_routes" | "finalize"
    namespace: str
    name: str
    virtual_service: istio_routes.Object


class InMemoryRouter:
    """A ``ports.TrafficRouter`` whose VirtualServices are dicts keyed by (namespace, name)."""

    def __init__(self, virtual_services: Iterable[Mapping[str, Any]] = ()) -> None:
        self._objects: dict[tuple[str, str], istio_routes.Object] = {}
        self.writes: list[Write] = []
        self._failures: list[ports.RouterError] = []
        for vs in virtual_services:
            self.put(vs)

    # ----------------------------------------------------------------------- the "cluster"

    def put(self, vs: Mapping[str, Any]) -> None:
        """Create or replace a VirtualService, as a user's ``kubectl apply`` would (not a write)."""
        metadata = vs["metadata"]
        self._objects[(metadata.get("namespace", "default"), metadata["name"])] = copy.deepcopy(dict(vs))

    def get(self, namespace: str, name: str) -> istio_routes.Object:
        """A copy of the VirtualService; raises VirtualServiceNotFound."""
        return copy.deepcopy(self._lookup(namespace, name))

    def delete(self, namespace: str, name: str) -> None:
        self._objects.pop((namespace, name), None)

    def fail_next(self, error: ports.RouterError) -> None:
        """Make the next router call raise ``error`` (calls after it work again)."""
        self._failures.append(error)

    # ----------------------------------------------------------------------- ports.TrafficRouter

    def reconcile(self, target: ports.RouteTarget) -> ports.TrafficSplit:
        vs = self._update(target, "reconcile", lambda vs: istio_routes.ensure_structure(vs, target))
        return istio_routes.read_weights(vs, target)

    def get_routes(self, target: ports.RouteTarget) -> ports.TrafficSplit:
        self._maybe_fail()
        return istio_routes.read_weights(self._lookup(target.namespace, target.name), target)

    def get_mirror(self, target: ports.RouteTarget) -> float | None:
        """The percent mirrored to the candidate, read back from the object (``istio_routes.read_mirror``)."""
        self._maybe_fail()
        return istio_routes.read_mirror(self._lookup(target.namespace, target.name), target)

    def set_routes(self, target: ports.RouteTarget, weights: Mapping[str, int]) -> ports.TrafficSplit:
        istio_routes.validate_weights(target, weights)

        def edit(vs: istio_routes.Object) -> istio_routes.Object:
            return istio_routes.with_weights(istio_routes.ensure_structure(vs, target), target, weights)

        return istio_routes.read_weights(self._update(target, "set_routes", edit), target)

    def finalize(self, target: ports.RouteTarget) -> None:
        with contextlib.suppress(ports.VirtualServiceNotFound):  # nothing left to restore
            self._update(target, "finalize", lambda vs: istio_routes.restore_original(vs, target.experiment))

    # ----------------------------------------------------------------------- internals

    def _update(
        self,
        target: ports.RouteTarget,
        operation: str,
        edit: Callable[[istio_routes.Object], istio_routes.Object],
    ) -> istio_routes.Object:
        self._maybe_fail()
        current = self._lookup(target.namespace, target.name)
        desired = edit(current)
        if desired != current:
            self._objects[(target.namespace, target.name)] = desired
            self.writes.append(Write(operation, target.namespace, target.name, copy.deepcopy(desired)))
        return desired

    def _lookup(self, namespace: str, name: str) -> istio_routes.Object:
        try:
            return self._objects[(namespace, name)]
        except KeyError:
            raise ports.VirtualServiceNotFound(f"VirtualService {namespace}/{name} not found") from None

    def _maybe_fail(self) -> None:
        if self._failures:
            raise self._failures.pop(0)
