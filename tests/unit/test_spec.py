"""``modelrollout.spec.parse_spec``: defaults, examples, and errors that name field and value."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout import durations, templates
from modelrollout.spec import (
    Builtin,
    ExperimentSpec,
    MetricRole,
    NoDataPolicy,
    SpecError,
    SpecProblem,
    Strategy,
    parse_spec,
)
from modelrollout.spec_ab import Direction

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("**/experiment.yaml"))

MINIMAL: dict[str, Any] = {
    "virtualService": {"name": "churn"},
    "baseline": {"subset": "v1", "workload": "churn-v1"},
    "candidate": {"subset": "v2", "workload": "churn-v2"},
    "prometheus": {"address": "http://prometheus.istio-system:9090"},
}

DELETE = object()

CONVERSION: dict[str, Any] = {
    "name": "conversion",
    "ratio": {
        "success": 'sum(conversions{w="{{ workload }}"})',
        "total": 'sum(requests{w="{{ workload }}"})',
    },
}
REVENUE: dict[str, Any] = {
    "name": "revenue",
    "mean": {
        "sum": 'sum(revenue_sum{w="{{ workload }}"})',
        "count": 'sum(revenue_count{w="{{ workload }}"})',
    },
}
ERRORS: dict[str, Any] = {"name": "error-rate", "builtin": "error-rate"}
# The smallest A/B test (spec_with's changes on top of MINIMAL).
AB: dict[str, Any] = {
    "strategy": "ABTest",
    "objective": {"metric": "conversion", "minimumEffect": 0.02},
    "metrics": [CONVERSION, REVENUE, ERRORS],
}
AGREEMENT: dict[str, Any] = {
    "name": "prediction-agreement",
    "ratio": {
        "success": 'sum(agreed{w="{{ workload }}"})',
        "total": 'sum(compared{w="{{ workload }}"})',
    },
}
# API.md's shadow (spec_with's changes on top of MINIMAL), its agreement metric defined.
SHADOW: dict[str, Any] = {
    "strategy": "Shadow",
    "shadow": {"mirrorPercent": 100, "duration": "10m",
               "agreement": {"metric": "prediction-agreement", "min": 0.95}},
    "metrics": [ERRORS, AGREEMENT, CONVERSION],
}  # fmt: skip


def spec_with(**changes: Any) -> dict[str, Any]:
    """MINIMAL with changes at dotted paths (`canary__steps` stands for `canary.steps`)."""
    raw = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = raw
        for part in parents:
            target = target.setdefault(part, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = copy.deepcopy(value)  # later changes may reach into it (`objective__power`)
    return raw


def problems_of(raw: Any) -> list[SpecProblem]:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.problems
    return caught.value.problems


# --------------------------------------------------------------------------- defaults


def test_minimal_manifest_gets_every_default() -> None:
    parsed = parse_spec(MINIMAL)
    assert parsed.strategy is Strategy.CANARY
    assert parsed.canary.steps == [5, 25, 50, 100]
    assert parsed.canary.interval == datetime.timedelta(minutes=1)
    assert parsed.canary.min_step_duration is None
    assert parsed.canary.step_duration == datetime.timedelta(minutes=1)
    assert parsed.canary.min_samples == 100
    assert [(m.name, m.builtin) for m in parsed.metrics] == [
        ("error-rate", Builtin.ERROR_RATE),
        ("latency-p95", Builtin.LATENCY_P95),
    ]
    for metric in parsed.metrics:
        assert (metric.query, metric.ratio, metric.min, metric.max, metric.max_relative_increase) == (
            None, None, None, None, None,
        )  # fmt: skip
    # Builtins without thresholds still compare the candidate to the baseline.
    assert [m.relative_increase_limit for m in parsed.metrics] == [1.0, 0.5]
    assert parsed.analysis.alpha == 0.05
    assert parsed.analysis.failure_limit == 1
    assert parsed.analysis.no_data is NoDataPolicy.HOLD
    assert parsed.analysis.no_data_limit == 5
    assert parsed.prometheus.address == "http://prometheus.istio-system:9090"
    assert parsed.prometheus.timeout == datetime.timedelta(seconds=10)
    assert parsed.paused is False
    assert parsed.virtual_service.routes is None
    assert parsed.virtual_service_namespace("ml") == "ml"
    assert parsed.the_candidate.workload == "churn-v2"
    assert parsed.the_candidate.describe() == "churn-v2 (v2)"
    assert (parsed.ab_test, parsed.shadow, parsed.bandit, parsed.objective, parsed.segments) == (None,) * 5


def test_prometheus_address_is_optional_and_trailing_slash_is_dropped() -> None:
    assert parse_spec(spec_with(prometheus=DELETE)).prometheus.address is None
    parsed = parse_spec(spec_with(prometheus__address="https://prom.example.com/"))
    assert parsed.prometheus.address == "https://prom.example.com"


def test_candidates_list_with_one_entry_is_the_candidate() -> None:
    parsed = parse_spec(
        spec_with(candidate=DELETE, candidates=[{"host": "churn-canary", "workload": "churn-v2"}])
    )
    assert parsed.the_candidate.host == "churn-canary"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_parse(path: Path) -> None:
    with path.open() as f:
        manifest = yaml.safe_load(f)
    parsed = parse_spec(manifest["spec"])
    assert isinstance(parsed, ExperimentSpec)
    assert parsed.baseline.workload == "churn-v1"
    assert parsed.the_candidate.workload == "churn-v2"


def test_full_example_values() -> None:
    with (ROOT / "examples" / "02-full" / "experiment.yaml").open() as f:
        parsed = parse_spec(yaml.safe_load(f)["spec"])
    assert parsed.virtual_service.routes == ["primary"]
    assert parsed.canary.step_duration == datetime.timedelta(minutes=2)
    by_name = {m.name: m for m in parsed.metrics}
    assert by_name["error-rate"].relative_increase_limit == 0.5
    assert by_name["latency-p95"].relative_increase_limit is None  # an explicit max replaces the default
    assert any(m.ratio is not None for m in parsed.metrics)
    assert any(m.query is not None for m in parsed.metrics)


def test_ab_test_gets_every_default() -> None:
    parsed = parse_spec(spec_with(**AB))
    assert parsed.strategy is Strategy.AB_TEST and parsed.is_ab_test
    assert parsed.ab_test is None  # omitted: the defaults apply
    ab = parsed.ab
    assert (ab.split, ab.interval, ab.max_duration, ab.min_samples) == (
        50, datetime.timedelta(minutes=1), datetime.timedelta(days=14), 100,
    )  # fmt: skip
    assert (ab.auto_promote, ab.aa, ab.match, ab.assignment_query, ab.fairness) == (
        False,
        False,
        None,
        None,
        None,
    )
    assert (ab.stickiness.cookie, ab.stickiness.max_age) == (None, None)
    assert parsed.interval == datetime.timedelta(minutes=1)
    objective = parsed.objective
    assert objective is not None
    assert (objective.metric, objective.direction, objective.minimum_effect, objective.power) == (
        "conversion", Direction.INCREASE, 0.02, 0.8,
    )  # fmt: skip
    assert parsed.segments is None


def test_ab_test_metric_roles() -> None:
    """Besides the objective: a ratio or mean without thresholds is Secondary, anything else a Guardrail."""
    metrics = [
        CONVERSION,
        REVENUE,
        ERRORS,
        {"name": "ctr", "ratio": CONVERSION["ratio"], "min": 0.01},
        {"name": "aov", "mean": REVENUE["mean"], "role": "Guardrail"},
        {"name": "p95", "builtin": "latency-p95", "role": "Guardrail"},
    ]
    parsed = parse_spec(spec_with(**{**AB, "metrics": metrics}))
    roles = {m.name: m.effective_role for m in parsed.metrics}
    assert roles == {
        "conversion": MetricRole.SECONDARY, "revenue": MetricRole.SECONDARY,
        "error-rate": MetricRole.GUARDRAIL, "ctr": MetricRole.GUARDRAIL, "aov": MetricRole.GUARDRAIL,
        "p95": MetricRole.GUARDRAIL,
    }  # fmt: skip
    # The objective is neither.
    assert [m.name for m in parsed.secondary_metrics] == ["revenue"]
    assert [m.name for m in parsed.guardrails] == ["error-rate", "ctr", "aov", "p95"]
    # A canary judges every metric as a guardrail.
    canary = parse_spec(spec_with(metrics=metrics))
    assert [m.name for m in canary.guardrails] == [m["name"] for m in metrics]


def test_ab_test_with_every_field() -> None:
    raw = spec_with(**{
        **AB,
        "objective": {"metric": "revenue", "direction": "Decrease", "minimumEffect": 0.05, "power": 0.9},
        "abTest": {
            "split": 10, "interval": "5m", "maxDuration": "2w", "autoPromote": True, "aa": True,
            "stickiness": {"cookie": "mexp-churn", "maxAge": "30d"},
            "match": [{"name": "beta", "headers": {"x-tier": {"exact": "beta"}}, "uri": {"prefix": "/p"},
                       "scheme": {"exact": "https"}, "method": {"regex": "^(GET|POST)$"},
                       "authority": {"prefix": "churn"}, "withoutHeaders": {"x-bot": {"exact": "1"}},
                       "queryParams": {"ab": {"exact": "1"}}, "ignoreUriCase": True, "port": 8080,
                       "sourceLabels": {"app": "web"}, "sourceNamespace": "ml"}],
            "assignmentQuery": 'sum(increase(assigned{w="{{ workload }}"}[{{ interval }}]))',
            "minSamples": 1000,
            "fairness": {"margin": 0.05, "metric": "revenue"},
        },
        "segments": ["region", "device_type"],
    })  # fmt: skip
    parsed = parse_spec(raw)
    ab = parsed.ab
    assert (ab.split, ab.interval, ab.max_duration) == (
        10,
        datetime.timedelta(minutes=5),
        datetime.timedelta(weeks=2),
    )
    assert (ab.stickiness.cookie, ab.stickiness.max_age) == ("mexp-churn", datetime.timedelta(days=30))
    assert ab.match == raw["abTest"]["match"]  # passed on to the VirtualService as written
    assert ab.fairness is not None and (ab.fairness.margin, ab.fairness.metric) == (0.05, "revenue")
    assert parsed.segments == ["region", "device_type"]
    assert parsed.objective is not None and parsed.objective.direction is Direction.DECREASE


def test_an_ab_test_runs_several_candidates_but_an_aa_test_one() -> None:
    three = [{"subset": f"v{i}", "workload": f"churn-v{i}"} for i in (2, 3, 4)]
    parsed = parse_spec(spec_with(**{**AB, "candidate": DELETE, "candidates": three}))
    assert parsed.is_ab_test and parsed.workloads == ("churn-v2", "churn-v3", "churn-v4")
    for strategy in ("ABTest", "Canary"):  # checked whenever given, as the CRD's rule does
        changes = {**AB, "strategy": strategy, "candidate": DELETE, "candidates": three}
        changes["abTest"] = {"aa": True}
        (problem,) = problems_of(spec_with(**changes))
        assert problem.path == "spec.abTest.aa" and "cannot run with 3 candidates" in problem.message
    # One candidate in the list form is an A/A test as before.
    parse_spec(spec_with(**{**AB, "candidate": DELETE, "candidates": three[:1], "abTest": {"aa": True}}))


def test_cookie_header_is_compared_as_http_does() -> None:
    """In ASCII, whatever the case (as the CRD's rule, with lowerAscii()); "coo\\u212aie" (Kelvin sign) is
    no "cookie" to HTTP, though Python's str.lower() makes it one."""
    for name in ("cookie", "Cookie", "COOKIE", "cOoKiE"):
        (problem,) = problems_of(spec_with(**{**AB, "abTest__match": [{"headers": {name: {"exact": "a"}}}]}))
        assert problem.path == f"spec.abTest.match[0].headers.{name}"
    for name in ("coo\u212aie", "x-cookie", "cookies", "set-cookie"):
        parse_spec(spec_with(**{**AB, "abTest__match": [{"headers": {name: {"exact": "a"}}}]}))
    # withoutHeaders may name it: "users without the cookie" is a cohort.
    parse_spec(spec_with(**{**AB, "abTest__match": [{"withoutHeaders": {"cookie": {"regex": ".*"}}}]}))


def test_ab_test_blocks_are_checked_whatever_the_strategy() -> None:
    """As the CRD checks them: a canary ignores abTest, objective and segments, but they must be valid."""
    for changes in (
        {"abTest": {"split": 0}},
        {"objective": {"metric": "nope", "minimumEffect": 0.1}},
        {"segments": ["a-b"]},
        {"abTest": {"fairness": {"margin": 0.1, "metric": "nope"}}},
    ):
        problems_of(spec_with(**changes))
    parse_spec(spec_with(metrics=[CONVERSION], objective={"metric": "conversion", "minimumEffect": 0.1}))


def test_shadow_gets_every_default() -> None:
    parsed = parse_spec(spec_with(strategy="Shadow", shadow={"duration": "10m"}))
    assert parsed.strategy is Strategy.SHADOW and parsed.has_shadow_phase and not parsed.is_ab_test
    shadow = parsed.shadow
    assert shadow is not None
    assert (shadow.mirror_percent, shadow.duration, shadow.agreement) == (
        100, datetime.timedelta(minutes=10), None,
    )  # fmt: skip
    assert parsed.agreement_metric is None
    # The shadow phase is evaluated at the canary's interval; every metric guards it.
    assert parsed.interval == parsed.canary.interval == datetime.timedelta(minutes=1)
    assert [m.name for m in parsed.guardrails] == ["error-rate", "latency-p95"]


def test_shadow_with_every_field_alone_and_before_a_canary() -> None:
    for strategy in (Strategy.SHADOW, Strategy.CANARY):
        parsed = parse_spec(spec_with(**{**SHADOW, "strategy": strategy.value, "shadow__mirrorPercent": 5}))
        assert parsed.strategy is strategy and parsed.has_shadow_phase
        shadow = parsed.shadow
        assert shadow is not None and shadow.agreement is not None
        assert (shadow.mirror_percent, shadow.duration) == (5, datetime.timedelta(minutes=10))
        assert (shadow.agreement.metric, shadow.agreement.min) == ("prediction-agreement", 0.95)
        assert parsed.agreement_metric == "prediction-agreement"
        # The agreement is judged on its own (the candidate's, against min), not as a guardrail.
        assert [m.name for m in parsed.guardrails] == ["error-rate", "conversion"]
    # A canary without a shadow block has no shadow phase.
    assert not parse_spec(MINIMAL).has_shadow_phase


def test_shadow_blocks_are_checked_whatever_the_strategy() -> None:
    """As the CRD checks them: a canary's shadow phase is validated as a Shadow's is."""
    for changes in (
        {"shadow": {"duration": "0s"}},
        {"shadow": {"duration": "10m", "mirrorPercent": 101}},
        {"shadow": {"duration": "10m", "agreement": {"metric": "nope", "min": 0.9}}},
        {"shadow": {"mirrorPercent": 50}},
    ):
        problems_of(spec_with(**changes))
        problems_of(spec_with(strategy="Shadow", **changes))


def test_camel_case_and_snake_case_both_work_but_camel_case_is_the_api() -> None:
    parsed = parse_spec(spec_with(canary={"minSamples": 7}))
    assert parsed.canary.min_samples == 7


# --------------------------------------------------------------------------- errors name field and value

BAD_SPECS: list[tuple[str, dict[str, Any], str, Any, str]] = [
    # (id, changes, path, value, words of the message)
    ("steps-not-ascending", {"canary__steps": [5, 25, 20, 50]}, "spec.canary.steps[2]", 20,
     "greater than the step before it (25)"),
    ("steps-repeated", {"canary__steps": [5, 5]}, "spec.canary.steps[1]", 5, "greater than the step"),
    ("step-zero", {"canary__steps": [0, 50]}, "spec.canary.steps[0]", 0, "1..100"),
    ("weight-101", {"canary__steps": [5, 101]}, "spec.canary.steps[1]", 101, "1..100"),
    ("steps-empty", {"canary__steps": []}, "spec.canary.steps", [], "at least one step"),
    ("step-float", {"canary__steps": [5.5]}, "spec.canary.steps[0]", 5.5, "integer"),
    ("step-bool", {"canary__steps": [True]}, "spec.canary.steps[0]", True, "integer"),
    ("steps-string", {"canary__steps": "5,25"}, "spec.canary.steps", "5,25", "list"),
    ("interval-negative", {"canary__interval": "-1s"}, "spec.canary.interval", "-1s",
     "must be a duration like"),
    ("interval-words", {"canary__interval": "5 minutes"}, "spec.canary.interval", "5 minutes",
     "duration like"),
    ("interval-no-unit", {"canary__interval": "60"}, "spec.canary.interval", "60", "duration like"),
    ("interval-number", {"canary__interval": 60}, "spec.canary.interval", 60, "duration like"),
    ("interval-zero", {"canary__interval": "0s"}, "spec.canary.interval", "0s", "longer than zero"),
    ("interval-newline", {"canary__interval": "1m\n"}, "spec.canary.interval", "1m\n", "duration like"),
    ("interval-huge", {"canary__interval": "9999999999999d"}, "spec.canary.interval", "9999999999999d",
     "too long"),
    ("min-step-duration", {"canary__minStepDuration": "2x"}, "spec.canary.minStepDuration", "2x",
     "duration like"),
    ("timeout", {"prometheus__timeout": "10"}, "spec.prometheus.timeout", "10", "duration like"),
    ("min-samples-negative", {"canary__minSamples": -1}, "spec.canary.minSamples", -1,
     "greater than or equal"),
    ("builtin-and-query", {"metrics": [{"name": "e", "builtin": "error-rate", "query": "up"}]},
     "spec.metrics[0]", None,
     "metric 'e' sets builtin and query; it needs exactly one of builtin, query, ratio or mean"),
    ("no-source", {"metrics": [{"name": "e"}]}, "spec.metrics[0]", None, "sets none of them"),
    ("builtin-and-ratio",
     {"metrics": [{"name": "e", "builtin": "error-rate", "ratio": {"success": "a", "total": "b"}}]},
     "spec.metrics[0]", None, "sets builtin and ratio"),
    ("unknown-placeholder", {"metrics": [{"name": "q", "query": 'up{w="{{ model }}"}'}]},
     "spec.metrics[0].query", 'up{w="{{ model }}"}', "unknown placeholder {{ model }}"),
    ("unknown-placeholder-ratio",
     {"metrics": [{"name": "r", "ratio": {"success": "a", "total": "b{{ version }}"}}]},
     "spec.metrics[0].ratio.total", "b{{ version }}", "unknown placeholder {{ version }}"),
    ("ratio-missing-total", {"metrics": [{"name": "r", "ratio": {"success": "a"}}]},
     "spec.metrics[0].ratio.total", None, "is required"),
    ("duplicate-metric-names",
     {"metrics": [{"name": "error-rate", "builtin": "error-rate"}, {"name": "error-rate", "query": "up"}]},
     "spec.metrics[1].name", "error-rate", "repeats a metric name"),
    ("unknown-builtin", {"metrics": [{"name": "p50", "builtin": "latency-p50"}]}, "spec.metrics[0].builtin",
     "latency-p50", "error-rate"),
    ("bad-metric-name", {"metrics": [{"name": "Error_Rate", "builtin": "error-rate"}]},
     "spec.metrics[0].name", "Error_Rate", "lower-case"),
    ("min-above-max", {"metrics": [{"name": "q", "query": "up", "min": 2, "max": 1}]}, "spec.metrics[0].min",
     2.0, "is above max (1.0)"),
    ("negative-relative-increase",
     {"metrics": [{"name": "e", "builtin": "error-rate", "maxRelativeIncrease": -0.1}]},
     "spec.metrics[0].maxRelativeIncrease", -0.1, "greater than or equal to 0"),
    ("missing-workload", {"baseline": {"subset": "v1"}}, "spec.baseline.workload", None, "is required"),
    ("no-subset-or-host", {"candidate": {"workload": "churn-v2"}}, "spec.candidate", {"workload": "churn-v2"},
     "subset or a host"),
    ("bad-workload", {"baseline__workload": "Churn_V1"}, "spec.baseline.workload", "Churn_V1", "RFC 1123"),
    ("workload-too-long", {"baseline__workload": "a" * 64}, "spec.baseline.workload", "a" * 64, "RFC 1123"),
    ("missing-virtual-service", {"virtualService": DELETE}, "spec.virtualService", None, "is required"),
    ("missing-baseline", {"baseline": DELETE}, "spec.baseline", None, "is required"),
    ("bad-virtual-service-name", {"virtualService__name": "Churn"}, "spec.virtualService.name", "Churn",
     "RFC 1123"),
    ("bad-namespace", {"virtualService__namespace": "ML"}, "spec.virtualService.namespace", "ML", "RFC 1123"),
    ("routes-empty", {"virtualService__routes": []}, "spec.virtualService.routes", [], "at least one route"),
    ("routes-repeated", {"virtualService__routes": ["primary", "primary"]}, "spec.virtualService.routes[1]",
     "primary", "twice"),
    ("typo-in-canary", {"canary": {"stpes": [5, 50]}}, "spec.canary.stpes", [5, 50], "misspelled"),
    ("typo-at-top", {"metric": []}, "spec.metric", [], "misspelled"),
    ("typo-in-analysis", {"analysis": {"failurelimit": 2}}, "spec.analysis.failurelimit", 2, "misspelled"),
    ("bandit-without-its-block", {"strategy": "Bandit"}, "spec.bandit", None, "required for strategy Bandit"),
    ("bandit-reward-no-ratio-metric", {"strategy": "Bandit", "bandit": {"reward": "conversion"}},
     "spec.bandit.reward", "conversion", "must name a ratio metric"),
    ("bandit-floor-too-high", {"strategy": "Bandit", "bandit": {"reward": "conversion", "minWeight": 51},
                               "metrics": [{"name": "conversion", "ratio": {"success": "s", "total": "t"}}]},
     "spec.bandit.minWeight", 51, "number of variants (2)"),
    ("unknown-strategy", {"strategy": "BlueGreen"}, "spec.strategy", "BlueGreen", "'Canary'"),
    ("candidate-is-baseline", {"candidate__workload": "churn-v1"}, "spec.candidate.workload", "churn-v1",
     "same workload"),
    ("candidates-is-baseline",
     {"candidate": DELETE, "candidates": [{"subset": "v2", "workload": "churn-v1"}]},
     "spec.candidates[0].workload", "churn-v1", "same workload"),
    ("candidate-and-candidates", {"candidates": [{"subset": "v3", "workload": "churn-v3"}]}, "spec", None,
     "exactly one of candidate or candidates"),
    ("no-candidate", {"candidate": DELETE}, "spec", None, "exactly one of candidate or candidates"),
    ("candidates-twice",
     {"candidate": DELETE, "candidates": [{"subset": "v2", "workload": "churn-v2"},
                                          {"subset": "v3", "workload": "churn-v2"}]},
     "spec.candidates[1].workload", "churn-v2", "repeats candidates[0]'s workload"),
    ("several-candidates-shadow",
     {"candidate": DELETE, "strategy": "Shadow", "shadow": {"duration": "10m"},
      "candidates": [{"subset": "v2", "workload": "churn-v2"}, {"subset": "v3", "workload": "churn-v3"}]},
     "spec.candidates", 2, "a shadow mirrors to one candidate"),
    ("several-candidates-aa",
     {"candidate": DELETE, "abTest": {"aa": True},
      "candidates": [{"subset": "v2", "workload": "churn-v2"}, {"subset": "v3", "workload": "churn-v3"}]},
     "spec.abTest.aa", True, "cannot run with 2 candidates"),
    ("alpha-1.5", {"analysis__alpha": 1.5}, "spec.analysis.alpha", 1.5, "less than 1"),
    ("alpha-0", {"analysis__alpha": 0}, "spec.analysis.alpha", 0, "greater than 0"),
    ("failure-limit-0", {"analysis__failureLimit": 0}, "spec.analysis.failureLimit", 0,
     "greater than or equal to 1"),
    ("no-data-limit-0", {"analysis__noDataLimit": 0}, "spec.analysis.noDataLimit", 0,
     "greater than or equal to 1"),
    ("no-data-policy", {"analysis__noData": "Maybe"}, "spec.analysis.noData", "Maybe", "'Hold' or 'Fail'"),
    ("prometheus-no-scheme", {"prometheus__address": "prometheus:9090"}, "spec.prometheus.address",
     "prometheus:9090", "http:// or https://"),
    ("prometheus-ftp", {"prometheus__address": "ftp://prometheus"}, "spec.prometheus.address",
     "ftp://prometheus", "http:// or https://"),
    ("prometheus-space", {"prometheus__address": "http://prom etheus"}, "spec.prometheus.address",
     "http://prom etheus", "URL"),
    ("paused-not-bool", {"paused": "maybe"}, "spec.paused", "maybe", "boolean"),
    ("canary-not-object", {"canary": "fast"}, "spec.canary", "fast", "dictionary"),
    # Metrics of A/B tests.
    ("ratio-and-mean",
     {"metrics": [{**CONVERSION, "mean": REVENUE["mean"]}]}, "spec.metrics[0]", None,
     "metric 'conversion' sets ratio and mean; it needs exactly one of builtin, query, ratio or mean"),
    ("mean-missing-count", {"metrics": [{"name": "m", "mean": {"sum": "a"}}]}, "spec.metrics[0].mean.count",
     None, "is required"),
    ("mean-unknown-placeholder",
     {"metrics": [{"name": "m", "mean": {"sum": "a{{ revenue }}", "count": "b"}}]},
     "spec.metrics[0].mean.sum", "a{{ revenue }}", "unknown placeholder {{ revenue }}"),
    ("mean-squares-unknown-placeholder",
     {"metrics": [{"name": "m", "mean": {"sum": "a", "count": "b", "squares": "{{ model }}"}}]},
     "spec.metrics[0].mean.squares", "{{ model }}", "unknown placeholder {{ model }}"),
    ("secondary-on-builtin", {"metrics": [{**ERRORS, "role": "Secondary"}]}, "spec.metrics[0].role",
     "Secondary", "Secondary needs a ratio or mean metric"),
    ("secondary-on-query", {"metrics": [{"name": "q", "query": "up", "role": "Secondary"}]},
     "spec.metrics[0].role", "Secondary", "Secondary needs a ratio or mean metric"),
    ("unknown-role", {"metrics": [{**CONVERSION, "role": "Objective"}]}, "spec.metrics[0].role", "Objective",
     "'Guardrail' or 'Secondary'"),
    # A/B tests: the objective.
    ("ab-objective-missing", {**AB, "objective": DELETE}, "spec.objective", None,
     "is required for strategy ABTest"),
    ("ab-objective-unknown-metric", {**AB, "objective": {"metric": "conversation", "minimumEffect": 0.02}},
     "spec.objective.metric", "conversation",
     "names no metric in spec.metrics (known: conversion, revenue, error-rate)"),
    ("ab-objective-builtin", {**AB, "objective": {"metric": "error-rate", "minimumEffect": 0.02}},
     "spec.objective.metric", "error-rate", "must name a ratio or mean metric"),
    ("ab-objective-default-metric", {"strategy": "ABTest", "objective": {"metric": "latency-p95",
                                                                          "minimumEffect": 0.02}},
     "spec.objective.metric", "latency-p95", "must name a ratio or mean metric"),
    ("objective-of-a-canary", {"objective": {"metric": "nope", "minimumEffect": 0.02}},
     "spec.objective.metric", "nope", "names no metric"),
    ("ab-minimum-effect-missing", {**AB, "objective": {"metric": "conversion"}},
     "spec.objective.minimumEffect", None, "is required"),
    ("ab-minimum-effect-zero", {**AB, "objective__minimumEffect": 0}, "spec.objective.minimumEffect", 0,
     "greater than 0"),
    ("ab-minimum-effect-negative", {**AB, "objective__minimumEffect": -0.02}, "spec.objective.minimumEffect",
     -0.02, "greater than 0"),
    ("ab-minimum-effect-percent", {**AB, "objective__minimumEffect": 20}, "spec.objective.minimumEffect", 20,
     "less than or equal to 10"),
    ("ab-minimum-effect-inf", {**AB, "objective__minimumEffect": float("inf")},
     "spec.objective.minimumEffect", float("inf"), "finite"),
    ("ab-direction", {**AB, "objective__direction": "Up"}, "spec.objective.direction", "Up",
     "'Increase' or 'Decrease'"),
    ("ab-power-1", {**AB, "objective__power": 1}, "spec.objective.power", 1, "less than 1"),
    # A/B tests: the split, durations and stickiness.
    ("ab-split-0", {**AB, "abTest__split": 0}, "spec.abTest.split", 0, "greater than or equal to 1"),
    ("ab-split-100", {**AB, "abTest__split": 100}, "spec.abTest.split", 100, "less than or equal to 99"),
    ("ab-split-float", {**AB, "abTest__split": 50.5}, "spec.abTest.split", 50.5, "integer"),
    ("ab-split-string", {**AB, "abTest__split": "50"}, "spec.abTest.split", "50", "integer"),
    ("ab-interval-zero", {**AB, "abTest__interval": "0s"}, "spec.abTest.interval", "0s", "longer than zero"),
    ("ab-max-duration-words", {**AB, "abTest__maxDuration": "two weeks"}, "spec.abTest.maxDuration",
     "two weeks", "duration like"),
    ("ab-min-samples-0", {**AB, "abTest__minSamples": 0}, "spec.abTest.minSamples", 0,
     "greater than or equal to 1"),
    ("ab-cookie-space", {**AB, "abTest__stickiness__cookie": "my cookie"}, "spec.abTest.stickiness.cookie",
     "my cookie", "must be a cookie name"),
    ("ab-cookie-empty", {**AB, "abTest__stickiness__cookie": ""}, "spec.abTest.stickiness.cookie", "",
     "must be a cookie name"),
    ("ab-cookie-semicolon", {**AB, "abTest__stickiness__cookie": "a;b"}, "spec.abTest.stickiness.cookie",
     "a;b", "must be a cookie name"),
    ("ab-cookie-too-long", {**AB, "abTest__stickiness__cookie": "c" * 65}, "spec.abTest.stickiness.cookie",
     "c" * 65, "1-64"),
    ("ab-max-age-words", {**AB, "abTest__stickiness__maxAge": "a month"}, "spec.abTest.stickiness.maxAge",
     "a month", "duration like"),
    ("ab-typo", {**AB, "abTest__spilt": 20}, "spec.abTest.spilt", 20, "misspelled"),
    ("ab-assignment-placeholder", {**AB, "abTest__assignmentQuery": 'sum(x{u="{{ user }}"})'},
     "spec.abTest.assignmentQuery", 'sum(x{u="{{ user }}"})', "unknown placeholder {{ user }}"),
    # A/B tests: the cohort (Istio HTTPMatchRequests).
    ("ab-cohort-empty", {**AB, "abTest__match": []}, "spec.abTest.match", [], "at least one match"),
    ("ab-cohort-cookie", {**AB, "abTest__match": [{"headers": {"cookie": {"regex": ".*beta.*"}}}]},
     "spec.abTest.match[0].headers.cookie", {"regex": ".*beta.*"}, "may not match on the cookie header"),
    ("ab-cohort-Cookie",
     {**AB, "abTest__match": [{"uri": {"prefix": "/"}},
                              {"headers": {"x": {"exact": "1"}, "Cookie": {"exact": "a=b"}}}]},
     "spec.abTest.match[1].headers.Cookie", {"exact": "a=b"}, "may not match on the cookie header"),
    ("ab-cohort-bad-regex", {**AB, "abTest__match": [{"uri": {"regex": "^/(beta"}}]},
     "spec.abTest.match[0].uri.regex", "^/(beta", "is not a valid regular expression"),
    ("ab-cohort-header-bad-regex", {**AB, "abTest__match": [{"headers": {"x-tier": {"regex": "*"}}}]},
     "spec.abTest.match[0].headers.x-tier.regex", "*", "is not a valid regular expression"),
    ("ab-cohort-exact-and-prefix", {**AB, "abTest__match": [{"uri": {"exact": "/a", "prefix": "/"}}]},
     "spec.abTest.match[0].uri", {"exact": "/a", "prefix": "/"}, "exactly one of exact, prefix or regex"),
    ("ab-cohort-no-string-match", {**AB, "abTest__match": [{"method": {"glob": "P*"}}]},
     "spec.abTest.match[0].method", {"glob": "P*"}, "exactly one of exact, prefix or regex"),
    ("ab-cohort-string-match-not-a-string", {**AB, "abTest__match": [{"authority": {"exact": 1}}]},
     "spec.abTest.match[0].authority.exact", 1, "must be a string"),
    ("ab-cohort-headers-empty", {**AB, "abTest__match": [{"headers": {}}]}, "spec.abTest.match[0].headers",
     {}, "must map names to string matches"),
    ("ab-cohort-unknown-field", {**AB, "abTest__match": [{"path": {"prefix": "/"}}]},
     "spec.abTest.match[0].path", {"prefix": "/"}, "is not a field of an Istio HTTPMatchRequest"),
    ("ab-cohort-gateways", {**AB, "abTest__match": [{"gateways": ["mesh"]}]},
     "spec.abTest.match[0].gateways", ["mesh"], "is not a field of an Istio HTTPMatchRequest"),
    ("ab-cohort-not-an-object", {**AB, "abTest__match": ["beta"]}, "spec.abTest.match[0]", "beta",
     "dictionary"),
    ("ab-cohort-port-0", {**AB, "abTest__match": [{"port": 0}]}, "spec.abTest.match[0].port", 0,
     "port number in 1..65535"),
    ("ab-cohort-port-string", {**AB, "abTest__match": [{"port": "80"}]}, "spec.abTest.match[0].port", "80",
     "port number"),
    ("ab-cohort-ignore-case", {**AB, "abTest__match": [{"ignoreUriCase": "yes"}]},
     "spec.abTest.match[0].ignoreUriCase", "yes", "true or false"),
    ("ab-cohort-source-label", {**AB, "abTest__match": [{"sourceLabels": {"app": 1}}]},
     "spec.abTest.match[0].sourceLabels.app", 1, "must be a string"),
    # A/B tests: segments and fairness.
    ("segment-not-a-label", {**AB, "segments": ["region", "not a label"]}, "spec.segments[1]", "not a label",
     "Prometheus label name"),
    ("segment-dash", {**AB, "segments": ["device-type"]}, "spec.segments[0]", "device-type",
     "Prometheus label name"),
    ("segment-repeated", {**AB, "segments": ["region", "device", "region"]}, "spec.segments[2]", "region",
     "repeats a segment label"),
    ("ab-fairness-margin-1", {**AB, "abTest__fairness": {"margin": 1}}, "spec.abTest.fairness.margin", 1,
     "less than 1"),
    ("ab-fairness-margin-0", {**AB, "abTest__fairness": {"margin": 0}}, "spec.abTest.fairness.margin", 0,
     "greater than 0"),
    ("ab-fairness-margin-missing", {**AB, "abTest__fairness": {"metric": "conversion"}},
     "spec.abTest.fairness.margin", None, "is required"),
    ("ab-fairness-unknown-metric", {**AB, "abTest__fairness": {"margin": 0.05, "metric": "nope"}},
     "spec.abTest.fairness.metric", "nope", "names no metric"),
    ("ab-fairness-builtin", {**AB, "abTest__fairness": {"margin": 0.05, "metric": "error-rate"}},
     "spec.abTest.fairness.metric", "error-rate", "must name a ratio or mean metric"),
    # Shadows: alone, or as a canary's first phase.
    ("shadow-missing", {"strategy": "Shadow"}, "spec.shadow", None, "is required for strategy Shadow"),
    ("shadow-null", {**SHADOW, "shadow": None}, "spec.shadow", None, "is required for strategy Shadow"),
    ("shadow-in-ab-test", {**AB, "shadow": {"duration": "10m"}}, "spec.shadow", None,
     "is for strategy Shadow, or a shadow phase before a Canary; not for ABTest"),
    ("shadow-not-object", {**SHADOW, "shadow": "10m"}, "spec.shadow", "10m", "dictionary"),
    ("shadow-duration-missing", {**SHADOW, "shadow": {"mirrorPercent": 50}}, "spec.shadow.duration", None,
     "is required"),
    ("shadow-duration-zero", {**SHADOW, "shadow__duration": "0s"}, "spec.shadow.duration", "0s",
     "longer than zero"),
    ("shadow-duration-negative", {**SHADOW, "shadow__duration": "-5m"}, "spec.shadow.duration", "-5m",
     "duration like"),
    ("shadow-duration-number", {**SHADOW, "shadow__duration": 600}, "spec.shadow.duration", 600,
     "duration like"),
    ("shadow-duration-huge", {**SHADOW, "shadow__duration": "9999999999999d"}, "spec.shadow.duration",
     "9999999999999d", "too long"),
    ("shadow-mirror-0", {**SHADOW, "shadow__mirrorPercent": 0}, "spec.shadow.mirrorPercent", 0,
     "greater than or equal to 1"),
    ("shadow-mirror-150", {**SHADOW, "shadow__mirrorPercent": 150}, "spec.shadow.mirrorPercent", 150,
     "less than or equal to 100"),
    ("shadow-mirror-fraction", {**SHADOW, "shadow__mirrorPercent": 0.5}, "spec.shadow.mirrorPercent", 0.5,
     "integer"),
    ("shadow-mirror-string", {**SHADOW, "shadow__mirrorPercent": "100"}, "spec.shadow.mirrorPercent", "100",
     "integer"),
    ("shadow-mirror-bool", {**SHADOW, "shadow__mirrorPercent": True}, "spec.shadow.mirrorPercent", True,
     "integer"),
    ("shadow-typo", {**SHADOW, "shadow__mirrorPrecent": 50}, "spec.shadow.mirrorPrecent", 50, "misspelled"),
    ("shadow-agreement-min-missing", {**SHADOW, "shadow__agreement": {"metric": "prediction-agreement"}},
     "spec.shadow.agreement.min", None, "is required"),
    ("shadow-agreement-metric-missing", {**SHADOW, "shadow__agreement": {"min": 0.9}},
     "spec.shadow.agreement.metric", None, "is required"),
    ("shadow-agreement-min-percent", {**SHADOW, "shadow__agreement__min": 95}, "spec.shadow.agreement.min",
     95, "less than or equal to 1"),
    ("shadow-agreement-min-negative", {**SHADOW, "shadow__agreement__min": -0.1},
     "spec.shadow.agreement.min", -0.1, "greater than or equal to 0"),
    ("shadow-agreement-min-inf", {**SHADOW, "shadow__agreement__min": float("inf")},
     "spec.shadow.agreement.min", float("inf"), "finite"),
    ("shadow-agreement-unknown-metric", {**SHADOW, "shadow__agreement__metric": "agreemnet"},
     "spec.shadow.agreement.metric", "agreemnet",
     "must name a ratio metric in spec.metrics (agreed / compared; ratio metrics: prediction-agreement, "
     "conversion)"),
    ("shadow-agreement-builtin", {**SHADOW, "shadow__agreement__metric": "error-rate"},
     "spec.shadow.agreement.metric", "error-rate", "must name a ratio metric"),
    ("shadow-agreement-default-metric", {"strategy": "Shadow", "shadow": {
        "duration": "10m", "agreement": {"metric": "latency-p95", "min": 0.9}}},
     "spec.shadow.agreement.metric", "latency-p95", "ratio metrics: none"),
    ("shadow-agreement-query",
     {**SHADOW, "metrics": [{"name": "prediction-agreement", "query": "avg(agree)"}]},
     "spec.shadow.agreement.metric", "prediction-agreement", "must name a ratio metric"),
    ("shadow-agreement-mean",
     {**SHADOW, "metrics": [{"name": "prediction-agreement", "mean": REVENUE["mean"]}]},
     "spec.shadow.agreement.metric", "prediction-agreement", "must name a ratio metric"),
    ("shadow-phase-agreement-unknown-metric", {"shadow": {"duration": "1m",
                                                           "agreement": {"metric": "nope", "min": 0.5}}},
     "spec.shadow.agreement.metric", "nope", "must name a ratio metric"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "path", "value", "words"), [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])  # fmt: skip
def test_bad_spec_names_the_field_and_the_value(
    changes: dict[str, Any], path: str, value: Any, words: str
) -> None:
    problems = problems_of(spec_with(**changes))
    matching = [p for p in problems if p.path == path]
    assert matching, f"no problem at {path}: {[str(p) for p in problems]}"
    (problem,) = matching
    assert words in problem.message
    assert problem.value == value and type(problem.value) is type(value)
    shown = str(problem)
    assert shown.startswith(f"{path}: {problem.message}")
    if value is not None:
        assert shown.endswith(f"(got {value!r})") or shown.endswith("...)")
    else:
        assert "(got" not in shown
    # The value is shown once: no "'-1s' is not a duration ... (got '-1s')".
    assert shown.count("(got ") <= 1
    if isinstance(value, str) and value:
        assert shown.count(repr(value)) == 1
    # The error names every problem.
    assert str(problem) in str(SpecError(problems))


def test_duration_error_reads_well() -> None:
    problems = problems_of(spec_with(canary__interval="-1s"))
    assert [str(p) for p in problems] == [
        "spec.canary.interval: must be a duration like 30s, 5m, 1h30m or 14d (got '-1s')"
    ]


def test_every_problem_is_reported_at_once() -> None:
    raw = spec_with(canary__steps=[5, 0], analysis__alpha=2, prometheus__address="nope", typo=1)
    paths = sorted(p.path for p in problems_of(raw))
    assert paths == ["spec.analysis.alpha", "spec.canary.steps[1]", "spec.prometheus.address", "spec.typo"]


def test_long_values_are_shortened() -> None:
    query = "sum(" + "x" * 200 + "{{ nope }})"
    (problem,) = problems_of(spec_with(metrics=[{"name": "q", "query": query}]))
    assert problem.value == query
    assert len(str(problem)) < 250 and str(problem).endswith("...)")


@pytest.mark.parametrize("raw", [None, {}])
def test_empty_spec_says_what_is_required(raw: Any) -> None:
    paths = {p.path for p in problems_of(raw)}
    assert paths == {"spec.virtualService", "spec.baseline"}


@pytest.mark.parametrize("query", [
    'sum(rate(x{workload="{{ workload }}", ns="{{namespace}}"}[{{ interval }}]))',
    "{{ host }} {{ subset }} {{ experiment }}",
    "up",
])  # fmt: skip
def test_known_placeholders_are_accepted(query: str) -> None:
    parse_spec(spec_with(metrics=[{"name": "q", "query": query}]))
    parse_spec(spec_with(metrics=[{"name": "r", "ratio": {"success": query, "total": query}}]))


@pytest.mark.parametrize("text", ["30s", "5m", "1h30m", "14d", "2w", "500ms", "1h0m0s"])
def test_good_durations(text: str) -> None:
    parsed = parse_spec(spec_with(canary__interval=text))
    assert parsed.canary.interval == durations.parse_duration(text)


# --------------------------------------------------------------------------- property: only SpecError

KNOWN_KEYS = [
    "virtualService", "baseline", "candidate", "candidates", "strategy", "canary", "metrics", "analysis",
    "prometheus", "paused", "abTest", "shadow", "bandit", "objective", "segments",
    "name", "namespace", "routes", "host", "subset", "workload", "steps", "interval", "minStepDuration",
    "minSamples", "builtin", "query", "ratio", "success", "total", "max", "min", "maxRelativeIncrease",
    "alpha", "failureLimit", "noData", "noDataLimit", "address", "timeout",
    "mean", "sum", "count", "squares", "role", "split", "maxDuration", "autoPromote", "stickiness", "cookie",
    "maxAge", "match", "aa", "assignmentQuery", "fairness", "margin", "metric", "direction", "minimumEffect",
    "power", "headers", "uri", "exact", "prefix", "regex", "port", "sourceLabels", "ignoreUriCase",
    "mirrorPercent", "duration", "agreement",
    "reward", "minWeight", "maxStepChange", "confidence", "intervalsRequired",
]  # fmt: skip
INTERESTING_STRINGS = [
    "Canary", "ABTest", "Hold", "Fail", "error-rate", "latency-p95", "latency-p99", "churn-v1", "churn-v2",
    "v1", "v2", "1m", "0s", "-1s", "99999999999999999999d", "1m\n", "{{ workload }}", "{{ nope }}",
    "http://p:9090", "http://p:9090/\n", "", "primary",
    "conversion", "Secondary", "Guardrail", "Increase", "Decrease", "region", "cookie", "Cookie", "(", "*",
    "Shadow", "Bandit", "10m", "prediction-agreement",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING_STRINGS)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


def _variant() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"workload": st.sampled_from(["churn-v1", "churn-v2", "Bad_Name"]) | json_values},
        optional={"subset": st.sampled_from(["v1", "v2"]) | json_values, "host": json_values},
    )


ratios = st.fixed_dictionaries({"success": json_values, "total": json_values})
means = st.fixed_dictionaries({"sum": json_values, "count": json_values}, optional={"squares": json_values})
string_matches = st.dictionaries(
    st.sampled_from(["exact", "prefix", "regex", "glob"]), json_values, max_size=2
)
cohorts = st.lists(
    st.dictionaries(
        st.sampled_from(["uri", "scheme", "method", "authority", "headers", "withoutHeaders", "queryParams",
                         "ignoreUriCase", "sourceLabels", "sourceNamespace", "port", "name", "gateways"]),
        string_matches | st.dictionaries(st.sampled_from(["x-tier", "cookie", "Cookie"]), string_matches)
        | json_values,
        max_size=3,
    ) | json_values,
    max_size=3,
)  # fmt: skip
ab_tests = st.fixed_dictionaries(
    {},
    optional={
        "split": st.integers(-5, 120) | json_values,
        "interval": json_values,
        "maxDuration": json_values,
        "autoPromote": json_values,
        "stickiness": st.fixed_dictionaries({}, optional={"cookie": json_values, "maxAge": json_values})
        | json_values,
        "match": cohorts | json_values,
        "aa": json_values,
        "assignmentQuery": json_values,
        "minSamples": json_values,
        "fairness": st.fixed_dictionaries({}, optional={"margin": st.floats() | json_values,
                                                        "metric": st.sampled_from(["conversion", "q"])})
        | json_values,
    },
)  # fmt: skip
objectives = st.fixed_dictionaries(
    {},
    optional={
        "metric": st.sampled_from(["conversion", "error-rate", "q", "nope"]) | json_values,
        "direction": json_values,
        "minimumEffect": st.floats() | json_values,
        "power": st.floats() | json_values,
    },
)
shadows = st.fixed_dictionaries(
    {},
    optional={
        "mirrorPercent": st.integers(-5, 120) | json_values,
        "duration": st.sampled_from(["10m", "0s", "-1m", "1h30"]) | json_values,
        "agreement": st.fixed_dictionaries(
            {},
            optional={
                "metric": st.sampled_from(["conversion", "error-rate", "q", "nope"]) | json_values,
                "min": st.floats() | json_values,
            },
        )
        | json_values,
    },
)
plausible_specs = st.fixed_dictionaries(
    {},
    optional={
        "virtualService": st.fixed_dictionaries(
            {"name": st.sampled_from(["churn", "Churn"]) | json_values},
            optional={"namespace": json_values, "routes": json_values},
        ),
        "baseline": _variant() | json_values,
        "candidate": _variant() | json_values,
        "candidates": st.lists(_variant(), max_size=3) | json_values,
        "strategy": json_values,
        "canary": st.fixed_dictionaries(
            {},
            optional={
                "steps": st.lists(st.integers(-5, 200) | json_values, max_size=6),
                "interval": json_values,
                "minStepDuration": json_values,
                "minSamples": json_values,
            },
        )
        | json_values,
        "metrics": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["error-rate", "q", "conversion"]) | json_values},
                optional={
                    "builtin": json_values,
                    "query": json_values,
                    "ratio": ratios | json_values,
                    "mean": means | json_values,
                    "role": json_values,
                    "min": json_values,
                    "max": json_values,
                    "maxRelativeIncrease": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "analysis": st.dictionaries(st.sampled_from(["alpha", "failureLimit", "noData", "noDataLimit"]),
                                    json_values) | json_values,
        "prometheus": st.dictionaries(st.sampled_from(["address", "timeout"]), json_values) | json_values,
        "paused": json_values,
        "abTest": ab_tests | json_values,
        "objective": objectives | json_values,
        "shadow": shadows | json_values,
        "segments": st.lists(st.sampled_from(["region", "region", "a-b", ""]) | json_values, max_size=3)
        | json_values,
    },
)  # fmt: skip


def _check_outcome(raw: dict[str, Any]) -> None:
    try:
        parsed = parse_spec(raw)
    except SpecError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.path == "spec" or problem.path.startswith(("spec.", "spec[")), problem.path
            assert str(problem)
        assert str(e)
    else:
        assert isinstance(parsed, ExperimentSpec)
        assert parsed.canary.interval > datetime.timedelta(0)
        assert parsed.baseline.workload != parsed.the_candidate.workload
        if parsed.is_ab_test:
            assert parsed.objective is not None and parsed.ab.interval > datetime.timedelta(0)
            objective = parsed.metric(parsed.objective.metric)
            assert objective is not None and (objective.ratio is not None or objective.mean is not None)
        if parsed.strategy is Strategy.SHADOW:
            assert parsed.shadow is not None
        if parsed.shadow is not None:
            assert parsed.strategy in (Strategy.SHADOW, Strategy.CANARY)
            assert 1 <= parsed.shadow.mirror_percent <= 100
            assert parsed.shadow.duration > datetime.timedelta(0)
            agreement = parsed.shadow.agreement
            if agreement is not None:
                metric = parsed.metric(agreement.metric)
                assert metric is not None and metric.ratio is not None and 0 <= agreement.min <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=8))
def test_arbitrary_dicts_only_ever_raise_spec_error(raw: dict[str, Any]) -> None:
    _check_outcome(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_specs)
def test_plausible_specs_only_ever_raise_spec_error(raw: dict[str, Any]) -> None:
    _check_outcome(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20) | st.from_regex(durations.DURATION_PATTERN, fullmatch=True))
def test_any_interval_parses_or_names_the_field(text: str) -> None:
    try:
        parsed = parse_spec(spec_with(canary__interval=text))
    except SpecError as e:
        assert [p.path for p in e.problems] == ["spec.canary.interval"]
        assert e.problems[0].value == text
    else:
        assert parsed.canary.interval == durations.parse_duration(text) > datetime.timedelta(0)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{} ab\nworkloadhs", max_size=24))
def test_any_query_parses_or_names_an_unknown_placeholder(query: str) -> None:
    raw = spec_with(metrics=[{"name": "q", "query": query}])
    unknown = templates.unknown_placeholders(query)
    if unknown:
        (problem,) = problems_of(raw)
        assert problem.path == "spec.metrics[0].query"
        assert f"{{{{ {unknown[0]} }}}}" in problem.message
    else:
        parse_spec(raw)


def test_a_lone_surrogate_is_a_spec_error_naming_the_field():
    """JSON may carry "\\ud800"; it must come back as a field error, not as pydantic's own exception."""
    raw = {
        "virtualService": {"name": "\ud800"},
        "baseline": {"subset": "v1", "workload": "churn-v1"},
        "candidate": {"subset": "v2", "workload": "churn-v2"},
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert str(caught.value).startswith("spec.virtualService.name: must be a Kubernetes object name")
