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
retries, the user's mirrors, other routes and destinations the experiment does
not own stay exactly as they were.  No function mutates its input.

Shadow traffic (``RouteTarget.mirror_percent``) adds the experiment's own
``mirror`` and ``mirrorPercentage`` to each managed route, copying requests to
the candidate while users only get the route's answer (see ``with_mirror``).
It never replaces a mirror the user set, and what it replaced on a route (a
mirror of the user's to the very candidate) is saved and put back.

The one exception to that rule is an A/B test with cookie affinity
(``RouteTarget.sticky``): while it runs, it *inserts* http routes of its own
(one per variant with traffic, and one that assigns new users), named
``mexp-<experiment>-<route>-...``, directly before each managed route, and
removes them again when the split stops running or the experiment ends (see
``with_sticky_split``).  The name prefix ``mexp-`` is reserved for
such inserted routes: they are never managed routes themselves, and unnamed
routes are keyed by their position among the routes nobody inserted, so an
insertion never shifts another experiment's ``#<index>`` keys.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from modelrollout import ports

ORIGINAL_ROUTES_ANNOTATION = "modelrollout.io/original-routes"

# A VirtualService, or a part of one, as the Kubernetes API returns it.
Object = dict[str, Any]
# experiment -> route key -> the route's original ``route`` list; and, under ``MIRRORS_KEY``, the
# routes the experiment mirrors: route key -> {"mirror": what it wrote, "original": the fields it replaced}
SavedRoutes = dict[str, dict[str, Any]]

# The HTTPRoute fields of a (single) mirror: the destination and the share of requests copied there.
# ``mirrorPercent`` is the deprecated integer form of ``mirrorPercentage``.
MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrorPercent")
# The key of an experiment's mirror records among its saved routes (no route has this key: an unnamed
# route's key is ``#<n>``, and ``ensure_structure`` refuses to manage a route with this name).
MIRRORS_KEY = "#mirror"

# Names of the http routes experiments insert start with this (``mexp-<experiment>-``).
INSERTED_PREFIX = "mexp-"
# An RFC 6265 cookie name (a token).
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# HTTPMatchRequest fields that are maps of conditions: merging unions their keys.
_MAP_MATCH_FIELDS = frozenset({"headers", "withoutHeaders", "queryParams", "sourceLabels"})


# --------------------------------------------------------------------------- reading


def route_key(route: Mapping[str, Any], index: int) -> str:
    """The route's name, or ``#<index>`` for an unnamed one."""
    name = route.get("name")
    return name if isinstance(name, str) and name else f"#{index}"


def route_keys(http: Sequence[Mapping[str, Any]]) -> list[str]:
    """The key of every http route: its name, or ``#<n>`` for the n-th route nobody inserted.

    Without inserted routes ``n`` is the route's index, as ``route_key`` gives it.
    """
    keys = []
    position = 0
    for route in http:
        keys.append(route_key(route, position))
        if not is_inserted(route):
            position += 1
    return keys


def is_inserted(route: Mapping[str, Any]) -> bool:
    """Whether an experiment inserted the route (its name starts with ``mexp-``)."""
    name = route.get("name")
    return isinstance(name, str) and name.startswith(INSERTED_PREFIX)


def inserted_prefix(experiment: str) -> str:
    return f"{INSERTED_PREFIX}{experiment}-"


def inserted_by(route: Mapping[str, Any], experiment: str, experiments: Collection[str] = ()) -> bool:
    """Whether ``experiment`` inserted the route: its name starts with ``mexp-<experiment>-``.

    ``experiments`` are the others known on the object (those with saved
    routes): of two experiments ``churn`` and ``churn-v2``, the route
    ``mexp-churn-v2-web-assign`` belongs to the longer name.
    """
    name = route.get("name")
    if not isinstance(name, str) or not name.startswith(inserted_prefix(experiment)):
        return False
    return not any(
        len(other) > len(experiment) and name.startswith(inserted_prefix(other)) for other in experiments
    )


def sticky_route_names(experiment: str, key: str, target: ports.RouteTarget) -> tuple[str, ...]:
    """The names of the routes an A/B test inserts before the route ``key``: one per variant, then assign."""
    prefix = f"{inserted_prefix(experiment)}{key}-"
    return (*(prefix + v.workload for v in target.variants), prefix + "assign")


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
    where = _where(target)
    holds_baseline = [
        not is_inserted(route) and target.baseline.workload in owned_entries(route, target) for route in http
    ]
    if target.routes is None:
        indices = [i for i, holds in enumerate(holds_baseline) if holds]
        if not indices:
            only_other = " (only tcp/tls routes, which are not supported)" if not http and _has_l4(vs) else ""
            raise ports.RouteNotFound(
                f"no http route of {where} routes to the baseline {describe(target.baseline)}{only_other}"
            )
        return _named_if_sticky(http, indices, target)
    names = [None if is_inserted(route) else route.get("name") for route in http]
    missing = [name for name in target.routes if name not in names]
    if missing:
        raise ports.RouteNotFound(f"{where} has no http route named {', '.join(sorted(set(missing)))}")
    indices = sorted({names.index(name) for name in target.routes})
    for name in target.routes:
        if names.count(name) > 1:
            raise ports.RouterError(f"{where} has more than one http route named {name}")
    keys = route_keys(http)
    without = [keys[i] for i in indices if not holds_baseline[i]]
    if without:
        raise ports.RouteNotFound(
            f"http route {', '.join(without)} of {where} does not route to the baseline "
            f"{describe(target.baseline)}"
        )
    return _named_if_sticky(http, indices, target)


def _named_if_sticky(
    http: Sequence[Mapping[str, Any]], indices: list[int], target: ports.RouteTarget
) -> list[int]:
    """The sticky routes are named after the managed route they serve: an A/B test needs names."""
    if target.sticky is not None:
        keys = route_keys(http)
        unnamed = [keys[i] for i in indices if not http[i].get("name")]
        if unnamed:
            raise ports.RouterError(
                f"http route {', '.join(unnamed)} of {_where(target)} has no name: "
                "A/B tests need named http routes (their sticky routes are named after them)"
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

    For an A/B test whose split runs, the managed route only serves the
    requests outside the cohort; the split is the one its ``assign`` route
    gives to the requests without a cookie, so that is the route read.
    """
    http = _http(vs)
    keys = route_keys(http)
    by_name = {route.get("name"): route for route in http if is_inserted(route)}
    routes = []
    for i in managed_route_indices(vs, target):
        route = http[i]
        if target.sticky is not None:
            route = by_name.get(sticky_route_names(target.experiment, keys[i], target)[-1], route)
        entries = route.get("route") or []
        owned = owned_entries(route, target)
        weights = effective_weights(entries)
        shares = [weights[owned[v.workload]] if v.workload in owned else 0 for v in target.variants]
        percents = apportion(100, shares)
        routes.append(
            ports.RouteWeights(
                route=keys[i],
                weights={v.workload: p for v, p in zip(target.variants, percents, strict=True)},
            )
        )
    return ports.TrafficSplit(routes=tuple(routes), mirror=read_mirror(vs, target))


def read_mirror(vs: Mapping[str, Any], target: ports.RouteTarget) -> float | None:
    """The percent of the managed routes' requests mirrored to the (first) candidate, or None.

    None when no managed route mirrors to the candidate; when some do and others
    do not or mirror less, the smallest percent (0 for a route without the
    mirror), so that any drift from ``target.mirror_percent`` shows.  As in
    Istio, a mirror without ``mirrorPercentage`` (nor the deprecated
    ``mirrorPercent``) copies every request.  Whoever wrote the mirror, the
    experiment or the user, it counts if it points at the candidate.
    """
    indices = managed_route_indices(vs, target)
    if len(target.variants) < 2:
        return None
    http = _http(vs)
    percents: list[float | None] = []
    for i in indices:
        route = http[i]
        mirror = route.get("mirror")
        ours = isinstance(mirror, Mapping) and _same_destination(mirror, mirror_destination(route, target))
        percents.append(mirror_percent(route) if ours else None)
    if all(percent is None for percent in percents):
        return None
    return min(0.0 if percent is None else percent for percent in percents)


def mirror_percent(route: Mapping[str, Any]) -> float:
    """The percent of ``route``'s requests its ``mirror`` gets, as Istio reads it (absent: 100)."""
    percentage = route.get("mirrorPercentage")
    if isinstance(percentage, Mapping):
        return float(percentage.get("value") or 0.0)  # a Percent without a value is 0
    legacy = route.get("mirrorPercent")
    if isinstance(legacy, int | float) and not isinstance(legacy, bool):
        return float(legacy)
    return 100.0


def mirror_destination(route: Mapping[str, Any], target: ports.RouteTarget) -> Object:
    """The mirror destination of the candidate on ``route``: where its routed traffic would go.

    The candidate's destination in the route (host, subset and port, as
    ``ensure_structure`` copied them from the baseline's); before it has one,
    the candidate's host, else the baseline's, and the candidate's subset.
    """
    candidate = target.variants[1]
    entries: list[Any] = route.get("route") or []
    owned = owned_entries(route, target)
    if candidate.workload in owned:
        destination = entries[owned[candidate.workload]].get("destination") or {}
        return {f: copy.deepcopy(destination[f]) for f in ("host", "subset", "port") if f in destination}
    host = candidate.host
    if host is None and target.baseline.workload in owned:
        host = (entries[owned[target.baseline.workload]].get("destination") or {}).get("host")
    mirror: Object = {"host": host}
    if candidate.subset is not None:
        mirror["subset"] = candidate.subset
    return mirror


def _same_destination(mirror: Any, destination: Mapping[str, Any]) -> bool:
    """Whether a mirror goes to ``destination``: the same host and subset (a port only narrows it)."""
    return (
        isinstance(mirror, Mapping)
        and mirror.get("host") == destination.get("host")
        and mirror.get("subset") == destination.get("subset")
    )


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
    for experiment, routes in saved.items():
        records = routes.get(MIRRORS_KEY, {})
        if not isinstance(records, dict) or not all(
            isinstance(record, dict)
            and isinstance(record.get("mirror"), dict)
            and isinstance(record.get("original"), dict)
            for record in records.values()
        ):
            raise ports.RouterError(
                f"annotation {ORIGINAL_ROUTES_ANNOTATION}: the mirrors of experiment {experiment} "
                "are not route -> {mirror, original} objects"
            )
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

    Then the mirror follows ``target.mirror_percent`` (see ``with_mirror``).
    """
    indices = managed_route_indices(vs, target)
    new: Object = copy.deepcopy(dict(vs))
    http = new["spec"]["http"]
    keys = route_keys(http)
    saved = saved_routes(new)
    mine = saved.setdefault(target.experiment, {})
    for i in indices:
        if keys[i] == MIRRORS_KEY:
            raise ports.RouterError(
                f"http route {keys[i]} of {_where(target)}: the name {MIRRORS_KEY} is reserved"
            )
        entries = http[i]["route"]
        mine.setdefault(keys[i], copy.deepcopy(entries))
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
    return with_mirror(new, target)


def with_mirror(vs: Mapping[str, Any], target: ports.RouteTarget) -> Object:
    """Mirror ``target.mirror_percent`` of every managed route's requests to the candidate, or stop.

    Istio's shadow traffic: with a percent, each managed route gets
    ``mirror`` (``mirror_destination``: the candidate's host, subset and port
    as its destination in the route has them) and ``mirrorPercentage:
    {value: <percent>}``; its ``route`` and weights stay as they are, so users
    only ever get the answers of the route's destinations.  The fields the
    mirror replaced (none, or a mirror of the user's to the candidate itself)
    are recorded once in the saved routes, under ``MIRRORS_KEY``.  A route
    that already mirrors elsewhere (``mirror`` to another destination, or any
    ``mirrors``) is the user's: a RouterError names it and nothing changes.

    Without a percent, the mirrors the experiment recorded go: a route whose
    mirror still points where the experiment wrote gets the recorded fields
    back; a mirror someone changed meanwhile stays theirs.  Mirrors the
    experiment never wrote are never touched.  ``restore_original`` puts back
    the recorded fields too.  Idempotent: the same target twice gives the
    same object.
    """
    indices = managed_route_indices(vs, target)
    new: Object = copy.deepcopy(dict(vs))
    http = _http(new)
    keys = route_keys(http)
    saved = saved_routes(new)
    mine: dict[str, Any] = saved.get(target.experiment, {})
    records: dict[str, Any] = mine.get(MIRRORS_KEY, {})
    percent = target.mirror_percent
    if percent is None:
        if not any(keys[i] in records for i in indices):
            return new
        for i in indices:
            record = records.pop(keys[i], None)
            if record is not None:
                _put_back_mirror(http[i], record)
    else:
        desired = {i: mirror_destination(http[i], target) for i in indices}
        for i in indices:  # every route first: nothing is written when one is the user's
            _check_mirror_free(http[i], keys[i], target, desired[i])
        for i in indices:
            route = http[i]
            record = records.setdefault(
                keys[i], {"original": {f: copy.deepcopy(route[f]) for f in MIRROR_FIELDS if f in route}}
            )
            record["mirror"] = copy.deepcopy(desired[i])
            route.pop("mirrorPercent", None)
            route["mirror"] = desired[i]
            route["mirrorPercentage"] = {"value": float(percent)}
    if records:
        mine[MIRRORS_KEY] = records
        saved[target.experiment] = mine
    else:
        mine.pop(MIRRORS_KEY, None)
        if not mine:  # only without ``ensure_structure``: nothing else was saved
            saved.pop(target.experiment, None)
    _store_saved(new, saved)
    return new


def _check_mirror_free(
    route: Mapping[str, Any], key: str, target: ports.RouteTarget, desired: Mapping[str, Any]
) -> None:
    """Raise RouterError when the route mirrors somewhere else than ``desired``: that mirror is the user's."""
    where = f"http route {key} of {_where(target)}"
    candidate = describe(target.variants[1])
    if route.get("mirrors"):
        raise ports.RouterError(
            f"{where} already has mirrors (field mirrors): the experiment will not add its mirror to "
            f"{candidate} next to them"
        )
    mirror = route.get("mirror")
    if mirror is not None and not _same_destination(mirror, desired):
        shown = json.dumps(mirror, sort_keys=True, separators=(",", ":"))
        raise ports.RouterError(
            f"{where} already mirrors to {shown} (field mirror): the experiment will not replace it "
            f"with its mirror to {candidate}"
        )


def _put_back_mirror(route: Object, record: Mapping[str, Any]) -> None:
    """Give ``route`` (edited in place) its recorded mirror fields back, if its mirror is still ours."""
    if _same_destination(route.get("mirror"), record["mirror"]):
        for field in MIRROR_FIELDS:
            route.pop(field, None)
        route.update(copy.deepcopy(record["original"]))


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

    An A/B test with cookie affinity (``target.sticky``) is written by
    ``with_sticky_split`` instead.
    """
    if target.sticky is not None:
        return with_sticky_split(vs, target, weights)
    validate_weights(target, weights)
    indices = managed_route_indices(vs, target)
    new: Object = copy.deepcopy(dict(vs))
    http = new["spec"]["http"]
    keys = route_keys(http)
    percents = [weights.get(v.workload, 0) for v in target.variants]
    for i in indices:
        _apply_split(http[i], target, percents, f"http route {keys[i]} of {_where(target)}")
    return new


def _apply_split(route: Object, target: ports.RouteTarget, percents: Sequence[int], where: str) -> None:
    """Give the owned destinations of ``route`` (edited in place) their share of the pool."""
    entries = route["route"]
    owned = owned_entries(route, target)
    for variant, percent in zip(target.variants, percents, strict=True):
        if percent and variant.workload not in owned:
            raise ports.RouterError(f"{where} has no destination for {describe(variant)}")
    current = effective_weights(entries)
    others = sum(w for j, w in enumerate(current) if j not in owned.values())
    shares = apportion(max(0, 100 - others), percents)
    for variant, share in zip(target.variants, shares, strict=True):
        j = owned.get(variant.workload)
        if j is not None and current[j] != share:
            entries[j]["weight"] = share


def restore_original(vs: Mapping[str, Any], experiment: str) -> Object:
    """Put back the routes ``experiment`` saved, remove the routes it inserted, and forget them.

    Routes are found by key again; a route that no longer exists is skipped.
    The mirrors it wrote go, giving back what they replaced (see ``with_mirror``).
    Other experiments' saved and inserted routes stay.
    """
    new = without_inserted_routes(vs, experiment)
    saved = saved_routes(new)
    mine = saved.pop(experiment, None)
    if mine is None:
        return new
    http = _http(new)
    keys = {key: i for i, key in enumerate(route_keys(http))}
    for key, original in mine.items():
        if key in keys and key != MIRRORS_KEY:
            http[keys[key]]["route"] = copy.deepcopy(original)
    for key, record in (mine.get(MIRRORS_KEY) or {}).items():
        if key in keys:
            _put_back_mirror(http[keys[key]], record)
    _store_saved(new, saved)
    return new


def without_inserted_routes(vs: Mapping[str, Any], experiment: str) -> Object:
    """A copy of ``vs`` without the http routes ``experiment`` inserted (``mexp-<experiment>-...``)."""
    new: Object = copy.deepcopy(dict(vs))
    http = _http(new)
    others = set(saved_routes(new))
    kept = [route for route in http if not inserted_by(route, experiment, others)]
    if len(kept) != len(http):
        new["spec"]["http"] = kept
    return new


# --------------------------------------------------------------------------- sticky A/B routing


def with_sticky_split(vs: Mapping[str, Any], target: ports.RouteTarget, weights: Mapping[str, int]) -> Object:
    """Write an A/B test's split with cookie affinity (Flagger's session affinity, plus cohorts).

    Istio tries the http routes in order and the first that matches wins; the
    HTTPMatchRequests in one ``match`` list are ORed, the fields within one are
    ANDed, and a route without ``match`` takes everything.  So while the split
    runs (the baseline gets strictly between 0 and 100), these routes go
    directly before each managed route ``R``, copying all of R's fields but
    ``name``, ``match`` and ``route``:

    1. ``mexp-<experiment>-<R>-<baseline>``: R's matches, ANDed with each
       cohort match, ANDed with ``cookie`` matching ``<cookie>=<baseline>``;
       routes all of it to the baseline's destination.  Envoy matches header
       regexes with RE2 against the *whole* value, hence the anchored
       ``^(.*?;\\s*)?<cookie>=<workload>(;.*)?$`` (the cookie anywhere in the list).
    2. ``mexp-<experiment>-<R>-<candidate>``: the same for each candidate with a
       weight above 0.  A candidate at 0 (dropped from an A/B test of several)
       has none: its users fall through to the assign route, which gives them
       another variant and a cookie naming it in place of theirs.
    3. ``mexp-<experiment>-<R>-assign``: R's matches ANDed with the cohort (no
       ``match`` at all when neither has one): the users without a cookie.
       Their first request is split by weight exactly as ``with_weights``
       would split R (destinations the experiment does not own keep their
       weights), and each variant's destination carries
       ``headers.response.add`` of a ``Set-Cookie`` naming their workload:
       Istio adds a destination's response headers only when that destination
       served the request, so the cookie records where the user landed.

    R itself serves the requests outside the cohort: they stay on the
    baseline (R's owned weights are held at baseline 100, which leaves R as
    ``ensure_structure`` made it unless something else had sent traffic to
    the candidate).  When the split does not run (0 or 100 for the baseline:
    before the start, a rollback, a promotion) the inserted routes are removed
    and the weights are written to R as ``with_weights`` does.

    The inserted routes are rebuilt from R on every call, so an edited or
    deleted one comes back, and the same split twice gives the same object.
    Routes other experiments inserted are left alone.
    """
    sticky = target.sticky
    if sticky is None:
        raise ValueError("with_sticky_split needs a target with sticky routing")
    validate_weights(target, weights)
    new = without_inserted_routes(vs, target.experiment)
    indices = managed_route_indices(new, target)
    http: list[Object] = new["spec"]["http"]
    keys = route_keys(http)
    percents = [weights.get(v.workload, 0) for v in target.variants]
    running = 0 < percents[0] < 100  # the baseline shares the users with some candidate
    result: list[Object] = []
    for i, route in enumerate(http):
        if i in indices:
            where = f"http route {keys[i]} of {_where(target)}"
            if running:
                _apply_split(route, target, [100] + [0] * (len(target.variants) - 1), where)
                result += sticky_routes(route, keys[i], target, percents)
            else:
                _apply_split(route, target, percents, where)
        result.append(route)
    new["spec"]["http"] = result
    return new


def sticky_routes(
    route: Mapping[str, Any], key: str, target: ports.RouteTarget, percents: Sequence[int]
) -> list[Object]:
    """The routes an A/B test inserts before the managed ``route`` while its split runs.

    See ``with_sticky_split``; ``percents`` are the split, per variant (one without traffic gets no
    sticky route).
    """
    sticky = target.sticky
    if sticky is None:
        raise ValueError("sticky routes need a target with sticky routing")
    where = f"http route {key} of {_where(target)}"
    for i, match in enumerate(route.get("match") or ()):
        _check_no_cookie_match(match, f"{where} (match {i})")
    for i, match in enumerate(sticky.cohort):
        _check_no_cookie_match(match, f"the cohort (match {i}) of the A/B test on {_where(target)}")
    combined = [
        merge_matches(match, member, where)
        for match in route.get("match") or [{}]
        for member in sticky.cohort or ({},)
    ]
    common = {
        field: copy.deepcopy(value)
        for field, value in route.items()
        if field not in ("name", "match", "route")
    }
    names = sticky_route_names(target.experiment, key, target)

    split: Object = {"route": copy.deepcopy(route["route"])}
    _apply_split(split, target, percents, where)
    entries: list[Any] = split["route"]
    owned = owned_entries(route, target)
    for variant in target.variants:
        j = owned[variant.workload]
        entries[j] = _with_set_cookie(
            entries[j],
            f"{sticky.cookie}={variant.workload}; Max-Age={sticky.max_age_seconds}; Path=/",
            route,
            f"{where} (destination of {describe(variant)})",
        )

    inserted: list[Object] = []
    for variant, name, percent in zip(target.variants, names, percents, strict=False):
        if percent == 0:
            continue  # no one is kept there: its users are assigned anew
        cookie = {"headers": {"cookie": {"regex": cookie_regex(sticky.cookie, variant.workload)}}}
        entry = copy.deepcopy(route["route"][owned[variant.workload]])
        entry["weight"] = 100
        matches = [merge_matches(match, cookie, where) for match in combined]
        inserted.append({"name": name, **copy.deepcopy(common), "match": matches, "route": [entry]})
    assign: Object = {"name": names[-1], **common}
    if route.get("match") or sticky.cohort:
        assign["match"] = combined
    assign["route"] = entries
    return [*inserted, assign]


def cookie_regex(cookie: str, value: str) -> str:
    """An RE2 regex for a ``Cookie`` header holding ``cookie=value`` (Envoy matches the whole value)."""
    return f"^(.*?;\\s*)?{re.escape(cookie)}={re.escape(value)}(;.*)?$"


def merge_matches(first: Mapping[str, Any], second: Mapping[str, Any], where: str) -> Object:
    """The HTTPMatchRequest that holds when both ``first`` and ``second`` hold.

    Maps of conditions (headers, withoutHeaders, queryParams, sourceLabels)
    are unioned; any other field (uri, method, port, gateways...) must be
    absent from one or equal in both.  The same key or field with different
    conditions cannot be expressed in one HTTPMatchRequest and raises a
    RouterError naming it.  A match's ``name`` only labels it: ``first``'s wins.
    """
    merged: Object = copy.deepcopy(dict(first))
    for field, value in second.items():
        if field not in merged:
            merged[field] = copy.deepcopy(value)
        elif field in _MAP_MATCH_FIELDS:
            mine = merged[field]
            if not isinstance(mine, dict) or not isinstance(value, Mapping):
                raise ports.RouterError(f"cannot combine the matches of {where}: {field} is not a map")
            for name, condition in value.items():
                if name in mine and mine[name] != condition:
                    raise ports.RouterError(
                        f"cannot combine the matches of {where}: {field}.{name} is {mine[name]!r} "
                        f"in one and {condition!r} in the other"
                    )
                mine.setdefault(name, copy.deepcopy(condition))
        elif field != "name" and merged[field] != value:
            raise ports.RouterError(
                f"cannot combine the matches of {where}: {field} is {merged[field]!r} in one and {value!r} "
                "in the other"
            )
    return merged


def _check_no_cookie_match(match: Mapping[str, Any], what: str) -> None:
    for field in ("headers", "withoutHeaders"):
        conditions = match.get(field) or {}
        if any(str(name).lower() == "cookie" for name in conditions):
            raise ports.RouterError(
                f"{what} matches on the cookie header ({field}.cookie): the A/B test owns that header"
            )


def _with_set_cookie(entry: Mapping[str, Any], value: str, route: Mapping[str, Any], where: str) -> Object:
    """``entry`` with a ``Set-Cookie`` added to its responses, keeping the user's own header operations."""
    for level, response in (
        ("destination", ((entry.get("headers") or {}).get("response") or {})),
        ("route", ((route.get("headers") or {}).get("response") or {})),
    ):
        ops = ("add", "set", "remove") if level == "destination" else ("set", "remove")
        for op in ops:
            if any(str(name).lower() == "set-cookie" for name in response.get(op) or ()):
                raise ports.RouterError(
                    f"{where}: the {level} already has headers.response.{op} of set-cookie, "
                    "which the A/B test's cookie needs"
                )
    new: Object = copy.deepcopy(dict(entry))
    headers = new.get("headers") or {}
    response = headers.get("response") or {}
    response["add"] = {**(response.get("add") or {}), "set-cookie": value}
    headers["response"] = response
    new["headers"] = headers
    return new


def _check_target(target: ports.RouteTarget) -> None:
    workloads = [v.workload for v in target.variants]
    if not workloads:
        raise ValueError("a route target needs at least the baseline variant")
    if len(set(workloads)) != len(workloads):
        raise ValueError(f"variant workloads must be unique, got {workloads}")
    sticky = target.sticky
    percent = target.mirror_percent
    if percent is not None:
        number = isinstance(percent, int | float) and not isinstance(percent, bool)
        if not number or not math.isfinite(percent) or not 0 < percent <= 100:
            raise ValueError(f"the mirror percent must be a number with 0 < percent <= 100, got {percent!r}")
        if len(workloads) < 2:
            raise ValueError("mirroring needs a candidate to mirror to")
        if sticky is not None:
            raise ValueError(
                "an A/B test with sticky routing cannot mirror as well: its candidate's metrics "
                "would mix its own users with the copies of the baseline's"
            )
    if sticky is None:
        return
    if len(workloads) < 2:
        raise ValueError(f"an A/B test routes a baseline and at least one candidate, got {workloads}")
    if not _COOKIE_NAME.fullmatch(sticky.cookie):
        raise ValueError(f"the sticky cookie's name must be a token (RFC 6265), got {sticky.cookie!r}")
    age = sticky.max_age_seconds
    if isinstance(age, bool) or not isinstance(age, int) or age < 1:
        raise ValueError(f"the sticky cookie's max age must be a positive number of seconds, got {age!r}")
    if not all(isinstance(match, Mapping) for match in sticky.cohort):
        raise ValueError("every cohort match must be an Istio HTTPMatchRequest (a mapping)")


def _where(target: ports.RouteTarget) -> str:
    return f"VirtualService {target.namespace}/{target.name}"
