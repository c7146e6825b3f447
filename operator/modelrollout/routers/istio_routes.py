"""Pure edits of Istio VirtualService dicts: the heart of the Istio router.

Everything that decides *what* a VirtualService should look like lives here,
on plain dicts and without I/O: which http routes an experiment manages,
which destinations it owns, how a split maps onto the weights, and how the
original routes are saved and put back.  The adapters (``IstioRouter`` over
the Kubernetes API, ``InMemoryRouter`` for tests and simulation) only read,
call these functions and write the difference, so the rules are tested here,
with golden files and property tests, and never need an API server.

The user owns the VirtualService (Argo Rollouts' rule): only the ``route``
lists of the managed http routes and one annotation ever change; matches,
retries, mirrors, other routes and destinations the experiment does not own
stay exactly as they were.  No function mutates its input.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout import ports

ORIGINAL_ROUTES_ANNOTATION = "modelrollout.io/original-routes"

# A VirtualService, or a part of one, as the Kubernetes API returns it.
Object = dict[str, Any]
# experiment -> route key -> the route's original ``route`` list
SavedRoutes = dict[str, dict[str, list[Any]]]


# --------------------------------------------------------------------------- reading


def route_key(route: Mapping[str, Any], index: int) -> str:
    """The route's name, or ``#<index>`` for an unnamed one."""
    name = route.get("name")
    return name if isinstance(name, str) and name else f"#{index}"


def describe(variant: ports.Destination) -> str:
    parts = [f"host {variant.host}"] if variant.host else []
    parts += [f"subset {variant.subset}"] if variant.subset else []
    return f"{variant.workload} ({', '.join(parts) or 'any destination'})"


def _matches(entry: Mapping[str, Any], variant: ports.Destination, host: str | None) -> bool:
    destination = entry.get("destination") or {}
    if host is not None and destination.get("host") != host:
        return False
    return variant.subset is None or destination.get("subset") == variant.subset


def owned_entries(route: Mapping[str, Any], target: ports.RouteTarget) -> dict[str, int]:
    """Workload -> index in ``route["route"]`` of the destination that variant owns.

    Each variant owns at most one destination and each destination has at most
    one owner.  The most specific variants (host and subset given) choose first,
    ties in variant order, so the baseline chooses before any candidate without
    a host, and such a candidate only matches the baseline's host.
    """
    entries: list[Any] = route.get("route") or []
    fields_given = [(v.host is not None) + (v.subset is not None) for v in target.variants]
    order = sorted(range(len(target.variants)), key=lambda i: (-fields_given[i], i))
    owned: dict[str, int] = {}
    for i in order:
        variant = target.variants[i]
        host = variant.host
        if host is None and i > 0 and target.baseline.workload in owned:
            host = (entries[owned[target.baseline.workload]].get("destination") or {}).get("host")
        for j, entry in enumerate(entries):
            if j not in owned.values() and _matches(entry, variant, host):
                owned[variant.workload] = j
                break
    return owned


def effective_weights(entries: Sequence[Mapping[str, Any]]) -> list[int]:
    """Istio semantics: a lone destination takes everything; otherwise a missing weight is 0."""
    if len(entries) == 1:
        return [100]
    return [int(entry.get("weight") or 0) for entry in entries]


def _http(vs: Mapping[str, Any]) -> list[Any]:
    return list((vs.get("spec") or {}).get("http") or [])


def managed_route_indices(vs: Mapping[str, Any], target: ports.RouteTarget) -> list[int]:
    """Indices of the http routes the experiment manages, in the object's order."""
    _check_target(target)
    http = _http(vs)
    where = f"VirtualService {target.namespace}/{target.name}"
    holds_baseline = [target.baseline.workload in owned_entries(route, target) for route in http]
    if target.routes is None:
        indices = [i for i, holds in enumerate(holds_baseline) if holds]
        if not indices:
            only_other = " (only tcp/tls routes, which are not supported)" if not http and _has_l4(vs) else ""
            raise ports.RouteNotFound(
                f"no http route of {where} routes to the baseline {describe(target.baseline)}{only_other}"
            )
        return indices
    names = [route.get("name") for route in http]
    missing = [name for name in target.routes if name not in names]
    if missing:
        raise ports.RouteNotFound(f"{where} has no http route named {', '.join(sorted(set(missing)))}")
    indices = sorted({names.index(name) for name in target.routes})
    for name in target.routes:
        if names.count(name) > 1:
            raise ports.RouterError(f"{where} has more than one http route named {name}")
    without = [route_key(http[i], i) for i in indices if not holds_baseline[i]]
    if without:
        raise ports.RouteNotFound(
            f"http route {', '.join(without)} of {where} does not route to the baseline "
            f"{describe(target.baseline)}"
        )
    return indices


def _has_l4(vs: Mapping[str, Any]) -> bool:
    spec = vs.get("spec") or {}
    return bool(spec.get("tcp") or spec.get("tls"))


def read_weights(vs: Mapping[str, Any], target: ports.RouteTarget) -> ports.TrafficSplit:
    """Per managed route, the percent of the experiment's pool each variant holds.

    The pool is the sum of the weights of the destinations the experiment owns;
    a variant without a destination holds 0.  A route whose pool is empty
    reports 0 for every variant: the experiment gets no traffic there.
    """
    http = _http(vs)
    routes = []
    for i in managed_route_indices(vs, target):
        entries = http[i]["route"]
        owned = owned_entries(http[i], target)
        weights = effective_weights(entries)
        shares = [weights[owned[v.workload]] if v.workload in owned else 0 for v in target.variants]
        percents = apportion(100, shares)
        routes.append(
            ports.RouteWeights(
                route=route_key(http[i], i),
                weights={v.workload: p for v, p in zip(target.variants, percents, strict=True)},
            )
        )
    return ports.TrafficSplit(routes=tuple(routes))


def apportion(total: int, shares: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``shares`` into integers that sum to ``total``.

    Largest remainder method in exact integer arithmetic: each gets the floor
    of its share, the units left over go to the largest remainders, ties to
    the earliest (the baseline comes first).  All-zero shares give all zeros.
    """
    whole = sum(shares)
    if whole == 0:
        return [0] * len(shares)
    floors = [total * share // whole for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(total * shares[i] % whole), i))
    for i in by_remainder[: total - sum(floors)]:
        floors[i] += 1
    return floors


# --------------------------------------------------------------------------- the saved original


def saved_routes(vs: Mapping[str, Any]) -> SavedRoutes:
    """The original routes saved in the annotation, by experiment then route key."""
    raw = ((vs.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_ROUTES_ANNOTATION)
    if raw is None:
        return {}
    try:
        saved = json.loads(raw)
    except (TypeError, ValueError):
        saved = None
    if not isinstance(saved, dict) or not all(isinstance(routes, dict) for routes in saved.values()):
        # Refuse rather than overwrite: it may hold other experiments' originals.
        raise ports.RouterError(f"annotation {ORIGINAL_ROUTES_ANNOTATION} is not a JSON object of objects")
    return saved


def _store_saved(vs: Object, saved: SavedRoutes) -> None:
    metadata = vs.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    if saved:
        annotations[ORIGINAL_ROUTES_ANNOTATION] = json.dumps(saved, sort_keys=True, separators=(",", ":"))
    else:
        annotations.pop(ORIGINAL_ROUTES_ANNOTATION, None)
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)  # as Kubernetes itself shows an empty map


# --------------------------------------------------------------------------- writing


def ensure_structure(vs: Mapping[str, Any], target: ports.RouteTarget) -> Object:
    """Save the original of every managed route, then add the missing candidates with weight 0.

    A new candidate is a copy of the baseline's entry (so ``port``, ``headers``
    and the like carry over) with the candidate's host and subset.  The
    original is saved once per experiment and route: a restart must never
    replace the true original with an already modified route.
    """
    indices = managed_route_indices(vs, target)
    new: Object = copy.deepcopy(dict(vs))
    http = new["spec"]["http"]
    saved = saved_routes(new)
    mine = saved.setdefault(target.experiment, {})
    for i in indices:
        entries = http[i]["route"]
        mine.setdefault(route_key(http[i], i), copy.deepcopy(entries))
        owned = owned_entries(http[i], target)
        baseline = entries[owned[target.baseline.workload]]
        missing = [v for v in target.variants[1:] if v.workload not in owned]
        if missing and len(entries) == 1:
            baseline["weight"] = 100  # implicit only while it is alone
        for variant in missing:
            added = copy.deepcopy(baseline)
            destination = added["destination"]
            destination["host"] = variant.host or destination.get("host")
            if variant.subset is None:
                destination.pop("subset", None)
            else:
                destination["subset"] = variant.subset
            added["weight"] = 0
            entries.append(added)
    _store_saved(new, saved)
    return new


def validate_weights(target: ports.RouteTarget, weights: Mapping[str, int]) -> None:
    """Raise ValueError unless ``weights`` gives known workloads integer percents summing to 100."""
    known = {v.workload for v in target.variants}
    unknown = sorted(set(weights) - known)
    if unknown:
        expected = ", ".join(sorted(known))
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; expected some of {expected}")
    for workload, percent in weights.items():
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"weight of {workload} must be an integer 0..100, got {percent!r}")
    if sum(weights.values()) != 100:
        raise ValueError(f"weights must sum to 100, got {sum(weights.values())}: {dict(weights)}")


def with_weights(vs: Mapping[str, Any], target: ports.RouteTarget, weights: Mapping[str, int]) -> Object:
    """Give every owned destination its percent of the pool; the route keeps summing to 100.

    The pool is what the destinations the experiment does not own leave over
    (100 minus their weights), which is the owned destinations' sum whenever the
    route sums to 100.  A weight is written only where it changes, so an
    implicit weight that is already right stays implicit.
    """
    validate_weights(target, weights)
    indices = managed_route_indices(vs, target)
    new: Object = copy.deepcopy(dict(vs))
    http = new["spec"]["http"]
    percents = [weights.get(v.workload, 0) for v in target.variants]
    for i in indices:
        entries = http[i]["route"]
        owned = owned_entries(http[i], target)
        for variant, percent in zip(target.variants, percents, strict=True):
            if percent and variant.workload not in owned:
                raise ports.RouterError(
                    f"http route {route_key(http[i], i)} of VirtualService {target.namespace}/{target.name} "
                    f"has no destination for {describe(variant)}"
                )
        current = effective_weights(entries)
        others = sum(w for j, w in enumerate(current) if j not in owned.values())
        shares = apportion(max(0, 100 - others), percents)
        for variant, share in zip(target.variants, shares, strict=True):
            j = owned.get(variant.workload)
            if j is not None and current[j] != share:
                entries[j]["weight"] = share
    return new


def restore_original(vs: Mapping[str, Any], experiment: str) -> Object:
    """Put back the routes ``experiment`` saved and forget them.

    Routes are found by key again; a route that no longer exists is skipped.
    Other experiments' saved routes stay in the annotation.
    """
    new: Object = copy.deepcopy(dict(vs))
    saved = saved_routes(new)
    mine = saved.pop(experiment, None)
    if mine is None:
        return new
    http = _http(new)
    keys = {route_key(route, i): i for i, route in enumerate(http)}
    for key, original in mine.items():
        if key in keys:
            http[keys[key]]["route"] = copy.deepcopy(original)
    _store_saved(new, saved)
    return new


def _check_target(target: ports.RouteTarget) -> None:
    workloads = [v.workload for v in target.variants]
    if not workloads:
        raise ValueError("a route target needs at least the baseline variant")
    if len(set(workloads)) != len(workloads):
        raise ValueError(f"variant workloads must be unique, got {workloads}")
