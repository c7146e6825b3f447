"""The pure traffic model: splits, outcomes, histograms and Istio's routing rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from modelrollout.localstack import traffic
from modelrollout.localstack.traffic import VariantProfile

PROFILE = VariantProfile(error_rate=0.02, latency_median_ms=100.0, latency_sigma=0.5)
BUCKETS = list(traffic.ISTIO_DURATION_BUCKETS_MS)


def assert_binomial(count: int, n: int, p: float) -> None:
    """``count`` is a plausible draw of Binomial(n, p) (fails by chance once in 10^6)."""
    low, high = stats.binom.interval(1 - 1e-6, n, p)
    assert low <= count <= high, f"{count} of {n} is implausible for p={p} (expected {low}..{high})"


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- split


def test_split_follows_the_weights() -> None:
    n = 100_000
    split = traffic.split_requests(rng(), n, {"v1": 70, "v2": 25, "v3": 5, "v4": 0})
    assert sum(split.values()) == n
    assert split["v4"] == 0
    for key, weight in {"v1": 70, "v2": 25, "v3": 5}.items():
        assert_binomial(split[key], n, weight / 100)


def test_split_weights_are_relative() -> None:
    split = traffic.split_requests(rng(), 30_000, {("h", "a"): 1, ("h", "b"): 2})
    assert_binomial(split["h", "b"], 30_000, 2 / 3)


def test_split_of_nothing_is_nothing() -> None:
    assert traffic.split_requests(rng(), 0, {"v1": 50, "v2": 50}) == {"v1": 0, "v2": 0}


@pytest.mark.parametrize("weights", [{}, {"v1": 0, "v2": 0}, {"v1": 110, "v2": -10}])
def test_split_rejects_weights_that_route_nowhere(weights: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="weights"):
        traffic.split_requests(rng(), 10, weights)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("n", [traffic.EXACT_SAMPLE_LIMIT, 200_000], ids=["per-request", "per-bucket"])
def test_errors_follow_the_error_rate(n: int) -> None:
    batch = traffic.simulate_batch(rng(), n, PROFILE)
    assert batch.requests == n
    assert_binomial(batch.errors, n, PROFILE.error_rate)


@pytest.mark.parametrize("n", [traffic.EXACT_SAMPLE_LIMIT, 300_000], ids=["per-request", "per-bucket"])
def test_lognormal_quantiles_land_in_their_buckets(n: int) -> None:
    batch = traffic.simulate_batch(rng(), n, PROFILE)
    counts = batch.bucket_counts
    # median 100 ms: half the requests are within le=100; p95 (~228 ms) within le=250.
    assert_binomial(int(counts[BUCKETS.index(100)]), n, 0.5)
    assert_binomial(int(counts[BUCKETS.index(250)]), n, stats.lognorm.cdf(250, 0.5, scale=100))
    assert counts[BUCKETS.index(50)] < 0.1 * n < 0.9 * n < counts[BUCKETS.index(250)]
    mean = 100 * math.exp(0.5**2 / 2)
    assert batch.latency_sum_ms == pytest.approx(n * mean, rel=0.05)


def test_constant_latency_falls_in_one_bucket() -> None:
    profile = VariantProfile(error_rate=0.0, latency_median_ms=30.0, latency_sigma=0.0)
    for n in (100, 100_000):
        batch = traffic.simulate_batch(rng(), n, profile)
        assert batch.bucket_counts[BUCKETS.index(25)] == 0
        assert batch.bucket_counts[BUCKETS.index(50)] == n
        assert batch.latency_sum_ms == pytest.approx(30.0 * n)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.one_of(st.integers(0, 50), st.integers(0, 3 * traffic.EXACT_SAMPLE_LIMIT)),
    error_rate=st.floats(0, 1),
    median=st.floats(0.1, 1e6),
    sigma=st.floats(0, 3),
)
def test_histograms_are_consistent(seed: int, n: int, error_rate: float, median: float, sigma: float) -> None:
    batch = traffic.simulate_batch(rng(seed), n, VariantProfile(error_rate, median, sigma))
    for cumulative, total in ((batch.bucket_counts, n), (batch.error_bucket_counts, batch.errors)):
        assert len(cumulative) == len(BUCKETS) + 1
        assert (np.diff(cumulative) >= 0).all() and cumulative[0] >= 0
        assert cumulative[-1] == total
    assert (batch.error_bucket_counts <= batch.bucket_counts).all()
    assert 0 <= batch.errors <= n
    assert 0 <= batch.error_latency_sum_ms <= batch.latency_sum_ms


@pytest.mark.parametrize(
    ("error_rate", "median", "sigma"), [(-0.1, 1, 1), (1.5, 1, 1), (0, 0, 1), (0, 1, -1)]
)
def test_profile_rejects_nonsense(error_rate: float, median: float, sigma: float) -> None:
    with pytest.raises(ValueError):
        VariantProfile(error_rate, median, sigma)


# --------------------------------------------------------------------------- routing


def route(name: str, *match: dict[str, object]) -> dict[str, object]:
    r: dict[str, object] = {"name": name, "route": [{"destination": {"host": "churn", "subset": name}}]}
    if match:
        r["match"] = list(match)
    return r


def picked(spec: dict[str, object], headers: dict[str, str] | None = None, uri: str = "/") -> str | None:
    chosen = traffic.route_for_request(spec, headers or {}, uri)
    return None if chosen is None else str(chosen["name"])


def test_first_matching_route_wins() -> None:
    spec = {"http": [route("beta", {"headers": {"x-tier": {"exact": "beta"}}}), route("all"), route("never")]}
    assert picked(spec, {"x-tier": "beta"}) == "beta"
    assert picked(spec, {"x-tier": "gold"}) == "all"
    assert picked(spec) == "all"


def test_no_matching_route_is_a_404() -> None:
    spec = {"http": [route("beta", {"headers": {"x-tier": {"exact": "beta"}}})]}
    assert picked(spec) is None
    assert picked({}) is None


@pytest.mark.parametrize(
    ("condition", "value", "matches"),
    [
        ({"exact": "beta"}, "beta", True),
        ({"exact": "beta"}, "beta2", False),
        ({"exact": "beta"}, "Beta", False),
        ({"prefix": "be"}, "beta", True),
        ({"prefix": "be"}, "alpha", False),
        ({"regex": "b.t+a"}, "betta", True),
        ({"regex": "b.t+a"}, "xbeta", False),  # Envoy's regexes match the whole value
        ({}, "anything", True),  # an empty StringMatch asks for presence only
    ],
)
def test_header_string_matches(condition: dict[str, str], value: str, matches: bool) -> None:
    spec = {"http": [route("m", {"headers": {"x-tier": condition}}), route("default")]}
    assert picked(spec, {"X-Tier": value}) == ("m" if matches else "default")


def test_any_match_request_suffices_and_all_its_conditions_must_hold() -> None:
    both = {"uri": {"prefix": "/v2"}, "headers": {"x-tier": {"exact": "beta"}}}
    spec = {"http": [route("m", both, {"headers": {"x-debug": {}}}), route("default")]}
    assert picked(spec, {"x-tier": "beta"}, "/v2/predict") == "m"
    assert picked(spec, {"x-tier": "beta"}, "/v1/predict") == "default"
    assert picked(spec, {"x-debug": "1"}, "/v1/predict") == "m"


def test_uri_matching() -> None:
    spec = {
        "http": [
            route("exact", {"uri": {"exact": "/predict"}}),
            route("nocase", {"uri": {"prefix": "/Admin"}, "ignoreUriCase": True}),
            route("regex", {"uri": {"regex": "/v[0-9]+/.*"}}),
            route("default"),
        ]
    }
    assert picked(spec, uri="/predict") == "exact"
    assert picked(spec, uri="/predict/x") == "default"
    assert picked(spec, uri="/ADMIN/users") == "nocase"
    assert picked(spec, uri="/v3/predict") == "regex"


def test_without_headers_and_unsupported_conditions() -> None:
    spec = {
        "http": [
            route("labels", {"sourceLabels": {"app": "x"}}),
            route("not-beta", {"withoutHeaders": {"x-tier": {"exact": "beta"}}}),
            route("default"),
        ]
    }
    assert picked(spec, {"x-tier": "gold"}) == "not-beta"
    assert picked(spec, {"x-tier": "beta"}) == "default"


def test_destination_weights_follow_istio() -> None:
    one = {"route": [{"destination": {"host": "churn", "subset": "v1"}}]}
    assert traffic.destination_weights(one) == {("churn", "v1"): 100}
    one_zero = {"route": [{"destination": {"host": "churn"}, "weight": 0}]}
    assert traffic.destination_weights(one_zero) == {("churn", None): 100}
    several = {
        "route": [
            {"destination": {"host": "churn", "subset": "v1"}, "weight": 75},
            {"destination": {"host": "churn", "subset": "v2"}, "weight": 20},
            {"destination": {"host": "churn", "subset": "v2"}, "weight": 5},
            {"destination": {"host": "churn-v3.ml.svc.cluster.local"}},
        ]
    }
    assert traffic.destination_weights(several) == {
        ("churn", "v1"): 75,
        ("churn", "v2"): 25,
        ("churn-v3.ml.svc.cluster.local", None): 0,
    }
    assert traffic.destination_weights({"redirect": {"uri": "/elsewhere"}}) == {}
