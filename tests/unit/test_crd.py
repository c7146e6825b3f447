"""The ModelExperiment CRD: structural, in step with spec.py, and the examples validate.

No API server is involved: the CRD's openAPIV3Schema is converted to JSON Schema
(close enough to what the API server checks, CEL aside) and checked with
``jsonschema``.  What is compared with the run-time model (spec.py) is what
could silently drift: field names, required fields, enums, defaults and the
duration pattern.  CEL rules are only checked for shape here (plus the two
regular expressions inside them, which Python can run); evaluating them is
left to a CEL interpreter.
"""

from __future__ import annotations

import copy
import datetime
import enum
import itertools
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml

from modelrollout import durations, spec, spec_ab, spec_bandit, spec_hooks, templates
from modelrollout import status as status_mod
from modelrollout.core import abtest, banditrun, lift

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "modelexperiments.modelrollout.io.yaml"
EXAMPLES = ROOT / "examples"
EXPERIMENT_FILES = sorted(EXAMPLES.glob("**/experiment.yaml"))
# Every ModelExperiment the examples hold (the demo's A/B test too, beside its experiment.yaml).
MODEL_EXPERIMENT_FILES = sorted(
    path for path in EXAMPLES.glob("**/*.yaml") if re.search(r"(?m)^kind: ModelExperiment$", path.read_text())
)

Node = dict[str, Any]


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def crd() -> Node:
    with CRD_PATH.open() as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc]
    assert len(docs) == 1, "the CRD file holds exactly one document"
    return docs[0]


@pytest.fixture(scope="module")
def version(crd: Node) -> Node:
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def schema(version: Node) -> Node:
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def spec_schema(schema: Node) -> Node:
    return schema["properties"]["spec"]


@pytest.fixture(scope="module")
def validator(schema: Node) -> jsonschema.Draft7Validator:
    return make_validator(schema)


def load_manifest(path: Path) -> Node:
    with path.open() as f:
        return yaml.safe_load(f)


def minimal_spec() -> Node:
    return copy.deepcopy(load_manifest(EXAMPLES / "01-minimal" / "experiment.yaml")["spec"])


# --------------------------------------------------------------------------- OpenAPI -> JSON Schema

_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        if "T" not in value.upper():
            raise ValueError(f"{value!r} has no time part")
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


def _go_pattern(pattern: str) -> str:
    """A Go (RE2) `pattern` for Python's `re.search`: `$` must not match before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def to_json_schema(node: Node) -> Node:
    """Convert one structural OpenAPI v3 schema node (recursively) to JSON Schema draft 7.

    Kubernetes extensions are dropped except where they mean something checkable:
    `nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-list-type: set` (unique
    items) and boolean `exclusiveMinimum`/`exclusiveMaximum`.  Objects with properties
    get `additionalProperties: false`, as `kubectl apply` (strict field validation)
    rejects unknown fields.
    """
    out: Node = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in {"nullable", "default", "format"}:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key == "pattern":
            out[key] = _go_pattern(value)
        elif key in {"exclusiveMinimum", "exclusiveMaximum"}:
            if value:
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[key] = node[bound]
        else:
            out[key] = value
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if node.get(key):
            out.pop("minimum" if key == "exclusiveMinimum" else "maximum", None)
    if node.get("format") == "date-time":
        out["format"] = "date-time"
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def make_validator(node: Node) -> jsonschema.Draft7Validator:
    converted = to_json_schema(node)
    jsonschema.Draft7Validator.check_schema(converted)
    return jsonschema.Draft7Validator(converted, format_checker=_FORMATS)


def apply_defaults(value: Any, node: Node) -> Any:
    """Kubernetes structural defaulting: fill missing fields, then recurse (also into defaults)."""
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            if name in properties:
                apply_defaults(item, properties[name])
            elif isinstance(node.get("additionalProperties"), dict):
                apply_defaults(item, node["additionalProperties"])
    elif isinstance(value, list) and "items" in node:
        for item in value:
            apply_defaults(item, node["items"])
    return value


def walk(
    node: Node, path: str = "", parents: tuple[Node, ...] = ()
) -> Iterator[tuple[str, Node, tuple[Node, ...]]]:
    """Every schema node with its path (`.spec.canary.steps[]`, `.status.samples{}`) and ancestors."""
    yield path, node, parents
    below = (*parents, node)
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}", below)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]", below)
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}", below)


def node_at(schema: Node, path: str) -> Node:
    """The schema node at a `walk` path such as `.spec.metrics[].query`."""
    node = schema
    for part in re.findall(r"\.[^.\[{]+|\[\]|\{\}", path):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part[1:]]
    return node


def errors_of(validator: jsonschema.Draft7Validator, instance: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


# --------------------------------------------------------------------------- identity


def test_crd_identity(crd: Node, version: Node) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "modelexperiments.modelrollout.io"
    body = crd["spec"]
    assert body["group"] == "modelrollout.io"
    assert body["scope"] == "Namespaced"
    assert body["names"] == {
        "kind": "ModelExperiment",
        "listKind": "ModelExperimentList",
        "plural": "modelexperiments",
        "singular": "modelexperiment",
        "shortNames": ["mexp"],
        "categories": ["modelrollout"],
    }
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


# --------------------------------------------------------------------------- structural schema

# Keys a structural schema node may carry (anything else is a typo or forbidden:
# $ref, allOf/anyOf/oneOf/not, patternProperties, uniqueItems, preserve-unknown-fields...).
ALLOWED_KEYS = {
    "type", "description", "properties", "items", "additionalProperties", "required", "default",
    "enum", "pattern", "format", "nullable", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def test_schema_is_structural(schema: Node) -> None:
    problems: list[str] = []
    for path, node, _ in walk(schema):
        where = path or "<root>"
        unknown = set(node) - ALLOWED_KEYS
        if unknown:
            problems.append(f"{where}: keys not allowed in a structural schema: {sorted(unknown)}")
        if node.get("type") not in TYPES:
            problems.append(f"{where}: needs a type (got {node.get('type')!r})")
        if not str(node.get("description", "")).strip():
            problems.append(f"{where}: needs a description")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
        if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
            problems.append(f"{where}: additionalProperties must be a schema")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: an array needs a single items schema")
        if node.get("type") != "array" and "items" in node:
            problems.append(f"{where}: items on a non-array")
        if node.get("type") != "object" and ("properties" in node or "additionalProperties" in node):
            problems.append(f"{where}: properties on a non-object")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{where}: required field {name!r} is not a property")
        for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if key in node and (not isinstance(node[key], bool) or bound not in node):
                problems.append(f"{where}: {key} must be a boolean next to {bound}")
        strings = node.get("type") == "string"
        if strings and not all(isinstance(value, str) for value in node.get("enum", [])):
            problems.append(f"{where}: enum values must be strings")
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            item = node["items"]
            if not keys or any(
                key not in item.get("required", []) and "default" not in item["properties"].get(key, {})
                for key in keys
            ):
                problems.append(f"{where}: map-list keys must be required or defaulted")
        elif list_type == "set" and node["items"].get("type") not in {
            "string",
            "integer",
            "number",
            "boolean",
        }:
            problems.append(f"{where}: a set list needs scalar items")
        elif list_type not in (None, "atomic", "map", "set"):
            problems.append(f"{where}: unknown list type {list_type!r}")
    assert not problems, "\n".join(problems)


def test_top_level_shape(schema: Node) -> None:
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["properties"]["metadata"] == {"type": "object", "description": "Standard object metadata."}
    assert schema["required"] == ["spec"]


def test_every_default_is_valid_for_its_field(schema: Node) -> None:
    for path, node, _ in walk(schema):
        if "default" in node:
            errors = errors_of(make_validator(node), apply_defaults(copy.deepcopy(node["default"]), node))
            assert not errors, f"{path}: default {node['default']!r} is invalid: {errors}"


def test_lists_and_strings_are_bounded_for_the_cel_cost_estimator(schema: Node) -> None:
    """Unbounded lists, maps and strings make CEL rules' estimated cost explode."""
    problems: list[str] = []
    for path, node, parents in walk(schema):
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        spec_string = path.startswith(".spec") and node.get("type") == "string"
        if spec_string and not ({"maxLength", "enum"} & set(node)):
            problems.append(f"{path}: spec string without maxLength")
        if "x-kubernetes-validations" in node:
            for parent in parents:
                if isinstance(parent.get("additionalProperties"), dict) and "maxProperties" not in parent:
                    problems.append(f"{path}: has CEL rules below a map without maxProperties")
    assert not problems, "\n".join(problems)


def test_no_preserve_unknown_fields_anywhere() -> None:
    # The one exception: the analyses' opaque memory in status, written only by the operator.
    text = CRD_PATH.read_text()
    assert text.count("x-kubernetes-preserve-unknown-fields") == 1
    memory = node_at(
        yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], ".status.analysisState"
    )
    assert memory["additionalProperties"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-embedded-resource" not in text


# --------------------------------------------------------------------------- in step with spec.py


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    """The pydantic models inside `Variant | None`, `list[MetricSpec]` and such."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    found: list[type[pydantic.BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


def _field_pairs(model: type[pydantic.BaseModel], node: Node, path: str) -> Iterator[tuple[str, Any, Node]]:
    """(path, pydantic field, schema node) for every field of `model`, recursively."""
    for field in model.model_fields.values():
        alias = field.alias
        assert alias is not None
        sub = node["properties"].get(alias)
        if sub is None:
            continue
        yield f"{path}.{alias}", field, sub
        for inner in _models_in(field.annotation):
            target = sub["items"] if _is_list(field.annotation) else sub
            yield from _field_pairs(
                inner, target, f"{path}.{alias}" + ("[]" if _is_list(field.annotation) else "")
            )


def _models_with_nodes(spec_schema: Node) -> Iterator[tuple[str, type[pydantic.BaseModel], Node]]:
    yield ".spec", spec.ExperimentSpec, spec_schema
    for path, field, node in _field_pairs(spec.ExperimentSpec, spec_schema, ".spec"):
        for model in _models_in(field.annotation):
            yield (path + "[]", model, node["items"]) if _is_list(field.annotation) else (path, model, node)


def test_property_names_match_the_model(spec_schema: Node) -> None:
    """Every model (spec, canary, metrics, ratio, analysis, prometheus, virtualService, variants)."""
    seen = set()
    for path, model, node in _models_with_nodes(spec_schema):
        aliases = {field.alias for field in model.model_fields.values()}
        assert set(node["properties"]) == aliases, f"{path} ({model.__name__})"
        seen.add(model)
    assert {
        spec.ExperimentSpec, spec.VirtualServiceRef, spec.Variant, spec.CanarySpec, spec.MetricSpec,
        spec.RatioQuery, spec.AnalysisSpec, spec.PrometheusSpec, spec_hooks.WebhookSpec,
        spec_hooks.NotificationSpec, spec_hooks.ValueFrom, spec_hooks.SecretKeyRef, spec.MeanQuery,
        spec_ab.ABTestSpec, spec_ab.Stickiness, spec_ab.FairnessSpec, spec_ab.ObjectiveSpec,
        spec_ab.ShadowSpec, spec_ab.AgreementSpec, spec_bandit.BanditSpec,
    } <= seen  # fmt: skip


def test_required_fields_match_the_model(spec_schema: Node) -> None:
    for path, model, node in _models_with_nodes(spec_schema):
        required = {field.alias for field in model.model_fields.values() if field.is_required()}
        assert set(node.get("required", [])) == required, f"{path} ({model.__name__})"


@pytest.mark.parametrize(
    ("path", "members"),
    [(".spec.strategy", spec.Strategy), (".spec.analysis.noData", spec.NoDataPolicy),
     (".spec.metrics[].builtin", spec.Builtin), (".spec.webhooks[].type", spec_hooks.WebhookType),
     (".spec.webhooks[].onDeadline", spec_hooks.OnDeadline),
     (".spec.notifications[].type", spec_hooks.NotifierType),
     (".spec.notifications[].events[]", spec_hooks.NotificationKind),
     (".spec.metrics[].role", spec.MetricRole), (".spec.objective.direction", spec_ab.Direction)],
)  # fmt: skip
def test_enums_match_the_model(spec_schema: Node, path: str, members: type[enum.Enum]) -> None:
    assert node_at({"properties": {"spec": spec_schema}}, path)["enum"] == [m.value for m in members]


def _normalize(value: Any) -> Any:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pydantic.BaseModel):
        return _normalize(value.model_dump(by_alias=True, exclude_none=True))
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    return value


def _schema_default(node: Node) -> Any:
    value = node["default"]
    if node.get("pattern") == durations.DURATION_PATTERN:
        return durations.parse_duration(value).total_seconds()
    return value


@pytest.mark.parametrize("part", ["canary", "analysis", "prometheus", "strategy", "paused", "metrics"])
def test_defaults_match_the_model_field_by_field(spec_schema: Node, part: str) -> None:
    field = spec.ExperimentSpec.model_fields[{"paused": "paused"}.get(part, part)]
    node = spec_schema["properties"][part]
    if part in {"canary", "analysis", "prometheus"}:
        assert node["default"] == {}, "an absent block must be defaulted, so its fields are"
        (model,) = _models_in(field.annotation)
        for name, inner in model.model_fields.items():
            sub = node["properties"][inner.alias]
            model_default = inner.get_default(call_default_factory=True)
            if model_default is None:
                assert "default" not in sub, f"{part}.{inner.alias}: the model has no default"
            else:
                assert "default" in sub, f"{part}.{inner.alias}: the model defaults to {model_default!r}"
                assert _schema_default(sub) == _normalize(model_default), f"{part}.{name}"
    else:
        assert node["default"] == _normalize(field.get_default(call_default_factory=True))


def test_defaulted_minimal_manifest_parses_to_the_same_spec(spec_schema: Node) -> None:
    raw = minimal_spec()
    defaulted = apply_defaults(copy.deepcopy(raw), spec_schema)
    assert set(defaulted) > set(raw), "the CRD fills in defaults"
    assert spec.parse_spec(defaulted) == spec.parse_spec(raw)
    # And nothing is defaulted that the model leaves unset.
    assert "minStepDuration" not in defaulted["canary"]
    assert "address" not in apply_defaults({}, spec_schema["properties"]["prometheus"])


def _duration_fields(spec_schema: Node) -> list[str]:
    return [path for path, node, _ in walk(spec_schema, ".spec") if "duration" in node.get("description", "")]


def test_duration_patterns_equal_durations_module(spec_schema: Node) -> None:
    paths = _duration_fields(spec_schema)
    assert set(paths) == {
        ".spec.canary.interval", ".spec.canary.minStepDuration", ".spec.prometheus.timeout",
        ".spec.abTest.interval", ".spec.abTest.maxDuration", ".spec.abTest.stickiness.maxAge",
        ".spec.shadow.duration", ".spec.bandit.interval", ".spec.bandit.maxDuration",
        ".spec.webhooks[].timeout", ".spec.webhooks[].deadline", ".spec.notifications[].timeout",
    }  # fmt: skip
    for path in paths:
        node = node_at({"properties": {"spec": spec_schema}}, path)
        assert node["pattern"] == durations.DURATION_PATTERN, path
    # ...and every duration field of the model is one of them.
    for path, field, node in _field_pairs(spec.ExperimentSpec, spec_schema, ".spec"):
        if "timedelta" in repr(field.annotation):
            assert node.get("pattern") == durations.DURATION_PATTERN, path


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", MODEL_EXPERIMENT_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_validates_against_the_crd(validator: jsonschema.Draft7Validator, path: Path) -> None:
    manifest = load_manifest(path)
    assert manifest["apiVersion"] == "modelrollout.io/v1alpha1"
    assert manifest["kind"] == "ModelExperiment"
    assert errors_of(validator, manifest) == []
    assert errors_of(validator, apply_defaults(copy.deepcopy(manifest), validator.schema)) == []


def test_there_are_examples() -> None:
    names = {str(p.relative_to(EXAMPLES)) for p in EXPERIMENT_FILES}
    assert {"01-minimal/experiment.yaml", "02-full/experiment.yaml"} <= names
    assert set(EXPERIMENT_FILES) < set(MODEL_EXPERIMENT_FILES)
    strategies = {load_manifest(path)["spec"].get("strategy", "Canary") for path in MODEL_EXPERIMENT_FILES}
    assert {"Canary", "ABTest"} <= strategies


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_example_files_start_with_an_explaining_comment(path: Path) -> None:
    lines = path.read_text().splitlines()
    header = list(itertools.takewhile(lambda line: line.startswith("#"), lines))
    assert len(header) >= 3, f"{path}: starts with a comment paragraph saying what it shows"


def test_full_example_covers_every_canary_field(spec_schema: Node) -> None:
    full = load_manifest(EXAMPLES / "02-full" / "experiment.yaml")["spec"]
    # Prometheus credentials (two of them mutually exclusive) have an example of their own.
    credentials = {"bearerTokenFrom", "basicAuth", "tlsConfig"}
    for part in ("canary", "analysis", "prometheus", "virtualService", "baseline", "candidate"):
        assert set(full[part]) == set(spec_schema["properties"][part]["properties"]) - credentials, part
    auth = load_manifest(EXAMPLES / "07-prometheus-auth" / "experiment.yaml")["spec"]["prometheus"]
    assert credentials - {"basicAuth"} <= set(auth), "07-prometheus-auth shows the credentials"
    kinds = {next(k for k in ("builtin", "query", "ratio") if k in m) for m in full["metrics"]}
    assert kinds == {"builtin", "query", "ratio"}
    assert any("max" in m and "maxRelativeIncrease" in m for m in full["metrics"])
    query = next(m["query"] for m in full["metrics"] if "query" in m)
    assert templates.placeholders_in(query) and not templates.unknown_placeholders(query)


def test_mesh_example_matches_the_experiments() -> None:
    vs = load_manifest(EXAMPLES / "00-mesh" / "virtualservice.yaml")
    dr = load_manifest(EXAMPLES / "00-mesh" / "destinationrule.yaml")
    assert vs["apiVersion"] == dr["apiVersion"] == "networking.istio.io/v1"
    assert (vs["kind"], dr["kind"]) == ("VirtualService", "DestinationRule")
    assert vs["metadata"] == dr["metadata"] == {"name": "churn", "namespace": "ml"}
    assert vs["spec"]["hosts"] == ["churn"] and dr["spec"]["host"] == "churn"
    subsets = {s["name"]: s["labels"] for s in dr["spec"]["subsets"]}
    assert subsets == {"v1": {"version": "v1"}, "v2": {"version": "v2"}}
    routes = {r["name"]: r for r in vs["spec"]["http"]}
    assert set(routes) == {"primary", "health"}
    assert routes["primary"]["route"] == [{"destination": {"host": "churn", "subset": "v1"}, "weight": 100}]
    assert "match" not in routes["primary"], "primary is the catch-all"
    assert routes["health"]["match"] == [{"uri": {"prefix": "/healthz"}}]
    assert [d["destination"]["subset"] for d in routes["health"]["route"]] == ["v2"]
    # Istio takes the first matching route: the catch-all must come last.
    assert vs["spec"]["http"][-1]["name"] == "primary"
    for path in EXPERIMENT_FILES:
        manifest = load_manifest(path)
        experiment = manifest["spec"]
        assert manifest["metadata"]["namespace"] == "ml"
        assert experiment["virtualService"]["name"] == "churn"
        assert set(experiment["virtualService"].get("routes", ["primary"])) <= set(routes)
        assert (experiment["baseline"]["subset"], experiment["baseline"]["workload"]) == ("v1", "churn-v1")
        assert (experiment["candidate"]["subset"], experiment["candidate"]["workload"]) == ("v2", "churn-v2")


# --------------------------------------------------------------------------- the schema rejects / accepts


def _with(change: dict[str, Any]) -> Node:
    """The minimal manifest with dotted-path changes (`canary.steps`: value)."""
    manifest = load_manifest(EXAMPLES / "01-minimal" / "experiment.yaml")
    for dotted, value in change.items():
        target = manifest["spec"]
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return manifest


# (change, what the error mentions).  Each is also rejected by spec.parse_spec, except
# the few values pydantic coerces leniently (LENIENT_AT_RUN_TIME): the CRD guarantees
# proper types, spec.py only has to cope with what slips past it.
LENIENT_AT_RUN_TIME = [{"paused": "yes"}]
SCHEMA_REJECTS = [
    ({"canary.steps": [5, 150]}, "150 is greater than the maximum of 100"),
    ({"canary.steps": [0, 50]}, "0 is less than the minimum of 1"),
    ({"canary.steps": []}, "should be non-empty"),
    ({"canary.interval": "5 minutes"}, "does not match"),
    ({"canary.interval": "-1s"}, "does not match"),
    ({"canary.interval": "1m\n"}, "does not match"),
    ({"canary.minStepDuration": "2"}, "does not match"),
    ({"prometheus.timeout": 10}, "is not of type 'string'"),
    ({"analysis.noData": "Maybe"}, "is not one of ['Hold', 'Fail']"),
    ({"analysis.alpha": 1.5}, "greater than or equal to the maximum of 1"),
    ({"analysis.alpha": 0}, "less than or equal to the minimum of 0"),
    ({"analysis.failureLimit": 0}, "less than the minimum of 1"),
    ({"analysis.noDataLimit": 0}, "less than the minimum of 1"),
    ({"canary.minSamples": -1}, "less than the minimum of 0"),
    ({"strategy": "BlueGreen"}, "is not one of"),
    ({"paused": "yes"}, "is not of type 'boolean'"),
    ({"metrics": [{"name": "x", "builtin": "latency-p50"}]}, "is not one of"),
    ({"metrics": [{"name": "Error_Rate", "builtin": "error-rate"}]}, "does not match"),
    ({"metrics": [{"builtin": "error-rate"}]}, "'name' is a required property"),
    ({"metrics": [{"name": "x", "builtin": "error-rate", "maxRelativeIncrease": -1}]}, "minimum of 0"),
    ({"metrics": [{"name": "x", "ratio": {"success": "up"}}]}, "'total' is a required property"),
    ({"baseline": {"subset": "v1"}}, "'workload' is a required property"),
    ({"baseline": {"subset": "v1", "workload": "Churn_V1"}}, "does not match"),
    ({"baseline": {"subset": "v1", "workload": "a" * 64}}, "is too long"),
    ({"virtualService": {"name": "Churn"}}, "does not match"),
    ({"virtualService": {"name": "churn", "namespace": "ML"}}, "does not match"),
    ({"virtualService": {"name": "churn", "routes": []}}, "should be non-empty"),
    ({"virtualService": {"name": "churn", "routes": ["a", "a"]}}, "has non-unique elements"),
    ({"prometheus.address": "prometheus:9090"}, "does not match"),
    ({"canary.stpes": [5, 50]}, "Additional properties are not allowed ('stpes' was unexpected)"),
    ({"metric": []}, "('metric' was unexpected)"),
]


@pytest.mark.parametrize(("change", "mentions"), SCHEMA_REJECTS, ids=lambda v: repr(v)[:60])
def test_schema_rejects(validator: jsonschema.Draft7Validator, change: Node, mentions: str) -> None:
    errors = errors_of(validator, _with(change))
    assert errors, f"{change} passed the schema"
    assert any(mentions in error for error in errors), errors
    # The run-time parser agrees (it is the last line of defence behind the CRD).
    if change in LENIENT_AT_RUN_TIME:
        spec.parse_spec(_with(change)["spec"])
    else:
        with pytest.raises(spec.SpecError):
            spec.parse_spec(_with(change)["spec"])


# Bad specs only a CEL rule (or spec.py) can catch: the plain schema lets them through.
CEL_ONLY = [
    {"canary.steps": [5, 25, 20]},
    {"canary.steps": [5, 5]},
    {"canary.interval": "0s"},
    {"metrics": [{"name": "x", "builtin": "error-rate", "query": "up"}]},
    {"metrics": [{"name": "x"}]},
    {"metrics": [{"name": "x", "builtin": "error-rate"}, {"name": "x", "builtin": "latency-p95"}]},
    {"metrics": [{"name": "x", "query": "up{a='{{ model }}'}"}]},
    {"metrics": [{"name": "x", "query": "up", "min": 2, "max": 1}]},
    {"baseline": {"workload": "churn-v1"}},
    {"candidate": {"subset": "v2", "workload": "churn-v1"}},
    {"candidates": [{"subset": "v2", "workload": "churn-v2"}]},
    {"metrics": [{"name": "x", "query": "up", "mean": {"sum": "a", "count": "b"}}]},
    {"metrics": [{"name": "x", "builtin": "error-rate", "role": "Secondary"}]},
    {"metrics": [{"name": "x", "mean": {"sum": "a", "count": "b{{ model }}"}}]},
    {"strategy": "ABTest"},
    {"objective": {"metric": "nope", "minimumEffect": 0.02}},
    {"objective": {"metric": "error-rate", "minimumEffect": 0.02}},  # a default metric, but a builtin
    {"abTest": {"fairness": {"margin": 0.1, "metric": "latency-p95"}}},
    {"abTest": {"interval": "0s"}},
    {"abTest": {"stickiness": {"maxAge": "0m"}}},
    {"abTest": {"match": [{"headers": {"Cookie": {"regex": "beta"}}}]}},
    {"abTest": {"assignmentQuery": "sum(x{v='{{ variant }}'})"}},
    {"strategy": "Shadow"},
    {"shadow": {"duration": "0s"}},
    {"shadow": {"duration": "10m", "agreement": {"metric": "nope", "min": 0.9}}},
    {"shadow": {"duration": "10m", "agreement": {"metric": "error-rate", "min": 0.9}}},  # a default builtin
    {
        "strategy": "ABTest",
        "objective": {"metric": "conversion", "minimumEffect": 0.1},
        "metrics": [{"name": "conversion", "ratio": {"success": "a", "total": "b"}}],
        "shadow": {"duration": "1m"},
    },
]


@pytest.mark.parametrize("change", CEL_ONLY, ids=lambda v: repr(v)[:60])
def test_cel_only_problems_pass_the_plain_schema_but_not_parse_spec(
    validator: jsonschema.Draft7Validator, change: Node
) -> None:
    assert errors_of(validator, _with(change)) == []
    with pytest.raises(spec.SpecError):
        spec.parse_spec(_with(change)["spec"])


SCHEMA_ACCEPTS = [
    {"canary.interval": "1h30m"},
    {"canary.interval": "14d"},
    {"canary.interval": "500ms"},
    {"canary.steps": [100]},
    {"canary.steps": list(range(5, 101, 5))},
    {"analysis.alpha": 0.5},
    {"analysis.noData": "Fail"},
    {"prometheus.address": "https://prom.example.com:9090/prefix"},
    {"virtualService": {"name": "churn.v1", "namespace": "ml", "routes": ["primary", "canary"]}},
    {"baseline": {"host": "churn.ml.svc.cluster.local", "workload": "churn-v1"}},
    {"metrics": []},
]


@pytest.mark.parametrize("change", SCHEMA_ACCEPTS, ids=lambda v: repr(v)[:60])
def test_schema_and_parse_spec_accept(validator: jsonschema.Draft7Validator, change: Node) -> None:
    assert errors_of(validator, _with(change)) == []
    spec.parse_spec(_with(change)["spec"])


WORKLOAD = '{workload="{{ workload }}"}'


CONVERSION: Node = {
    "name": "conversion",
    "ratio": {
        "success": f"sum(increase(model_conversions_total{WORKLOAD}[{{{{ interval }}}}]))",
        "total": f"sum(increase(model_requests_total{WORKLOAD}[{{{{ interval }}}}]))",
    },
}
REVENUE: Node = {
    "name": "revenue",
    "mean": {
        "sum": f"sum(increase(model_revenue_sum{WORKLOAD}[{{{{ interval }}}}]))",
        "count": f"sum(increase(model_revenue_count{WORKLOAD}[{{{{ interval }}}}]))",
        "squares": f"sum(increase(model_revenue_squares{WORKLOAD}[{{{{ interval }}}}]))",
    },
    "role": "Secondary",
}
# An A/B test with every field of abTest, objective and segments set.
AB_TEST: Node = {
    "strategy": "ABTest",
    "abTest": {
        "split": 20,
        "interval": "5m",
        "maxDuration": "14d",
        "autoPromote": True,
        "stickiness": {"cookie": "mexp-churn-v2", "maxAge": "30d"},
        "match": [
            {"name": "beta", "headers": {"x-user-tier": {"exact": "beta"}}, "uri": {"prefix": "/predict"},
             "withoutHeaders": {"x-internal": {"regex": "^(1|true)$"}}, "queryParams": {"ab": {"exact": "1"}},
             "method": {"exact": "POST"}, "authority": {"prefix": "churn"}, "scheme": {"exact": "https"},
             "port": 8080, "ignoreUriCase": True, "sourceLabels": {"app": "web"}, "sourceNamespace": "ml"},
        ],
        "aa": False,
        "assignmentQuery": f"sum(increase(model_assignments_total{WORKLOAD}[{{{{ interval }}}}]))",
        "minSamples": 500,
        "fairness": {"margin": 0.05, "metric": "conversion"},
    },
    "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.02, "power": 0.8},
    "segments": ["region", "device"],
    "metrics": [CONVERSION, REVENUE, {"name": "error-rate", "builtin": "error-rate", "role": "Guardrail"}],
}  # fmt: skip


def test_ab_test_blocks_are_typed_and_run(validator: jsonschema.Draft7Validator, spec_schema: Node) -> None:
    """API.md's A/B test manifest, and one with every A/B field, validate and parse (ABTest is supported)."""
    api_md = _with({
        "strategy": "ABTest",
        "abTest": {
            "split": 50,
            "stickiness": {"cookie": "mexp-churn-v2"},
            "match": [{"headers": {"x-user-tier": {"exact": "beta"}}}],
            "maxDuration": "14d",
            "autoPromote": False,
        },
        "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.02, "power": 0.8},
        "segments": ["region"],
        "metrics": [CONVERSION],
    })  # fmt: skip
    full = _with(copy.deepcopy(AB_TEST))
    ab_node = spec_schema["properties"]["abTest"]
    assert set(AB_TEST["abTest"]) == set(ab_node["properties"]), "AB_TEST sets every abTest field"
    match_fields = set(ab_node["properties"]["match"]["items"]["properties"])
    assert set(AB_TEST["abTest"]["match"][0]) == match_fields, "... and every HTTPMatchRequest field"
    for manifest in (api_md, full):
        assert errors_of(validator, manifest) == []
        parsed = spec.parse_spec(manifest["spec"])
        assert parsed.is_ab_test and parsed.objective is not None and parsed.ab_test is not None
    parsed = spec.parse_spec(full["spec"])
    assert parsed.ab.stickiness.max_age == datetime.timedelta(days=30)
    assert [m.name for m in parsed.secondary_metrics] == ["revenue"]
    assert [m.name for m in parsed.guardrails] == ["error-rate"]
    assert parsed.interval == datetime.timedelta(minutes=5)


# (change, what the schema's error mentions, whether parse_spec rejects it too).  False: pydantic coerces
# the value (as test_crd.LENIENT_AT_RUN_TIME), or the check is a CEL rule's (see test_cel_rules).
AB_PROBES: list[tuple[Node, str, bool]] = [
    ({"abTest": {"split": 150}}, "maximum of 99", True),
    ({"abTest": {"split": 0}}, "minimum of 1", True),
    ({"abTest": {"autoPromote": "no"}}, "'boolean'", False),
    ({"abTest": {"maxDuration": "two weeks"}}, "does not match", True),
    ({"abTest": {"interval": "5"}}, "does not match", True),
    ({"abTest": {"minSamples": 0}}, "minimum of 1", True),
    ({"abTest": {"stickiness": {"cookie": "a b"}}}, "does not match", True),
    ({"abTest": {"stickiness": {"cookie": "c" * 65}}}, "is too long", True),
    ({"abTest": {"stickiness": {"maxAge": "a month"}}}, "does not match", True),
    ({"abTest": {"match": []}}, "should be non-empty", True),
    ({"abTest": {"match": [{"headers": {"x": "beta"}}]}}, "'object'", True),
    ({"abTest": {"match": [{"headers": {}}]}}, "should be non-empty", True),
    ({"abTest": {"match": [{"uri": {"glob": "/a*"}}]}}, "('glob' was unexpected)", True),
    ({"abTest": {"match": [{"gateways": ["mesh"]}]}}, "('gateways' was unexpected)", True),
    ({"abTest": {"match": [{"port": 70000}]}}, "maximum of 65535", True),
    ({"abTest": {"match": [{"port": "80"}]}}, "'integer'", True),
    ({"abTest": {"match": [{"ignoreUriCase": "yes"}]}}, "'boolean'", True),
    ({"abTest": {"match": [{"sourceLabels": {"app": 1}}]}}, "'string'", True),
    ({"abTest": {"fairness": {"margin": 1}}}, "maximum of 1", True),
    ({"abTest": {"fairness": {"metric": "conversion"}}}, "'margin' is a required property", True),
    ({"abTest": {"assignmentQuery": "x" * 4097}}, "is too long", False),  # lengths: a known gap
    ({"abTest": {"bogus": 1}}, "('bogus' was unexpected)", True),
    ({"objective": {"metric": "conversion", "minimumEffect": 0.02, "direction": "Up"}}, "is not one of",
     True),
    ({"objective": {"minimumEffect": 0.02}}, "'metric' is a required property", True),
    ({"objective": {"metric": "conversion"}}, "'minimumEffect' is a required property", True),
    ({"objective": {"metric": "conversion", "minimumEffect": 0}}, "minimum of 0", True),
    ({"objective": {"metric": "conversion", "minimumEffect": 11}}, "maximum of 10", True),
    ({"objective": {"metric": "conversion", "minimumEffect": 0.02, "power": 1}}, "maximum of 1", True),
    ({"segments": ["region", "region"]}, "non-unique", True),
    ({"segments": ["not a label"]}, "does not match", True),
    ({"metrics": [{"name": "m", "mean": {"sum": "a"}}]}, "'count' is a required property", True),
    ({"metrics": [{"name": "m", "mean": {"sum": "a", "count": "b", "cubes": "c"}}]}, "('cubes' was", True),
    ({"metrics": [{**CONVERSION, "role": "Objective"}]}, "is not one of", True),
]  # fmt: skip


@pytest.mark.parametrize(("change", "mentions", "parser_rejects"), AB_PROBES, ids=lambda v: repr(v)[:60])
def test_ab_test_fields_are_checked_by_schema_and_parser(
    validator: jsonschema.Draft7Validator, change: Node, mentions: str, parser_rejects: bool
) -> None:
    errors = errors_of(validator, _with(change))
    assert any(mentions in error for error in errors), errors
    try:
        spec.parse_spec(_with(change)["spec"])
    except spec.SpecError:
        assert parser_rejects, "the parser rejects this now: flip the case"
    else:
        assert not parser_rejects, "the schema rejects this, but the operator would run it"


AGREEMENT: Node = {
    "name": "prediction-agreement",
    "ratio": {
        "success": f"sum(increase(model_shadow_agreed_total{WORKLOAD}[{{{{ interval }}}}]))",
        "total": f"sum(increase(model_shadow_compared_total{WORKLOAD}[{{{{ interval }}}}]))",
    },
}
# API.md's Shadow manifest, its agreement metric defined (a ratio: answers that agreed of those compared).
SHADOW: Node = {
    "strategy": "Shadow",
    "shadow": {"mirrorPercent": 100, "duration": "10m",
               "agreement": {"metric": "prediction-agreement", "min": 0.95}},
    "metrics": [{"name": "error-rate", "builtin": "error-rate"}, AGREEMENT],
}  # fmt: skip


def test_shadow_blocks_are_typed_and_run(validator: jsonschema.Draft7Validator, spec_schema: Node) -> None:
    """API.md's Shadow manifest, alone and as a canary's first phase, validates and parses (Shadow is
    supported); the agreement metric is judged on its own, not as a guardrail."""
    shadow_node = spec_schema["properties"]["shadow"]
    assert set(SHADOW["shadow"]) == set(shadow_node["properties"]), "SHADOW sets every shadow field"
    assert set(SHADOW["shadow"]["agreement"]) == set(shadow_node["properties"]["agreement"]["properties"])
    alone = _with(copy.deepcopy(SHADOW))
    first = _with({**copy.deepcopy(SHADOW), "strategy": "Canary"})
    for manifest in (alone, first):
        assert errors_of(validator, manifest) == []
        parsed = spec.parse_spec(manifest["spec"])
        assert parsed.has_shadow_phase and parsed.shadow is not None and parsed.shadow.agreement is not None
        assert (parsed.shadow.mirror_percent, parsed.shadow.duration) == (100, datetime.timedelta(minutes=10))
        assert (parsed.shadow.agreement.metric, parsed.shadow.agreement.min) == ("prediction-agreement", 0.95)
        assert parsed.agreement_metric == "prediction-agreement"
        assert [m.name for m in parsed.guardrails] == ["error-rate"]
    assert spec.parse_spec(alone["spec"]).strategy is spec.Strategy.SHADOW
    assert spec.parse_spec(first["spec"]).strategy is spec.Strategy.CANARY
    # mirrorPercent defaults as the CRD defaults it; agreement is optional.
    bare = spec.parse_spec(_with({"strategy": "Shadow", "shadow": {"duration": "1m"}})["spec"])
    assert (
        bare.shadow is not None
        and bare.shadow.mirror_percent == shadow_node["properties"]["mirrorPercent"]["default"]
    )
    assert bare.shadow.agreement is None and bare.agreement_metric is None


# (change, what the schema's error mentions, whether parse_spec rejects it too), as AB_PROBES.
SHADOW_PROBES: list[tuple[Node, str, bool]] = [
    ({"shadow": {"mirrorPercent": 100}}, "'duration' is a required property", True),
    ({"shadow": {"duration": "10m", "mirrorPercent": 150}}, "maximum of 100", True),
    ({"shadow": {"duration": "10m", "mirrorPercent": 0}}, "minimum of 1", True),
    ({"shadow": {"duration": "10m", "mirrorPercent": "50"}}, "'integer'", True),
    ({"shadow": {"duration": "10m", "mirrorPercent": 50.5}}, "'integer'", True),
    ({"shadow": {"duration": "-5m"}}, "does not match", True),
    ({"shadow": {"duration": "ten minutes"}}, "does not match", True),
    ({"shadow": {"duration": 600}}, "'string'", True),
    ({"shadow": {"duration": "10m", "agreement": {"metric": "prediction-agreement", "min": 2}}},
     "maximum of 1", True),
    ({"shadow": {"duration": "10m", "agreement": {"metric": "prediction-agreement", "min": -0.1}}},
     "minimum of 0", True),
    ({"shadow": {"duration": "10m", "agreement": {"metric": "prediction-agreement"}}},
     "'min' is a required property", True),
    ({"shadow": {"duration": "10m", "agreement": {"min": 0.9}}}, "'metric' is a required property", True),
    ({"shadow": {"duration": "10m", "agreement": {"metric": "Agreement", "min": 0.9}}}, "does not match",
     True),
    ({"shadow": {"duration": "10m", "mirror": 100}}, "('mirror' was unexpected)", True),
    ({"shadow": {"duration": "10m", "agreement": {"metric": "prediction-agreement", "min": 0.9, "max": 1}}},
     "('max' was unexpected)", True),
]  # fmt: skip


@pytest.mark.parametrize(("change", "mentions", "parser_rejects"), SHADOW_PROBES, ids=lambda v: repr(v)[:60])
def test_shadow_fields_are_checked_by_schema_and_parser(
    validator: jsonschema.Draft7Validator, change: Node, mentions: str, parser_rejects: bool
) -> None:
    change = {"metrics": [AGREEMENT], **change}  # so that only the probed field is wrong
    errors = errors_of(validator, _with(change))
    assert any(mentions in error for error in errors), errors
    try:
        spec.parse_spec(_with(change)["spec"])
    except spec.SpecError:
        assert parser_rejects, "the parser rejects this now: flip the case"
    else:
        assert not parser_rejects, "the schema rejects this, but the operator would run it"


def test_bandit_block_is_typed_and_validates(validator: jsonschema.Draft7Validator) -> None:
    """The API.md manifest for Bandit validates and runs."""
    conversion = {**AGREEMENT, "name": "conversion"}  # a ratio metric to reward
    bandit = _with({
        "strategy": "Bandit",
        "metrics": [conversion],
        "bandit": {"reward": "conversion", "minWeight": 5, "maxStepChange": 20, "confidence": 0.95,
                   "maxDuration": "2h"},
    })  # fmt: skip
    del bandit["spec"]["candidate"]
    bandit["spec"]["candidates"] = [
        {"subset": "v2", "workload": "churn-v2"},
        {"subset": "v3", "workload": "churn-v3"},
    ]
    assert errors_of(validator, bandit) == []
    parsed = spec.parse_spec(bandit["spec"])
    assert parsed.bandit is not None and parsed.is_bandit
    settings = parsed.bandit
    assert (settings.reward, settings.min_weight, settings.max_step_change) == ("conversion", 5, 20)
    assert settings.max_duration == datetime.timedelta(hours=2)
    assert parsed.workloads == ("churn-v2", "churn-v3")
    probes: list[tuple[Node, str]] = [
        ({"bandit": {"reward": "conversion", "confidence": 1}}, "maximum of 1"),
        ({"bandit": {"minWeight": 5}}, "'reward' is a required property"),
        ({"bandit": {"reward": "conversion", "minWeight": 0}}, "minimum of 1"),
        ({"bandit": {"reward": "conversion", "intervalsRequired": 0}}, "minimum of 1"),
        ({"bandit": {"reward": "conversion", "autoPromote": "yes"}}, "'boolean'"),
    ]
    for bad, mentions in probes:
        errors = errors_of(validator, _with(bad))
        assert any(mentions in error for error in errors), (bad, errors)


# --------------------------------------------------------------------------- status


STATUS_FIXTURE: Node = {
    "phase": "Progressing",
    "step": 2,
    "candidateWeight": 25,
    "observedGeneration": 3,
    "stepStartedAt": "2026-11-23T10:00:00Z",
    "interval": "1m",
    "decision": "Continue",
    "message": "error-rate 0.011 vs 0.010 (ok); latency-p95 180ms (ok)",
    "samples": {"baseline": 10234, "candidate": 3411},
    "weights": {"churn-v1": 75, "churn-v2": 25},
    "metrics": [
        {"name": "error-rate", "baseline": 0.010, "candidate": 0.011, "verdict": "Pass"},
        {"name": "latency-p95", "baseline": None, "candidate": None, "verdict": "NoData",
         "reason": "no data"},
        {"name": "conversion", "baseline": 0.1, "candidate": 0.12, "verdict": "Pass",
         "effect": 0.2, "interval": [0.05, 0.35], "evidence": 12.5, "pValue": 0.003},
    ],
    "conditions": [
        {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": "2026-11-23T10:00:00Z",
         "observedGeneration": 3}
        for t, s, r in [("Ready", "True", "Progressing"), ("Progressing", "True", "StepAdvanced"),
                        ("Succeeded", "False", "InProgress"), ("RolledBack", "False", "InProgress")]
    ],
    "failedChecks": 1,
    "noDataChecks": 0,
    "stepChecks": 4,
    "lastEvaluatedAt": "2026-11-23T10:04:00Z",
    "gates": {"modelrollout.io/promote": "2026-11-23T09:00:00Z"},
    "history": [
        {"time": "2026-11-23T09:58:00Z", "phase": "Progressing", "step": 1, "weight": 5,
         "decision": "Continue", "reason": "all metrics pass"},
    ],
    "outcome": "Ship",
    "objective": {"metric": "conversion", "lift": 0.034, "interval": [0.012, 0.057]},
}  # fmt: skip

# What core/abtest.py writes for an A/B test (State.results, rendered by status.render).
AB_STATUS_FIXTURE: Node = {
    **STATUS_FIXTURE,
    "step": 1,
    "outcome": "Iterate",
    "startedAt": "2026-11-23T09:00:00Z",
    "metrics": [
        {"name": "conversion", "verdict": "Pass", "reason": "conversion: +3.4%", "baseline": 0.1,
         "candidate": 0.1034, "role": "Objective", "lift": 0.034, "interval": [0.012, 0.057]},
        {"name": "error-rate", "verdict": "Pass", "reason": "ok", "baseline": 0.01, "candidate": 0.01},
    ],
    "objective": {"metric": "conversion", "direction": "Increase", "minimumEffect": 0.02, "baseline": 0.1,
                  "candidate": 0.1034, "lift": 0.034, "interval": [0.012, 0.057],
                  "samples": {"churn-v1": 52000, "churn-v2": 51800}, "reason": "lift +3.4% [+1.2%, +5.7%]"},
    "secondary": [{"metric": "revenue", "baseline": 2.5, "candidate": 2.6, "lift": 0.04,
                   "interval": [-0.01, 0.09], "alpha": 0.025}],
    "segments": [
        {"segment": {"region": "eu", "device": "ios"}, "metric": "conversion", "baseline": 0.1,
         "candidate": 0.09, "lift": -0.1, "interval": [-0.2, 0.0],
         "samples": {"churn-v1": 900, "churn-v2": 880}, "reversed": True, "unfair": False},
        {"segment": {"region": "us", "device": ""}, "reversed": False, "unfair": False},
    ],
    "abPlan": {"baselineRate": 0.1, "samplesPerArm": 41000, "requestsPerSecond": 12.5,
               "expectedDuration": "2d3h", "message": "detecting +2.0% conversion needs 41000 ..."},
    "srm": {"checked": True, "passed": True, "message": "the users' shares match the split"},
    "timeline": [
        {"time": "2026-11-23T09:05:00Z", "weights": {"churn-v1": 50, "churn-v2": 50}, "samples": {}},
        {"time": "2026-11-23T09:10:00Z", "lift": 0.02, "interval": [-0.5, 0.6],
         "weights": {"churn-v1": 50, "churn-v2": 50}, "samples": {"churn-v1": 600, "churn-v2": 610}},
    ],
    "report": {"configMap": "churn-v2-report", "key": "report.md"},
}  # fmt: skip


# What core/shadow.py writes: the shadow phase's record (State.results["shadow"]), here of a shadow that
# passed and whose canary is on its first step.
SHADOW_STATUS_FIXTURE: Node = {
    **STATUS_FIXTURE,
    "step": 1,
    "metrics": [
        {"name": "error-rate", "baseline": 0.010, "candidate": 0.011, "verdict": "Pass"},
        {"name": "prediction-agreement", "candidate": 0.97, "verdict": "Pass", "role": "Agreement",
         "interval": [0.955, 0.982], "reason": "prediction-agreement 97.00% [95.50%, 98.20%] (ok)"},
    ],
    "shadow": {"active": False, "passed": True, "startedAt": "2026-11-23T09:00:00Z", "mirrorPercent": 100,
               "agreement": {"value": 0.97, "interval": [0.955, 0.982], "min": 0.95}},
}  # fmt: skip


@pytest.mark.parametrize(
    "fixture",
    [
        STATUS_FIXTURE,
        AB_STATUS_FIXTURE,
        SHADOW_STATUS_FIXTURE,
        {**STATUS_FIXTURE, "shadow": {"active": True}},
    ],
    ids=["canary", "ab-test", "shadow", "shadowing"],
)
def test_status_fixture_validates(schema: Node, fixture: Node) -> None:
    assert errors_of(make_validator(schema["properties"]["status"]), fixture) == []


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"phase": "Running"}, "is not one of"),
        ({"decision": "Abort"}, "is not one of"),
        ({"outcome": "Maybe"}, "is not one of"),
        ({"candidateWeight": 101}, "maximum of 100"),
        ({"weights": {"churn-v2": -1}}, "minimum of 0"),
        ({"samples": {"baseline": "many"}}, "'integer'"),
        ({"stepStartedAt": "yesterday"}, "is not a 'date-time'"),
        ({"history": [{}] * 51}, "is too long"),
        ({"metrics": [{"name": "x", "interval": [1]}]}, "is too short"),
        ({"conditions": [{"type": "Ready", "status": "Yes", "reason": "R", "message": "",
                          "lastTransitionTime": "2026-11-23T10:00:00Z"}]}, "is not one of"),
        ({"conditions": [{"type": "Ready", "status": "True"}]}, "'lastTransitionTime' is a required"),
        ({"kopf": {"progress": {}}}, "('kopf' was unexpected)"),
        ({"startedAt": "yesterday"}, "is not a 'date-time'"),
        ({"objective": {"metric": "c", "lift": "big"}}, "'number'"),
        ({"objective": {"metric": "c", "direction": "Up"}}, "is not one of"),
        ({"objective": {"metric": "c", "samples": {"churn-v1": -1}}}, "minimum of 0"),
        ({"objective": {"metric": "c", "interval": [0.1]}}, "is too short"),
        ({"objective": {"metric": "c", "liftt": 0.1}}, "('liftt' was unexpected)"),
        ({"secondary": [{"lift": 0.1}]}, "'metric' is a required property"),
        ({"secondary": [{"metric": "m"}] * 257}, "is too long"),
        ({"segments": [{"segment": {"region": 1}}]}, "'string'"),
        ({"segments": [{"segment": {}, "unfair": "no"}]}, "'boolean'"),
        ({"segments": [{"reversed": True}]}, "'segment' is a required property"),
        ({"segments": [{"segment": {}}] * 257}, "is too long"),
        ({"abPlan": {"samplesPerArm": -1}}, "minimum of 0"),
        ({"abPlan": {"samplesPerArm": 1.5}}, "'integer'"),
        ({"srm": {"checked": "yes"}}, "'boolean'"),
        ({"timeline": [{"lift": 0.1}]}, "'time' is a required property"),
        ({"timeline": [{"time": "now"}]}, "is not a 'date-time'"),
        ({"timeline": [{"time": "2026-11-23T09:05:00Z", "weights": {"churn-v2": 101}}]}, "maximum of 100"),
        ({"timeline": [{"time": "2026-11-23T09:05:00Z"}] * 129}, "is too long"),
        ({"report": {"configMap": "x", "bogus": 1}}, "('bogus' was unexpected)"),
        ({"metrics": [{"name": "x", "role": 1}]}, "'string'"),
        ({"shadow": {"active": "yes"}}, "'boolean'"),
        ({"shadow": {"passed": 1}}, "'boolean'"),
        ({"shadow": {"startedAt": "a while ago"}}, "is not a 'date-time'"),
        ({"shadow": {"mirrorPercent": 0}}, "minimum of 1"),
        ({"shadow": {"mirrorPercent": 150}}, "maximum of 100"),
        ({"shadow": {"mirrorPercent": 12.5}}, "'integer'"),
        ({"shadow": {"agreement": {"value": 1.5}}}, "maximum of 1"),
        ({"shadow": {"agreement": {"value": 0.9, "interval": [0.8]}}}, "is too short"),
        ({"shadow": {"agreement": {"value": 0.9, "interval": [0.8, 0.9, 1.0]}}}, "is too long"),
        ({"shadow": {"agreement": {"interval": [-0.1, 0.9]}}}, "minimum of 0"),
        ({"shadow": {"agreement": {"min": "high"}}}, "'number'"),
        ({"shadow": {"agreement": {"valeu": 0.9}}}, "('valeu' was unexpected)"),
        ({"shadow": {"active": True, "mirror": 100}}, "('mirror' was unexpected)"),
    ],
    ids=lambda v: repr(v)[:50],
)  # fmt: skip
def test_status_schema_rejects(schema: Node, change: Node, mentions: str) -> None:
    status = {**AB_STATUS_FIXTURE, **change}
    errors = errors_of(make_validator(schema["properties"]["status"]), status)
    assert any(mentions in error for error in errors), errors


def test_conditions_are_a_map_list_keyed_by_type(schema: Node) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }  # fmt: skip


def test_status_has_the_operator_internal_fields(schema: Node) -> None:
    status = schema["properties"]["status"]["properties"]
    expected = {
        "phase": "string", "step": "integer", "candidateWeight": "integer", "observedGeneration": "integer",
        "stepStartedAt": "string", "decision": "string", "message": "string", "samples": "object",
        "weights": "object", "metrics": "array", "conditions": "array", "failedChecks": "integer",
        "noDataChecks": "integer", "stepChecks": "integer", "lastEvaluatedAt": "string", "gates": "object",
        "history": "array", "outcome": "string", "objective": "object", "reason": "string", "plan": "string",
        "analysisState": "object", "approval": "object", "interval": "string",
        # A/B tests (core/abtest.py; status.RESULT_FIELDS).
        "startedAt": "string", "secondary": "array", "segments": "array", "abPlan": "object", "srm": "object",
        "timeline": "array", "report": "object",
        # The shadow phase (core/shadow.py).
        "shadow": "object",
        # Several candidates (core/arms.py).
        "candidates": "array", "winner": "string",
        # The bandit (core/banditrun.py).
        "bandit": "object",
    }  # fmt: skip
    assert {name: node["type"] for name, node in status.items()} == expected
    assert set(status_mod.RESULT_FIELDS) <= set(status)
    assert status["history"]["maxItems"] == 50
    for name in ("stepStartedAt", "lastEvaluatedAt", "startedAt"):
        assert status[name]["format"] == "date-time"
    assert status["outcome"]["enum"] == [o.value for o in lift.Outcome]
    # The lists the operator caps fit their bounds.
    assert status["timeline"]["maxItems"] >= abtest.TIMELINE_LIMIT
    assert status["secondary"]["maxItems"] >= node_at(schema, ".spec.metrics")["maxItems"]
    segment_labels = status["segments"]["items"]["properties"]["segment"]["maxProperties"]
    assert segment_labels == node_at(schema, ".spec.segments")["maxItems"]
    assert status["gates"]["additionalProperties"]["type"] == "string"
    metric = status["metrics"]["items"]["properties"]
    assert {"effect", "interval", "evidence", "pValue"} <= set(metric)
    assert metric["baseline"]["nullable"] and metric["candidate"]["nullable"]
    # The shadow phase's record: what core/shadow.py writes, bounded as the spec's mirrorPercent is.
    shadow = status["shadow"]["properties"]
    assert set(shadow) == {"active", "passed", "startedAt", "mirrorPercent", "agreement"}
    assert shadow["startedAt"]["format"] == "date-time"
    mirror = node_at(schema, ".spec.shadow.mirrorPercent")
    assert (shadow["mirrorPercent"]["minimum"], shadow["mirrorPercent"]["maximum"]) == (
        mirror["minimum"], mirror["maximum"],
    )  # fmt: skip
    assert set(shadow["agreement"]["properties"]) == {"value", "interval", "min"}
    # The bandit's record: its stages, and lists that fit every arm and the allocations it keeps.
    bandit = status["bandit"]["properties"]
    assert bandit["stage"]["enum"] == [banditrun.EXPLORING, banditrun.CONFIRMING, banditrun.DECIDED]
    assert bandit["startedAt"]["format"] == "date-time"
    assert bandit["arms"]["maxItems"] == spec.MAX_CANDIDATES + 1
    assert bandit["comparison"]["maxItems"] == spec.MAX_CANDIDATES
    assert bandit["allocation"]["maxItems"] >= banditrun.ALLOCATION_LIMIT


# --------------------------------------------------------------------------- printer columns

COLUMNS = {
    # NAME: (jsonPath, type, priority)
    "STRATEGY": (".spec.strategy", "string", 0),
    "PHASE": (".status.phase", "string", 0),
    "STEP": (".status.step", "integer", 0),
    "WEIGHT": (".status.candidateWeight", "integer", 0),
    "DECISION": (".status.decision", "string", 0),
    "AGE": (".metadata.creationTimestamp", "date", 0),
    "INTERVAL": (".status.interval", "string", 1),
    "OUTCOME": (".status.outcome", "string", 1),
    "FAILED": (".status.failedChecks", "integer", 1),
    "REASON": (".status.message", "string", 1),
}


def resolve(obj: Any, json_path: str) -> Any:
    """A tiny JSONPath resolver for the simple `.a.b` paths printer columns use."""
    assert re.fullmatch(r"(\.[A-Za-z][A-Za-z0-9]*)+", json_path), f"not a simple path: {json_path}"
    for part in json_path.split(".")[1:]:
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(f"{json_path}: no {part!r}")
        obj = obj[part]
    return obj


def test_printer_columns(version: Node) -> None:
    columns = version["additionalPrinterColumns"]
    got = {c["name"].upper(): (c["jsonPath"], c["type"], c.get("priority", 0)) for c in columns}
    assert got == COLUMNS
    # `kubectl get` order: the default columns first, AGE last among them.
    names = [c["name"].upper() for c in columns]
    assert names[:6] == ["STRATEGY", "PHASE", "STEP", "WEIGHT", "DECISION", "AGE"]


def test_printer_column_paths_resolve_on_an_object(version: Node, schema: Node) -> None:
    manifest = load_manifest(EXAMPLES / "02-full" / "experiment.yaml")
    obj = apply_defaults(manifest, schema)
    obj["metadata"]["creationTimestamp"] = "2026-11-23T09:55:00Z"
    obj["status"] = STATUS_FIXTURE
    python_types: dict[str, type | tuple[type, ...]] = {
        "string": str, "integer": int, "number": (int, float), "boolean": bool, "date": str,
    }  # fmt: skip
    for column in version["additionalPrinterColumns"]:
        value = resolve(obj, column["jsonPath"])
        assert isinstance(value, python_types[column["type"]]) and not (
            column["type"] == "integer" and isinstance(value, bool)
        ), column
        if column["type"] == "date":
            assert _is_date_time(value)
        elif not column["jsonPath"].startswith(".metadata."):
            # The path exists in the schema with a matching type.
            node = node_at(schema, column["jsonPath"])
            assert node["type"] == column["type"], column
    # The defaults are enough for the spec columns.
    minimal = apply_defaults(load_manifest(EXAMPLES / "01-minimal" / "experiment.yaml"), schema)
    assert resolve(minimal, ".spec.strategy") == "Canary"
    assert resolve(minimal, ".spec.canary.interval") == "1m"  # what status.interval shows for it


# --------------------------------------------------------------------------- CEL rules (shape only)

RULE_KEYS = {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}


def _all_rules(schema: Node) -> list[tuple[str, Node]]:
    return [
        (path, rule) for path, node, _ in walk(schema) for rule in node.get("x-kubernetes-validations", [])
    ]


def _cel_tokens_balanced(text: str) -> bool:
    """Brackets balance outside string literals ('..', "..", r'..'), and literals close."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    i = 0
    while i < len(text):
        char = text[i]
        if char in "'\"":
            raw = i > 0 and text[i - 1] in "rR"
            j = i + 1
            while j < len(text) and text[j] != char:
                j += 1 if raw or text[j] != "\\" else 2
            if j >= len(text):
                return False
            i = j + 1
            continue
        if char in "([{":
            stack.append(char)
        elif char in ")]}" and (not stack or stack.pop() != pairs[char]):
            return False
        i += 1
    return not stack


def test_every_cel_rule_has_a_rule_and_a_message(schema: Node) -> None:
    rules = _all_rules(schema)
    assert len(rules) >= 20
    for path, rule in rules:
        assert set(rule) <= RULE_KEYS, path
        assert set(rule) & {"fieldPath", "reason", "optionalOldSelf"} == set(), (
            f"{path}: fieldPath/reason need Kubernetes 1.28+; keep the CRD portable"
        )
        assert isinstance(rule["rule"], str) and rule["rule"].strip(), path
        assert isinstance(rule["message"], str) and len(rule["message"]) > 10, path
        assert "\n" not in rule["message"], path
        assert "self" in rule["rule"], path
        assert "oldSelf" not in rule["rule"], f"{path}: no transition rules are intended"
        assert _cel_tokens_balanced(rule["rule"]), f"{path}: unbalanced {rule['rule']}"


# Where each required rule sits and a piece of its text.
REQUIRED_RULES = [
    (".spec.canary.steps", "isSorted()"),
    (".spec.metrics[]", "has(self.builtin) ? 1 : 0) + (has(self.query) ? 1 : 0) + (has(self.ratio)"),
    (".spec.metrics", "exists_one(n, n.name == m.name)"),
    (".spec", "has(self.candidate) != has(self.candidates)"),
    (".spec.baseline", "has(self.subset) || has(self.host)"),
    (".spec.candidate", "has(self.subset) || has(self.host)"),
    (".spec.candidates[]", "has(self.subset) || has(self.host)"),
    (".spec.metrics[]", "self.min <= self.max"),
    (".spec.metrics[].query", "self.matches("),
    (".spec.metrics[].ratio.success", "self.matches("),
    (".spec.metrics[].ratio.total", "self.matches("),
    (".spec", "self.candidate.workload != self.baseline.workload"),
    (".spec", "c.workload != self.baseline.workload"),
    (".spec.canary.interval", "!self.matches("),
    (".spec.prometheus.timeout", "!self.matches("),
    (".spec.metrics[]", "(has(self.ratio) ? 1 : 0) + (has(self.mean) ? 1 : 0) == 1"),
    (".spec.metrics[]", "self.role != 'Secondary' || has(self.ratio) || has(self.mean)"),
    (".spec.metrics[].mean.sum", "self.matches("),
    (".spec.metrics[].mean.count", "self.matches("),
    (".spec.metrics[].mean.squares", "self.matches("),
    (".spec", "self.strategy != 'ABTest' || has(self.objective)"),
    (".spec", "self.metrics.exists(m, m.name == self.objective.metric)"),
    (".spec", "m.name != self.objective.metric || has(m.ratio) || has(m.mean)"),
    (".spec", "m.name == self.abTest.fairness.metric && (has(m.ratio) || has(m.mean))"),
    (".spec.abTest.interval", "!self.matches("),
    (".spec.abTest.maxDuration", "!self.matches("),
    (".spec.abTest.stickiness.maxAge", "!self.matches("),
    (".spec.abTest.assignmentQuery", "self.matches("),
    (".spec.abTest.match[]", "k.lowerAscii() == 'cookie'"),
    (".spec", "self.strategy != 'Shadow' || has(self.shadow)"),
    (".spec", "self.strategy == 'Shadow' || self.strategy == 'Canary'"),
    (".spec", "m.name == self.shadow.agreement.metric && has(m.ratio)"),
    (".spec.shadow.duration", "!self.matches("),
    (".spec.segments", "self.exists_one(t, t == s)"),
]


@pytest.mark.parametrize(("path", "text"), REQUIRED_RULES, ids=lambda v: v[:40])
def test_required_rule_exists(schema: Node, path: str, text: str) -> None:
    rules = [rule["rule"] for rule in node_at(schema, path).get("x-kubernetes-validations", [])]
    assert any(text in rule for rule in rules), rules


def _regex_in(rule: str) -> str:
    match = re.search(r"matches\(r?'([^']*)'\)", rule)
    assert match, rule
    return match.group(1)


def _placeholder_regexes(schema: Node) -> list[str]:
    return [
        _regex_in(rule["rule"])
        for path in TEMPLATE_FIELDS
        for rule in node_at(schema, path)["x-kubernetes-validations"]
    ]


# Every PromQL template of the spec: spec.py checks each with templates.unknown_placeholders.
TEMPLATE_FIELDS = (
    ".spec.metrics[].query", ".spec.metrics[].ratio.success", ".spec.metrics[].ratio.total",
    ".spec.metrics[].mean.sum", ".spec.metrics[].mean.count", ".spec.metrics[].mean.squares",
    ".spec.abTest.assignmentQuery",
)  # fmt: skip


def test_placeholder_rules_name_exactly_the_template_variables(schema: Node) -> None:
    regexes = _placeholder_regexes(schema)
    assert len(regexes) == len(TEMPLATE_FIELDS)
    assert len(set(regexes)) == 1, "every template field (query, ratio, mean, assignmentQuery) uses one rule"
    (names,) = re.findall(r"\(((?:[a-z]+\|)+[a-z]+)\)", regexes[0])
    assert set(names.split("|")) == set(templates.VARIABLES)


PLACEHOLDER_CASES = [
    'sum(rate(x{workload="{{ workload }}"}[{{ interval }}]))',
    "{{workload}}{{host}}{{ subset }}{{  namespace  }}{{ experiment }}",
    "up",
    "",
    "a{b}c{}",
    "{ {{ workload }}}}}",
    "{{ model }}",
    'x{workload="{{ workload }}", v="{{ version }}"}',
    "{{ work load }}",
    "{{{ workload }}",
    "{{ workload } }}",
    "{{}}",
]


@pytest.mark.parametrize("query", PLACEHOLDER_CASES)
def test_placeholder_rule_agrees_with_templates(schema: Node, query: str) -> None:
    """The CEL rule's RE2 regex (run here with Python's re) accepts what spec.py accepts."""
    regex = _placeholder_regexes(schema)[0]
    assert bool(re.fullmatch(regex, query)) == (not templates.unknown_placeholders(query))


def test_placeholder_rule_is_stricter_only_for_unclosed_braces(schema: Node) -> None:
    # `{{` that never closes is not a placeholder to spec.py (and invalid PromQL anyway);
    # the CRD rejects it outright.
    regex = _placeholder_regexes(schema)[0]
    for query in ("up{{", "{{ workload", "{{ workload }"):
        assert not templates.unknown_placeholders(query)
        assert not re.fullmatch(regex, query)


@pytest.mark.parametrize("text", ["0s", "00m", "0h0m", "0ms", "0w0d", "1s", "0s1ms", "10m", "1h0m"])
def test_zero_duration_rule_agrees_with_durations(schema: Node, text: str) -> None:
    (rule,) = node_at(schema, ".spec.canary.interval")["x-kubernetes-validations"]
    is_zero = bool(re.fullmatch(_regex_in(rule["rule"]), text))
    try:
        durations.parse_duration(text)
    except durations.DurationError:
        assert is_zero
    else:
        assert not is_zero


def test_duration_rules_are_all_the_same(schema: Node) -> None:
    rules = {
        rule["rule"]
        for path, node, _ in walk(schema)
        if node.get("pattern") == durations.DURATION_PATTERN
        for rule in node["x-kubernetes-validations"]
    }
    assert rules == {"!self.matches('^(0+(ms|s|m|h|d|w))+$')"}
