"""The Istio traffic router: ``istio_routes`` applied to VirtualServices in the cluster.

Flagger's shape: ``reconcile`` owns the structure, ``set_routes`` the weights,
and every call reads the object back first, so the weights are never trusted
from memory.  The VirtualService belongs to the user, so a write is a JSON
patch of only what changed (the managed routes' ``route`` lists and our
annotation), guarded by ``test`` ops on the resourceVersion and on the route
names; when someone else wrote in between, the router reads again and
retries.  A call that changes nothing writes nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import urllib3

from modelrollout import ports
from modelrollout.routers import istio_routes

GROUP = "networking.istio.io"
PLURAL = "virtualservices"
JSON_PATCH = "application/json-patch+json"
# Statuses of a patch that lost a race: a stale resourceVersion or a failed ``test`` op.
_CONFLICT_STATUSES = frozenset({409, 422})

Edit = Callable[[istio_routes.Object], istio_routes.Object]


class IstioRouter:
    """A ``ports.TrafficRouter`` over ``networking.istio.io`` VirtualServices (v1 or v1beta1)."""

    def __init__(
        self, api: kubernetes.client.CustomObjectsApi, version: str = "v1", retries: int = 5
    ) -> None:
        self._api = api
        self._version = version
        self._retries = retries

    def reconcile(self, target: ports.RouteTarget) -> ports.TrafficSplit:
        vs = self._update(target, lambda vs: istio_routes.ensure_structure(vs, target))
        return istio_routes.read_weights(vs, target)

    def get_routes(self, target: ports.RouteTarget) -> ports.TrafficSplit:
        return istio_routes.read_weights(self._read(target), target)

    def set_routes(self, target: ports.RouteTarget, weights: Mapping[str, int]) -> ports.TrafficSplit:
        istio_routes.validate_weights(target, weights)  # a bad split fails before any I/O

        def edit(vs: istio_routes.Object) -> istio_routes.Object:
            # Structure first: a candidate the user removed meanwhile comes back.
            return istio_routes.with_weights(istio_routes.ensure_structure(vs, target), target, weights)

        return istio_routes.read_weights(self._update(target, edit), target)

    def finalize(self, target: ports.RouteTarget) -> None:
        with contextlib.suppress(ports.VirtualServiceNotFound):  # nothing left to restore
            self._update(target, lambda vs: istio_routes.restore_original(vs, target.experiment))

    # ----------------------------------------------------------------------- I/O

    def _update(self, target: ports.RouteTarget, edit: Edit) -> istio_routes.Object:
        """Read, edit, patch the difference; on a lost race read again, ``retries`` times."""
        lost: list[str] = []
        for _ in range(self._retries + 1):
            current = self._read(target)
            desired = edit(current)
            patch = json_patch(current, desired)
            if not patch:
                return current
            try:
                result = self._api.patch_namespaced_custom_object(
                    group=GROUP,
                    version=self._version,
                    namespace=target.namespace,
                    plural=PLURAL,
                    name=target.name,
                    body=patch,
                    _content_type=JSON_PATCH,
                )
            except kubernetes.client.ApiException as e:
                if e.status not in _CONFLICT_STATUSES:
                    raise _router_error(e, "patch", target) from e
                lost.append(_describe_api_error(e))
                continue
            except urllib3.exceptions.HTTPError as e:
                raise ports.RouterError(f"cannot patch {_where(target)}: {e}") from e
            return result if isinstance(result, dict) else desired
        raise ports.RouterConflict(
            f"{_where(target)} kept changing: {len(lost)} patches in a row were rejected (last: {lost[-1]})"
        )

    def _read(self, target: ports.RouteTarget) -> istio_routes.Object:
        try:
            vs = self._api.get_namespaced_custom_object(
                group=GROUP,
                version=self._version,
                namespace=target.namespace,
                plural=PLURAL,
                name=target.name,
            )
        except kubernetes.client.ApiException as e:
            raise _router_error(e, "read", target) from e
        except urllib3.exceptions.HTTPError as e:
            raise ports.RouterError(f"cannot read {_where(target)}: {e}") from e
        if not isinstance(vs, dict):
            raise ports.RouterError(f"cannot read {_where(target)}: unexpected answer {type(vs).__name__}")
        return vs


def json_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 patch from ``old`` to ``new``, which differ only where ``istio_routes`` edits.

    Empty when nothing changed.  Otherwise guarded: the resourceVersion must
    still be the one read, and every rewritten route must still carry its name
    at its index (a reordering would otherwise send a route to the wrong place).
    """
    guards: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    old_http = (old.get("spec") or {}).get("http") or []
    new_http = (new.get("spec") or {}).get("http") or []
    for i, (before, after) in enumerate(zip(old_http, new_http, strict=True)):
        if before.get("route") == after.get("route"):
            continue
        if isinstance(before.get("name"), str):
            guards.append({"op": "test", "path": f"/spec/http/{i}/name", "value": before["name"]})
        op = "replace" if "route" in before else "add"
        changes.append({"op": op, "path": f"/spec/http/{i}/route", "value": after["route"]})
    changes += _annotation_ops(old, new)
    if not changes:
        return []
    version = (old.get("metadata") or {}).get("resourceVersion")
    if version is not None:
        guards.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return guards + changes


def _annotation_ops(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    key = istio_routes.ORIGINAL_ROUTES_ANNOTATION
    old_annotations = (old.get("metadata") or {}).get("annotations")
    before = (old_annotations or {}).get(key)
    after = ((new.get("metadata") or {}).get("annotations") or {}).get(key)
    path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
    if before == after:
        return []
    if after is None:
        return [{"op": "remove", "path": path}]
    if old_annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: after}}]
    return [{"op": "add" if before is None else "replace", "path": path, "value": after}]


def _where(target: ports.RouteTarget) -> str:
    return f"VirtualService {target.namespace}/{target.name}"


def _describe_api_error(e: kubernetes.client.ApiException) -> str:
    message = ""
    try:
        body = json.loads(e.body) if e.body else None
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except (TypeError, ValueError):
        pass
    return f"HTTP {e.status} {e.reason}" + (f": {message}" if message else "")


def _router_error(
    e: kubernetes.client.ApiException, verb: str, target: ports.RouteTarget
) -> ports.RouterError:
    if e.status == 404:
        return ports.VirtualServiceNotFound(f"{_where(target)} not found")
    return ports.RouterError(f"cannot {verb} {_where(target)}: {_describe_api_error(e)}")
