"""The CRD's CEL rules, evaluated for real: would the API server admit this manifest, and what would it say?

``cel_eval`` runs the CRD's ``x-kubernetes-validations`` with a real CEL
interpreter (cel-python) on defaulted objects, after the structural schema
(jsonschema, with RE2 patterns), the way kube-apiserver does.  The tests
here check that every rule compiles and only names fields the schema has,
that each rule is broken by at least one manifest (with the message the
user then reads), that the manifests we publish are admitted, and that the
operator's own parser (``spec.parse_spec``, the only validation when the
API server is an emulator) rejects what the API server rejects.  Where the
two disagree on purpose, or for want of a rule, the case is listed below.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout import spec, templates

import cel_eval
import test_crd
from cel_eval import FieldError, Rule, admission_errors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RULES = cel_eval.all_rules()

Node = dict[str, Any]
DELETE = object()


def load(path: Path) -> Node:
    with path.open() as f:
        manifest: Node = yaml.safe_load(f)
    return manifest


MINIMAL = load(EXAMPLES / "01-minimal" / "experiment.yaml")


def manifest(changes: Node | None = None) -> Node:
    """The minimal example with changes at dotted paths under spec (``canary.steps``); DELETE removes."""
    result = copy.deepcopy(MINIMAL)
    for dotted, value in (changes or {}).items():
        target = result["spec"]
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = copy.deepcopy(value)
    return result


def rejects(errors: list[FieldError]) -> list[str]:
    """The error lines as the user reads them, asserting none comes from a rule that failed to evaluate."""
    broken = [str(error) for error in errors if error.source == "cel-error"]
    assert not broken, f"rules failed to evaluate (the API server would answer this too): {broken}"
    return [str(error) for error in errors]


def parser_problems(raw_spec: Any) -> list[spec.SpecProblem] | None:
    """parse_spec's problems, or None when it accepts the spec."""
    try:
        spec.parse_spec(raw_spec)
    except spec.SpecError as e:
        return e.problems
    return None


# --------------------------------------------------------------------------- every rule compiles


def test_the_crd_has_rules_where_api_md_promises_them() -> None:
    paths = {rule.path for rule in RULES}
    assert {
        ".spec",
        ".spec.canary.steps",
        ".spec.metrics",
        ".spec.metrics[]",
        ".spec.metrics[].query",
    } <= paths
    assert len(RULES) >= 30


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_rule_compiles_and_names_only_schema_fields(rule: Rule) -> None:
    assert rule.ast is not None  # parsing raises celpy.CELParseError
    assert cel_eval.check_rule(rule) == []


@pytest.mark.parametrize(
    ("path", "text", "problem"),
    [
        (".spec", "!has(self.candidate) || self.candiate.workload != 'x'", "undefined field 'candiate'"),
        (".spec", "has(self.objetive)", "undefined field 'objetive'"),
        (".spec.metrics", "self.all(m, self.exists_one(n, n.nmae == m.name))", "undefined field 'nmae'"),
        (".spec.canary.steps", "self.isSortd()", "function isSortd() is neither"),
        (".spec.canary.steps", "self.all(x, y > 0)", "undeclared reference to 'y'"),
        (".spec.canary", "self.steps.name == 'x'", "field selection 'name' on a value of type array"),
        (".spec.metrics[].query", "self.size() < 10 && self.toLowerCase() == self", "function toLowerCase()"),
    ],
)
def test_the_rule_checker_catches_what_the_api_server_refuses(path: str, text: str, problem: str) -> None:
    node = cel_eval.crd_schema()
    for part in re.findall(r"\.[^.\[{]+|\[\]", path):
        node = node["items"] if part == "[]" else node["properties"][part[1:]]
    problems = cel_eval.check_rule(Rule(path, 0, text, "a message", node))
    assert any(problem in found for found in problems), problems


def test_a_rule_that_does_not_parse_raises() -> None:
    with pytest.raises(celpy.CELParseError):
        _ = Rule(".spec", 0, "self.a ||| self.b", "m", {}).ast


# --------------------------------------------------------------------------- Kubernetes' CEL


def _value(rule: str, value: Any, node: Node) -> Any:
    return Rule("", 0, rule, "m", node).evaluate(value)


@pytest.mark.parametrize(
    ("items", "value", "expected"),
    [
        # The examples of Kubernetes' lists library documentation.
        ({"type": "integer"}, [1, 2, 3], True),
        ({"type": "string"}, ["a", "b", "b", "c"], True),
        ({"type": "number"}, [2.0, 1.0], False),
        ({"type": "integer"}, [1], True),
        ({"type": "integer"}, [], True),
        ({"type": "integer"}, [5, 25, 20], False),
    ],
)
def test_is_sorted_follows_the_kubernetes_lists_library(
    items: Node, value: list[Any], expected: bool
) -> None:
    assert _value("self.isSorted()", value, {"type": "array", "items": items}) == expected


def test_matches_is_re2_like_cel_go() -> None:
    string = {"type": "string"}
    # RE2: `$` is the end of the text (Python's `$` also matches before a final newline)...
    assert _value("self.matches('^1m$')", "1m", string)
    assert not _value("self.matches('^1m$')", "1m\n", string)
    # ... `\s` is ASCII whitespace without \v, and matches() is a search, not a full match.
    assert not _value(r"self.matches(r'^\s$')", "\v", string)
    assert _value("self.matches('m')", "1m", string)


def test_lower_ascii_follows_the_kubernetes_strings_library() -> None:
    string = {"type": "string"}
    assert _value("self.lowerAscii()", "TacoCat", string) == "tacocat"  # Kubernetes' documentation
    # ASCII only: no Unicode case mapping (Python's str.lower() maps the Kelvin sign to "k", cel-go does not).
    assert _value("self.lowerAscii()", "CoO\u212aIE \u00c9", string) == "coo\u212aie \u00c9"
    assert not _value("self.lowerAscii() == 'cookie'", "coo\u212aie", string)


def test_numbers_reach_cel_as_doubles_even_when_written_as_integers() -> None:
    # `min: 2, max: 2.5`: Kubernetes types both by the schema (celpy has no int <= double either).
    metric = cel_eval.crd_schema()["properties"]["spec"]["properties"]["metrics"]["items"]
    assert _value("self.min <= self.max", {"name": "x", "min": 2, "max": 2.5}, metric)


def test_rules_see_the_defaulted_object() -> None:
    """Without the schema's defaults (strategy, metrics...), rules on spec could not even be evaluated."""
    raw = copy.deepcopy(MINIMAL)
    undefaulted = [error for error in cel_eval.cel_errors(raw) if error.source == "cel-error"]
    assert any("strategy" in error.detail for error in undefaulted), undefaulted
    assert admission_errors(raw) == []
    # objective.metric may name a default metric that is not written in the manifest (so the rule that it
    # names a metric passes); a builtin is no ratio or mean metric though, and only that rule refuses it...
    errors = admission_errors(manifest({"objective": {"metric": "latency-p95", "minimumEffect": 0.02}}))
    assert [error.rule for error in errors] == [".spec#11"], errors
    # ... and the TLS rule reads insecureSkipVerify, which only its default may set.
    tls = manifest({"prometheus.tlsConfig": {"caFrom": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}}}})
    broken = {e.rule for e in cel_eval.cel_errors(tls) if e.source == "cel-error"}
    assert ".spec.prometheus.tlsConfig#0" in broken
    assert admission_errors(tls) == []


def test_blocking_schema_errors_skip_the_rules_as_the_api_server_does() -> None:
    # An unsupported enum value is blocking: the (also broken) steps rule is not evaluated.
    errors = admission_errors(manifest({"strategy": "BlueGreen", "canary.steps": [50, 5]}))
    assert [error.source for error in errors] == ["schema", "schema"]
    assert str(errors[-1]) == f"<nil>: Invalid value: {cel_eval.NOT_CHECKED}"
    # A pattern mismatch is not: both the pattern and the rule report.
    errors = admission_errors(manifest({"canary.interval": "-5m", "canary.steps": [50, 5]}))
    assert {error.source for error in errors} == {"schema", "cel"}


def test_unknown_fields_fail_strict_decoding() -> None:
    errors = admission_errors(manifest({"canary.stpes": [5, 50], "canary.steps": [50, 5]}))
    assert [str(error) for error in errors] == ['strict decoding error: unknown field "spec.canary.stpes"']


def test_nulls_are_dropped_and_defaulted() -> None:
    assert admission_errors(manifest({"canary.interval": None, "strategy": None})) == []


# --------------------------------------------------------------------------- each rule, broken


RATIO = {
    "name": "conversion",
    "ratio": {
        "success": 'sum(increase(model_conversions_total{workload="{{ workload }}"}[{{ interval }}]))',
        "total": 'sum(increase(model_requests_total{workload="{{ workload }}"}[{{ interval }}]))',
    },
}
MEAN = {
    "name": "revenue",
    "mean": {
        "sum": 'sum(increase(model_revenue_sum{workload="{{ workload }}"}[{{ interval }}]))',
        "count": 'sum(increase(model_revenue_count{workload="{{ workload }}"}[{{ interval }}]))',
    },
}
BUILTIN = {"name": "error-rate", "builtin": "error-rate"}
# The smallest A/B test: an objective (a ratio metric and the effect that matters).
AB = {
    "strategy": "ABTest",
    "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.02},
    "metrics": [RATIO, MEAN, BUILTIN],
}
HOOK = {"name": "qa", "type": "pre-rollout", "url": "http://qa.ml/approve"}
NOTE = {"name": "chat", "type": "slack", "url": "https://hooks.slack.example/T0/B0"}
SECRET = {"secretKeyRef": {"name": "hooks", "key": "url"}}


def _match(**fields: Any) -> Node:
    return {**AB, "abTest": {"match": [fields]}}


def _ab(**fields: Any) -> Node:
    return {**AB, "abTest": fields}


AGREEMENT = {
    "name": "agreement",
    "ratio": {
        "success": 'sum(increase(model_shadow_agreed_total{workload="{{ workload }}"}[{{ interval }}]))',
        "total": 'sum(increase(model_shadow_compared_total{workload="{{ workload }}"}[{{ interval }}]))',
    },
}
# The smallest shadow with an agreement check (API.md's), its agreement a ratio metric.
SHADOW = {
    "strategy": "Shadow",
    "shadow": {"mirrorPercent": 100, "duration": "10m", "agreement": {"metric": "agreement", "min": 0.95}},
    "metrics": [BUILTIN, AGREEMENT],
}


def _shadow(**fields: Any) -> Node:
    return {**SHADOW, "shadow": fields}


TWO_CANDIDATES = {
    "candidate": DELETE,
    "candidates": [{"subset": "v2", "workload": "b"}, {"subset": "v3", "workload": "c"}],
}
TWINS = {
    "candidate": DELETE,
    "candidates": [{"subset": "v2", "workload": "b"}, {"subset": "v3", "workload": "b"}],
}


def _hook(type_: str, name: str = "qa") -> Node:
    return {"name": name, "type": type_, "url": "http://gates.test/approve"}


def _metric(**fields: Any) -> Node:
    return {"metrics": [{"name": "x", **fields}]}


# (changes, the rule they break, whether parse_spec rejects them too).  parse_spec accepting one would be
# a known gap (see PARSER_GAPS).  The blocks of ABTest, Shadow and Bandit are typed in spec.py: they are
# checked by both, whatever the strategy.
RULE_CASES: list[tuple[Node, str, bool]] = [
    ({"candidates": [{"subset": "v3", "workload": "churn-v3"}]}, ".spec#0", True),
    ({"candidate": DELETE}, ".spec#0", True),
    ({"candidate": {"subset": "v2", "workload": "churn-v1"}}, ".spec#1", True),
    ({"candidate": DELETE, "candidates": [{"subset": "v1", "workload": "churn-v1"}]}, ".spec#2", True),
    (TWINS, ".spec#3", True),
    ({"objective": {"metric": "conversion", "minimumEffect": 0.02}}, ".spec#4", True),
    ({**AB, "objective": {"metric": "conversation", "minimumEffect": 0.02}}, ".spec#4", True),
    ({"bandit": {"reward": "error-rate"}}, ".spec#5", True),  # a metric, but no ratio metric
    ({"shadow": {"duration": "10m", "agreement": {"metric": "agree", "min": 0.9}}}, ".spec#6", True),
    (_shadow(duration="10m", agreement={"metric": "error-rate", "min": 0.9}), ".spec#6", True),  # a builtin
    # ... a default metric (not written in the manifest), and a query: agreement needs counts.
    ({"shadow": {"duration": "10m", "agreement": {"metric": "latency-p95", "min": 0.9}}}, ".spec#6", True),
    ({**SHADOW, "metrics": [{"name": "agreement", "query": "avg(agree)"}]}, ".spec#6", True),
    (
        {"strategy": "Bandit", "metrics": [RATIO], "bandit": {"reward": "conversion", "minWeight": 40},
         **TWO_CANDIDATES},
        ".spec#7", True,
    ),
    ({"strategy": "ABTest"}, ".spec#8", True),
    ({"strategy": "Bandit"}, ".spec#9", True),
    ({"strategy": "Shadow"}, ".spec#10", True),
    ({"strategy": "Shadow", "metrics": [AGREEMENT]}, ".spec#10", True),
    ({**AB, "objective": {"metric": "error-rate", "minimumEffect": 0.1, "direction": "Decrease"}},
     ".spec#11", True),
    ({"objective": {"metric": "latency-p95", "minimumEffect": 0.1}}, ".spec#11", True),  # a default builtin
    ({**AB, "metrics": [{"name": "conversion", "query": "up"}]}, ".spec#11", True),
    (_ab(fairness={"margin": 0.05, "metric": "conversation"}), ".spec#12", True),
    (_ab(fairness={"margin": 0.05, "metric": "error-rate"}), ".spec#12", True),
    # ... whatever the strategy (a canary here).
    ({"abTest": {"fairness": {"margin": 0.05, "metric": "latency-p95"}}}, ".spec#12", True),
    ({**AB, "shadow": {"duration": "10m"}}, ".spec#13", True),
    ({**AB, "shadow": SHADOW["shadow"], "metrics": [RATIO, AGREEMENT]}, ".spec#13", True),
    ({**SHADOW, **TWO_CANDIDATES}, ".spec#14", True),
    ({**TWO_CANDIDATES, "shadow": {"duration": "10m"}}, ".spec#14", True),  # a shadow phase before a canary
    ({**AB, **TWO_CANDIDATES, "abTest": {"aa": True}}, ".spec#15", True),  # an A/A test of several candidates
    ({**TWO_CANDIDATES, "abTest": {"aa": True}}, ".spec#15", True),  # ... whatever the strategy (a canary)
    ({**AB, "webhooks": [_hook("confirm-step")]}, ".spec#16", True),  # an A/B test has no steps
    ({**SHADOW, "webhooks": [_hook("pre-rollout"), _hook("confirm-step", "b")]}, ".spec#16", True),
    ({**SHADOW, "webhooks": [_hook("confirm-promotion")]}, ".spec#17", True),  # a Shadow never promotes
    ({"baseline": {"workload": "churn-v1"}}, ".spec.baseline#0", True),
    ({"candidate": {"workload": "churn-v2"}}, ".spec.candidate#0", True),
    ({"candidate": DELETE, "candidates": [{"workload": "churn-v2"}]}, ".spec.candidates[]#0", True),
    ({"canary.steps": [5, 50, 25]}, ".spec.canary.steps#0", True),
    ({"canary.steps": [5, 25, 25, 100]}, ".spec.canary.steps#0", True),
    ({"canary.interval": "0m0s"}, ".spec.canary.interval#0", True),
    ({"canary.minStepDuration": "00s"}, ".spec.canary.minStepDuration#0", True),
    (
        {"metrics": [{"name": "x", "builtin": "error-rate"}, {"name": "x", "builtin": "latency-p95"}]},
        ".spec.metrics#0", True,
    ),
    (_metric(builtin="error-rate", query="up"), ".spec.metrics[]#0", True),
    (_metric(max=1), ".spec.metrics[]#0", True),
    (_metric(query="up", min=2, max=1.5), ".spec.metrics[]#1", True),
    (_metric(query="up", mean={"sum": "a", "count": "b"}), ".spec.metrics[]#0", True),
    (_metric(ratio={"success": "a", "total": "b"}, mean={"sum": "a", "count": "b"}), ".spec.metrics[]#0",
     True),
    (_metric(role="Secondary"), ".spec.metrics[]#0", True),
    (_metric(builtin="error-rate", role="Secondary"), ".spec.metrics[]#2", True),
    (_metric(query="up", role="Secondary", max=1), ".spec.metrics[]#2", True),
    (_metric(mean={"sum": "{{ revenue }}", "count": "b"}), ".spec.metrics[].mean.sum#0", True),
    (_metric(mean={"sum": "a", "count": "b{{ Workload }}"}), ".spec.metrics[].mean.count#0", True),
    (_metric(mean={"sum": "a", "count": "b", "squares": "{{ }}"}), ".spec.metrics[].mean.squares#0", True),
    (_metric(query='up{w="{{ workloda }}"}'), ".spec.metrics[].query#0", True),
    (_metric(ratio={"success": "{{ variant }}", "total": "up"}), ".spec.metrics[].ratio.success#0", True),
    (_metric(ratio={"success": "up", "total": "{{ Workload }}"}), ".spec.metrics[].ratio.total#0", True),
    ({"prometheus.timeout": "0s"}, ".spec.prometheus.timeout#0", True),
    (
        {"prometheus.bearerTokenFrom": SECRET,
         "prometheus.basicAuth": {"username": "u", "passwordFrom": SECRET}},
        ".spec.prometheus#0", True,
    ),
    ({"prometheus.basicAuth": {"passwordFrom": SECRET}}, ".spec.prometheus.basicAuth#0", True),
    (
        {"prometheus.basicAuth": {"username": "u", "usernameFrom": SECRET, "passwordFrom": SECRET}},
        ".spec.prometheus.basicAuth#0", True,
    ),
    (
        {"prometheus.tlsConfig": {"caFrom": SECRET, "insecureSkipVerify": True}},
        ".spec.prometheus.tlsConfig#0", True,
    ),
    ({"webhooks": [{**HOOK, "urlFrom": SECRET}]}, ".spec.webhooks[]#0", True),
    ({"webhooks": [{"name": "qa", "type": "pre-rollout"}]}, ".spec.webhooks[]#0", True),
    ({"webhooks": [{**HOOK, "timeout": "0ms"}]}, ".spec.webhooks[].timeout#0", True),
    ({"webhooks": [{**HOOK, "deadline": "0h"}]}, ".spec.webhooks[].deadline#0", True),
    ({"notifications": [{"name": "chat"}]}, ".spec.notifications[]#0", True),
    ({"notifications": [{**NOTE, "timeout": "0s"}]}, ".spec.notifications[].timeout#0", True),
    (_match(uri={"exact": "/a", "prefix": "/b"}), ".spec.abTest.match[].uri#0", True),
    (_match(method={}), ".spec.abTest.match[].method#0", True),
    (_match(authority={"exact": "a", "regex": "b"}), ".spec.abTest.match[].authority#0", True),
    (_match(headers={"x-user-tier": {}}), ".spec.abTest.match[].headers{}#0", True),
    (_match(withoutHeaders={"x": {"exact": "1", "regex": "1"}}),
     ".spec.abTest.match[].withoutHeaders{}#0", True),
    (_match(queryParams={"beta": {}}), ".spec.abTest.match[].queryParams{}#0", True),
    (_match(scheme={"exact": "https", "prefix": "http"}), ".spec.abTest.match[].scheme#0", True),
    (_match(headers={"cookie": {"regex": ".*beta.*"}}), ".spec.abTest.match[]#0", True),
    (_match(headers={"x-tier": {"exact": "beta"}, "Cookie": {"exact": "a=b"}}), ".spec.abTest.match[]#0",
     True),
    ({**AB, "abTest": {"maxDuration": "0d"}}, ".spec.abTest.maxDuration#0", True),
    ({"abTest": {"maxDuration": "0d"}}, ".spec.abTest.maxDuration#0", True),  # strategy Canary: typed too
    (_ab(interval="0s"), ".spec.abTest.interval#0", True),
    (_ab(stickiness={"cookie": "mexp", "maxAge": "0h0m"}), ".spec.abTest.stickiness.maxAge#0", True),
    (_ab(assignmentQuery='sum(assigned{user="{{ user }}"})'), ".spec.abTest.assignmentQuery#0", True),
    ({"segments": ["region", "device", "region"]}, ".spec.segments#0", True),
    ({"shadow": {"duration": "0s"}}, ".spec.shadow.duration#0", True),
    (_shadow(duration="0h0m0s", agreement={"metric": "agreement", "min": 0.95}), ".spec.shadow.duration#0",
     True),
    ({"bandit": {"reward": "x", "maxDuration": "0w"}}, ".spec.bandit.maxDuration#0", True),
    ({"bandit": {"reward": "x", "interval": "0s"}}, ".spec.bandit.interval#0", True),
]  # fmt: skip


def _reported_at(rule: Rule) -> str:
    """A regex of the field path the API server reports a rule's failure at, for the first list item."""
    path = re.escape(rule.path.lstrip("."))
    return path.replace(re.escape("[]"), re.escape("[0]")).replace(re.escape("{}"), r"\[[^]]+\]")


@pytest.mark.parametrize(
    ("changes", "rule_id", "parser_rejects"),
    RULE_CASES,
    ids=[f"{c[1]}:{repr(c[0])[:40]}" for c in RULE_CASES],
)
def test_rule_rejects_with_its_message(changes: Node, rule_id: str, parser_rejects: bool) -> None:
    (rule,) = [rule for rule in RULES if rule.id == rule_id]
    errors = admission_errors(manifest(changes))
    lines = rejects(errors)
    expected = re.compile(
        f'{_reported_at(rule)}: Invalid value: "{rule.node["type"]}": {re.escape(rule.message)}'
    )
    assert any(expected.fullmatch(line) for line in lines), (expected.pattern, lines)
    assert any(error.rule == rule_id for error in errors)
    # The operator's parser, the only check behind an emulated API server, agrees (or the gap is known).
    problems = parser_problems(manifest(changes)["spec"])
    assert (problems is not None) == parser_rejects, problems


def test_every_rule_is_broken_by_some_case() -> None:
    covered = {rule_id for _, rule_id, _ in RULE_CASES}
    assert {rule.id for rule in RULES} <= covered, "add a RULE_CASES entry for each new rule"


# --------------------------------------------------------------------------- what users get wrong


M0 = "spec.metrics[0]"
STEPS = "spec.canary.steps"
INTERVAL = "spec.canary.interval"
DURATION = "should match '^([0-9]+(ms|s|m|h|d|w))+$'"
ONE_SOURCE = "a metric needs exactly one of builtin, query, ratio or mean"
AB_TEST = "spec.abTest"
SHADOW_AT = "spec.shadow"

# (name, changes, a line the API server answers (or the start of one), the path parse_spec reports;
# "" when parse_spec coerces the value and runs the spec, see test_crd.LENIENT_AT_RUN_TIME).
BAD_MANIFESTS: list[tuple[str, Node, str, str]] = [
    ("steps not ascending", {"canary.steps": [5, 50, 25, 100]},
     f'{STEPS}: Invalid value: "array": steps must be strictly ascending, e.g. [5, 25, 50, 100]',
     f"{STEPS}[2]"),
    ("duplicate steps", {"canary.steps": [5, 25, 25, 100]},
     f'{STEPS}: Invalid value: "array": steps must be strictly ascending', f"{STEPS}[2]"),
    ("step 0", {"canary.steps": [0, 50, 100]},
     f"{STEPS}[0]: Invalid value: 0: {STEPS}[0] in body should be greater than or equal to 1", f"{STEPS}[0]"),
    ("step 101", {"canary.steps": [5, 50, 101]},
     f"{STEPS}[2]: Invalid value: 101: {STEPS}[2] in body should be less than or equal to 100",
     f"{STEPS}[2]"),
    ("weights over 100", {"canary.steps": [50, 150, 200]},
     f"{STEPS}[1]: Invalid value: 150: {STEPS}[1] in body should be less than or equal to 100",
     f"{STEPS}[1]"),
    ("a step as a string", {"canary.steps": [5, "50"]},
     f'{STEPS}[1]: Invalid value: "string": {STEPS}[1] in body must be of type integer', f"{STEPS}[1]"),
    ("no steps", {"canary.steps": []},
     f'{STEPS}: Invalid value: "array": {STEPS} in body should have at least 1 items', STEPS),
    ("builtin and query", _metric(builtin="error-rate", query="up"),
     f'{M0}: Invalid value: "object": {ONE_SOURCE}', M0),
    ("builtin, query and ratio",
     _metric(builtin="error-rate", query="up", ratio={"success": "a", "total": "b"}),
     f'{M0}: Invalid value: "object": {ONE_SOURCE}', M0),
    ("query and ratio", _metric(query="up", ratio={"success": "a", "total": "b"}), ONE_SOURCE, M0),
    ("no source", _metric(max=0.05), ONE_SOURCE, M0),
    ("unknown placeholder", _metric(query='sum(rate(x{w="{{ workloda }}"}[{{ interval }}]))'),
     f'{M0}.query: Invalid value: "string": query may only use the placeholders {{{{ workload }}}}',
     f"{M0}.query"),
    ("unknown placeholder in a ratio", _metric(ratio={"success": "a{{ model }}", "total": "b"}),
     "ratio.success may only use the placeholders", f"{M0}.ratio.success"),
    ("negative duration", {"canary.interval": "-5m"},
     f'{INTERVAL}: Invalid value: "-5m": {INTERVAL} in body {DURATION}', INTERVAL),
    ("duration in words", {"canary.interval": "5 minutes"},
     f'{INTERVAL}: Invalid value: "5 minutes": {INTERVAL} in body {DURATION}', INTERVAL),
    ("duration without a last unit", {"canary.minStepDuration": "1h30"},
     f"spec.canary.minStepDuration in body {DURATION}", "spec.canary.minStepDuration"),
    ("decimal duration", {"canary.interval": "1.5m"}, f"{INTERVAL} in body {DURATION}", INTERVAL),
    ("duration as a number", {"prometheus.timeout": 10},
     'spec.prometheus.timeout: Invalid value: "integer": spec.prometheus.timeout in body must be of type '
     "string",
     "spec.prometheus.timeout"),
    ("zero duration", {"canary.interval": "0s"},
     f'{INTERVAL}: Invalid value: "string": interval must be longer than zero', INTERVAL),
    ("alpha 0", {"analysis.alpha": 0},
     "spec.analysis.alpha: Invalid value: 0: spec.analysis.alpha in body should be greater than 0",
     "spec.analysis.alpha"),
    ("alpha 1", {"analysis.alpha": 1}, "spec.analysis.alpha in body should be less than 1",
     "spec.analysis.alpha"),
    ("alpha as a percentage", {"analysis.alpha": 5}, "should be less than 1", "spec.analysis.alpha"),
    ("negative alpha", {"analysis.alpha": -0.05}, "should be greater than 0", "spec.analysis.alpha"),
    ("failureLimit 0", {"analysis.failureLimit": 0},
     "spec.analysis.failureLimit: Invalid value: 0: spec.analysis.failureLimit in body should be greater "
     "than "
     "or equal to 1", "spec.analysis.failureLimit"),
    ("noDataLimit 0", {"analysis.noDataLimit": 0}, "greater than or equal to 1", "spec.analysis.noDataLimit"),
    ("negative minSamples", {"canary.minSamples": -1}, "greater than or equal to 0",
     "spec.canary.minSamples"),
    ("unknown noData policy", {"analysis.noData": "Ignore"},
     'spec.analysis.noData: Unsupported value: "Ignore": supported values: "Hold", "Fail"',
     "spec.analysis.noData"),
    ("unknown strategy", {"strategy": "BlueGreen"},
     'spec.strategy: Unsupported value: "BlueGreen": supported values: "Canary", "ABTest", "Shadow", '
     '"Bandit"',
     "spec.strategy"),
    ("lower-case strategy", {"strategy": "canary"}, 'spec.strategy: Unsupported value: "canary"',
     "spec.strategy"),
    ("unknown builtin", _metric(builtin="latency-p50"),
     f'{M0}.builtin: Unsupported value: "latency-p50": supported values: "error-rate", "latency-p95", '
     '"latency-p99"', f"{M0}.builtin"),
    ("builtin with an underscore", _metric(builtin="error_rate"),
     f'{M0}.builtin: Unsupported value: "error_rate"', f"{M0}.builtin"),
    ("negative maxRelativeIncrease", _metric(builtin="error-rate", maxRelativeIncrease=-0.5),
     f"{M0}.maxRelativeIncrease: Invalid value: -0.5: {M0}.maxRelativeIncrease in body should be greater "
     "than "
     "or equal to 0", f"{M0}.maxRelativeIncrease"),
    ("min above max", _metric(query="up", min=10, max=1), "a metric's min must not be above its max",
     f"{M0}.min"),
    ("duplicate metric names",
     {"metrics": [{"name": "e", "builtin": "error-rate"}, {"name": "e", "builtin": "latency-p95"}]},
     'spec.metrics[1]: Duplicate value: map[string]interface {}{"name":"e"}', "spec.metrics[1].name"),
    ("metric name with capitals", {"metrics": [{"name": "ErrorRate", "builtin": "error-rate"}]},
     f"{M0}.name in body should match", f"{M0}.name"),
    ("same workload twice", {"candidate": {"subset": "v2", "workload": "churn-v1"}},
     'spec: Invalid value: "object": baseline and candidate must be different workloads',
     "spec.candidate.workload"),
    ("no candidate", {"candidate": DELETE},
     'spec: Invalid value: "object": exactly one of candidate or candidates must be set', "spec"),
    ("nowhere to route", {"baseline": {"workload": "churn-v1"}},
     'spec.baseline: Invalid value: "object": baseline needs a subset or a host to route to',
     "spec.baseline"),
    ("no workload", {"candidate": {"subset": "v2"}}, "spec.candidate.workload: Required value",
     "spec.candidate.workload"),
    ("workload that is no Deployment name", {"candidate": {"subset": "v2", "workload": "churn_v2"}},
     "spec.candidate.workload in body should match", "spec.candidate.workload"),
    ("no virtualService", {"virtualService": DELETE}, "spec.virtualService: Required value",
     "spec.virtualService"),
    ("prometheus without a scheme", {"prometheus.address": "prometheus:9090"},
     "spec.prometheus.address in body should match", "spec.prometheus.address"),
    ("misspelled field", {"canary.stpes": [5, 50]},
     'strict decoding error: unknown field "spec.canary.stpes"', "spec.canary.stpes"),
    ("misspelled block", {"analsis": {"alpha": 0.1}}, 'unknown field "spec.analsis"', "spec.analsis"),
    ("paused as a string", {"paused": "yes"}, "spec.paused in body must be of type boolean", ""),
    ("webhook with url and urlFrom", {"webhooks": [{**HOOK, "urlFrom": SECRET}]},
     'spec.webhooks[0]: Invalid value: "object": a webhook needs exactly one of url or urlFrom',
     "spec.webhooks[0]"),
    ("webhook of an unknown type", {"webhooks": [{**HOOK, "type": "pre-step"}]},
     'spec.webhooks[0].type: Unsupported value: "pre-step"', "spec.webhooks[0].type"),
    ("too many webhook retries", {"webhooks": [{**HOOK, "retries": 11}]},
     "should be less than or equal to 10",
     "spec.webhooks[0].retries"),
    ("unknown notification event", {"notifications": [{**NOTE, "events": ["Promoted", "Deleted"]}]},
     'spec.notifications[0].events[1]: Unsupported value: "Deleted"', "spec.notifications[0].events[1]"),
    # Metrics of A/B tests.
    ("query and mean", _metric(query="up", mean={"sum": "a", "count": "b"}), ONE_SOURCE, M0),
    ("mean without count", _metric(mean={"sum": "a"}), f"{M0}.mean.count: Required value",
     f"{M0}.mean.count"),
    ("unknown placeholder in a mean", _metric(mean={"sum": "a{{ revenue }}", "count": "b"}),
     f'{M0}.mean.sum: Invalid value: "string": sum may only use the placeholders', f"{M0}.mean.sum"),
    ("Secondary on a builtin", _metric(builtin="error-rate", role="Secondary"),
     f'{M0}: Invalid value: "object": a Secondary metric needs ratio or mean', f"{M0}.role"),
    ("unknown role", _metric(query="up", role="Primary"),
     f'{M0}.role: Unsupported value: "Primary": supported values: "Guardrail", "Secondary"', f"{M0}.role"),
    # A/B tests (until this version, the parser let the malformed ones through: PARSER_GAPS).
    ("ABTest without an objective", {"strategy": "ABTest"},
     'spec: Invalid value: "object": strategy ABTest needs an objective', "spec.objective"),
    ("objective without minimumEffect", {**AB, "objective": {"metric": "conversion"}},
     "spec.objective.minimumEffect: Required value", "spec.objective.minimumEffect"),
    ("minimumEffect 0", {**AB, "objective": {"metric": "conversion", "minimumEffect": 0}},
     "spec.objective.minimumEffect: Invalid value: 0: spec.objective.minimumEffect in body should be greater "
     "than 0", "spec.objective.minimumEffect"),
    ("minimumEffect in percent", {**AB, "objective": {"metric": "conversion", "minimumEffect": 20}},
     "should be less than or equal to 10", "spec.objective.minimumEffect"),
    ("objective names no metric", {**AB, "objective": {"metric": "nope", "minimumEffect": 0.02}},
     'spec: Invalid value: "object": objective.metric must name a metric in spec.metrics',
     "spec.objective.metric"),
    ("objective on a builtin", {**AB, "objective": {"metric": "error-rate", "minimumEffect": 0.02}},
     'spec: Invalid value: "object": objective.metric must name a ratio or mean metric',
     "spec.objective.metric"),
    ("fairness on a builtin", _ab(fairness={"margin": 0.05, "metric": "error-rate"}),
     'spec: Invalid value: "object": abTest.fairness.metric must name a ratio or mean metric',
     f"{AB_TEST}.fairness.metric"),
    ("fairness margin in percent", _ab(fairness={"margin": 5}),
     f"{AB_TEST}.fairness.margin: Invalid value: 5: {AB_TEST}.fairness.margin in body should be less than 1",
     f"{AB_TEST}.fairness.margin"),
    ("split 100", _ab(split=100),
     f"{AB_TEST}.split: Invalid value: 100: {AB_TEST}.split in body should be less than or equal to 99",
     f"{AB_TEST}.split"),
    ("zero interval", _ab(interval="0m"),
     f'{AB_TEST}.interval: Invalid value: "string": interval must be longer than zero',
     f"{AB_TEST}.interval"),
    ("cookie with a space", _ab(stickiness={"cookie": "my cookie"}),
     f"{AB_TEST}.stickiness.cookie in body should match", f"{AB_TEST}.stickiness.cookie"),
    ("cohort on the cookie header", _match(headers={"cookie": {"regex": ".*beta.*"}}),
     f'{AB_TEST}.match[0]: Invalid value: "object": a cohort may not match on the cookie header',
     f"{AB_TEST}.match[0].headers.cookie"),
    ("cohort with exact and prefix", _match(uri={"exact": "/a", "prefix": "/"}),
     f'{AB_TEST}.match[0].uri: Invalid value: "object": uri needs exactly one of exact, prefix or regex',
     f"{AB_TEST}.match[0].uri"),
    ("cohort with a field Istio lacks", _match(path={"prefix": "/"}),
     f'strict decoding error: unknown field "{AB_TEST}.match[0].path"', f"{AB_TEST}.match[0].path"),
    ("cohort on port 0", _match(port=0),
     f"{AB_TEST}.match[0].port in body should be greater than or equal to 1", f"{AB_TEST}.match[0].port"),
    ("empty cohort", _ab(match=[]), f"{AB_TEST}.match in body should have at least 1 items",
     f"{AB_TEST}.match"),
    ("segment that is no label", {"segments": ["not a label"]}, "spec.segments[0] in body should match",
     "spec.segments[0]"),
    ("repeated segment", {"segments": ["region", "region"]}, 'spec.segments[1]: Duplicate value: "region"',
     "spec.segments[1]"),
    # Shadows (until this version, the parser let the malformed ones through: PARSER_GAPS).
    ("Shadow without a shadow block", {"strategy": "Shadow"},
     'spec: Invalid value: "object": strategy Shadow needs a shadow block', "spec.shadow"),
    ("shadow without a duration", _shadow(mirrorPercent=50), "spec.shadow.duration: Required value",
     "spec.shadow.duration"),
    ("mirrorPercent 150", _shadow(duration="10m", mirrorPercent=150),
     f"{SHADOW_AT}.mirrorPercent: Invalid value: 150: {SHADOW_AT}.mirrorPercent in body should be less than "
     "or equal to 100", f"{SHADOW_AT}.mirrorPercent"),
    ("mirrorPercent 0", _shadow(duration="10m", mirrorPercent=0), "should be greater than or equal to 1",
     f"{SHADOW_AT}.mirrorPercent"),
    ("mirrorPercent as a fraction", _shadow(duration="10m", mirrorPercent=0.5),
     f'{SHADOW_AT}.mirrorPercent: Invalid value: "number": {SHADOW_AT}.mirrorPercent in body must be of type '
     "integer", f"{SHADOW_AT}.mirrorPercent"),
    ("negative shadow duration", _shadow(duration="-5m"),
     f'{SHADOW_AT}.duration: Invalid value: "-5m": {SHADOW_AT}.duration in body {DURATION}',
     f"{SHADOW_AT}.duration"),
    ("zero shadow duration", _shadow(duration="0m"),
     f'{SHADOW_AT}.duration: Invalid value: "string": shadow.duration must be longer than zero',
     f"{SHADOW_AT}.duration"),
    ("agreement without min", _shadow(duration="10m", agreement={"metric": "agreement"}),
     f"{SHADOW_AT}.agreement.min: Required value", f"{SHADOW_AT}.agreement.min"),
    ("agreement in percent", _shadow(duration="10m", agreement={"metric": "agreement", "min": 95}),
     f"{SHADOW_AT}.agreement.min: Invalid value: 95: {SHADOW_AT}.agreement.min in body should be less than "
     "or equal to 1", f"{SHADOW_AT}.agreement.min"),
    ("agreement names no metric", _shadow(duration="10m", agreement={"metric": "agree", "min": 0.9}),
     'spec: Invalid value: "object": shadow.agreement.metric must name a ratio metric in spec.metrics',
     f"{SHADOW_AT}.agreement.metric"),
    ("agreement on a builtin", _shadow(duration="10m", agreement={"metric": "error-rate", "min": 0.9}),
     'spec: Invalid value: "object": shadow.agreement.metric must name a ratio metric in spec.metrics',
     f"{SHADOW_AT}.agreement.metric"),
    ("shadow in an A/B test", {**AB, "shadow": {"duration": "10m"}},
     'spec: Invalid value: "object": shadow is for strategy Shadow, or a shadow phase before a Canary',
     SHADOW_AT),
    # Gates the strategy never reaches (until this version, the parser ignored them).
    ("confirm-step in an A/B test", {**AB, "webhooks": [_hook("confirm-step")]},
     'spec: Invalid value: "object": a confirm-step webhook gates a canary\'s steps',
     "spec.webhooks[0].type"),
    ("confirm-promotion in a Shadow",
     {**SHADOW, "webhooks": [_hook("pre-rollout"), _hook("confirm-promotion", "b")]},
     'spec: Invalid value: "object": a confirm-promotion webhook gates a promotion; a Shadow never promotes',
     "spec.webhooks[1].type"),
    ("misspelled shadow field", _shadow(duration="10m", mirrorPrecent=50),
     f'strict decoding error: unknown field "{SHADOW_AT}.mirrorPrecent"', f"{SHADOW_AT}.mirrorPrecent"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "line", "parser_path"), [c[1:] for c in BAD_MANIFESTS], ids=[c[0] for c in BAD_MANIFESTS]
)
def test_bad_manifest_is_rejected_with_the_message_users_see(
    changes: Node, line: str, parser_path: str
) -> None:
    lines = rejects(admission_errors(manifest(changes)))
    assert any(found.startswith(line) or line in found for found in lines), lines
    problems = parser_problems(manifest(changes)["spec"])
    if not parser_path:
        assert problems is None, "coerced at run time: remove the case from the lenient ones"
        return
    assert problems is not None, "the API server rejects this, but the operator would run it"
    assert parser_path in [problem.path for problem in problems], problems


# --------------------------------------------------------------------------- what we publish is admitted


def _readme_manifests() -> list[tuple[str, Node]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)):
        document = yaml.safe_load(block)
        if not isinstance(document, dict) or "spec" not in document:
            continue  # status excerpts
        if "kind" not in document:  # a spec, or a part of one: on top of the minimal example
            changes = dict(document["spec"])
            if "candidates" in changes:  # the list form replaces the minimal example's candidate
                changes.setdefault("candidate", DELETE)
            document = manifest(changes)
        found.append((f"README.md#{number}", document))
    return found


# API.md's minimal manifest, verbatim (API.md lives outside the repository).
API_MD_MINIMAL = """
apiVersion: modelrollout.io/v1alpha1
kind: ModelExperiment
metadata:
  name: churn-v2
  namespace: ml
spec:
  virtualService:
    name: churn              # Istio VirtualService in the same namespace
  baseline:
    subset: v1               # Istio DestinationRule subset (or `host:`)
    workload: churn-v1       # the Deployment serving it (Istio's
                             # destination_workload label in metrics)
  candidate:
    subset: v2
    workload: churn-v2
  prometheus:
    address: http://prometheus.istio-system:9090
"""

# API.md's sketches of the later strategies, completed into whole manifests: the CRD admits them and this
# operator version runs them all (ABTest, Shadow, Bandit); none is refused as unsupported.
LATER_STRATEGIES: list[tuple[str, Node, set[str]]] = [
    ("ABTest (supported)", {
        "strategy": "ABTest",
        "abTest": {"split": 50, "stickiness": {"cookie": "mexp-churn-v2"},
                   "match": [{"headers": {"x-user-tier": {"exact": "beta"}}}], "maxDuration": "14d",
                   "autoPromote": False},
        "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.02, "power": 0.8},
        "segments": ["region"],
        "metrics": [RATIO],
    }, set()),
    ("Shadow (supported)", SHADOW, set()),
    ("Canary after a shadow phase (supported)", {
        "shadow": {"mirrorPercent": 100, "duration": "10m"},
    }, set()),
    ("Canary after a shadow phase with an agreement check", {**SHADOW, "strategy": "Canary"}, set()),
    ("Bandit", {
        "strategy": "Bandit",
        "candidate": DELETE,
        "candidates": [{"subset": "v2", "workload": "churn-v2"}, {"subset": "v3", "workload": "churn-v3"}],
        "bandit": {"reward": "conversion", "minWeight": 5, "maxStepChange": 20, "confidence": 0.95,
                   "maxDuration": "2h"},
        "metrics": [RATIO],
    }, set()),
]  # fmt: skip

PUBLISHED: list[tuple[str, Node]] = [
    *((str(path.relative_to(ROOT)), load(path)) for path in test_crd.MODEL_EXPERIMENT_FILES),
    *_readme_manifests(),
    ("API.md minimal", yaml.safe_load(API_MD_MINIMAL)),
]


def test_published_manifests_are_found() -> None:
    names = {name for name, _ in PUBLISHED}
    assert {
        "examples/01-minimal/experiment.yaml",
        "examples/02-full/experiment.yaml",
        "examples/03-demo/abtest.yaml",
        "API.md minimal",
    } <= names
    assert sum(name.startswith("README.md") for name in names) >= 2


@pytest.mark.parametrize(("name", "document"), PUBLISHED, ids=[name for name, _ in PUBLISHED])
def test_published_manifest_is_admitted_and_runs(name: str, document: Node) -> None:
    assert rejects(admission_errors(document)) == []
    spec.parse_spec(document["spec"])


@pytest.mark.parametrize(
    ("changes", "refused_at"), [c[1:] for c in LATER_STRATEGIES], ids=[c[0] for c in LATER_STRATEGIES]
)
def test_later_strategies_are_admitted_and_refused_only_as_unsupported(
    changes: Node, refused_at: set[str]
) -> None:
    assert rejects(admission_errors(manifest(changes))) == []
    paths = {problem.path for problem in parser_problems(manifest(changes)["spec"]) or []}
    assert paths <= refused_at
    assert ("spec.strategy" in paths) == ("spec.strategy" in refused_at)


# --------------------------------------------------------------------------- disagreements


# The API server rejects these; parse_spec (all that checks a spec behind an emulated API server) runs
# them.  Each is a known gap, with its reason; a fix flips the case and fails this test on purpose.
PARSER_GAPS: list[tuple[str, Node, str]] = [
    ("numbers are coerced", {"metrics": [{"name": "e", "builtin": "error-rate", "max": "0.05"}]},
     "must be of type number"),
    ("booleans are numbers", {"metrics": [{"name": "e", "builtin": "error-rate", "max": True}]},
     "must be of type number"),
    ("alpha as a string", {"analysis.alpha": "0.05"}, "must be of type number"),
    ("list sizes are not bounded", {"canary.steps": list(range(1, 22))},
     "spec.canary.steps: Too many: 21: must have at most 20 items"),
    ("... of any list", {"metrics": [{"name": f"m{i}", "builtin": "error-rate"} for i in range(33)]},
     "Too many: 33"),
    ("string lengths are not bounded", {"webhooks": [{**HOOK, "metadata": {"build": "x" * 4097}}]},
     "Too long"),
    ("an unclosed {{ is no placeholder to the parser", {"metrics": [{"name": "q", "query": "up{{"}]},
     "query may only use the placeholders"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "line"), [c[1:] for c in PARSER_GAPS], ids=[c[0] for c in PARSER_GAPS])
def test_known_gaps_the_parser_lets_through(changes: Node, line: str) -> None:
    assert any(line in found for found in rejects(admission_errors(manifest(changes))))
    assert parser_problems(manifest(changes)["spec"]) is None


# The API server admits these; parse_spec refuses them (the operator then reports InvalidSpec in status).
CRD_GAPS: list[tuple[str, Node, str, str]] = [
    ("webhook timeout over 5m (only the description says so)", {"webhooks": [{**HOOK, "timeout": "10m"}]},
     "spec.webhooks[0].timeout", "at most 5m"),
    ("notification timeout over 5m", {"notifications": [{**NOTE, "timeout": "1h"}]},
     "spec.notifications[0].timeout", "at most 5m"),
    ("alpha below 1e-12 (the sequential bound would overflow)", {"analysis.alpha": 1e-13},
     "spec.analysis.alpha", "at least 1e-12"),
    ("a duration longer than Go's (292 years)", {"canary.interval": "999999999d"},
     "spec.canary.interval", "too long"),
    ("Unicode whitespace in a URL (RE2's \\s is ASCII, Python's is not)",
     {"prometheus.address": "http://prom\u00a0:9090"}, "spec.prometheus.address", "URL"),
    ("a cohort's regex that does not compile (CEL cannot tell)", _match(uri={"regex": "^/(beta"}),
     "spec.abTest.match[0].uri.regex", "not a valid regular expression"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "path", "message"), [c[1:] for c in CRD_GAPS], ids=[c[0] for c in CRD_GAPS]
)
def test_known_gaps_the_crd_lets_through(changes: Node, path: str, message: str) -> None:
    assert rejects(admission_errors(manifest(changes))) == []
    problems = parser_problems(manifest(changes)["spec"])
    assert problems is not None
    assert any(problem.path == path and message in problem.message for problem in problems), problems


# Both admit these, although they cannot work; the template is refused when queried (never sent).
BOTH_ADMIT = [
    ("placeholder outside quotes", {"metrics": [{"name": "q", "query": "sum(x) > {{ workload }}"}]}),
    ("{{ subset }} of a variant routed by host", {
        "metrics": [{"name": "q", "query": 'x{s="{{ subset }}"}'}],
        "baseline": {"host": "churn-v1.ml.svc.cluster.local", "workload": "churn-v1"},
    }),
    ("an unterminated string", {"metrics": [{"name": "q", "query": 'x{w="{{ workload }}}'}]}),
    ("an empty subset", {"candidate": {"subset": "", "workload": "churn-v2"}}),
    # Istio compiles a cohort's regex with RE2 (and refuses the VirtualService); spec.py compiles it with
    # Python's re, which has look-arounds.
    ("a cohort regex only Python compiles", _match(headers={"x-tier": {"regex": "^(?!internal)"}})),
]  # fmt: skip


@pytest.mark.parametrize("changes", [c[1] for c in BOTH_ADMIT], ids=[c[0] for c in BOTH_ADMIT])
def test_known_gaps_of_both(changes: Node) -> None:
    assert rejects(admission_errors(manifest(changes))) == []
    assert parser_problems(manifest(changes)["spec"]) is None


# --------------------------------------------------------------------------- fuzzed: the two agree


def _placeholder_like() -> st.SearchStrategy[str]:
    names = st.sampled_from([*sorted(templates.VARIABLES), "workloda", "Workload", "", "work load", "x"])
    space = st.text(alphabet=" \t\n\v\f\r\u00a0", max_size=2)
    return st.builds(lambda a, n, b: "{{" + a + n + b + "}}", space, names, space)


QUERY_TEXT = st.lists(_placeholder_like() | st.text(alphabet='{} x"=\n', max_size=4), max_size=6).map("".join)


# Where a PromQL template goes: every field test_crd.TEMPLATE_FIELDS names.
TEMPLATE_PLACES: list[Any] = [
    lambda q: {"metrics": [{"name": "q", "query": q}]},
    lambda q: {"metrics": [{"name": "q", "ratio": {"success": q, "total": "up"}}]},
    lambda q: {"metrics": [{"name": "q", "ratio": {"success": "up", "total": q}}]},
    lambda q: {"metrics": [{"name": "q", "mean": {"sum": q, "count": "up"}}]},
    lambda q: {"metrics": [{"name": "q", "mean": {"sum": "up", "count": q}}]},
    lambda q: {"metrics": [{"name": "q", "mean": {"sum": "up", "count": "up", "squares": q}}]},
    lambda q: _ab(assignmentQuery=q),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(QUERY_TEXT, st.sampled_from(TEMPLATE_PLACES))
def test_the_placeholder_rule_and_the_parser_agree(query: str, place: Any) -> None:
    """The CEL rule (RE2) and spec.py accept the same templates, but for `{{` opening no placeholder."""
    document = manifest(place(query))
    errors = admission_errors(document)
    rejects(errors)  # no rule failed to evaluate
    crd_ok = not [error for error in errors if error.rule]
    parser_ok = parser_problems(document["spec"]) is None
    if parser_ok and not crd_ok:
        # The one known gap: a `{{` that does not start a placeholder (test_crd pins it too).
        starts = {match.start() for match in templates.PLACEHOLDER.finditer(query)}
        assert any(query.startswith("{{", i) and i not in starts for i in range(len(query))), query
    else:
        assert parser_ok == crd_ok, query


def _typed(node: Node, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the schema type of ``node`` (good and bad ones), so type coercion stays out of the way."""
    if "enum" in node:
        return st.sampled_from([*node["enum"], "Bogus"])
    kind = node.get("type")
    if kind == "string":
        if node.get("pattern") == r"^([0-9]+(ms|s|m|h|d|w))+$":
            return st.sampled_from(
                ["30s", "1h30m", "10m", "1h", "500ms", "0s", "-5m", "5 minutes", "1h30", "2w"]
            )
        return st.sampled_from(
            ["", "a", "churn-v1", "churn-v2", "v2", "Up", "http://prom:9090", "up", 'x{w="{{ workload }}"}',
             "{{ nope }}", "sum(x) {{ workload }}", "a.b", "x" * 300]
        )  # fmt: skip
    if kind == "integer":
        return st.integers(-2, 120)
    if kind == "number":
        return st.sampled_from([0, 1, 0.05, 0.5, 2, -0.5, 250, 1e-9])
    if kind == "boolean":
        return st.booleans()
    if depth >= 2:
        return st.builds(dict) if kind == "object" else st.builds(list)
    if kind == "array":
        return st.lists(_typed(node["items"], depth + 1), max_size=3)
    if "properties" in node:
        properties, required = node["properties"], node.get("required", [])
        return st.fixed_dictionaries(
            {key: _typed(properties[key], depth + 1) for key in required},
            optional={key: _typed(sub, depth + 1) for key, sub in properties.items() if key not in required},
        )
    return st.dictionaries(
        st.sampled_from(["a", "x-tier"]), _typed(node["additionalProperties"], depth + 1), max_size=2
    )


def _places(value: Any, node: Node, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Node]]:
    """Every (path, schema node) in ``value``, plus every optional property it could have."""
    found = [(path, node)]
    if isinstance(value, dict) and "properties" in node:
        for key, sub in node["properties"].items():
            found += _places(value[key], sub, (*path, key)) if key in value else [((*path, key), sub)]
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            found += _places(item, node["items"], (*path, index))
    return found


def _at(document: Node, path: str) -> Any:
    """The value at a field path as the API server prints it (``spec.metrics[0].query``)."""
    value: Any = document
    for name, index in re.findall(r"\.?([^.\[]+)|\[(\d+)\]", path):
        value = value[int(index)] if index else value[name]
    return value


# The rules that check a PromQL template's placeholders (test_crd.TEMPLATE_FIELDS).
TEMPLATE_RULES = (".spec.metrics[].query#", ".spec.metrics[].ratio.", ".spec.metrics[].mean.",
                  ".spec.abTest.assignmentQuery#")  # fmt: skip


def _explained_crd_error(error: FieldError, document: Node) -> bool:
    """A rejection parse_spec is known not to make (PARSER_GAPS)."""
    # The blocks of ABTest, Shadow and Bandit are typed in spec.py: no excuse for them.
    if error.path == "<nil>" or error.type in ("Too many", "Too long"):
        return True
    if error.rule and error.rule.startswith(TEMPLATE_RULES):  # an unclosed `{{`
        return "{{" in str(_at(document, error.path))
    return False


def _explained_problem(problem: spec.SpecProblem) -> bool:
    """A rejection the CRD is known not to make (CRD_GAPS)."""
    unsupported = problem.path == "spec.strategy" and "not supported" in problem.message
    return unsupported or any(
        text in problem.message
        for text in ("at most 5m", "is too long (at most", "not a valid regular expression")
    )


# What the fuzzer starts from: the published manifests the operator runs, A/B tests (API.md's, and one
# with every A/B field set) so that it reaches into abTest, objective, segments and mean metrics, and
# shadows (alone and before a canary) so that it reaches into shadow and its agreement metric, and a
# bandit so that it reaches into bandit.
AB_FULL: Node = {
    **AB,
    "abTest": {
        "split": 20, "interval": "5m", "maxDuration": "14d", "autoPromote": True, "aa": False,
        "stickiness": {"cookie": "mexp-churn-v2", "maxAge": "30d"},
        "match": [{"name": "beta", "headers": {"x-tier": {"exact": "beta"}}, "uri": {"prefix": "/predict"},
                   "scheme": {"exact": "https"}, "port": 8080, "ignoreUriCase": True,
                   "sourceLabels": {"app": "web"}, "sourceNamespace": "ml",
                   "withoutHeaders": {"x-internal": {"exact": "1"}}, "queryParams": {"ab": {"regex": "^1$"}},
                   "method": {"exact": "POST"}, "authority": {"prefix": "churn"}}],
        "assignmentQuery": 'sum(increase(assigned_total{workload="{{ workload }}"}[{{ interval }}]))',
        "minSamples": 500,
        "fairness": {"margin": 0.05, "metric": "conversion"},
    },
    "segments": ["region", "device"],
    "metrics": [RATIO, {**MEAN, "role": "Secondary"}, {**BUILTIN, "role": "Guardrail"}],
}  # fmt: skip
RUNNABLE = [
    *(document for name, document in PUBLISHED if parser_problems(document["spec"]) is None),
    manifest(LATER_STRATEGIES[0][1]),
    manifest(AB_FULL),
    manifest({**AB_FULL, **TWO_CANDIDATES}),  # an A/B test of several candidates
    *(manifest(changes) for name, changes, _ in LATER_STRATEGIES if "shadow" in changes),
    *(manifest(changes) for name, changes, _ in LATER_STRATEGIES if "bandit" in changes),
]


def test_the_fuzzer_starts_from_runnable_manifests() -> None:
    for document in RUNNABLE:
        assert rejects(admission_errors(document)) == []
        assert parser_problems(document["spec"]) is None
    assert sum(document["spec"].get("strategy") == "ABTest" for document in RUNNABLE) >= 3  # + the demo's
    assert sum("shadow" in document["spec"] for document in RUNNABLE) >= 3
    assert any(document["spec"].get("strategy") == "Shadow" for document in RUNNABLE)
    assert any(document["spec"].get("strategy") == "Bandit" for document in RUNNABLE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_api_server_and_the_parser_agree_on_near_valid_manifests(data: st.DataObject) -> None:
    """Published manifests with schema-typed changes: both admit, both reject, or the gap is a known one."""
    document = copy.deepcopy(data.draw(st.sampled_from(RUNNABLE)))
    spec_node = cel_eval.crd_schema()["properties"]["spec"]
    for _ in range(data.draw(st.integers(1, 3))):
        path, node = data.draw(st.sampled_from(_places(document["spec"], spec_node)[1:]))
        *parents, last = path
        target = document["spec"]
        for part in parents:
            target = target[part]
        if isinstance(target, dict) and last in target and data.draw(st.booleans()):
            del target[last]
        else:
            target[last] = data.draw(_typed(node))
    errors = admission_errors(document)
    rejects(errors)  # no rule failed to evaluate
    problems = parser_problems(document["spec"])
    if errors and problems is None:
        unexplained = [str(error) for error in errors if not _explained_crd_error(error, document)]
        assert not unexplained, f"the API server rejects, the operator would run it: {unexplained}"
    if problems and not errors:
        unexplained = [str(problem) for problem in problems if not _explained_problem(problem)]
        assert not unexplained, f"the API server admits, the operator refuses it: {unexplained}"
