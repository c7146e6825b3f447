"""A stand-in for Istio and the model servers, so the operator runs end to end locally.

The operator only touches a mesh in two places: the VirtualService it writes, and
the ``istio_*`` metrics that Prometheus scrapes.  This simulator closes that loop
without a cluster: every tick it reads each app's VirtualService back (through an
injected callable, the Kubernetes API in the local stack), routes the app's
synthetic requests by the weights it finds there, and exports what Istio's
destination-side reporter would, on its own ``/metrics`` endpoint.

The traffic model lives in ``traffic`` (pure, shared with the virtual-time
simulator); this module adds the clock, the threads, the state and the exposition.
Metrics go to a private ``CollectorRegistry`` and histograms are updated in bulk,
so many simulators (one per test) can coexist and high rates stay cheap.

An app may also have a population of ``Users`` (for A/B tests): each request then
comes from one user, with that user's headers and cookies, is routed on its own
as Istio would route it (so cookie-sticky routes and header cohorts work), and
its ``set-cookie`` answer goes into the user's cookie jar.  Such apps also export
business counters per variant and segment (``model_requests_total``,
``model_conversions_total``, ``model_revenue_total``, ``model_revenue_squared_total``).
Apps without users keep the batch path: one routing decision per tick.

Shadow traffic works on both paths: when the route a request takes has a
``mirror`` (or ``mirrors``), that share of its requests is copied to the
mirror's workload, which serves the copies as any request (its profile decides
errors and latency) and shows them in Istio's series, as Istio's destination
reporter counts shadow requests at the shadow workload.  The user only ever gets
the primary destination's answer: cookies, assignments and business outcomes
come from it alone.  An app's ``agreement`` makes the shadow's answers agree with
the primary's with a given probability, counted in ``model_shadow_compared_total``
and ``model_shadow_agreed_total``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from wsgiref import simple_server

import numpy as np
import prometheus_client
from kubernetes.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from modelrollout.localstack import traffic

logger = logging.getLogger(__name__)

FetchVirtualService = Callable[[str, str], Mapping[str, Any] | None]
"""(namespace, name) -> the VirtualService object, or None when it does not exist."""

# The labels of Istio's standard metrics, as its destination reporter emits them.
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_version",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)
_WORKLOAD, _WORKLOAD_NAMESPACE, _CODE = (
    LABELS.index(name) for name in ("destination_workload", "destination_workload_namespace", "response_code")
)
UNKNOWN_WORKLOAD = "unknown"
ERROR_CODE = "500"
# A destination no variant claims has no endpoints: Envoy answers 503 itself, fast ("no route").
_NO_ENDPOINTS = traffic.VariantProfile(error_rate=1.0, latency_median_ms=1.0, latency_sigma=0.3)
_BUCKET_LABELS = tuple(f"{bound:.6g}" for bound in traffic.ISTIO_DURATION_BUCKETS_MS)  # as Envoy prints them

# The business counters of apps with users: labelled by these and by the population's segment labels.
BUSINESS_LABELS = ("destination_workload", "destination_workload_namespace")
BUSINESS_METRICS = (
    ("model_requests_total", "Requests served, as the application counts them."),
    ("model_conversions_total", "Successful requests after which the user converted."),
    ("model_revenue_total", "Revenue of the conversions."),
    ("model_revenue_squared_total", "Sum of the squared revenue of each conversion."),
    # A request whose answer gave the user a cookie value they did not hold: a user (newly) assigned.
    # An application counts these as requests arriving without the experiment's cookie.
    ("model_assignments_total", "Users assigned to this variant (first request without the cookie)."),
)
# The shadow comparison counters of apps with ``agreement``, labelled by BUSINESS_LABELS (the shadow's).
SHADOW_METRICS = (
    ("model_shadow_compared_total", "Mirrored requests whose answer was compared with the primary's."),
    ("model_shadow_agreed_total", "Compared mirrored requests whose answer agreed with the primary's."),
)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclasses.dataclass(frozen=True)
class User:
    """One simulated user: a stable id, a value of each segment label, extra request headers."""

    id: str
    segments: Mapping[str, str]  # segment label -> value
    headers: Mapping[str, str]  # lower-case header name -> value


@dataclasses.dataclass(frozen=True)
class Users:
    """The users calling an app, and what the business gets from the answers they receive.

    ``segments`` maps a segment label (a Prometheus label of the business counters)
    to the share of users having each value; the shares sum to 1.  ``headers`` maps
    a request header to the share of users carrying each value; users beyond the
    shares' sum do not send the header (``{"x-user-tier": {"beta": 0.3}}``: 30 % of
    users are beta users).  Both are drawn once per user from ``seed``, so the same
    ``Users`` always yields the same ``population()``.

    ``outcomes`` gives each variant's (workload's) outcomes; a workload not listed
    never converts.  ``segment_outcomes`` overrides them for users in a segment:
    workload -> ``"label=value"`` (or ``"label=value,label=value"``) -> outcomes.
    When several overrides fit a user, the one naming the most labels wins, then
    the first listed.
    """

    count: int = 2000
    segments: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    headers: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    outcomes: Mapping[str, traffic.Outcomes] = dataclasses.field(default_factory=dict)
    segment_outcomes: Mapping[str, Mapping[str, traffic.Outcomes]] = dataclasses.field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a population needs at least one user, got {self.count}")
        for label, shares in self.segments.items():
            reserved = label.startswith("__") or label in (*BUSINESS_LABELS, "le")
            if reserved or not _LABEL_NAME.fullmatch(label):
                raise ValueError(f"segment label {label!r} cannot be a label of the business counters")
            _check_shares(f"segment {label!r}", shares)
            if not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9):
                raise ValueError(f"the shares of segment {label!r} must sum to 1, got {dict(shares)}")
        for name, shares in self.headers.items():
            if not name or name.lower() == "cookie":
                raise ValueError(f"cannot draw header {name!r} (a user's cookie header is their cookie jar)")
            _check_shares(f"header {name!r}", shares)
            if sum(shares.values()) > 1.0 + 1e-9:
                raise ValueError(f"the shares of header {name!r} must not exceed 1, got {dict(shares)}")
        for overrides in self.segment_outcomes.values():
            for segment in overrides:
                self.parse_segment(segment)

    def parse_segment(self, segment: str) -> dict[str, str]:
        """``"region=us,device=ios"`` -> label -> value, checked against ``segments``."""
        conditions: dict[str, str] = {}
        for part in segment.split(","):
            label, separator, value = part.partition("=")
            label, value = label.strip(), value.strip()
            if not separator or label not in self.segments or value not in self.segments[label]:
                raise ValueError(f"segment {segment!r}: {part!r} is no label=value of {dict(self.segments)}")
            if label in conditions:
                raise ValueError(f"segment {segment!r} names label {label!r} twice")
            conditions[label] = value
        return conditions

    def population(self) -> tuple[User, ...]:
        """The users, the same for the same fields: ids ``u0000``, ``u0001``..."""
        rng = np.random.default_rng(self.seed)
        columns: list[tuple[str, list[str | None], list[int]]] = []
        for label, shares in self.segments.items():
            values: list[str | None] = list(shares)
            p = np.asarray([shares[v] for v in shares], dtype=float)
            columns.append((label, values, rng.choice(len(values), size=self.count, p=p / p.sum()).tolist()))
        header_columns: list[tuple[str, list[str | None], list[int]]] = []
        for name, shares in self.headers.items():
            values = [*shares, None]
            p = np.asarray([*shares.values(), max(0.0, 1.0 - sum(shares.values()))], dtype=float)
            column = rng.choice(len(values), size=self.count, p=p / p.sum())
            header_columns.append((name.lower(), values, column.tolist()))
        width = len(str(self.count - 1))
        return tuple(
            User(
                id=f"u{i:0{width}d}",
                segments={label: str(values[column[i]]) for label, values, column in columns},
                headers={
                    name: value
                    for name, values, column in header_columns
                    if (value := values[column[i]]) is not None
                },
            )
            for i in range(self.count)
        )


def _check_shares(what: str, shares: Mapping[str, float]) -> None:
    if not shares or any(not (0.0 <= share <= 1.0) for share in shares.values()):
        raise ValueError(f"{what} needs values with shares within 0..1, got {dict(shares)}")


@dataclasses.dataclass(frozen=True)
class MeshApp:
    """A population of clients calling one service through one VirtualService."""

    namespace: str  # of the VirtualService and the workloads
    virtual_service: str
    host: str  # the service the clients call (short or fully qualified)
    variants: Mapping[str, tuple[str, traffic.VariantProfile]]  # subset (or host) -> (workload, profile)
    rps: float = 50.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    uri: str = "/"
    name: str | None = None  # tells apart several apps on one VirtualService; default its name
    source_workload: str = "istio-ingressgateway"
    source_workload_namespace: str = "istio-system"
    # With users, each request comes from one of them (with ``headers`` and the user's own headers
    # and cookies) and is routed on its own; the app then exports business counters too.
    users: Users | None = None
    # Mirror (shadow) workload -> probability that its answer to a mirrored request agrees with the
    # primary's; the app compares the answers of the workloads listed here (``SHADOW_METRICS``).
    agreement: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("an app needs at least one variant")
        if self.rps < 0:
            raise ValueError(f"rps must not be negative, got {self.rps}")
        workloads = {workload for workload, _ in self.variants.values()}
        for workload, probability in self.agreement.items():
            if workload not in workloads:
                raise ValueError(f"agreement for {workload!r}: not a workload of {sorted(workloads)}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"the agreement of {workload!r} must be within 0..1, got {probability}")
        if self.users is not None:
            workloads = {workload for workload, _ in self.variants.values()}
            unknown = (set(self.users.outcomes) | set(self.users.segment_outcomes)) - workloads
            if unknown:
                raise ValueError(f"outcomes for {sorted(unknown)}: not workloads of {sorted(workloads)}")

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name or self.virtual_service


class Observed(NamedTuple):
    requests: int
    errors: int


@dataclasses.dataclass(frozen=True)
class AppStatus:
    """What the simulator last saw for an app."""

    last_weights: Mapping[str, int] | None  # workload -> weight in the route taken; None: no VS seen yet
    fetch_failures: int  # ticks on which the VirtualService could not be read
    unrouted: int  # requests that no route or destination took (Istio: 404)


class _Target(NamedTuple):
    workload: str
    profile: traffic.VariantProfile
    labels: tuple[tuple[str, str], ...]  # every label but response_code and response_flags


# The mirrors of a route: the shadow workloads (with endpoints) and the percent each gets.
_Mirrors = tuple[tuple[_Target, float], ...]


class _Population:
    """An app's users and what the simulator keeps per user (guarded by the simulator's locks)."""

    def __init__(self, app: MeshApp, users: Users) -> None:
        self.spec = users
        self.users = users.population()
        self.labels = tuple(users.segments)
        common = {name.lower(): value for name, value in app.headers.items()}
        self.fixed_cookie = common.pop("cookie", None)  # the app's own cookie header goes first
        self.headers = [{**common, **user.headers} for user in self.users]
        self.segment_values = [tuple(user.segments[label] for label in self.labels) for user in self.users]
        self.jars = [traffic.CookieJar() for _ in self.users]
        self.served: list[dict[str, int]] = [{} for _ in self.users]
        self.outcomes = dict(users.outcomes)
        self.segment_outcomes = {workload: dict(o) for workload, o in users.segment_outcomes.items()}

    def request_headers(self, index: int, now: float) -> Mapping[str, str]:
        cookie = self.jars[index].header(now)
        if self.fixed_cookie is not None:
            cookie = self.fixed_cookie if cookie is None else f"{self.fixed_cookie}; {cookie}"
        return self.headers[index] if cookie is None else {**self.headers[index], "cookie": cookie}

    def outcomes_for(self, workload: str, values: tuple[str, ...]) -> traffic.Outcomes:
        segments = dict(zip(self.labels, values, strict=True))
        best, named = self.outcomes.get(workload, traffic.NO_OUTCOMES), 0
        for segment, outcomes in self.segment_outcomes.get(workload, {}).items():
            conditions = self.spec.parse_segment(segment)
            if len(conditions) > named and all(segments[k] == v for k, v in conditions.items()):
                best, named = outcomes, len(conditions)
        return best


class _AppState:
    def __init__(self, app: MeshApp) -> None:
        self.app = app
        self.profiles = {workload: profile for workload, profile in app.variants.values()}
        self.last_spec: Mapping[str, Any] | None = None
        self.last_weights: dict[str, int] | None = None
        self.fetch_failures = 0
        self.unrouted = 0
        self.population = None if app.users is None else _Population(app, app.users)

    def target(self, host: str, subset: str | None) -> _Target:
        """The variant serving a route destination, by subset, else by host."""
        app = self.app
        fqdn = _fqdn(host, app.namespace)
        if subset is not None:
            key = subset if subset in app.variants else None
        else:
            key = next((k for k in app.variants if _fqdn(k, app.namespace) == fqdn), None)
        if key is None:
            workload, profile = UNKNOWN_WORKLOAD, _NO_ENDPOINTS
        else:
            workload = app.variants[key][0]
            profile = self.profiles[workload]
        return _Target(workload, profile, self._labels(workload, fqdn, subset or UNKNOWN_WORKLOAD))

    def mirrors(self, route: Mapping[str, Any], cache: dict[tuple[str, str | None], _Target]) -> _Mirrors:
        """The route's mirrors that copy anything to a workload; ``cache`` keeps targets by destination.

        A mirror to a destination no variant claims has no endpoints: Envoy drops the
        copy and no destination reporter sees it.
        """
        result = []
        for mirror in traffic.route_mirrors(route):
            target = cache.get(mirror.destination)
            if target is None:
                target = cache[mirror.destination] = self.target(mirror.host, mirror.subset)
            if mirror.percent > 0 and target.workload != UNKNOWN_WORKLOAD:
                result.append((target, mirror.percent))
        return tuple(result)

    def fallback(self) -> _Target:
        """Before any VirtualService was seen, the first variant takes everything."""
        key, (workload, _) = next(iter(self.app.variants.items()))
        fqdn = _fqdn(self.app.host, self.app.namespace)
        return _Target(workload, self.profiles[workload], self._labels(workload, fqdn, key))

    def _labels(self, workload: str, fqdn: str, version: str) -> tuple[tuple[str, str], ...]:
        name, service_namespace = fqdn.split(".")[:2]
        return tuple(
            {
                "reporter": "destination",
                "source_workload": self.app.source_workload,
                "source_workload_namespace": self.app.source_workload_namespace,
                "destination_workload": workload,
                "destination_workload_namespace": self.app.namespace,
                "destination_service": fqdn,
                "destination_service_name": name,
                "destination_service_namespace": service_namespace,
                # Istio reads the pod's version label; subsets are usually defined by it.
                "destination_version": version,
                "request_protocol": "http",
                "connection_security_policy": "mutual_tls",
            }.items()
        )


def _fqdn(host: str, namespace: str) -> str:
    """Istio reads a short host name relative to the VirtualService's namespace."""
    return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


class MeshSimulator:
    """Routes synthetic traffic by live VirtualServices and serves Istio's metrics.

    ``start()`` serves ``/metrics`` on 127.0.0.1 and ticks every ``tick_seconds``
    in a background thread; ``step(seconds)`` does one tick synchronously.
    """

    def __init__(
        self,
        fetch_virtual_service: FetchVirtualService,
        *,
        port: int = 0,
        tick_seconds: float = 0.25,
        seed: int | None = None,
    ) -> None:
        self._fetch = fetch_virtual_service
        self._requested_port = port
        self._tick_seconds = tick_seconds
        self._rng = np.random.default_rng(seed)
        self._apps: dict[tuple[str, str], _AppState] = {}
        self._lock = threading.Lock()  # guards apps and series
        self._step_lock = threading.Lock()  # one tick at a time (and the rng)
        # label values (in LABELS order) -> request count / (cumulative bucket counts, sum)
        self._requests: dict[tuple[str, ...], int] = {}
        self._durations: dict[tuple[str, ...], tuple[traffic.Counts, float]] = {}
        # business labels -> [requests, conversions, revenue, revenue squared] (apps with users)
        self._business: dict[tuple[tuple[str, str], ...], list[float]] = {}
        # (namespace, workload) -> requests it served as a mirror's copies
        self._mirrored: dict[tuple[str, str], int] = {}
        # (namespace, shadow workload) -> [compared, agreed] (apps with ``agreement``)
        self._shadow: dict[tuple[str, str], list[int]] = {}
        self._clock = 0.0  # simulated seconds so far: the users' cookie jars expire cookies by it
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server: _MetricsServer | None = None
        self._server_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------- apps

    def add_app(self, app: MeshApp) -> None:
        with self._lock:
            if app.key in self._apps:
                raise ValueError(f"app {app.key} already exists")
            self._apps[app.key] = _AppState(app)

    def remove_app(self, namespace: str, name: str) -> None:
        """Stop the app's traffic; what it already sent stays in the metrics."""
        with self._lock:
            del self._apps[namespace, name]

    def set_profile(self, namespace: str, workload: str, profile: traffic.VariantProfile) -> None:
        """Change how a variant answers from the next tick on, in every app that uses it."""
        with self._lock:
            states = [
                s for s in self._apps.values() if s.app.namespace == namespace and workload in s.profiles
            ]
            if not states:
                raise KeyError(f"no app in namespace {namespace!r} has workload {workload!r}")
            for state in states:
                state.profiles[workload] = profile

    def set_outcomes(
        self,
        namespace: str,
        workload: str,
        outcomes: traffic.Outcomes | None,
        *,
        segment: str | None = None,
    ) -> None:
        """Change a variant's business outcomes from the next tick on, in every app with users using it.

        With ``segment`` (``"region=us"``) only for users in that segment: an override
        as in ``Users.segment_outcomes``.  None removes the outcomes (the override;
        without a segment, the variant's own, so that it never converts).
        """
        with self._lock:
            populations = [
                s.population
                for s in self._apps.values()
                if s.population is not None and s.app.namespace == namespace and workload in s.profiles
            ]
            if not populations:
                raise KeyError(f"no app with users in namespace {namespace!r} has workload {workload!r}")
            for population in populations:
                if segment is not None:
                    population.spec.parse_segment(segment)
            for population in populations:
                if segment is None:
                    table: dict[str, traffic.Outcomes] = population.outcomes
                    key = workload
                else:
                    table, key = population.segment_outcomes.setdefault(workload, {}), segment
                if outcomes is None:
                    table.pop(key, None)
                else:
                    table[key] = outcomes

    # ------------------------------------------------------------- assertions

    def observed(self, namespace: str, workload: str) -> Observed:
        """Requests and errors served so far by a workload (as exported), mirrored copies included."""
        with self._lock:
            counts = [
                (v[_CODE], n)
                for v, n in self._requests.items()
                if (v[_WORKLOAD], v[_WORKLOAD_NAMESPACE]) == (workload, namespace)
            ]
        return Observed(sum(n for _, n in counts), sum(n for code, n in counts if code.startswith("5")))

    def mirrored(self, namespace: str, workload: str) -> int:
        """How many of the requests a workload served were a mirror's copies (no user got their answer)."""
        with self._lock:
            return self._mirrored.get((namespace, workload), 0)

    def shadow_agreement(self, namespace: str, workload: str) -> tuple[int, int]:
        """(compared, agreed) of a shadow workload's answers, as exported."""
        with self._lock:
            compared, agreed = self._shadow.get((namespace, workload), [0, 0])
            return compared, agreed

    def status(self, namespace: str, name: str) -> AppStatus:
        with self._lock:
            state = self._apps[namespace, name]
            weights = None if state.last_weights is None else dict(state.last_weights)
            return AppStatus(weights, state.fetch_failures, state.unrouted)

    def last_weights(self, namespace: str, name: str) -> Mapping[str, int] | None:
        """The weights of the route that the app's requests took on the last tick.

        For an app with users: the route of a request with the app's headers only
        (no user headers, no cookie); each user's own requests may take other routes.
        """
        return self.status(namespace, name).last_weights

    def assignments(self, namespace: str, name: str) -> Mapping[str, Mapping[str, int]]:
        """User id -> workload -> requests of that user it served, for the users who were served."""
        with self._lock:
            population = self._population(namespace, name)
            return {
                user.id: dict(served)
                for user, served in zip(population.users, population.served, strict=True)
                if served
            }

    def cookies(self, namespace: str, name: str) -> Mapping[str, Mapping[str, str]]:
        """User id -> the cookies in the user's jar now (name -> value), for users holding any."""
        with self._lock:
            population = self._population(namespace, name)
            pairs = zip(population.users, population.jars, strict=True)
            return {user.id: cookies for user, jar in pairs if (cookies := jar.cookies(self._clock))}

    def users(self, namespace: str, name: str) -> tuple[User, ...]:
        """The app's users (as ``Users.population()`` drew them)."""
        with self._lock:
            return self._population(namespace, name).users

    def _population(self, namespace: str, name: str) -> _Population:
        population = self._apps[namespace, name].population
        if population is None:
            raise ValueError(f"app {namespace}/{name} has no users")
        return population

    # ------------------------------------------------------------------ ticks

    def step(self, seconds: float) -> None:
        """Simulate ``seconds`` of traffic of every app, reading each VirtualService once."""
        with self._step_lock:
            with self._lock:
                states = list(self._apps.values())
            specs: dict[tuple[str, str], Mapping[str, Any] | None] = {}
            for state in states:
                vs = (state.app.namespace, state.app.virtual_service)
                if vs not in specs:
                    specs[vs] = self._fetch_spec(*vs)
                if state.population is None:
                    self._step_app(state, specs[vs], seconds)
                else:
                    self._step_users(state, state.population, specs[vs], seconds)
            self._clock += seconds

    def _fetch_spec(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj = self._fetch(namespace, name)
        except Exception as e:  # the API server is someone else's: keep going on what we know
            logger.debug("cannot read VirtualService %s/%s: %s", namespace, name, e)
            return None
        spec = None if obj is None else obj.get("spec")
        return spec if isinstance(spec, Mapping) else None

    def _step_app(self, state: _AppState, spec: Mapping[str, Any] | None, seconds: float) -> None:
        n = int(self._rng.poisson(state.app.rps * seconds))
        with self._lock:  # routing reads the state that set_profile writes
            spec = self._current_spec(state, spec)
            weights, mirrors = self._route(state, spec)
            if not weights or sum(weights.values()) <= 0:
                state.unrouted += n
                return
        for target, count in traffic.split_requests(self._rng, n, weights).items():
            if count:
                batch = traffic.simulate_batch(self._rng, count, target.profile)
                self._record(target, batch)
                self._mirror(state, batch, mirrors)

    @staticmethod
    def _current_spec(state: _AppState, fetched: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The spec to route by: the one just read, else the last one known (a failed read)."""
        if fetched is None:
            state.fetch_failures += 1
            return state.last_spec
        state.last_spec = fetched
        return fetched

    def _step_users(
        self, state: _AppState, population: _Population, spec: Mapping[str, Any] | None, seconds: float
    ) -> None:
        """Route each request of the tick on its own: from a random user, with their headers and cookies."""
        n = int(self._rng.poisson(state.app.rps * seconds))
        start = self._clock
        groups: dict[tuple[_Target, tuple[str, ...], _Mirrors], int] = {}
        assigned: dict[tuple[_Target, tuple[str, ...], _Mirrors], int] = {}
        with self._lock:
            spec = self._current_spec(state, spec)
            self._route(state, spec)  # notes last_weights
            targets: dict[tuple[str, str | None], _Target] = {}
            for i, index in enumerate(self._rng.integers(len(population.users), size=n).tolist()):
                now = start + seconds * i / n  # spread over the tick: cookies may expire within it
                new = False
                mirrors: _Mirrors = ()
                if spec is None:
                    target = state.fallback()
                else:
                    headers = population.request_headers(index, now)
                    routed = traffic.route_request(self._rng, spec, headers, state.app.uri)
                    if routed is None:
                        state.unrouted += 1
                        continue
                    jar = population.jars[index]
                    before = jar.cookies(now)
                    jar.receive(routed.response_headers, now)
                    after = jar.cookies(now)
                    new = any(before.get(name) != value for name, value in after.items())
                    found = targets.get(routed.destination)
                    if found is None:
                        found = targets[routed.destination] = state.target(routed.host, routed.subset)
                    target = found
                    mirrors = state.mirrors(routed.route, targets)
                served = population.served[index]  # the user's answer is the primary's, never a mirror's
                served[target.workload] = served.get(target.workload, 0) + 1
                group = (target, population.segment_values[index], mirrors)
                groups[group] = groups.get(group, 0) + 1
                if new:
                    assigned[group] = assigned.get(group, 0) + 1
            plan = [
                (
                    target,
                    values,
                    mirrors,
                    count,
                    assigned.get((target, values, mirrors), 0),
                    population.outcomes_for(target.workload, values),
                )
                for (target, values, mirrors), count in groups.items()
            ]
        for target, values, mirrors, count, new_users, outcomes in plan:
            batch = traffic.simulate_batch(self._rng, count, target.profile)
            self._record(target, batch)
            self._mirror(state, batch, mirrors)
            if target.workload == UNKNOWN_WORKLOAD:  # no model server answered: it counted nothing
                continue
            result = traffic.simulate_outcomes(self._rng, batch.requests - batch.errors, outcomes)
            labels = (
                ("destination_workload", target.workload),
                ("destination_workload_namespace", state.app.namespace),
                *zip(population.labels, values, strict=True),
            )
            with self._lock:
                sums = self._business.setdefault(labels, [0, 0, 0.0, 0.0, 0])
                sums[0] += batch.requests
                sums[1] += result.conversions
                sums[2] += result.revenue
                sums[3] += result.revenue_squared
                sums[4] += new_users

    def _route(self, state: _AppState, spec: Mapping[str, Any] | None) -> tuple[dict[_Target, int], _Mirrors]:
        """The app's destinations and their weights under ``spec``, and the route's mirrors.

        Notes the weights seen.
        """
        if spec is None:
            return {state.fallback(): 100}, ()
        app = state.app
        route = traffic.route_for_request(spec, app.headers, app.uri)
        destinations = traffic.destination_weights(route) if route is not None else {}
        weights: dict[_Target, int] = {}
        state.last_weights = {}
        for (host, subset), weight in destinations.items():
            target = state.target(host, subset)
            weights[target] = weights.get(target, 0) + weight
            state.last_weights[target.workload] = state.last_weights.get(target.workload, 0) + weight
        return weights, (state.mirrors(route, {}) if route is not None else ())

    def _mirror(self, state: _AppState, primary: traffic.Batch, mirrors: _Mirrors) -> None:
        """Copy the mirrored share of ``primary``'s requests to each mirror: served, recorded, compared."""
        namespace = state.app.namespace
        for target, percent in mirrors:
            agreement = state.app.agreement.get(target.workload)
            shadow = traffic.simulate_shadow(
                self._rng, primary, percent, target.profile, 1.0 if agreement is None else agreement
            )
            if not shadow.batch.requests:
                continue
            self._record(target, shadow.batch)
            with self._lock:
                key = (namespace, target.workload)
                self._mirrored[key] = self._mirrored.get(key, 0) + shadow.batch.requests
                if agreement is not None:
                    sums = self._shadow.setdefault(key, [0, 0])
                    sums[0] += shadow.compared
                    sums[1] += shadow.agreed

    def _record(self, target: _Target, batch: traffic.Batch) -> None:
        error_code, error_flags = ("503", "NR") if target.workload == UNKNOWN_WORKLOAD else (ERROR_CODE, "-")
        outcomes = (
            ("200", "-", batch.requests - batch.errors, batch.bucket_counts - batch.error_bucket_counts,
             batch.latency_sum_ms - batch.error_latency_sum_ms),
            (error_code, error_flags, batch.errors, batch.error_bucket_counts, batch.error_latency_sum_ms),
        )  # fmt: skip
        with self._lock:
            for code, flags, count, buckets, total_ms in outcomes:
                if not count:
                    continue
                labels = dict(target.labels, response_code=code, response_flags=flags)
                values = tuple(labels[name] for name in LABELS)
                self._requests[values] = self._requests.get(values, 0) + count
                old = self._durations.get(values)
                self._durations[values] = (
                    (buckets, total_ms) if old is None else (old[0] + buckets, old[1] + total_ms)
                )

    # ------------------------------------------------------------- exposition

    def collect(self) -> Iterable[Metric]:
        """The prometheus_client Collector protocol: snapshot the series under the lock."""
        requests = CounterMetricFamily("istio_requests_total", "Total requests.", labels=LABELS)
        durations = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "Request duration in milliseconds.", labels=LABELS
        )
        with self._lock:
            for values, count in self._requests.items():
                requests.add_metric(values, count)
            for values, (cumulative, total_ms) in self._durations.items():
                buckets = [
                    *zip(_BUCKET_LABELS, cumulative[:-1].tolist(), strict=True),
                    ("+Inf", cumulative[-1]),
                ]
                durations.add_metric(values, [(le, float(c)) for le, c in buckets], total_ms)
            shadow = [
                CounterMetricFamily(name, documentation, labels=BUSINESS_LABELS)
                for name, documentation in SHADOW_METRICS
            ]
            for (namespace, workload), counts in self._shadow.items():
                for family, count in zip(shadow, counts, strict=True):
                    family.add_metric((workload, namespace), count)
            shadow = shadow if self._shadow else []
            if not self._business:
                return [requests, durations, *shadow]
            business = [CounterMetricFamily(name, documentation) for name, documentation in BUSINESS_METRICS]
            for labels, sums in self._business.items():  # label names vary with the apps' segments
                for family, (name, _), value in zip(business, BUSINESS_METRICS, sums, strict=True):
                    family.add_sample(name, dict(labels), value)
        return [requests, durations, *shadow, *business]

    # ------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the mesh simulator is not started")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> MeshSimulator:
        if self._server is not None:
            return self
        self._server = simple_server.make_server(
            "127.0.0.1",
            self._requested_port,
            prometheus_client.make_wsgi_app(self.registry),
            server_class=_MetricsServer,
            handler_class=_QuietHandler,
        )
        # A short poll keeps stop() quick; the default half second adds up over a test suite.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._server_thread = threading.Thread(target=serve, name="mesh-metrics", daemon=True)
        self._server_thread.start()
        self._stopping.clear()
        self._ticker = threading.Thread(target=self._run, name="mesh-simulator", daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join()
            self._server_thread = None

    def __enter__(self) -> MeshSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopping.wait(self._tick_seconds):
            now = time.monotonic()
            try:
                self.step(now - last)
            except Exception:  # a broken tick must not silently end all traffic
                logger.exception("mesh simulator tick failed")
            last = now


class _MetricsServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news."""


def fetch_from_kubernetes(api: Any, version: str = "v1", timeout: float = 5.0) -> FetchVirtualService:
    """A fetch callable backed by a ``kubernetes.client.CustomObjectsApi``.

    The timeout bounds how long a hung API server can stall a tick (traffic is
    then caught up on the next one, as ticks measure the time that passed).
    """

    def fetch(namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj: Mapping[str, Any] = api.get_namespaced_custom_object(
                "networking.istio.io", version, namespace, "virtualservices", name, _request_timeout=timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    return fetch
