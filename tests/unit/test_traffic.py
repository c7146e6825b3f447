"""The pure traffic model: splits, outcomes, histograms and Istio's routing rules."""

from __future__ import annotations

import math
from typing import Any

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


# --------------------------------------------------------------------------- one request, cookies


def sticky_spec(split: int = 50, cohort: bool = True) -> dict[str, Any]:
    """The routes the operator writes for a sticky A/B test (cookie mexp-churn-v2, cohort x-user-tier)."""
    tier = {"x-user-tier": {"exact": "beta"}} if cohort else {}

    def cookie(workload: str) -> dict[str, Any]:
        value = workload.replace("-", "\\-")
        return {"regex": f"^(.*?;\\s*)?mexp\\-churn\\-v2={value}(;.*)?$"}

    def assign(subset: str, weight: int) -> dict[str, Any]:
        set_cookie = f"mexp-churn-v2=churn-{subset}; Max-Age=1209600; Path=/"
        return {
            "destination": {"host": "churn", "subset": subset},
            "weight": weight,
            "headers": {"response": {"add": {"set-cookie": set_cookie}}},
        }

    def sticky(subset: str) -> dict[str, Any]:
        return {
            "name": f"mexp-churn-v2-main-churn-{subset}",
            "match": [{"headers": {"cookie": cookie(f"churn-{subset}"), **tier}}],
            "route": [{"destination": {"host": "churn", "subset": subset}, "weight": 100}],
        }

    assign_route: dict[str, Any] = {
        "name": "mexp-churn-v2-main-assign",
        "route": [assign("v1", 100 - split), assign("v2", split)],
    }
    if cohort:
        assign_route["match"] = [{"headers": tier}]
    main = {
        "name": "main",
        "route": [
            {"destination": {"host": "churn", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "churn", "subset": "v2"}, "weight": 0},
        ],
    }
    return {"hosts": ["churn"], "http": [sticky("v1"), sticky("v2"), assign_route, main]}


def test_a_cookie_keeps_a_user_on_their_variant() -> None:
    spec, generator = sticky_spec(), rng()
    for cookie, subset in [
        ("mexp-churn-v2=churn-v2", "v2"),
        ("a=1; mexp-churn-v2=churn-v1", "v1"),
        ("a=1;mexp-churn-v2=churn-v2; b=2", "v2"),
    ]:
        for _ in range(50):
            routed = traffic.route_request(generator, spec, {"Cookie": cookie, "x-user-tier": "beta"})
            assert routed is not None
            assert routed.destination == ("churn", subset)
            assert routed.route["name"] == f"mexp-churn-v2-main-churn-{subset}"
            assert routed.response_headers == ()  # an assigned user gets no new cookie


def test_a_new_user_is_split_by_weight_and_told_their_variant() -> None:
    spec, generator, n = sticky_spec(split=20), rng(), 4000
    routed = [traffic.route_request(generator, spec, {"x-user-tier": "beta"}) for _ in range(n)]
    assert all(r is not None and r.route["name"] == "mexp-churn-v2-main-assign" for r in routed)
    for r in routed:
        assert r is not None and r.subset is not None
        assert r.response_headers == (
            ("set-cookie", f"mexp-churn-v2=churn-{r.subset}; Max-Age=1209600; Path=/"),
        )
    assert_binomial(sum(r is not None and r.subset == "v2" for r in routed), n, 0.2)
    # A cookie that only looks like the experiment's is no assignment: split again.
    lookalike = traffic.route_request(
        generator, spec, {"cookie": "xmexp-churn-v2=churn-v2", "x-user-tier": "beta"}
    )
    assert lookalike is not None and lookalike.route["name"] == "mexp-churn-v2-main-assign"


def test_users_outside_the_cohort_take_the_main_route_even_with_a_cookie() -> None:
    spec, generator = sticky_spec(), rng()
    for headers in ({}, {"x-user-tier": "gold"}, {"cookie": "mexp-churn-v2=churn-v2"}):
        for _ in range(100):
            routed = traffic.route_request(generator, spec, headers)
            assert routed is not None and routed.route["name"] == "main"
            assert (routed.destination, routed.response_headers) == (("churn", "v1"), ())
    without_cohort = sticky_spec(cohort=False)
    routed = traffic.route_request(generator, without_cohort, {"cookie": "mexp-churn-v2=churn-v2"})
    assert routed is not None and routed.subset == "v2"


def test_requests_that_go_nowhere() -> None:
    generator = rng()
    assert traffic.route_request(generator, {"http": [route("beta", {"headers": {"x": {}}})]}, {}) is None
    redirect = {"http": [{"name": "r", "redirect": {"uri": "/elsewhere"}}]}
    assert traffic.route_request(generator, redirect, {}) is None
    zero = {
        "http": [{"route": [{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}}]}]
    }
    assert traffic.route_request(generator, zero, {}) is None
    lone = {"http": [{"route": [{"destination": {"host": "a"}, "weight": 0}]}]}
    routed = traffic.route_request(generator, lone, {})
    assert routed is not None and routed.destination == ("a", None)


def test_pick_destination_never_takes_a_zero_weight_and_follows_the_weights() -> None:
    entries = [
        {"destination": {"host": "churn", "subset": "v0"}, "weight": 0},
        {"destination": {"host": "churn", "subset": "v1"}, "weight": 30},
        {"destination": {"host": "churn", "subset": "v1"}, "weight": 0},
        {"destination": {"host": "churn", "subset": "v2"}, "weight": 70},
        {"destination": {"host": "churn", "subset": "v3"}},
    ]
    generator, n = rng(), 10_000
    picks = [traffic.pick_destination(generator, {"route": entries}) for _ in range(n)]
    chosen = [entries.index(p) for p in picks if p is not None]
    assert len(chosen) == n and set(chosen) == {1, 3}
    assert_binomial(chosen.count(3), n, 0.7)


def test_response_headers_destination_first_then_route() -> None:
    destination = {
        "headers": {
            "response": {
                "add": {"Set-Cookie": "a=1", "x-from": "destination"},
                "set": {"x-served-by": "v2"},
            },
            "request": {"set": {"x-ignored": "1"}},
        }
    }
    route = {
        "headers": {
            "response": {
                "remove": ["X-From"],
                "set": {"X-Served-By": "route"},
                "add": {"set-cookie": "b=2"},
            }
        }
    }
    assert traffic.response_headers(destination, route) == (
        ("set-cookie", "a=1"),
        ("x-served-by", "route"),
        ("set-cookie", "b=2"),
    )
    assert traffic.response_headers({}, {"headers": {}}) == ()


def test_cookie_jar_sends_what_it_was_told_to_set() -> None:
    jar = traffic.CookieJar()
    assert jar.header(0) is None
    jar.receive(
        [("set-cookie", "a=1"), ("x-other", "ignored"), ("Set-Cookie", " exp = churn-v2 ; Path=/")], 0
    )
    assert jar.header(0) == "a=1; exp=churn-v2"
    jar.set_cookie("a=2; Max-Age=60", 10)  # replaced: keeps its place, gets the new value and lifetime
    assert jar.cookies(69.9) == {"a": "2", "exp": "churn-v2"}
    assert jar.header(70) == "exp=churn-v2"  # Max-Age counts from when the cookie was set
    assert jar.header(1e9) == "exp=churn-v2"  # no Max-Age: a session cookie


@pytest.mark.parametrize("max_age", ["0", "-1", "-100"])
def test_cookie_jar_max_age_zero_or_negative_deletes(max_age: str) -> None:
    jar = traffic.CookieJar()
    jar.set_cookie("exp=churn-v1; Max-Age=1209600; Path=/", 0)
    jar.set_cookie("keep=1", 0)
    jar.set_cookie(f"exp=; Path=/; max-age={max_age}", 5)
    assert jar.cookies(5) == {"keep": "1"}
    jar.set_cookie("gone=1; Max-Age=0", 6)  # deleting what is not there sets nothing
    assert jar.header(6) == "keep=1"


@pytest.mark.parametrize(
    "header",
    ["novalue", "=nameless", "; Max-Age=10", ""],
    ids=["no-equals", "no-name", "empty-pair", "empty"],
)
def test_cookie_jar_ignores_malformed_cookies(header: str) -> None:
    jar = traffic.CookieJar()
    jar.set_cookie(header, 0)
    assert jar.cookies(0) == {}


def test_cookie_jar_ignores_malformed_max_age_and_takes_the_last() -> None:
    jar = traffic.CookieJar()
    jar.set_cookie("a=1; Max-Age=soon", 0)
    jar.set_cookie("b=1; Max-Age=10; Max-Age=100", 0)
    jar.set_cookie("c=x=y; Max-Age=+5", 0)  # "+5" is no delta-seconds: ignored; the value keeps its "="
    assert jar.cookies(50) == {"a": "1", "b": "1", "c": "x=y"}


# --------------------------------------------------------------------------- business outcomes


def test_outcomes_follow_conversion_and_revenue() -> None:
    outcomes = traffic.Outcomes(conversion=0.05, revenue_mean=20.0, revenue_sigma=1.0)
    n = 400_000
    batch = traffic.simulate_outcomes(rng(), n, outcomes)
    assert_binomial(batch.conversions, n, 0.05)
    mean = batch.revenue / batch.conversions
    # lognormal mean 20, log-sd 1: sd = 20 * sqrt(e - 1) ~ 26.2; the mean of ~20000 is within 4 sd of it
    assert mean == pytest.approx(20.0, abs=4 * 20 * math.sqrt(math.e - 1) / math.sqrt(batch.conversions))
    second_moment = batch.revenue_squared / batch.conversions  # E[X^2] = mean^2 * e^(sigma^2)
    assert second_moment == pytest.approx(400 * math.e, rel=0.15)


def test_outcomes_without_revenue_or_conversions() -> None:
    assert traffic.simulate_outcomes(rng(), 1000, traffic.Outcomes(0.3)).revenue == 0.0
    assert traffic.simulate_outcomes(rng(), 1000, traffic.NO_OUTCOMES) == traffic.OutcomeBatch(0, 0.0, 0.0)
    assert traffic.simulate_outcomes(rng(), 0, traffic.Outcomes(1.0, 5.0)) == traffic.OutcomeBatch(
        0, 0.0, 0.0
    )
    fixed = traffic.simulate_outcomes(rng(), 10, traffic.Outcomes(1.0, revenue_mean=5.0))
    assert (fixed.conversions, fixed.revenue, fixed.revenue_squared) == (
        10,
        pytest.approx(50),
        pytest.approx(250),
    )


@pytest.mark.parametrize(
    ("conversion", "mean", "sigma"),
    [(-0.1, 1, 1), (1.1, 1, 1), (0.1, -1, 1), (0.1, 1, -1), (0.1, math.inf, 0)],
)
def test_outcomes_reject_nonsense(conversion: float, mean: float, sigma: float) -> None:
    with pytest.raises(ValueError):
        traffic.Outcomes(conversion, mean, sigma)


# --------------------------------------------------------------------------- shadow traffic


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"route": []}, ()),
        ({"mirror": {"host": "churn", "subset": "v2"}}, (traffic.Mirror("churn", "v2", 100.0),)),
        (
            {"mirror": {"host": "churn", "subset": "v2"}, "mirrorPercentage": {"value": 12.5}},
            (traffic.Mirror("churn", "v2", 12.5),),
        ),
        ({"mirror": {"host": "churn"}, "mirrorPercentage": {}}, (traffic.Mirror("churn", None, 0.0),)),
        ({"mirror": {"host": "churn"}, "mirrorPercent": 7}, (traffic.Mirror("churn", None, 7.0),)),
        (
            {"mirror": {"host": "churn"}, "mirrorPercent": 7, "mirrorPercentage": {"value": 30}},
            (traffic.Mirror("churn", None, 30.0),),
        ),
        (
            {"mirror": {"host": "churn"}, "mirrorPercentage": {"value": 250}},
            (traffic.Mirror("churn", None, 100.0),),
        ),
        ({"mirror": {"subset": "v2"}}, ()),
        (
            {
                "mirrors": [
                    {"destination": {"host": "a", "subset": "v2", "port": {"number": 80}}},
                    {"destination": {"host": "b"}, "percentage": {"value": 5.0}},
                    {"percentage": {"value": 5.0}},
                ]
            },
            (traffic.Mirror("a", "v2", 100.0), traffic.Mirror("b", None, 5.0)),
        ),
    ],
)
def test_route_mirrors_read_as_istio_does(
    route: dict[str, Any], expected: tuple[traffic.Mirror, ...]
) -> None:
    assert traffic.route_mirrors(route) == expected


def test_a_shadow_gets_its_share_and_serves_it_by_its_own_profile() -> None:
    generator = rng()
    primary = traffic.simulate_batch(generator, 200_000, VariantProfile(0.0, 40.0, 0.3))
    failing = VariantProfile(error_rate=0.5, latency_median_ms=400.0, latency_sigma=0.3)
    shadow = traffic.simulate_shadow(generator, primary, 25.0, failing, agreement=0.9)
    assert_binomial(shadow.batch.requests, primary.requests, 0.25)
    assert_binomial(shadow.batch.errors, shadow.batch.requests, 0.5)
    assert (
        shadow.batch.latency_sum_ms / shadow.batch.requests > 300
    )  # the shadow's latency, not the primary's
    assert shadow.compared == shadow.batch.requests - shadow.batch.errors  # the primary never failed
    assert_binomial(shadow.agreed, shadow.compared, 0.9)


def test_only_answers_both_gave_are_compared() -> None:
    generator = rng(3)
    primary = traffic.simulate_batch(generator, 100_000, VariantProfile(0.2, 40.0, 0.3))
    shadow = traffic.simulate_shadow(generator, primary, 50.0, VariantProfile(0.1, 40.0, 0.3), agreement=1.0)
    assert_binomial(shadow.compared, shadow.batch.requests, 0.8 * 0.9)
    assert shadow.agreed == shadow.compared


def test_no_copies_at_zero_percent_and_nonsense_is_refused() -> None:
    primary = traffic.simulate_batch(rng(), 1000, PROFILE)
    shadow = traffic.simulate_shadow(rng(), primary, 0.0, PROFILE, agreement=0.5)
    assert (shadow.batch.requests, shadow.compared, shadow.agreed) == (0, 0, 0)
    everything = traffic.simulate_shadow(rng(), primary, 100.0, PROFILE, agreement=0.5)
    assert everything.batch.requests == primary.requests
    with pytest.raises(ValueError, match="mirror percent"):
        traffic.simulate_shadow(rng(), primary, 101.0, PROFILE, agreement=0.5)
    with pytest.raises(ValueError, match="agreement"):
        traffic.simulate_shadow(rng(), primary, 50.0, PROFILE, agreement=1.5)
