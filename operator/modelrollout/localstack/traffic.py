"""Synthetic traffic: where Istio sends a request, and how each model variant answers it.

The operator never sees a mesh directly, only the numbers it leaves in Prometheus:
per-variant request and error counts and a latency histogram in Istio's buckets.
This module produces exactly those numbers from a VirtualService and a request
count, so a simulator can stand in for Istio and the model servers.

It is pure and seeded (no I/O, no clock; the caller owns the numpy ``Generator``)
so that the wall-clock mesh simulator and a virtual-time simulator running
thousands of experiments share one traffic model.  Batches are vectorised, and
above ``EXACT_SAMPLE_LIMIT`` requests their cost no longer grows with their size.

For sticky A/B tests it also routes single requests (``route_request``: the
destination and the response headers Istio adds, such as ``set-cookie``), keeps
a client's cookies (``CookieJar``, on a clock the caller passes in) and draws
business outcomes (``simulate_outcomes``: conversions and revenue).

For shadow traffic it reads a route's mirrors (``route_mirrors``: Istio's
``mirror``/``mirrorPercentage`` and ``mirrors``) and draws what a mirrored
share of a batch does at the shadow and how often both answers agree
(``simulate_shadow``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import special

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
    60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip
_BUCKETS = np.asarray(ISTIO_DURATION_BUCKETS_MS, dtype=float)

# Above this many requests a batch's latencies are drawn per bucket, not per request.
EXACT_SAMPLE_LIMIT = 1000

K = TypeVar("K", bound=Hashable)
Counts = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class VariantProfile:
    """How a model variant answers: its error rate and a lognormal latency."""

    error_rate: float  # probability that a request fails (0..1)
    latency_median_ms: float  # median of the lognormal latency
    latency_sigma: float  # standard deviation of log(latency); 0 = constant latency

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate}")
        if not self.latency_median_ms > 0:
            raise ValueError(f"latency_median_ms must be positive, got {self.latency_median_ms}")
        if not self.latency_sigma >= 0:
            raise ValueError(f"latency_sigma must not be negative, got {self.latency_sigma}")


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """What one variant did with ``requests`` requests; arrays are cumulative per bucket.

    ``bucket_counts[i]`` counts requests with latency <= ``ISTIO_DURATION_BUCKETS_MS[i]``;
    the last entry is the ``+Inf`` bucket and equals ``requests``.  The ``error_*``
    fields describe the failed requests alone (a subset of the totals), because
    Istio labels the histogram by response code too.  Do not mutate the arrays.
    """

    requests: int
    errors: int
    bucket_counts: Counts
    latency_sum_ms: float
    error_bucket_counts: Counts
    error_latency_sum_ms: float


def split_requests(rng: np.random.Generator, n: int, weights: Mapping[K, int]) -> dict[K, int]:
    """Send each of ``n`` requests to a key with probability weight / sum of weights.

    Weights are relative, as Istio's are (normally percents summing to 100).
    """
    if n < 0:
        raise ValueError(f"cannot split {n} requests")
    keys = list(weights)
    w = np.asarray([weights[k] for k in keys], dtype=float)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
    counts = rng.multinomial(n, w / w.sum())
    return {k: int(c) for k, c in zip(keys, counts, strict=True)}


def simulate_batch(rng: np.random.Generator, n: int, profile: VariantProfile) -> Batch:
    """Draw the outcome of ``n`` requests served by a variant with ``profile``."""
    if n < 0:
        raise ValueError(f"cannot simulate {n} requests")
    errors = int(rng.binomial(n, profile.error_rate))
    ok_counts, ok_sum = _latencies(rng, n - errors, profile)
    error_counts, error_sum = _latencies(rng, errors, profile)
    return Batch(
        requests=n,
        errors=errors,
        bucket_counts=np.cumsum(ok_counts + error_counts),
        latency_sum_ms=ok_sum + error_sum,
        error_bucket_counts=np.cumsum(error_counts),
        error_latency_sum_ms=error_sum,
    )


def _latencies(rng: np.random.Generator, n: int, profile: VariantProfile) -> tuple[Counts, float]:
    """Per-bucket (not cumulative) latency counts of ``n`` requests, and their sum in ms."""
    if n == 0:
        return np.zeros(len(_BUCKETS) + 1, dtype=np.int64), 0.0
    mu, sigma = math.log(profile.latency_median_ms), profile.latency_sigma
    if n <= EXACT_SAMPLE_LIMIT:
        samples = rng.lognormal(mu, sigma, n)
        # side="left": a latency equal to a bound belongs to that bucket (le means <=).
        index = np.searchsorted(_BUCKETS, samples, side="left")
        return np.bincount(index, minlength=len(_BUCKETS) + 1).astype(np.int64), float(samples.sum())
    # Many requests: the bucket counts are exactly multinomial, and the sum is
    # normal by the central limit theorem, so the cost stays O(buckets).
    counts = rng.multinomial(n, _bucket_probabilities(profile)).astype(np.int64)
    mean = math.exp(mu + sigma**2 / 2)
    variance = math.expm1(sigma**2) * math.exp(2 * mu + sigma**2)
    return counts, max(0.0, float(rng.normal(n * mean, math.sqrt(n * variance))))


@functools.lru_cache(maxsize=256)
def _bucket_probabilities(profile: VariantProfile) -> npt.NDArray[np.float64]:
    median = profile.latency_median_ms
    cdf: npt.NDArray[np.float64]
    if profile.latency_sigma < 1e-9:  # a point mass (and no overflow dividing by a subnormal sigma)
        cdf = np.greater_equal(_BUCKETS, median).astype(float)
    else:
        cdf = special.ndtr((np.log(_BUCKETS) - math.log(median)) / profile.latency_sigma)
    probabilities = np.clip(np.diff(cdf, prepend=0.0, append=1.0), 0.0, None)
    probabilities /= probabilities.sum()
    probabilities.flags.writeable = False
    return probabilities


# --------------------------------------------------------------------------- routing


def route_for_request(
    vs_spec: Mapping[str, Any], request_headers: Mapping[str, str], uri: str
) -> dict[str, Any] | None:
    """The http route of a VirtualService spec that Istio would pick, or None (a 404).

    Istio's first-match semantics: routes are tried in order; a route without
    ``match`` takes everything, otherwise any one of its HTTPMatchRequests must
    match, and within one every condition must hold.  Conditions supported:
    ``uri``, ``headers``, ``withoutHeaders`` (exact/prefix/regex) and
    ``ignoreUriCase``; a match using any other condition (``sourceLabels``,
    ``queryParams``, ``port``...) never matches here.
    """
    headers = {name.lower(): value for name, value in request_headers.items()}
    for route in vs_spec.get("http") or ():
        matches: Sequence[Mapping[str, Any]] = route.get("match") or ()
        if not matches or any(_matches(m, headers, uri) for m in matches):
            return dict(route)
    return None


_INERT_MATCH_KEYS = frozenset({"name", "ignoreUriCase", "statPrefix"})


def _matches(match: Mapping[str, Any], headers: Mapping[str, str], uri: str) -> bool:
    if set(match) - _INERT_MATCH_KEYS - {"uri", "headers", "withoutHeaders"}:
        return False
    if "uri" in match and not _string_matches(match["uri"], uri, bool(match.get("ignoreUriCase"))):
        return False
    for name, condition in (match.get("headers") or {}).items():
        value = headers.get(name.lower())
        if value is None or not _string_matches(condition, value):
            return False
    for name, condition in (match.get("withoutHeaders") or {}).items():
        value = headers.get(name.lower())
        if value is not None and _string_matches(condition, value):
            return False
    return True


def _string_matches(condition: Mapping[str, str] | None, value: str, ignore_case: bool = False) -> bool:
    """Istio's StringMatch; an empty one only asks for presence (of a header)."""
    if not condition:
        return True
    if "regex" in condition:  # RE2 in Envoy, always anchored to the whole value
        return re.fullmatch(condition["regex"], value) is not None
    expected = condition.get("exact", condition.get("prefix"))
    if expected is None:
        return False
    if ignore_case:
        value, expected = value.lower(), expected.lower()
    return value == expected if "exact" in condition else value.startswith(expected)


def destination_weights(route: Mapping[str, Any]) -> dict[tuple[str, str | None], int]:
    """(host, subset) -> weight of an http route's destinations, as Istio reads them.

    A lone destination takes all traffic whatever its weight; among several, a
    missing weight is 0 and the weights are relative.  A destination listed
    twice adds up.  A route without destinations (redirect, directResponse) has none.
    """
    destinations: Sequence[Mapping[str, Any]] = route.get("route") or ()
    if len(destinations) == 1:
        only = destinations[0]["destination"]
        return {(only["host"], only.get("subset")): 100}
    weights: dict[tuple[str, str | None], int] = {}
    for entry in destinations:
        key = (entry["destination"]["host"], entry["destination"].get("subset"))
        weights[key] = weights.get(key, 0) + int(entry.get("weight", 0))
    return weights


# --------------------------------------------------------------------------- shadow traffic


@dataclasses.dataclass(frozen=True)
class Mirror:
    """A destination an http route copies requests to, and the percent of its requests copied."""

    host: str
    subset: str | None
    percent: float  # 0..100

    @property
    def destination(self) -> tuple[str, str | None]:
        return self.host, self.subset


def route_mirrors(route: Mapping[str, Any]) -> tuple[Mirror, ...]:
    """The mirrors of an http route, as Istio reads them.

    ``mirror`` takes ``mirrorPercentage.value`` of the requests (a Percent without
    a value is 0), else the deprecated integer ``mirrorPercent``, else all of them
    (Istio's default when no percentage is given); each entry of ``mirrors`` takes
    its ``percentage.value``, else all.  Percents are clipped to 0..100, and a
    mirror without a host is ignored.  Envoy sends the copy and discards its answer.
    """
    found: list[tuple[Any, float]] = []
    mirror = route.get("mirror")
    if isinstance(mirror, Mapping):
        percentage = route.get("mirrorPercentage")
        if isinstance(percentage, Mapping):
            percent = _percent(percentage.get("value"), 0.0)
        else:
            percent = _percent(route.get("mirrorPercent"), 100.0)
        found.append((mirror, percent))
    for policy in route.get("mirrors") or ():
        if isinstance(policy, Mapping) and isinstance(policy.get("destination"), Mapping):
            percentage = policy.get("percentage")
            percent = _percent(percentage.get("value"), 0.0) if isinstance(percentage, Mapping) else 100.0
            found.append((policy["destination"], percent))
    mirrors = []
    for destination, percent in found:
        host, subset = destination.get("host"), destination.get("subset")
        if isinstance(host, str) and host:
            mirrors.append(Mirror(host, None if subset is None else str(subset), percent))
    return tuple(mirrors)


def _percent(value: Any, default: float) -> float:
    """A percent as written in a VirtualService, clipped to 0..100; ``default`` when absent or no number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return default
    return min(100.0, max(0.0, float(value)))


@dataclasses.dataclass(frozen=True)
class ShadowBatch:
    """What a shadow did with the copies of a batch's requests, and how its answers compared."""

    batch: Batch  # the copies, as the shadow served them (its own errors and latencies)
    compared: int  # copies both the primary and the shadow answered: their answers were compared
    agreed: int  # of those, the ones where the answers agreed


def simulate_shadow(
    rng: np.random.Generator, primary: Batch, percent: float, profile: VariantProfile, agreement: float
) -> ShadowBatch:
    """Mirror ``percent`` of the ``primary`` batch's requests to a shadow answering with ``profile``.

    Each request is copied with probability percent / 100, independently of how
    the primary answered it; the copies are served by the shadow as any request
    would be.  A copy is compared when both answers succeeded (a failed answer has
    nothing to compare), and agrees with probability ``agreement``.
    """
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"a mirror percent must be within 0..100, got {percent}")
    if not 0.0 <= agreement <= 1.0:
        raise ValueError(f"agreement must be within 0..1, got {agreement}")
    copies = int(rng.binomial(primary.requests, percent / 100.0))
    batch = simulate_batch(rng, copies, profile)
    if copies == 0:
        return ShadowBatch(batch, 0, 0)
    # The copies are a uniform sample of the primary's requests: so many of them had failed there.
    primary_failed = int(rng.hypergeometric(primary.errors, primary.requests - primary.errors, copies))
    # The shadow's own failures are independent of the primary's: so many fall on the primary's successes.
    both = copies - primary_failed
    compared = int(rng.hypergeometric(copies - batch.errors, batch.errors, both)) if both else 0
    return ShadowBatch(batch, compared, int(rng.binomial(compared, agreement)))


# --------------------------------------------------------------------------- one request


@dataclasses.dataclass(frozen=True)
class RoutedRequest:
    """Where Istio sends one request, and the headers it adds to the response.

    ``response_headers`` are (lower-case name, value) pairs in the order Envoy
    would write them; a name may repeat (two ``set-cookie`` headers).
    """

    route: Mapping[str, Any]  # the http route taken
    host: str
    subset: str | None
    response_headers: tuple[tuple[str, str], ...] = ()

    @property
    def destination(self) -> tuple[str, str | None]:
        return self.host, self.subset


def route_request(
    rng: np.random.Generator, vs_spec: Mapping[str, Any], request_headers: Mapping[str, str], uri: str = "/"
) -> RoutedRequest | None:
    """Route one request as Istio would: the first matching route, then a destination by weight.

    None when no route matches or the route sends nowhere (no destinations, as a
    redirect or directResponse, or weights that are all zero): Istio answers itself.
    The response headers are the chosen destination's ``headers.response`` and then
    the route's, in that order (Envoy's default: the less specific level is applied
    last, so a route-level ``set`` wins over a destination-level one).  Request
    header operations, ``fault``, ``retries`` and Envoy's ``%...%`` formatters in
    values are not modelled (values are taken literally).  The route's mirrors
    (``route_mirrors(routed.route)``) never change the answer: the caller copies
    the request to them.
    """
    route = route_for_request(vs_spec, request_headers, uri)
    if route is None:
        return None
    entry = pick_destination(rng, route)
    if entry is None:
        return None
    destination = entry["destination"]
    return RoutedRequest(
        route=route,
        host=str(destination["host"]),
        subset=destination.get("subset"),
        response_headers=response_headers(entry, route),
    )


def pick_destination(rng: np.random.Generator, route: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """One HTTPRouteDestination of ``route``, drawn by weight as in ``destination_weights``.

    The entry itself (not its host and subset) is returned, as entries for the same
    destination may add different headers.  None when the route sends nowhere.
    """
    entries: Sequence[Mapping[str, Any]] = route.get("route") or ()
    if len(entries) <= 1:
        return entries[0] if entries else None  # a lone destination takes everything, whatever its weight
    weights = [max(0, int(entry.get("weight", 0))) for entry in entries]
    total = sum(weights)
    if total <= 0:
        return None
    draw = float(rng.random()) * total
    cumulative, chosen = 0, 0
    for index, weight in enumerate(weights):
        cumulative += weight
        if weight > 0:
            chosen = index  # the last one with weight takes a draw that rounding put at the total
            if draw < cumulative:
                break
    return entries[chosen]


def response_headers(*levels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The response headers that the ``headers.response`` operations of ``levels`` add, in turn.

    Each level (an HTTPRouteDestination, an HTTPRoute) removes, then sets (replacing
    every earlier value of the name), then adds (appending) -- the order in which
    Istio hands them to Envoy.  The model server itself sends no headers here.
    """
    result: list[tuple[str, str]] = []
    for level in levels:
        operations: Mapping[str, Any] = (level.get("headers") or {}).get("response") or {}
        removed = {str(name).lower() for name in operations.get("remove") or ()}
        result = [(name, value) for name, value in result if name not in removed]
        for name, value in (operations.get("set") or {}).items():
            lower = str(name).lower()
            result = [(n, v) for n, v in result if n != lower]
            result.append((lower, str(value)))
        added: Mapping[str, Any] = operations.get("add") or {}
        result.extend((str(name).lower(), str(value)) for name, value in added.items())
    return tuple(result)


class CookieJar:
    """One client's cookies, kept as a browser keeps them for one host and path ``/``.

    Modelled (RFC 6265 section 5.2, 5.3): ``set-cookie: name=value; Max-Age=N; ...``
    stores or replaces cookie ``name``; ``Max-Age`` counts seconds on the caller's
    clock (``now``), and 0 or a negative value deletes the cookie; without
    ``Max-Age`` the cookie lives as long as the jar (a session cookie).  The
    ``cookie`` request header lists the live cookies in the order they were first
    set, as ``a=1; name=value``.  Not modelled: ``Expires`` (it needs a calendar),
    ``Domain``, ``Path``, ``Secure``, ``HttpOnly`` and ``SameSite`` (every request
    goes to one host and path over one scheme), quoted values (kept verbatim),
    size and count limits, and eviction.
    """

    def __init__(self) -> None:
        self._cookies: dict[str, tuple[str, float]] = {}  # name -> (value, expiry; inf: session cookie)

    def receive(self, headers: Iterable[tuple[str, str]], now: float) -> None:
        """Take the ``set-cookie`` headers among a response's (name, value) headers."""
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.set_cookie(value, now)

    def set_cookie(self, header: str, now: float) -> None:
        """Store one ``set-cookie`` header's value; a malformed one is ignored, as browsers do."""
        pair, *attributes = header.split(";")
        if "=" not in pair:
            return
        name, value = (part.strip() for part in pair.split("=", 1))
        if not name:
            return
        expiry = math.inf
        for attribute in attributes:
            key, _, argument = attribute.partition("=")
            argument = argument.strip()
            if key.strip().lower() == "max-age" and re.fullmatch(r"-?[0-9]+", argument):
                expiry = now + int(argument) if int(argument) > 0 else -math.inf  # the last one wins
        if expiry <= now:
            self._cookies.pop(name, None)
        else:  # a replaced cookie keeps its place in the dict: its creation time (RFC 6265 5.3)
            self._cookies[name] = (value, expiry)

    def cookies(self, now: float) -> dict[str, str]:
        """The live cookies at ``now``, name -> value; expired ones are dropped."""
        expired = [name for name, (_, expiry) in self._cookies.items() if expiry <= now]
        for name in expired:
            del self._cookies[name]
        return {name: value for name, (value, _) in self._cookies.items()}

    def header(self, now: float) -> str | None:
        """The ``cookie`` request header at ``now``, or None when the jar is empty."""
        cookies = self.cookies(now)
        return "; ".join(f"{name}={value}" for name, value in cookies.items()) if cookies else None


# --------------------------------------------------------------------------- business outcomes


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """What a successful request is worth: whether the user converts, and the revenue if so.

    Revenue is lognormal with mean ``revenue_mean`` (not the median) and log-sd
    ``revenue_sigma``; a ``revenue_mean`` of 0 means conversions bring no revenue.
    """

    conversion: float  # probability that a successful request converts (0..1)
    revenue_mean: float = 0.0
    revenue_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.conversion <= 1.0:
            raise ValueError(f"conversion must be within 0..1, got {self.conversion}")
        if not (self.revenue_mean >= 0 and math.isfinite(self.revenue_mean)):
            raise ValueError(f"revenue_mean must be finite and not negative, got {self.revenue_mean}")
        if not (self.revenue_sigma >= 0 and math.isfinite(self.revenue_sigma)):
            raise ValueError(f"revenue_sigma must be finite and not negative, got {self.revenue_sigma}")


NO_OUTCOMES = Outcomes(conversion=0.0)


@dataclasses.dataclass(frozen=True)
class OutcomeBatch:
    """The business outcome of some successful requests."""

    conversions: int
    revenue: float  # sum over the conversions
    revenue_squared: float  # sum of the squares, for the variance of a mean metric


def simulate_outcomes(rng: np.random.Generator, successes: int, outcomes: Outcomes) -> OutcomeBatch:
    """Draw conversions among ``successes`` successful requests, and each conversion's revenue."""
    if successes < 0:
        raise ValueError(f"cannot simulate {successes} requests")
    conversions = int(rng.binomial(successes, outcomes.conversion))
    if conversions == 0 or outcomes.revenue_mean == 0:
        return OutcomeBatch(conversions, 0.0, 0.0)
    sigma = outcomes.revenue_sigma
    revenue = rng.lognormal(math.log(outcomes.revenue_mean) - sigma**2 / 2, sigma, conversions)
    return OutcomeBatch(conversions, float(revenue.sum()), float(np.square(revenue).sum()))
