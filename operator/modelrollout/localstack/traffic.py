"""Synthetic traffic: where Istio sends a request, and how each model variant answers it.

The operator never sees a mesh directly, only the numbers it leaves in Prometheus:
per-variant request and error counts and a latency histogram in Istio's buckets.
This module produces exactly those numbers from a VirtualService and a request
count, so a simulator can stand in for Istio and the model servers.

It is pure and seeded (no I/O, no clock; the caller owns the numpy ``Generator``)
so that the wall-clock mesh simulator and a virtual-time simulator running
thousands of experiments share one traffic model.  Batches are vectorised, and
above ``EXACT_SAMPLE_LIMIT`` requests their cost no longer grows with their size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Hashable, Mapping, Sequence
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
