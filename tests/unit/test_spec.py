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
    NoDataPolicy,
    SpecError,
    SpecProblem,
    Strategy,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("**/experiment.yaml"))

MINIMAL: dict[str, Any] = {
    "virtualService": {"name": "churn"},
    "baseline": {"subset": "v1", "workload": "churn-v1"},
    "candidate": {"subset": "v2", "workload": "churn-v2"},
    "prometheus": {"address": "http://prometheus.istio-system:9090"},
}

DELETE = object()


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
            target[last] = value
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
     "metric 'e' sets builtin and query; it needs exactly one of builtin, query or ratio"),
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
    ("unsupported-strategy", {"strategy": "ABTest"}, "spec.strategy", "ABTest", "not supported"),
    ("unknown-strategy", {"strategy": "BlueGreen"}, "spec.strategy", "BlueGreen", "'Canary'"),
    ("candidate-is-baseline", {"candidate__workload": "churn-v1"}, "spec.candidate.workload", "churn-v1",
     "same workload"),
    ("candidates-is-baseline",
     {"candidate": DELETE, "candidates": [{"subset": "v2", "workload": "churn-v1"}]},
     "spec.candidates[0].workload", "churn-v1", "same workload"),
    ("candidate-and-candidates", {"candidates": [{"subset": "v3", "workload": "churn-v3"}]}, "spec", None,
     "exactly one of candidate or candidates"),
    ("no-candidate", {"candidate": DELETE}, "spec", None, "exactly one of candidate or candidates"),
    ("several-candidates",
     {"candidate": DELETE, "candidates": [{"subset": "v2", "workload": "churn-v2"},
                                          {"subset": "v3", "workload": "churn-v3"}]},
     "spec.candidates", 2, "one candidate per experiment"),
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
]  # fmt: skip
INTERESTING_STRINGS = [
    "Canary", "ABTest", "Hold", "Fail", "error-rate", "latency-p95", "latency-p99", "churn-v1", "churn-v2",
    "v1", "v2", "1m", "0s", "-1s", "99999999999999999999d", "1m\n", "{{ workload }}", "{{ nope }}",
    "http://p:9090", "http://p:9090/\n", "", "primary",
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
                {"name": st.sampled_from(["error-rate", "q"]) | json_values},
                optional={
                    "builtin": json_values,
                    "query": json_values,
                    "ratio": ratios | json_values,
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
        "abTest": json_values,
        "segments": json_values,
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
