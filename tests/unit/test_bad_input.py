"""Bad input, fuzzed: the spec parser answers with a SpecError or a spec, the core with a decision.

An emulated API server (kmock), an old CRD or ``--validate=false`` lets
anything reach the operator, so ``spec.parse_spec`` must turn every input
into either a spec or a :class:`~modelrollout.spec.SpecError` that names
the fields -- never another exception, which would crash the reconciler on
every tick (and wedge deletion behind the finalizer).  Whatever parses must
then run: ``canary.decide`` from a fresh state, with plausible observations
and with hostile ones (weights that do not add up, missing metrics, NaN),
keeps its invariants and writes a status the API server accepts.  A/B tests
too: their seeds put every field of abTest, objective, segments and mean
metrics in the fuzzers' reach, and their observations carry the sums,
segments and assigned users the A/B core reads.  And shadows, alone or as a
canary's first phase: their seeds put every field of shadow and its agreement
metric in reach, their observations carry the agreement's counts the shadow
core reads, and no user is ever routed to the candidate while it shadows.  And
bandits: their seeds put every field of bandit in reach, and no arm goes below
its floor while one runs.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout import ports, spec
from modelrollout import status as status_mod
from modelrollout.core import canary, model, shadow
from modelrollout.core.model import Phase

from cel_eval import admission_errors
from core_helpers import T0, histogram
from test_crd import CRD_PATH, MODEL_EXPERIMENT_FILES, make_validator

# Derandomized: CI runs the same examples every time (a new random find is a bug to fix, not a flake).
FAST = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

Node = dict[str, Any]


def _load(path: Path) -> Node:
    with path.open() as f:
        spec_: Node = yaml.safe_load(f)["spec"]
    return spec_


EXAMPLES = [_load(path) for path in MODEL_EXPERIMENT_FILES]  # 01-minimal first
# Every field of a canary at once: examples, plus what none of them shows together.
EVERYTHING: Node = {
    **copy.deepcopy(EXAMPLES[0]),
    "virtualService": {"name": "churn", "namespace": "ml", "routes": ["primary", "canary"]},
    "baseline": {"host": "churn.ml.svc.cluster.local", "subset": "v1", "workload": "churn-v1"},
    "candidate": {"host": "churn.ml.svc.cluster.local", "subset": "v2", "workload": "churn-v2"},
    "strategy": "Canary",
    "canary": {"steps": [1, 5, 25, 50, 100], "interval": "30s", "minStepDuration": "2m", "minSamples": 200},
    "metrics": [
        {"name": "error-rate", "builtin": "error-rate", "max": 0.05, "maxRelativeIncrease": 0.5},
        {"name": "latency-p99", "builtin": "latency-p99", "min": 0, "max": 900},
        {"name": "q", "query": 'sum(rate(x{w="{{ workload }}", s="{{ subset }}"}[{{ interval }}]))',
         "max": 1},
        {"name": "r", "ratio": {"success": 'sum(a{w="{{ workload }}"})',
                                "total": 'sum(b{w="{{ workload }}"})'},
         "min": 0.1},
    ],
    "analysis": {"alpha": 0.01, "failureLimit": 2, "noData": "Fail", "noDataLimit": 3},
    "prometheus": {"address": "https://prom.example:9090/prefix", "timeout": "5s",
                   "bearerTokenFrom": {"secretKeyRef": {"name": "prom", "key": "token"}},
                   "tlsConfig": {"caFrom": {"secretKeyRef": {"name": "prom", "key": "ca.crt"}}}},
    "paused": False,
    "webhooks": [{"name": "qa", "type": "confirm-step", "url": "http://qa.ml/ok", "timeout": "30s",
                  "retries": 1, "deadline": "2h", "onDeadline": "Rollback", "metadata": {"team": "ml"}}],
    "notifications": [{"name": "chat", "type": "slack", "events": ["Promoted", "RolledBack"],
                       "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "slack"}}}],
}  # fmt: skip
RATIO: Node = {
    "name": "conversion",
    "ratio": {
        "success": 'sum(c{w="{{ workload }}"}[{{ interval }}])',
        "total": 'sum(r{w="{{ workload }}"}[{{ interval }}])',
    },
}
MEAN: Node = {
    "name": "revenue",
    "mean": {"sum": 'sum(v_sum{w="{{ workload }}"})', "count": 'sum(v_count{w="{{ workload }}"})'},
}
# The smallest A/B test, and one with every A/B field.
AB_MINIMAL: Node = {
    **copy.deepcopy(EXAMPLES[0]),
    "strategy": "ABTest",
    "objective": {"metric": "conversion", "minimumEffect": 0.05},
    "metrics": [RATIO],
}
AB_EVERYTHING: Node = {
    **copy.deepcopy(EVERYTHING),
    "strategy": "ABTest",
    "abTest": {
        "split": 30, "interval": "2m", "maxDuration": "3d", "autoPromote": True, "aa": False,
        "stickiness": {"cookie": "mexp-churn-v2", "maxAge": "7d"},
        "match": [{"name": "beta", "headers": {"x-tier": {"exact": "beta"}}, "uri": {"prefix": "/predict"},
                   "scheme": {"exact": "https"}, "method": {"regex": "^POST$"}, "authority": {"prefix": "c"},
                   "withoutHeaders": {"x-bot": {"exact": "1"}}, "queryParams": {"ab": {"exact": "1"}},
                   "ignoreUriCase": True, "port": 8080, "sourceLabels": {"app": "web"},
                   "sourceNamespace": "ml"}],
        "assignmentQuery": 'sum(increase(assigned_total{w="{{ workload }}"}[{{ interval }}]))',
        "minSamples": 50,
        "fairness": {"margin": 0.1, "metric": "conversion"},
    },
    "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.05, "power": 0.8},
    "segments": ["region", "device"],
    "metrics": [
        RATIO,
        {**MEAN, "squares": None, "role": "Secondary"},
        {"name": "error-rate", "builtin": "error-rate", "max": 0.05, "role": "Guardrail"},
        {"name": "aov", "mean": {**MEAN["mean"], "squares": 'sum(v_sq{w="{{ workload }}"})'}, "min": 0},
    ],
}  # fmt: skip
del AB_EVERYTHING["metrics"][1]["squares"]
# An A/B test or a bandit has no steps to confirm: its gate is the promotion's.
AB_EVERYTHING["webhooks"] = [{**EVERYTHING["webhooks"][0], "type": "confirm-promotion"}]
AGREEMENT: Node = {
    "name": "agreement",
    "ratio": {
        "success": 'sum(agreed{w="{{ workload }}"}[{{ interval }}])',
        "total": 'sum(compared{w="{{ workload }}"}[{{ interval }}])',
    },
}
# The smallest shadow, and a canary with every field besides behind a shadow phase with every field.
SHADOW_MINIMAL: Node = {**copy.deepcopy(EXAMPLES[0]), "strategy": "Shadow", "shadow": {"duration": "10m"}}
SHADOW_EVERYTHING: Node = {
    **copy.deepcopy(EVERYTHING),
    "shadow": {"mirrorPercent": 40, "duration": "5m", "agreement": {"metric": "agreement", "min": 0.95}},
    "metrics": [*copy.deepcopy(EVERYTHING["metrics"]), AGREEMENT],
}
# The smallest bandit (one candidate, rewarded by a ratio metric), and one with every bandit field.
BANDIT_MINIMAL: Node = {
    **copy.deepcopy(EXAMPLES[0]),
    "strategy": "Bandit",
    "bandit": {"reward": "conversion"},
    "metrics": [RATIO],
}
BANDIT_EVERYTHING: Node = {
    **copy.deepcopy(EVERYTHING),
    "strategy": "Bandit",
    "bandit": {"reward": "conversion", "minWeight": 20, "maxStepChange": 15, "confidence": 0.9,
               "intervalsRequired": 2, "interval": "20s", "maxDuration": "1h", "minimumEffect": 0.1,
               "autoPromote": False},
    "metrics": [*copy.deepcopy(EVERYTHING["metrics"]), RATIO],
    "webhooks": copy.deepcopy(AB_EVERYTHING["webhooks"]),
}  # fmt: skip
SEEDS = [
    *EXAMPLES, EVERYTHING, AB_MINIMAL, AB_EVERYTHING, SHADOW_MINIMAL, SHADOW_EVERYTHING, BANDIT_MINIMAL,
    BANDIT_EVERYTHING,
]  # fmt: skip


def test_the_seeds_are_valid() -> None:
    """The fuzzers start from specs that parse, so what they find is the mutation's doing."""
    for seed in SEEDS:
        spec.parse_spec(seed)
    assert len(SEEDS) >= 9
    assert [spec.parse_spec(seed).is_ab_test for seed in SEEDS].count(True) >= 3  # + the demo's
    parsed = [spec.parse_spec(seed) for seed in SEEDS]
    assert any(p.strategy is spec.Strategy.SHADOW for p in parsed)
    assert any(p.strategy is spec.Strategy.CANARY and p.agreement_metric is not None for p in parsed)
    assert any(p.is_bandit for p in parsed)


# --------------------------------------------------------------------------- strategies

KNOWN_KEYS = sorted(
    {key for seed in SEEDS for key in json.dumps(seed).split('"')[1::2] if key.isidentifier()}
    | {"candidates", "abTest", "shadow", "bandit", "objective", "segments", "basicAuth", "usernameFrom"}
)
NASTY_STRINGS = [
    "", " ", "0", "0s", "-5m", "5 minutes", "1h30", "999999999d", "1" * 400 + "ms", "NaN", "null", "true",
    "Canary", "canary", "Hold", "error-rate", "latency-p50", "churn-v1", "churn-v2", "Churn_V2",
    "{{ workload }}", "{{ workloda }}", "{{", 'x{w="{{ workload }}"}', "sum(x) {{ workload }}",
    "http://prom:9090", "http://prom:9090/\n", "ftp://x", "a\x00b", "\u202eevil", "\ud800", "😀" * 3,
    "x" * 5000,
]  # fmt: skip
HUGE_NUMBERS = [2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, -0.0, math.nan, math.inf, -math.inf]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(HUGE_NUMBERS)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(NASTY_STRINGS)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
json_trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    for _ in range(depth):
        leaf = {"a": leaf} if as_dict else [leaf]
    return leaf


# Nested about as deep as a JSON decoder goes (Python's stops near the recursion limit).
deep_junk = st.builds(_nest, st.integers(50, 950), scalars, st.booleans())
junk = json_trees | deep_junk | st.builds(list) | st.builds(dict)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _wrong_shape(value: Any) -> list[Any]:
    """What users put where this value belongs: a list for a dict, a string for a number..."""
    return [[value], {"value": value}, str(value), None, "", 0, -1, [], {}]


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """A valid spec with 1-4 changes: wrong types, missing or unknown fields, junk, huge or NaN numbers."""
    raw = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(raw)))
        if not path:
            return draw(junk) if draw(st.integers(0, 9)) == 0 else raw
        *parents, last = path
        target = raw
        for part in parents:
            target = target[part]
        operation = draw(st.sampled_from(["replace", "shape", "delete", "add", "number", "string"]))
        if operation == "delete":
            del target[last]
        elif operation == "add" and isinstance(target, dict):
            target[draw(keys)] = draw(junk)
        elif operation == "shape":
            target[last] = draw(st.sampled_from(_wrong_shape(target[last])))
        elif operation == "number":
            target[last] = draw(st.sampled_from(HUGE_NUMBERS) | st.integers() | st.floats())
        elif operation == "string":
            target[last] = draw(st.sampled_from(NASTY_STRINGS) | st.text(max_size=20))
        else:
            target[last] = draw(junk)
    return raw


# --------------------------------------------------------------------------- the parser


def parse_or_problems(raw: Any) -> spec.ExperimentSpec | None:
    """The spec, or None after checking the SpecError names fields and says what is wrong with them."""
    try:
        return spec.parse_spec(raw)
    except spec.SpecError as e:
        text = str(e)
        assert e.problems, "a SpecError without problems"
        for problem in e.problems:
            assert problem.path == "spec" or problem.path.startswith(("spec.", "spec[")), problem.path
            assert problem.message.strip(), problem
            assert problem.path in text, (problem.path, text)
            assert "\n" not in str(problem).replace("\\n", ""), "one line per problem"
        return None


@FAST
@given(json_trees | deep_junk)
def test_any_json_only_ever_raises_spec_error(raw: Any) -> None:
    """Anything at all as the spec, including not an object."""
    parse_or_problems(raw)


@FAST
@given(st.dictionaries(keys, junk, max_size=8))
def test_any_object_only_ever_raises_spec_error(raw: Node) -> None:
    parse_or_problems(raw)


@FAST
@given(mutated_specs())
def test_mutated_examples_only_ever_raise_spec_error(raw: Any) -> None:
    parse_or_problems(raw)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("oops", "spec"),
        ([{"virtualService": {"name": "churn"}}], "spec"),
        (True, "spec"),
        ({**EXAMPLES[0], "paused": _nest(990, 1, False)}, "spec.paused"),
        ({**EXAMPLES[0], "canary": {"steps": _nest(990, 1, False)}}, "spec.canary.steps[0]"),
        ({**EXAMPLES[0], "canary": {"interval": "1" * 400 + "ms"}}, "spec.canary.interval"),
        ({**EXAMPLES[0], "canary": {"interval": "9" * 5000 + "s"}}, "spec.canary.interval"),
        ({**EXAMPLES[0], "canary": {"minStepDuration": "999999999d"}}, "spec.canary.minStepDuration"),
        ({**EXAMPLES[0], "metrics": [{"name": "q", "query": "up", "max": math.nan}]}, "spec.metrics[0].max"),
        ({**EXAMPLES[0], "metrics": [{"name": "q", "query": "up", "min": -math.inf}]}, "spec.metrics[0].min"),
        (
            {**EXAMPLES[0], "metrics": [{"name": "e", "builtin": "error-rate",
                                         "maxRelativeIncrease": math.inf}]},
            "spec.metrics[0].maxRelativeIncrease",
        ),
        ({**EXAMPLES[0], "analysis": {"alpha": 5e-324}}, "spec.analysis.alpha"),
        ({**AB_MINIMAL, "abTest": {"match": [{"\n": []}]}}, "spec.abTest.match[0]['\\n']"),
        (
            {**AB_MINIMAL, "abTest": {"match": [{"headers": {"a\nb": {}}}]}},
            "spec.abTest.match[0].headers['a\\nb']",
        ),
    ],
    ids=["a string", "a list", "a boolean", "deep in a bool", "deep in a list", "400-digit ms",
         "5000-digit duration", "longer than Go's durations", "NaN max", "-inf min", "inf relative",
         "vanishing alpha", "newline in a cohort field", "newline in a header name"],
)  # fmt: skip
def test_inputs_that_used_to_crash_or_slip_through(raw: Any, path: str) -> None:
    """Found by the fuzzers: each raised something other than SpecError, or parsed and then crashed the
    core (a 999999999d step outlives datetime) or disabled a guardrail (nothing compares true with NaN),
    or named its field on two lines (a newline in a key)."""
    with pytest.raises(spec.SpecError) as caught:
        spec.parse_spec(raw)
    assert path in [problem.path for problem in caught.value.problems]
    assert parse_or_problems(raw) is None  # ... and each problem on one line


# --------------------------------------------------------------------------- the core, on whatever parses

DURATIONS = st.sampled_from(["1ms", "500ms", "1s", "10s", "1m", "1h30m", "14d", "2562047h"])
THRESHOLD = st.floats(-1e300, 1e300, allow_nan=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, 1e-9, 0.05, 250.0]
)


@st.composite
def _metric(draw: st.DrawFn, name: str) -> Node:
    source = draw(
        st.sampled_from(
            [
                {"builtin": "error-rate"}, {"builtin": "latency-p95"}, {"builtin": "latency-p99"},
                {"query": 'sum(rate(x{w="{{ workload }}"}[{{ interval }}]))'},
                {"query": "sum(x) {{ workload }}"},  # refused when filled: the core sees an Error result
                {"ratio": {"success": 'sum(a{w="{{ workload }}"})', "total": 'sum(b{w="{{ workload }}"})'}},
            ]
        )
    )  # fmt: skip
    bounds = sorted(draw(st.lists(THRESHOLD, max_size=2)))
    limits = dict(zip(draw(st.sampled_from([("min", "max"), ("max",), ("min",), ()])), bounds, strict=False))
    if draw(st.booleans()):
        limits["maxRelativeIncrease"] = draw(st.floats(0, 1e300) | st.just(0.0))
    return {"name": name, **source, **limits}


@st.composite
def runnable_specs(draw: st.DrawFn) -> Node:
    """Valid specs from the edges of what is valid: 1 to 20 steps, 1 ms to 292 years, extreme thresholds."""
    names = draw(
        st.lists(st.sampled_from(["error-rate", "latency-p95", "q", "r", "s"]), unique=True, max_size=4)
    )
    raw: Node = {
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": "churn-v1"},
        "candidate": {"subset": "v2", "workload": "churn-v2"},
        "canary": {
            "steps": sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=20))),
            "interval": draw(DURATIONS),
            "minSamples": draw(st.integers(0, 2**62)),
        },
        "metrics": [draw(_metric(name)) for name in names],
        "analysis": {
            "alpha": draw(st.floats(1e-12, 1, exclude_max=True) | st.sampled_from([1e-12, 0.999999])),
            "failureLimit": draw(st.integers(1, 2**62)),
            "noData": draw(st.sampled_from(["Hold", "Fail"])),
            "noDataLimit": draw(st.integers(1, 5)),
        },
        "paused": draw(st.booleans()),
    }
    if draw(st.booleans()):
        raw["canary"]["minStepDuration"] = draw(DURATIONS)
    return raw


@st.composite
def runnable_ab_specs(draw: st.DrawFn) -> Node:
    """Valid A/B tests from the edges: a 1% or 99% split, 1 ms to 292 years, tiny and huge effects."""
    raw = draw(runnable_specs())
    objective = draw(
        st.sampled_from([RATIO, MEAN, {"name": "aov", "mean": {**MEAN["mean"], "squares": "up"}}])
    )
    others = [m for m in raw["metrics"] if m["name"] not in ("conversion", "revenue", "aov")]
    secondary = draw(st.lists(st.sampled_from([RATIO, MEAN]), unique_by=lambda m: m["name"], max_size=2))
    metrics = [objective, *(m for m in secondary if m["name"] != objective["name"]), *others]
    ab: Node = {
        "split": draw(st.integers(1, 99)),
        "interval": draw(DURATIONS),
        "minSamples": draw(st.integers(1, 2**62)),
        "aa": draw(st.booleans()),
        "autoPromote": draw(st.booleans()),
    }
    if draw(st.booleans()):
        ab["maxDuration"] = draw(DURATIONS)
    if draw(st.booleans()):
        ab["assignmentQuery"] = 'sum(assigned{w="{{ workload }}"})'
    if draw(st.booleans()):
        ab["fairness"] = {"margin": draw(st.floats(1e-9, 1, exclude_min=True, exclude_max=True))}
    raw.update(
        strategy="ABTest",
        abTest=ab,
        objective={
            "metric": objective["name"],
            "direction": draw(st.sampled_from(["Increase", "Decrease"])),
            "minimumEffect": draw(st.floats(1e-9, 10) | st.sampled_from([1e-9, 0.01, 10.0])),
            "power": draw(st.floats(0.01, 0.99)),
        },
        metrics=metrics,
    )
    if draw(st.booleans()):
        raw["segments"] = draw(st.lists(st.sampled_from(["region", "device"]), unique=True, min_size=1))
    if not ab["aa"] and draw(st.booleans()):  # several candidates (an A/A test takes one)
        raw.pop("candidate")
        raw["candidates"] = [
            {"subset": f"v{i}", "workload": f"churn-v{i}"} for i in range(2, draw(st.integers(3, 5)))
        ]
    return raw


# Shadow durations: some pass within a run's few ticks, others outlast it.
SHADOW_DURATIONS = st.sampled_from(["1ms", "1s", "10s", "1m", "5m"]) | DURATIONS


@st.composite
def runnable_shadow_specs(draw: st.DrawFn) -> Node:
    """Valid shadows from the edges, alone or before a canary: 1% or 100% mirrored, 1 ms to 292 years,
    with or without an agreement check (a ratio metric; min 0 always passes, 1 needs perfect agreement)."""
    raw = draw(runnable_specs())
    raw["canary"]["minSamples"] = draw(st.integers(0, 500) | st.integers(0, 2**62))
    raw["paused"] = draw(st.integers(0, 3)) == 0  # mostly running: the phase has to be reached
    raw["strategy"] = draw(st.sampled_from(["Shadow", "Canary"]))
    raw["shadow"] = {"duration": draw(SHADOW_DURATIONS)}
    if draw(st.booleans()):
        raw["shadow"]["mirrorPercent"] = draw(st.integers(1, 100) | st.sampled_from([1, 100]))
    if draw(st.booleans()):
        raw["metrics"] = [*raw["metrics"], AGREEMENT]
        minimum = draw(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]))
        raw["shadow"]["agreement"] = {"metric": AGREEMENT["name"], "min": minimum}
    return raw


def _broken_shadow(draw: st.DrawFn, raw: Node) -> tuple[Node, str]:
    """``raw`` with one thing wrong about its shadow, and the path parse_spec must name."""
    where = "spec.shadow"
    kind = draw(
        st.sampled_from(
            ["no shadow", "wrong strategy", "mirror", "duration", "no duration", "metric", "min", "typo"]
        )
    )
    if kind == "no shadow":
        raw["strategy"] = "Shadow"
        raw.pop("shadow")
        return raw, where
    if kind == "wrong strategy":
        raw.update(strategy="ABTest", objective={"metric": "conversion", "minimumEffect": 0.05})
        raw["metrics"] = [*raw["metrics"], RATIO]
        return raw, where
    shadow_ = raw["shadow"]
    if kind == "mirror":
        shadow_["mirrorPercent"] = draw(
            st.integers(max_value=0) | st.integers(min_value=101) | st.sampled_from([0.5, "50", True, None])
        )
        return raw, f"{where}.mirrorPercent"
    if kind == "duration":
        shadow_["duration"] = draw(st.sampled_from(["0s", "0h0m", "-5m", "5 minutes", "1h30", "", 600, None]))
        return raw, f"{where}.duration"
    if kind == "no duration":
        del shadow_["duration"]
        return raw, f"{where}.duration"
    if kind == "typo":
        shadow_[draw(st.sampled_from(["mirrorPrecent", "duraton", "agrement", "percent"]))] = 1
        return raw, where
    if "agreement" not in shadow_:
        raw["metrics"] = [*raw["metrics"], AGREEMENT]
        shadow_["agreement"] = {"metric": AGREEMENT["name"], "min": 0.5}
    agreement = shadow_["agreement"]
    if kind == "metric":
        # No metric of that name, or one that is no ratio: a builtin, a query, the default metrics.
        agreement["metric"] = draw(st.sampled_from(["nope", "error-rate", "latency-p95", "q", "Agreement"]))
        raw["metrics"] = [m for m in raw["metrics"] if "ratio" not in m]
        return raw, f"{where}.agreement.metric"
    agreement["min"] = draw(
        st.floats(max_value=0, exclude_max=True)
        | st.floats(min_value=1, exclude_min=True)
        | st.sampled_from([math.nan, math.inf, -math.inf, None])
    )
    return raw, f"{where}.agreement.min"


@st.composite
def broken_shadow_specs(draw: st.DrawFn) -> tuple[Node, str]:
    return _broken_shadow(draw, draw(runnable_shadow_specs()))


def test_runnable_specs_parse() -> None:
    @settings(max_examples=50, deadline=None, derandomize=True)
    @given(runnable_specs() | runnable_ab_specs() | runnable_shadow_specs())
    def check(raw: Node) -> None:
        spec.parse_spec(raw)

    check()


def _admission_errors(raw: Node) -> list[str]:
    """What the API server answers to ``raw`` as a ModelExperiment's spec (the CRD's schema and rules)."""
    metadata = {"name": "churn-v2", "namespace": "ml"}
    document = {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelExperiment", "metadata": metadata}
    return [str(error) for error in admission_errors({**document, "spec": raw})]


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(runnable_shadow_specs())
def test_runnable_shadows_are_admitted_and_parse(raw: Node) -> None:
    """The shadows the core is fuzzed with are ones the API server admits."""
    assert _admission_errors(raw) == []
    assert spec.parse_spec(raw).has_shadow_phase


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(broken_shadow_specs())
def test_broken_shadows_are_refused_by_both_naming_the_shadow(case: tuple[Node, str]) -> None:
    """One thing wrong with a shadow: the API server refuses it (its schema or a rule on the shadow), and
    parse_spec (all that checks it behind an emulated API server) with a SpecError naming the field."""
    raw, where = case
    errors = _admission_errors(raw)
    assert any(where.removeprefix("spec.") in error for error in errors), (where, errors)
    assert parse_or_problems(raw) is None, raw
    with pytest.raises(spec.SpecError) as caught:
        spec.parse_spec(raw)
    paths = [problem.path for problem in caught.value.problems]
    assert any(path == where or path.startswith(f"{where}.") for path in paths), (where, paths)


SPECS_THAT_MAY_RUN = runnable_specs() | runnable_ab_specs() | runnable_shadow_specs() | mutated_specs()


# Providers promise finite values in OK results (NaN and Inf are outcomes of their own), but nothing
# about their size or sign: a custom query may return -1e308.
FINITE = st.floats(allow_nan=False, allow_infinity=False)
PLAUSIBLE = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


def _result(values: st.SearchStrategy[float]) -> st.SearchStrategy[ports.QueryResult]:
    missing = st.sampled_from([o for o in ports.QueryOutcome if o is not ports.QueryOutcome.OK]).map(
        lambda outcome: ports.QueryResult(outcome, None, f"{outcome.value} here")
    )
    return values.map(lambda v: ports.QueryResult(ports.QueryOutcome.OK, v)) | missing


def _histogram(values: st.SearchStrategy[float]) -> st.SearchStrategy[model.Histogram]:
    """Ascending bucket edges ending at +Inf (what measure passes on), with any counts."""
    edges = st.lists(st.floats(0, 1e5, allow_nan=False), unique=True, max_size=5).map(sorted)
    return edges.flatmap(
        lambda e: st.lists(values, min_size=len(e) + 1, max_size=len(e) + 1).map(
            lambda counts: tuple(zip([*e, math.inf], counts, strict=True))
        )
    )


@st.composite
def observations(
    draw: st.DrawFn, experiment: spec.ExperimentSpec, state: model.State, due: bool, plausible: bool
) -> model.Observation:
    """What the reconciler might see: plausible (healthy-looking numbers) or hostile (anything typed:
    weights that do not add up or name strangers, missing and unknown metrics, NaN outcomes, counts
    with more events than requests, histograms that decrease, -1e308...).  While a shadow phase runs,
    plausible is often mirrored: the candidate answers a copy of each request the baseline serves, as
    well as the baseline does (so the phase can pass, or fail on its agreement alone)."""
    base, cand = experiment.baseline.workload, experiment.the_candidate.workload
    variants = (base, *experiment.workloads)  # several candidates: each measured
    values = PLAUSIBLE if plausible else FINITE
    if plausible and due and shadow.active(state) and draw(st.booleans()):
        return draw(_mirrored(experiment, state))
    if state.weights and draw(st.integers(0, 3)):
        weights: dict[str, int] | None = dict(state.weights)
    else:
        workloads = st.sampled_from([base, cand, "stranger"])
        weights = draw(st.none() | st.dictionaries(workloads, st.integers(-10, 150), max_size=3))
    gates = ["modelrollout.io/promote", "modelrollout.io/abort", "modelrollout.io/restart", "x"]
    annotations: dict[str, str] = {}
    if draw(st.integers(0, 9)) == 0:
        annotations[draw(st.sampled_from(gates))] = draw(st.sampled_from(["1", "2", ""]))
    if not due and (plausible or draw(st.booleans())):
        return model.Observation(weights, annotations, 1)
    names = [metric.name for metric in experiment.metrics]
    if not plausible:
        names = draw(
            st.lists(st.sampled_from([*names, "unknown-metric"]), unique=True, max_size=len(names) + 1)
        )
    samples = []
    for name in names:
        results = draw(st.fixed_dictionaries({w: _result(values) for w in variants}))
        if plausible:
            total, share = draw(PLAUSIBLE), draw(st.floats(0, 1))
            counts = {w: model.Counts(total * share, total) for w in variants}
            histograms = {w: histogram(total, share) for w in variants}
        else:
            pair = st.builds(model.Counts, values, values)
            counts = draw(st.fixed_dictionaries(dict.fromkeys(variants, pair)))
            histograms = draw(st.fixed_dictionaries({w: _histogram(values) for w in variants}))
        # The raw counts of ratio and mean metrics: an A/B test's material, and a shadow's agreement.
        counted = experiment.is_ab_test or name == experiment.agreement_metric
        sums, segments = draw(_sums(experiment, name, plausible)) if counted else (None, None)
        samples.append(
            model.MetricSample(
                name,
                results,
                counts=counts if draw(st.booleans()) else None,
                histograms=histograms if draw(st.booleans()) else None,
                sums=sums,
                segments=segments,
            )
        )
    requests = draw(st.none() | st.fixed_dictionaries({w: _result(values) for w in variants}))
    assignments = None
    if experiment.is_ab_test and experiment.ab.assignment_query is not None:
        assignments = draw(st.none() | st.fixed_dictionaries({w: _result(values) for w in variants}))
    return model.Observation(
        weights, annotations, 1, metrics=tuple(samples), requests=requests, assignments=assignments
    )


@st.composite
def _mirrored(draw: st.DrawFn, experiment: spec.ExperimentSpec, state: model.State) -> model.Observation:
    """A shadow phase's evaluation as the mirror makes it: both variants answer the same requests, every
    query answers, and the candidate errs and lags as the baseline does; only its agreement varies."""
    workloads = (experiment.baseline.workload, experiment.the_candidate.workload)
    served = draw(PLAUSIBLE)
    samples = []
    for metric in experiment.metrics:
        value, share = draw(PLAUSIBLE), draw(st.floats(0, 1))
        sums = None
        if metric.name == experiment.agreement_metric:
            sums, _ = draw(_sums(experiment, metric.name, plausible=True))
        samples.append(
            model.MetricSample(
                metric.name,
                dict.fromkeys(workloads, ports.QueryResult(ports.QueryOutcome.OK, value)),
                counts=dict.fromkeys(workloads, model.Counts(served * share, served)),
                histograms=dict.fromkeys(workloads, histogram(served, share)),
                sums=sums,
            )
        )
    requests = dict.fromkeys(workloads, ports.QueryResult(ports.QueryOutcome.OK, served))
    return model.Observation(dict(state.weights), {}, 1, metrics=tuple(samples), requests=requests)


@st.composite
def _sums(
    draw: st.DrawFn, experiment: spec.ExperimentSpec, name: str, plausible: bool
) -> tuple[dict[str, model.Sums] | None, dict[str, dict[str, model.Sums]] | None]:
    """An A/B test's raw material of a ratio or mean metric: per variant, overall and per segment.

    Plausible: whole counts (observations, and a ratio's successes among them), a mean's squares
    consistent with its sum.  Hostile: any finite numbers, squares or not, variants missing."""
    metric = experiment.metric(name)
    if metric is None or (metric.ratio is None and metric.mean is None) or not draw(st.integers(0, 5)):
        return None, None
    workloads = [experiment.baseline.workload, *experiment.workloads]

    def one() -> model.Sums:
        if not plausible:
            squares = draw(st.none() | FINITE)
            return model.Sums(draw(FINITE), draw(FINITE), squares)
        count = float(draw(st.integers(0, 10**6)))
        if metric.ratio is not None:
            # A shadow's agreement: most often near perfect, sometimes clearly not.
            high = (
                st.sampled_from([1.0, 0.999, 0.98, 0.95, 0.9])
                if name == experiment.agreement_metric
                else None
            )
            share = draw(st.floats(0, 1) | high if high is not None else st.floats(0, 1))
            return model.Sums(count, float(round(count * share)))
        mean, spread = draw(st.floats(-1e3, 1e3)), draw(st.floats(0, 1e3))
        squares = count * (mean * mean + spread * spread) if metric.mean and metric.mean.squares else None
        return model.Sums(count, count * mean, squares)

    if not plausible and draw(st.booleans()):
        workloads = draw(st.lists(st.sampled_from([*workloads, "stranger"]), unique=True))
    by_segment: dict[str, dict[str, model.Sums]] | None = None
    if experiment.segments and draw(st.booleans()):
        labels = draw(st.lists(st.sampled_from(["eu", "us", "", "ap"]), unique=True, min_size=1, max_size=3))
        keys = [",".join(f"{label}={value}" for label in experiment.segments) for value in labels]
        by_segment = {key: {w: one() for w in workloads} for key in keys}
        overall: dict[str, model.Sums] = {}
        for w in workloads:
            parts = [by_segment[key][w] for key in keys]
            squares = [s.squares for s in parts]
            overall[w] = model.Sums(
                sum(s.count for s in parts),
                sum(s.total for s in parts),
                None if None in squares else sum(q for q in squares if q is not None),
            )
        return overall, by_segment
    return {w: one() for w in workloads}, None


@functools.cache
def _status_validator() -> Any:
    with CRD_PATH.open() as f:
        crd = yaml.safe_load(f)
    return make_validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])


def _check_decision(
    experiment: spec.ExperimentSpec,
    decision: model.Decision,
    previous: Node,
    now: datetime.datetime,
    plausible: bool,
) -> Node:
    base, cand = experiment.baseline.workload, experiment.the_candidate.workload
    variants = {base, *experiment.workloads}  # several candidates: each has a weight
    on_base = {w: 100 if w == base else 0 for w in variants}
    state = decision.state
    if decision.weights is not None:
        assert set(decision.weights) == variants, decision.weights
        assert sum(decision.weights.values()) == 100
        assert all(0 <= weight <= 100 for weight in decision.weights.values())
    if state.weights:
        assert sum(state.weights.values()) == 100, state.weights
    if state.phase is Phase.ROLLED_BACK:
        assert dict(state.weights) == on_base
        assert decision.weights in (None, on_base)
    shadowing = experiment.has_shadow_phase and canary.shadow_pending(state)
    if state.phase is Phase.SUCCEEDED:
        # A Shadow that passed changed nothing user-facing; everything else ends on the candidate (the
        # winner, with several).
        winner = state.results.get("winner", cand)
        on_winner = {w: 100 if w == winner else 0 for w in variants}
        ended = on_base if experiment.strategy is spec.Strategy.SHADOW else on_winner
        assert dict(state.weights) == ended
    if state.phase is Phase.PROGRESSING and state.weights:
        if shadowing:
            assert (state.step, state.weights[cand]) == (0, 0)
        elif experiment.bandit is not None and experiment.is_bandit:
            # A bandit's arms in play never go below the floor while it runs (the baseline always plays).
            floor = experiment.bandit.min_weight
            assert state.weights[base] >= floor and all(w >= floor for w in state.weights.values() if w)
        else:
            planned = (
                experiment.ab.split if experiment.is_ab_test else experiment.canary.steps[state.step - 1]
            )
            # Several candidates share the step; one dropped gives its share back to the baseline.
            share = sum(state.weights[w] for w in experiment.workloads)
            assert share == planned if len(experiment.arms) == 1 else share <= planned, state.weights
    _check_shadow(experiment, decision, plausible)
    assert decision.requeue_after >= datetime.timedelta(0)
    assert "\n" not in state.message
    rendered = status_mod.render(decision, previous, now, experiment.workloads)
    if plausible:
        # What the operator writes to status must pass the API server: typed, and valid JSON (no NaN).
        json.dumps(rendered, allow_nan=False)
        errors = [error.message for error in _status_validator().iter_errors(rendered)]
        assert not errors, errors
        if shadow.KEY in decision.state.results:
            # status.shadow is the shadow phase's record, read back as it was written.
            assert rendered["shadow"] == decision.state.results[shadow.KEY]
    return rendered


def _check_shadow(experiment: spec.ExperimentSpec, decision: model.Decision, plausible: bool) -> None:
    """While the candidate shadows, it answers only mirrored copies: no user is routed to it, and the
    mirror is on exactly while the phase runs."""
    state = decision.state
    cand = experiment.the_candidate.workload
    record = state.results.get(shadow.KEY)
    if experiment.shadow is None:
        assert record is None and shadow.mirror_percent(experiment, state) is None
        return
    # A Shadow never routes users to the candidate; a canary does not before its shadow phase passed (but
    # for the promote annotation, which skips whatever is left of a canary).
    never = experiment.strategy is spec.Strategy.SHADOW
    if never or (canary.shadow_pending(state) and state.reason != "PromotedManually"):
        assert state.weights.get(cand, 0) == 0, state.weights
        assert decision.weights is None or decision.weights[cand] == 0, decision.weights
    mirror = shadow.mirror_percent(experiment, state)
    if state.phase.is_final or not shadow.active(state):
        assert mirror is None
    else:
        assert mirror == experiment.shadow.mirror_percent
        assert state.phase in (Phase.PROGRESSING, Phase.PAUSED) and state.step == 0
    if record is None:
        return
    assert record["mirrorPercent"] == experiment.shadow.mirror_percent
    ended = record.get("passed") is not None or state.phase.is_final
    if ended:
        assert record["active"] is False, record  # a phase that ended has its mirror off
    agreement = record.get("agreement")
    if agreement is not None:
        assert experiment.shadow.agreement is not None
        assert agreement["min"] == experiment.shadow.agreement.min
        assert 0 <= agreement["value"] <= 1
        if plausible:  # hostile counts (5e-324 compared) overflow the variance: the interval is NaN then
            low, high = agreement["interval"]
            assert 0 <= low <= agreement["value"] <= high <= 1, agreement


def _shadowing_experiment(strategy: str) -> tuple[spec.ExperimentSpec, model.State]:
    experiment = spec.parse_spec({**SHADOW_MINIMAL, "strategy": strategy})
    started = canary.decide(experiment, model.State(), model.Observation(None, {}, 1), T0).state
    assert shadow.active(started) and started.phase is Phase.PROGRESSING
    return experiment, started


def test_a_promoted_shadow_routes_no_user_to_the_candidate() -> None:
    """Found by the fuzzers: promote on a Shadow ended it through canary.finish at candidate 100%, and the
    next tick's final weights put the baseline back (a Shadow changes nothing user-facing)."""
    experiment, state = _shadowing_experiment("Shadow")
    gate = {"modelrollout.io/promote": "1"}
    promoted = canary.decide(experiment, state, model.Observation(dict(state.weights), gate, 1), T0)
    assert promoted.state.phase is Phase.SUCCEEDED
    assert promoted.weights == {"churn-v1": 100, "churn-v2": 0}
    assert dict(promoted.state.weights) == {"churn-v1": 100, "churn-v2": 0}


@pytest.mark.parametrize(
    ("strategy", "gate"), [("Shadow", "abort"), ("Canary", "abort"), ("Canary", "promote")]
)
def test_a_gate_that_ends_a_shadow_phase_records_its_mirror_off(strategy: str, gate: str) -> None:
    """Found by the fuzzers: the mirror came off (mirror_percent is None once final), but the phase's
    record (status.shadow) still said active: true on the finished experiment."""
    experiment, state = _shadowing_experiment(strategy)
    annotations = {f"modelrollout.io/{gate}": "1"}
    ended = canary.decide(experiment, state, model.Observation(dict(state.weights), annotations, 1), T0).state
    assert ended.phase.is_final and shadow.mirror_percent(experiment, ended) is None
    assert ended.results[shadow.KEY]["active"] is False


def _run(data: st.DataObject, experiment: spec.ExperimentSpec, plausible: bool) -> None:
    state, stored, now = model.State(), {}, T0
    for _ in range(data.draw(st.integers(1, 6), label="ticks")):
        now += data.draw(st.sampled_from([experiment.interval, datetime.timedelta(seconds=1)]))
        due = canary.evaluation_due(experiment, state, now)
        obs = data.draw(observations(experiment, state, due, plausible))
        decision = canary.decide(experiment, state, obs, now)
        stored = _check_decision(experiment, decision, stored, now, plausible)
        state = status_mod.parse_state(stored) if plausible else decision.state


@FAST
@given(SPECS_THAT_MAY_RUN, st.data())
def test_what_parses_runs_with_plausible_observations(raw: Any, data: st.DataObject) -> None:
    experiment = parse_or_problems(raw)
    if experiment is not None:
        _run(data, experiment, plausible=True)


@FAST
@given(SPECS_THAT_MAY_RUN, st.data())
def test_what_parses_runs_with_hostile_observations(raw: Any, data: st.DataObject) -> None:
    experiment = parse_or_problems(raw)
    if experiment is not None:
        _run(data, experiment, plausible=False)


@pytest.mark.parametrize("interval", ["2562047h", "1w", "1ms"])
def test_extreme_but_valid_durations_run(interval: str) -> None:
    """The longest duration the parser takes (Go's) leaves room for the core's date arithmetic."""
    experiment = spec.parse_spec(
        {**EXAMPLES[0], "canary": {"interval": interval, "minStepDuration": interval}}
    )
    state, stored, now = model.State(), {}, T0
    for _ in range(3):
        now += experiment.canary.interval
        due = canary.evaluation_due(experiment, state, now)
        obs = model.Observation(dict(state.weights) or None, {}, 1)
        if due:
            ok = ports.QueryResult(ports.QueryOutcome.OK, 100.0)
            workloads = (experiment.baseline.workload, experiment.the_candidate.workload)
            obs = model.Observation(
                obs.weights, {}, 1,
                metrics=tuple(model.MetricSample(m.name, dict.fromkeys(workloads, ok))
                              for m in experiment.metrics),
                requests=dict.fromkeys(workloads, ok),
            )  # fmt: skip
        decision = canary.decide(experiment, state, obs, now)
        stored = _check_decision(experiment, decision, stored, now, plausible=True)
        state = decision.state
