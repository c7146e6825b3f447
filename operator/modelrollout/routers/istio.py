"""The Istio traffic router: ``istio_routes`` applied to VirtualServices in the cluster.

Flagger's shape: ``reconcile`` owns the structure, ``set_routes`` the weights,
and every call reads the object back first, so the weights are never trusted
from memory.  The VirtualService belongs to the user, so a write is a JSON
patch of only what changed (the managed routes' ``route`` lists and shadow
mirror fields, the http routes an A/B test inserts, rebuilds or removes, and
our annotation), guarded
by ``test`` ops on the resourceVersion and on the route names; when someone
else wrote in between, the router reads again and retries.  A call that
changes nothing writes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
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
# The fields of an http route that istio_routes edits on a route it keeps: each is patched on its own.
_ROUTE_FIELDS = ("route", *istio_routes.MIRROR_FIELDS)

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

    def get_mirror(self, target: ports.RouteTarget) -> float | None:
        """The percent mirrored to the candidate, read back from the object (``istio_routes.read_mirror``)."""
        return istio_routes.read_mirror(self._read(target), target)

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
    still be the one read, and every rewritten or removed route must still
    carry its name at its index (a reordering would otherwise send a route to
    the wrong place); an unnamed route is removed only if it is still equal to
    the one read.
    """
    guards, changes = _http_ops(old, new)
    changes += _annotation_ops(old, new)
    if not changes:
        return []
    version = (old.get("metadata") or {}).get("resourceVersion")
    if version is not None:
        guards.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return guards + changes


def _http_ops(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The guards (on ``old``'s indices) and the changes that turn ``old``'s http routes into ``new``'s.

    The two lists are aligned by route identity (the name; for an unnamed
    route everything but its ``route`` list and mirror fields), so the routes
    an A/B test inserts or removes become single ``add``/``remove`` ops and
    every other route keeps its op on its own index.  A route present in both
    is patched field by field when only its ``route`` list and mirror fields
    (``mirror``, ``mirrorPercentage``, ``mirrorPercent``) changed, and
    replaced whole otherwise (an inserted route someone edited).  The changes run front to back, each
    on the index the route has by then: the routes before it are already
    ``new``'s, the routes after it still ``old``'s.
    """
    old_spec = old.get("spec") or {}
    new_spec = new.get("spec") or {}
    old_http: list[Any] = old_spec.get("http") or []
    new_http: list[Any] = new_spec.get("http") or []
    if old_http == new_http:
        return [], []
    if not old_http or not new_http:  # never from istio_routes; a whole list is still a correct patch
        if "http" not in new_spec:
            return [], [{"op": "remove", "path": "/spec/http"}]
        op = "replace" if "http" in old_spec else "add"
        return [], [{"op": op, "path": "/spec/http", "value": new_spec["http"]}]
    guards: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(
        None,
        [_identity(route) for route in old_http],
        [_identity(route) for route in new_http],
        autojunk=False,
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                before, after = old_http[i], new_http[j]
                if before == after:
                    continue
                guards += _name_test(before, i)
                if _unpatched(before) != _unpatched(after):
                    changes.append({"op": "replace", "path": f"/spec/http/{j}", "value": after})
                    continue
                for field in _ROUTE_FIELDS:
                    path = f"/spec/http/{j}/{field}"
                    if field not in after:
                        changes += [{"op": "remove", "path": path}] if field in before else []
                    elif field not in before or before[field] != after[field]:
                        op = "replace" if field in before else "add"
                        changes.append({"op": op, "path": path, "value": after[field]})
            continue
        for i in range(i1, i2):  # "delete" or "replace": out with the old routes, in with the new
            before = old_http[i]
            guards += _name_test(before, i) or [{"op": "test", "path": f"/spec/http/{i}", "value": before}]
            changes.append({"op": "remove", "path": f"/spec/http/{j1}"})
        if j2 > j1 and i2 < len(old_http):  # new routes go right before this one: it must still be there
            guards += _name_test(old_http[i2], i2)
        changes += [{"op": "add", "path": f"/spec/http/{j}", "value": new_http[j]} for j in range(j1, j2)]
    unique = [guard for n, guard in enumerate(guards) if guard not in guards[:n]]
    return unique, changes


def _identity(route: Mapping[str, Any]) -> str:
    name = route.get("name")
    if isinstance(name, str) and name:
        return "name:" + name
    return "unnamed:" + json.dumps(_unpatched(route), sort_keys=True)


def _unpatched(route: Mapping[str, Any]) -> dict[str, Any]:
    """The route without the fields patched one by one (``_ROUTE_FIELDS``)."""
    return {field: value for field, value in route.items() if field not in _ROUTE_FIELDS}


def _name_test(route: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    name = route.get("name")
    return (
        [{"op": "test", "path": f"/spec/http/{index}/name", "value": name}] if isinstance(name, str) else []
    )


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
