"""The small interfaces between the reconciler and the outside world.

Flagger's shape: a traffic router owns the routing object, a metric provider
runs queries, an event sink tells the user.  Each has one real adapter
(Istio, Prometheus, Kubernetes Events) and one in-memory adapter for tests
and simulation.  The types here are plain frozen data, so the pure core and
the adapters agree on them without importing each other.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any, Literal, Protocol

# --------------------------------------------------------------------------- routing


@dataclasses.dataclass(frozen=True)
class Destination:
    """A variant as the router sees it: where Istio sends its traffic."""

    workload: str  # the variant's key everywhere (weights, metrics, status)
    host: str | None = None  # None: whatever host the route already uses
    subset: str | None = None


@dataclasses.dataclass(frozen=True)
class Stickiness:
    """Sticky A/B routing: a cookie keeps each user on the variant their first request was split to."""

    cookie: str  # the cookie's name, e.g. "mexp-churn-v2"; its value is the variant's workload
    max_age_seconds: int  # the cookie's Max-Age
    # Istio HTTPMatchRequests selecting who takes part (ORed); empty: every request of the route
    cohort: tuple[Mapping[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class RouteTarget:
    """Everything the router needs to know about one experiment."""

    experiment: str  # experiment name: keys the saved original routes
    namespace: str  # of the VirtualService
    name: str  # of the VirtualService
    routes: tuple[str, ...] | None  # http route names to manage; None: every route holding the baseline
    variants: tuple[Destination, ...]  # baseline first, then the candidate(s)
    sticky: Stickiness | None = None  # an A/B test's cookie affinity; None: plain weighted routing
    # Shadow traffic: percent (0 < p <= 100) of each managed route's requests mirrored to the first
    # candidate (Istio ``mirror``/``mirrorPercentage``; users only get the route's answer); None: no mirror
    mirror_percent: float | None = None

    @property
    def baseline(self) -> Destination:
        return self.variants[0]


@dataclasses.dataclass(frozen=True)
class RouteWeights:
    """The split of one managed http route, as read back from the object."""

    route: str  # the route's name, or "#<index>" for an unnamed one
    weights: Mapping[str, int]  # workload -> percent of the route's traffic


@dataclasses.dataclass(frozen=True)
class TrafficSplit:
    routes: tuple[RouteWeights, ...]
    mirror: float | None = None  # percent of the managed routes' requests mirrored to the candidate

    def weights(self) -> dict[str, int] | None:
        """The common split of all managed routes, or None when they disagree."""
        if not self.routes:
            return None
        first = dict(self.routes[0].weights)
        return first if all(dict(r.weights) == first for r in self.routes[1:]) else None


class RouterError(Exception):
    """The router cannot do its work; ``reason`` is a stable, CamelCase cause."""

    reason = "RouterError"


class VirtualServiceNotFound(RouterError):
    reason = "VirtualServiceNotFound"


class RouteNotFound(RouterError):
    reason = "RouteNotFound"


class RouterConflict(RouterError):
    """Someone else kept writing the object; retrying did not get through."""

    reason = "Conflict"


class TrafficRouter(Protocol):
    def reconcile(self, target: RouteTarget) -> TrafficSplit:
        """Ensure structure (candidate destinations present, original saved); return the split."""

    def get_routes(self, target: RouteTarget) -> TrafficSplit:
        """Read the current split back from the routing object (never from memory)."""

    def set_routes(self, target: RouteTarget, weights: Mapping[str, int]) -> TrafficSplit:
        """Set every managed route to ``weights`` (workload -> percent, summing to 100)."""

    def finalize(self, target: RouteTarget) -> None:
        """Restore the routes saved by ``reconcile``; a no-op when the object is gone."""


# --------------------------------------------------------------------------- metrics


class QueryOutcome(str, enum.Enum):
    """What came back from a query. Only ``OK`` carries a usable value."""

    OK = "Ok"
    EMPTY = "Empty"  # no series: nothing was measured
    NAN = "NaN"  # e.g. 0/0 when there was no traffic in the window
    INF = "Inf"
    MULTIPLE_SERIES = "MultipleSeries"  # the query is ambiguous: aggregate it
    TIMEOUT = "Timeout"
    UNREACHABLE = "Unreachable"  # connection refused, DNS, TLS...
    INVALID_QUERY = "InvalidQuery"  # Prometheus rejected the PromQL
    ERROR = "Error"  # anything else (HTTP 5xx, malformed answer)

    @property
    def is_no_data(self) -> bool:
        """The query ran, but measured nothing usable."""
        return self in (QueryOutcome.EMPTY, QueryOutcome.NAN)


@dataclasses.dataclass(frozen=True)
class QueryResult:
    outcome: QueryOutcome
    value: float | None = None  # set only when outcome is OK
    detail: str = ""  # one line for humans, e.g. "connection refused"

    @property
    def ok(self) -> bool:
        return self.outcome is QueryOutcome.OK


@dataclasses.dataclass(frozen=True)
class SeriesResult:
    """An instant query that yields several series, e.g. a histogram's buckets by ``le``."""

    outcome: QueryOutcome
    series: tuple[tuple[Mapping[str, str], float], ...] = ()  # (labels, value); set when OK
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is QueryOutcome.OK


class MetricProvider(Protocol):
    """Instant queries, evaluated at ``at`` (the end of the measured window) or, without it, now."""

    def query(self, promql: str, at: datetime.datetime | None = None) -> QueryResult:
        """Run an instant query that should yield one number."""

    def query_series(self, promql: str, at: datetime.datetime | None = None) -> SeriesResult:
        """Run an instant query that may yield several series (an empty answer is EMPTY)."""

    def is_online(self) -> bool:
        """Whether the backend answers at all."""


# --------------------------------------------------------------------------- events

EventType = Literal["Normal", "Warning"]


class EventSink(Protocol):
    def emit(self, type: EventType, reason: str, message: str) -> None:
        """Tell the user (a Kubernetes Event on the experiment); must never raise."""
